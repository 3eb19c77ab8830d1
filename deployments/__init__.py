"""Prefect-side bootstrap and triggers of syncflow's deployments (see ``prefect.yaml``).

- :mod:`deployments.setup` — the work pool and the per-category concurrency limits,
  created idempotently (``syncflow setup``).
- :mod:`deployments.trigger` — start a session as a run of a deployment and return its
  session id at once (``syncflow sync run --deployment``, the HTTP API).
"""
