"""Prefect-side bootstrap and triggers of syncflow's deployments (see ``prefect.yaml``).

- :mod:`deployments.setup` — the work pool and the per-category concurrency limits,
  created idempotently (``syncflow setup``).
- :mod:`deployments.trigger` — start a session as a run of a deployment and return its
  session id at once (``syncflow sync run --deployment``, the HTTP API).
- :mod:`deployments.runner` — the deployments of ``prefect.yaml`` served from one process
  (``syncflow runner``).

Every Prefect call they make goes through the seam, ``tasks.prefect_api``.
"""
