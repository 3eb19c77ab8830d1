"""The Prefect flows: sessions, per-instance syncs, the sweeps. Flows orchestrate only."""

from syncflow.process import end_without_final_collections

end_without_final_collections()  # a flow-run process exits without Python's final collections
