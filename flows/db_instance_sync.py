"""``sync-db-instance``: the name the database-instance subflow had before every kind shared one.

Kept so the deployment ``sync-db-instance/db-instance`` (``prefect.yaml``) and runs started
by its name go on working; it is :func:`flows.instance_sync.sync_instance` under that name.
"""

from __future__ import annotations

from flows.instance_sync import sync_instance

sync_db_instance = sync_instance.with_options(name="sync-db-instance")

__all__ = ["sync_db_instance"]
