"""The Prefect flows: sessions, per-instance syncs, the sweeps. Flows orchestrate only."""

from syncflow import process

# A flow-run process (a worker's) has loaded Prefect when it imports a deployment's flow from
# here: that stays to the end, and the exit skips Python's final collections.
process.freeze_loaded()
process.end_without_final_collections()
