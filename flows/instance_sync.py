"""The per-instance subflow: one (session record, instance, category) sync.

Orchestration only: begin (record running, single-flight lease) -> chunks of batches until
the source says hasMore=false -> finish (counts, details, lease released). Each chunk is one
Prefect task run (retried with the block's backoff, resuming at the committed cursor) that
fetches and stores up to SYNCFLOW_BATCHES_PER_TASK pages, one transaction per page, fetching
the next page while the current one is stored: a task run per page would cost more in
Prefect bookkeeping than the page itself.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.runtime import flow_run as flow_run_runtime

from syncflow.engine.pipeline import BatchClock, InstanceRun, Skipped
from syncflow.errors import SyncflowError
from syncflow.settings import get_settings
from syncflow.store.db import get_engine
from syncflow.store.models import Category
from syncflow.store.sync_state import LeaseKeeper, LeaseLostError
from tasks import seq as t


class SyncCancelled(Exception):
    """The session was cancelled: stop at this batch boundary, keep what is committed."""


def _run_name() -> str:
    params = flow_run_runtime.parameters
    return f"{params.get('category', 'sync')}:{params.get('instance') or params.get('record_id')}"


@flow(name="sync-instance", flow_run_name=_run_name, log_prints=False, persist_result=True)
async def sync_instance(
    record_id: int,
    instance: str = "",
    category: str = "messages",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sync one instance for one session record. ``instance``/``category`` only name the run.

    ``options``: ``full`` (reset the cursor), ``from_seq``/``to_seq`` (backfill a range
    without moving the cursor), ``batch_size``.
    """
    logger = get_run_logger()
    flow_run_id = flow_run_runtime.id
    owner = f"run:{flow_run_id or uuid.uuid4()}"
    lease = get_settings().lock_lease_seconds
    run = await t.begin_sync(record_id, owner, lease, flow_run_id, options)
    if isinstance(run, Skipped):
        logger.warning("skipped: %s", run.reason)
        return {"status": "skipped", "reason": run.reason}
    clock = BatchClock(run.start_seq)
    keeper = LeaseKeeper(
        get_engine(), instance_id=run.instance_id, category=run.category, owner=owner, lease_seconds=lease
    )
    try:
        with keeper:
            if run.category == Category.METADATA:
                conn = await t.describe_connection(run.block_name, run.instance_name)
                fetch_conversations = t.fetch_conversations.with_options(**_retry_options(conn))
                conversations = await fetch_conversations(run.block_name, run.instance_name, conn.max_delay)
                counts = await t.apply_metadata(run, conversations)
                details: dict[str, Any] = {"conversations": counts.synced}
            else:
                await _sync_messages(run, clock, keeper)
                details = clock.details()
    except (SyncCancelled, asyncio.CancelledError) as exc:
        reason = str(exc) or "cancelled"
        logger.warning("%s: stopped at a batch boundary: %s", run.instance_name, reason)
        details = clock.details(complete=False)
        status = await t.finish_sync(run, "cancelled", details, reason)
        return {"status": status, "details": details}
    except Exception as exc:
        error = _describe(run, exc)
        logger.error("%s", error)
        await t.finish_sync(run, "failed", clock.details(complete=False), error)
        raise
    status = await t.finish_sync(run, "completed", details, None)
    logger.info("%s: %s %s", run.instance_name, status, details)
    return {"status": status, "details": details}


async def _sync_messages(run: InstanceRun, clock: BatchClock, keeper: LeaseKeeper) -> None:
    conn = await t.describe_connection(run.block_name, run.instance_name)
    count = run.opts.batch_size or conn.batch_size
    chunk = t.sync_batches.with_options(**_retry_options(conn))
    per_task = get_settings().batches_per_task
    progress_id = None
    done = 0
    while True:
        out = await chunk(run, count, per_task, conn.max_delay)
        result = out.result
        clock.add_chunk(result, retries=out.attempts - 1)
        done += result.new
        if result.has_more and progress_id is None:  # only runs longer than one task get a bar
            progress_id = await acreate_progress_artifact(
                progress=0.0, description=f"{run.category} of {run.instance_name}: messages stored / to fetch"
            )
        if progress_id is not None:
            total = done + (result.remaining or 0)
            await aupdate_progress_artifact(progress_id, progress=100.0 * done / total if total else 100.0)
        if result.cancelled:
            raise SyncCancelled(result.cancelled)
        if keeper.lost.is_set():
            raise LeaseLostError(f"{run.instance_name}: lost the single-flight lease")
        if not result.has_more:
            break


def _retry_options(conn: t.ConnectionInfo) -> dict[str, Any]:
    """Task options for a fetch: retries per the instance block's policy."""
    return {
        "retries": len(conn.retry_delays),
        "retry_delay_seconds": conn.retry_delays or 0,
        "retry_jitter_factor": conn.jitter or None,
    }


def _describe(run: InstanceRun, exc: BaseException) -> str:
    if isinstance(exc, SyncflowError):
        text = str(exc)
        return text if run.instance_name in text else f"{run.instance_name}: {text}"
    return f"{run.instance_name}: {type(exc).__name__}: {exc}"
