"""The sweep flow (deployment ``sweep/every-5-minutes``): repair what killed processes left.

A sync whose process was killed (SIGKILL, a lost machine, an OOM kill) leaves its record and
session open in the store and its Prefect flow runs ``Running`` forever. Every few minutes this
flow fails the records whose single-flight lease ran out with no update for as long ("worker
lost"), finishes their sessions, releases expired leases, and marks the flow runs of that dead
process ``Crashed`` in Prefect (a parent run only when its session's heartbeat stopped too).
The same as ``syncflow sweep``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from syncflow import process
from syncflow.book import SWEEP_CRASH_REASON
from tasks.prefect_api import mark_crashed
from tasks.session import sweep_store

# A worker's flow-run process loads this module, and Prefect with it, for good: see syncflow.process.
process.flow_module_loaded()


@flow(name="sweep", log_prints=False)
async def sweep(older_than_seconds: float | None = None) -> dict[str, Any]:
    """Fail records (and sessions) not updated for ``older_than_seconds`` (default: the lease,
    SYNCFLOW_LOCK_LEASE_SECONDS) whose lease ran out, and mark their flow runs Crashed."""
    if older_than_seconds is not None and older_than_seconds < 0:
        raise ValueError(f"older_than_seconds must not be negative, not {older_than_seconds}")
    out = await sweep_store(older_than_seconds)
    crashed: list[dict[str, Any]] = []
    if out["dead_flow_runs"]:
        crashed = await mark_crashed(out["dead_flow_runs"], SWEEP_CRASH_REASON)
    out["crashed_flow_runs"] = crashed
    get_run_logger().info(
        "swept %d record(s), finished %d session(s), released %d lease(s), marked %d flow run(s) crashed",
        len(out["records_failed"]),
        len(out["sessions_finished"]),
        out["leases_released"],
        len(crashed),
    )
    return out
