"""The daily retention flow: delete finished sessions older than the retention."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from syncflow import process
from syncflow.settings import get_settings
from tasks.session import cleanup_sessions

# A worker's flow-run process loads this module, and Prefect with it, for good: see syncflow.process.
process.flow_module_loaded()


@flow(name="cleanup", log_prints=False)
async def cleanup(retention_days: int | None = None) -> dict[str, Any]:
    """Delete finished sessions (with their records) that ended more than ``retention_days``
    ago (default SYNCFLOW_RETENTION_DAYS, 30); running sessions and synced data stay. Also
    clears expired single-flight leases left by killed syncs."""
    days = get_settings().retention_days if retention_days is None else retention_days
    if days < 0:
        raise ValueError(f"retention_days must not be negative, not {days}")
    out = await cleanup_sessions(days)
    get_run_logger().info(
        "deleted %d finished session(s) older than %d day(s); cleared %d expired lease(s)",
        out["deleted_sessions"],
        days,
        out["released_leases"],
    )
    return out
