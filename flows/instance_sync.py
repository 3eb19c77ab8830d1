"""The per-instance subflow: one (session record, instance, category) sync, for every kind.

Orchestration only: begin (record running, single-flight lease) -> read -> store -> finish.
An incremental category (messages) is read in chunks of pages until the source says there is
no more, each chunk one Prefect task run (retried with the block's backoff, resuming at the
committed cursor) that stores up to SYNCFLOW_BATCHES_PER_TASK pages, one transaction each; a
snapshot category (metadata, account, capacity, config) is read whole (retried the same way)
and stored in one transaction. The steps are in ``syncflow.engine``, the tasks in ``tasks/sync.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as flow_run_runtime

from syncflow import process
from syncflow.engine import BatchClock, InstanceRun, Skipped, watches_gaps
from syncflow.errors import PermanentSyncError, SyncflowError, TransientSyncError
from syncflow.settings import get_settings
from tasks import alerts, artifacts
from tasks import sync as t

# A worker's flow-run process loads this module, and Prefect with it, for good: see syncflow.process.
process.flow_module_loaded()

PROGRESS_EVERY = 3.0
"""Seconds between two updates of a long sync's progress artifact (each one is an API call)."""


class SyncCancelled(Exception):
    """The session was cancelled: stop at this boundary, keep what is committed."""


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
    Returns the record's final ``status`` and ``sync_details`` (or, skipped, its ``error_message``),
    named as in the record view (:class:`syncflow.schemas.RecordView`).

    ``options``: ``full`` (reset the cursor), ``from_seq``/``to_seq`` (backfill a range
    without moving the cursor), ``batch_size``, ``gap_window_hours``/``gap_checks``/``gap_max_reads``
    (the gap ledger's repair: see ``syncflow.engine.gaps``).
    """
    logger = get_run_logger()
    flow_run_id = flow_run_runtime.id
    owner = f"run:{flow_run_id or uuid.uuid4()}"
    run = await t.begin_sync(record_id, owner, get_settings().lock_lease_seconds, flow_run_id, options)
    if isinstance(run, Skipped):
        logger.warning("skipped: %s", run.reason)
        return {"status": "skipped", "error_message": run.reason}
    clock = BatchClock(run.start_seq)
    details: dict[str, Any] = {}
    sizes: list[int] = []  # adaptive page size: where it started, then where each chunk left it
    plan: t.ReadPlan | None = None
    try:
        plan = await t.plan_read(run)
        if run.incremental:
            sizes.append(plan.batch_size)
            await _read_incrementally(run, plan, clock, sizes)
            details = _with_sizes(clock.details(), plan, sizes)
        else:
            details = await _read_snapshot(run, plan, details)
    except (SyncCancelled, asyncio.CancelledError) as exc:
        reason = str(exc) or "cancelled"
        logger.warning("%s: stopped at a batch boundary: %s", run.instance_name, reason)
        details = clock.details(complete=False) if run.incremental else details
        status = await t.finish_sync(run, "cancelled", details, reason, _adapted(plan, sizes))
        return {"status": status, "sync_details": details}
    except Exception as exc:
        error = _describe(run, exc, details.get("attempts"))
        logger.error("%s", error)
        await t.finish_sync(run, "failed", clock.details(complete=False) if run.incremental else details, error)
        await alerts.instance_failed(
            instance_id=run.instance_id,
            instance=run.instance_name,
            category=run.category,
            session_id=run.session_id,
            error=error,
        )
        raise
    status = await t.finish_sync(run, "completed", details, None, _adapted(plan, sizes))
    logger.info("%s: %s", run.instance_name, status)
    return {"status": status, "sync_details": details}


def _adapted(plan: t.ReadPlan | None, sizes: list[int]) -> int | None:
    """The adaptive page size to remember (None: fixed size, or nothing was read)."""
    return sizes[-1] if plan is not None and plan.adaptive is not None and sizes else None


def _with_sizes(details: dict[str, Any], plan: t.ReadPlan, sizes: list[int]) -> dict[str, Any]:
    """``batch_size`` in the details: the page size (adaptive: where it ended, plus its range)."""
    details["batch_size"] = sizes[-1]
    if plan.adaptive is not None:
        details["batch_size_range"] = [min(sizes), max(sizes)]
        details["adaptive_batch"] = {
            "min": plan.adaptive.min_size,
            "max": plan.adaptive.max_size,
            "target_page_s": plan.adaptive.target_seconds,
        }
    return details


async def _read_incrementally(run: InstanceRun, plan: t.ReadPlan, clock: BatchClock, sizes: list[int]) -> None:
    chunk = t.sync_batches.with_options(**plan.retry_options())
    per_task = get_settings().batches_per_task
    artifact = None
    shown: float | None = None
    done = 0
    gaps = watches_gaps(run)  # dense seqs: repair the gap ledger's holes first, reconcile at the end
    first = True
    while True:
        out = await chunk(
            run,
            sizes[-1],
            per_task,
            plan.max_delay,
            plan.adaptive,
            repair=gaps and first,
            reconcile=gaps,
            server=clock.server,
            first_seq=clock.first_seq,
            resume=(run.start_seq, 0) if first else (clock.cursor, clock.batch_no),
        )
        first = False
        if out.repaired is not None:
            clock.add_details(out.repaired.details(), out.repaired.counts)
        result = out.result
        if result.batch_size is not None:
            sizes.append(result.batch_size)
        clock.add_chunk(result, retries=out.attempts - 1)
        done += result.new
        # only syncs longer than one chunk get a bar; PATCHed at most every PROGRESS_EVERY s, and at the end
        due = shown is None or time.monotonic() - shown >= PROGRESS_EVERY or not result.has_more or result.cancelled
        if (result.has_more or artifact is not None) and due:
            shown = time.monotonic()
            artifact = await artifacts.show_progress(
                artifact,
                run=run,
                done=done,
                remaining=result.remaining,
                batches=clock.batches,
                elapsed=time.perf_counter() - clock.t0,
            )
        if result.cancelled:
            raise SyncCancelled(result.cancelled)
        if out.reconciled:
            clock.add_details(out.reconciled)
        if not result.has_more:
            return


async def _read_snapshot(run: InstanceRun, plan: t.ReadPlan, details: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    details["server"] = plan.source
    read = t.read_snapshot.with_options(**plan.retry_options())
    try:
        snapshot = await read(run, plan.max_delay)
    except Exception as exc:  # retries spent (or none allowed): how many times it ran
        attempts = getattr(exc, "attempts", 1)
        details.update(attempts=attempts, retries=attempts - 1, duration_s=round(time.perf_counter() - started, 3))
        raise
    details.update(attempts=snapshot.attempts, retries=snapshot.attempts - 1)
    stored = await t.store_snapshot(run, snapshot.items)
    details["duration_s"] = round(time.perf_counter() - started, 3)
    if stored.cancelled is not None:  # cancelled while reading: nothing stored
        raise SyncCancelled(f"{stored.cancelled}; the snapshot read was not stored")
    await artifacts.publish_changes(run, stored)
    return {**stored.details, **details}


def _describe(run: InstanceRun, exc: BaseException, attempts: int | None) -> str:
    text = str(exc) if isinstance(exc, SyncflowError) else f"{type(exc).__name__}: {exc}"
    if run.instance_name not in text:
        text = f"{run.instance_name}: {text}"
    if isinstance(exc, TransientSyncError) and attempts:
        text += f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
    elif isinstance(exc, PermanentSyncError) and not run.incremental:
        text += " (permanent: not retried)"
    return text
