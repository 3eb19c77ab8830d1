"""The per-instance subflow of a database server: one (session record, instance, category) sync.

Same contract as ``flows.instance_sync.sync_instance``: begin (record running, single-flight
lease; another sync holding it -> the record is skipped) -> read the server's snapshot
(account | capacity | config; retried per the block's policy on transient errors only) ->
store it with the record's counts in ONE transaction -> finish (completed with the change
list in ``sync_details``, or failed with a per-instance error, the run failing too). A session
cancelled while the server was being read stores nothing and ends the record cancelled.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run as flow_run_runtime

from syncflow.engine.pipeline import InstanceRun, Skipped
from syncflow.errors import PermanentSyncError, SyncflowError, TransientSyncError
from syncflow.settings import get_settings
from syncflow.store.db import get_engine
from syncflow.store.sync_state import LeaseKeeper, LeaseLostError
from tasks import db as t

ARTIFACT_LINES = 200


def _run_name() -> str:
    params = flow_run_runtime.parameters
    return f"{params.get('category', 'account')}:{params.get('instance') or params.get('record_id')}"


@flow(name="sync-db-instance", flow_run_name=_run_name, log_prints=False, persist_result=True)
async def sync_db_instance(
    record_id: int,
    instance: str = "",
    category: str = "account",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sync one postgres/mysql instance for one session record. ``instance``/``category`` only name the run."""
    logger = get_run_logger()
    flow_run_id = flow_run_runtime.id
    owner = f"run:{flow_run_id or uuid.uuid4()}"
    lease = get_settings().lock_lease_seconds
    run = await t.begin_db_sync(record_id, owner, lease, flow_run_id, options)
    if isinstance(run, Skipped):
        logger.warning("skipped: %s", run.reason)
        return {"status": "skipped", "reason": run.reason}
    started = time.perf_counter()
    details: dict[str, Any] = {}
    keeper = LeaseKeeper(
        get_engine(), instance_id=run.instance_id, category=run.category, owner=owner, lease_seconds=lease
    )
    try:
        with keeper:
            info = await t.describe_database(run.block_name, run.instance_name)
            details["server"] = info.address
            read = t.read_db_snapshot.with_options(
                retries=len(info.retry_delays),
                retry_delay_seconds=info.retry_delays or 0,
                retry_jitter_factor=info.jitter or None,
            )
            try:
                snapshot = await read(run.block_name, run.instance_name, run.category, info.top_tables)
            except Exception as exc:  # retries spent (or none allowed): how many times it ran
                attempts = getattr(exc, "attempts", 1)
                details.update(attempts=attempts, retries=attempts - 1)
                raise
            details.update(attempts=snapshot.attempts, retries=snapshot.attempts - 1)
            if keeper.lost.is_set():
                raise LeaseLostError(f"{run.instance_name}: lost the single-flight lease while reading")
            cancelled = await t.check_cancelled(run)
            if cancelled is None:
                stored = await t.store_db_snapshot(run, snapshot.items)
    except asyncio.CancelledError:
        details["duration_s"] = round(time.perf_counter() - started, 3)
        await t.finish_db_sync(run, "cancelled", details, "cancelled")
        raise
    except Exception as exc:
        details["duration_s"] = round(time.perf_counter() - started, 3)
        error = _describe(run, exc, details.get("attempts"))
        logger.error("%s", error)
        await t.finish_db_sync(run, "failed", details, error)
        raise
    details["duration_s"] = round(time.perf_counter() - started, 3)
    if cancelled is not None:  # cancelled while reading: nothing stored
        logger.warning("%s: %s; the snapshot read is not stored", run.instance_name, cancelled)
        status = await t.finish_db_sync(run, "cancelled", details, cancelled)
        return {"status": status, "reason": cancelled, "details": details}
    status = await t.finish_db_sync(run, "completed", details, None)
    await _changes_artifact(run, stored)
    logger.info("%s: %s %s (%d change(s))", run.instance_name, status, stored.counts, stored.changes_total)
    return {"status": status, "counts": stored.counts, "details": {**stored.details, **details}}


def _describe(run: InstanceRun, exc: BaseException, attempts: int | None) -> str:
    text = str(exc) if isinstance(exc, SyncflowError) else f"{type(exc).__name__}: {exc}"
    if run.instance_name not in text:
        text = f"{run.instance_name}: {text}"
    if isinstance(exc, TransientSyncError) and attempts:
        text += f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
    elif isinstance(exc, PermanentSyncError):
        text += " (permanent: not retried)"
    return text


async def _changes_artifact(run: InstanceRun, stored: t.Stored) -> None:
    """A markdown artifact of the change list, keyed per (category, instance) so versions line up."""
    c = stored.counts
    lines = [
        f"# {run.category} of {run.instance_name}",
        "",
        f"synced {c['synced']}: created {c['created']}, updated {c['updated']}, "
        f"deleted {c['deleted']}, unchanged {c['unchanged']} (session `{run.session_id}`)",
        "",
    ]
    if stored.changes:
        lines += [f"- {_md(line)}" for line in stored.changes[:ARTIFACT_LINES]]
        if stored.changes_total > ARTIFACT_LINES:
            lines.append(f"- ... and {stored.changes_total - ARTIFACT_LINES} more")
    else:
        lines.append("no change")
    slug = re.sub(r"[^a-z0-9-]+", "-", run.instance_name.lower()).strip("-") or str(run.instance_id)
    await acreate_markdown_artifact(
        markdown="\n".join(lines),
        key=f"{run.category}-changes-{slug}"[:255],
        description=f"{run.category} changes of {run.instance_name}",
    )


def _md(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)
