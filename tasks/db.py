"""Thin Prefect tasks for database-instance syncs (account, capacity, config).

Tasks get the instance's block *name*, never its password or a connection: the read task
loads the block itself. Blocking work (psycopg, PyMySQL, the store) runs in a thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as task_run_runtime

from blocks.database import DatabaseInstance
from syncflow.engine import pipeline as seq_engine
from syncflow.errors import ConfigError, SyncError, TransientSyncError
from syncflow.sources import db_connection
from syncflow.store import snapshots as account_store

CHANGES_KEPT = 1000  # change lines handed back to the flow (its artifact); sync_details keeps fewer


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a retry can help (refused, timeout, lost connection); never auth/permanent errors.

    A plain ``def``: Prefect silently ignores a callable object or a ``functools.partial``.
    """
    return isinstance(state.data, TransientSyncError)


async def _block(block_name: str | None, instance: str) -> DatabaseInstance:
    if not block_name:
        raise ConfigError(
            f"instance {instance} has no connection block "
            "(syncflow instances add ... --host --user --password-env VAR, or --block NAME)"
        )
    try:
        return await DatabaseInstance.aload(block_name)
    except ValueError as exc:
        raise ConfigError(f"instance {instance}: cannot load database block {block_name!r}: {exc}") from None


@dataclass(frozen=True)
class DatabaseInfo:
    """The non-secret part of a block: what the flow needs to plan the read and its retries."""

    address: str
    retry_delays: list[float]
    jitter: float
    top_tables: int


@task(name="describe-database", cache_policy=NO_CACHE)
async def describe_database(block_name: str | None, instance: str) -> DatabaseInfo:
    block = await _block(block_name, instance)
    policy = block.retry_policy()
    return DatabaseInfo(
        address=block.describe(), retry_delays=policy.delays(), jitter=policy.jitter, top_tables=block.top_tables
    )


@dataclass(frozen=True)
class Snapshot:
    items: list[dict[str, Any]]  # to_json() of AccountSnapshot | SettingSnapshot | DatabaseSize
    attempts: int


@task(name="read-db-snapshot", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
async def read_db_snapshot(block_name: str | None, instance: str, category: str, top_tables: int = 20) -> Snapshot:
    """What the server has for ``category`` now (retries per the block's policy, set by the flow).

    A :class:`~syncflow.errors.SyncError` leaves with ``attempts``: how many times this read ran.
    """
    block = await _block(block_name, instance)
    conn = block.connection()
    try:
        items = await asyncio.to_thread(db_connection.read_snapshot, conn, category, top_tables=top_tables)
    except SyncError as exc:
        exc.attempts = task_run_runtime.get_run_count()  # type: ignore[attr-defined]  # for the record's details
        raise
    return Snapshot(items=[item.to_json() for item in items], attempts=task_run_runtime.get_run_count())


@dataclass(frozen=True)
class Stored:
    counts: dict[str, int]
    details: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    changes_total: int = 0


@task(name="store-db-snapshot", cache_policy=NO_CACHE)
async def store_db_snapshot(run: seq_engine.InstanceRun, items: list[dict[str, Any]]) -> Stored:
    """Diff/append the snapshot with the record's counts and the lease check, in one transaction."""
    result = await asyncio.to_thread(lambda: account_store.store_snapshot(run, snapshot=items))
    c = result.counts
    return Stored(
        counts={
            "synced": c.synced,
            "created": c.created,
            "updated": c.updated,
            "deleted": c.deleted,
            "unchanged": c.unchanged,
        },
        details=result.details(),
        changes=result.changes[:CHANGES_KEPT],
        changes_total=len(result.changes),
    )


@task(name="begin-sync", cache_policy=NO_CACHE)
async def begin_db_sync(
    record_id: int, owner: str, lease_seconds: float, flow_run_id: str | None, options: dict[str, Any] | None
) -> seq_engine.InstanceRun | seq_engine.Skipped:
    return await asyncio.to_thread(
        lambda: seq_engine.begin_instance_sync(
            record_id=record_id, owner=owner, lease_seconds=lease_seconds, flow_run_id=flow_run_id, options=options
        )
    )


@task(name="check-cancelled", cache_policy=NO_CACHE)
async def check_cancelled(run: seq_engine.InstanceRun) -> str | None:
    """Why the sync must stop now (its session or record was cancelled), or None."""
    return await asyncio.to_thread(lambda: seq_engine.should_stop(run))


@task(name="finish-sync", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 2, 4])
async def finish_db_sync(
    run: seq_engine.InstanceRun, outcome: str, details: dict[str, Any] | None, error: str | None
) -> str:
    return await asyncio.to_thread(
        lambda: seq_engine.finish_instance_sync(run, outcome=outcome, details=details, error=error)
    )
