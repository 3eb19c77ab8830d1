"""Thin Prefect tasks around the steps of one instance sync (``syncflow.engine``), for every kind.

Tasks get ids, names and numbers, never secrets or connections: the read tasks open the
instance's source from its block *name* (``blocks.connections``, one open source per block in
this process). Blocking work (HTTP, database drivers, the store) runs in a thread. Retries are
the block's policy, set by the flow with ``with_options``; only transient errors are retried.

Only the data steps are task runs (``sync-batches``, ``read-snapshot``, ``store-snapshot``: the
retried work an operator follows in the UI). The book-keeping around them (``begin_sync``,
``plan_read``, ``finish_sync``) are plain coroutines awaited by the subflow: a task run each
cost ~9 events and their ingestion per instance, more than a short sync's data (issue 11);
their outcome is the subflow run's state either way. ``finish_sync`` keeps its retries as a
small loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as task_run_runtime

from blocks import connections
from blocks.connections import open_source
from syncflow import engine
from syncflow.engine import lease
from syncflow.engine.batch_size import AdaptiveBatch, AdaptiveBounds
from syncflow.errors import RateLimitedError, SyncError, TransientSyncError
from syncflow.sources.base import page_reader
from syncflow.store.sync_state import LeaseLostError

log = logging.getLogger(__name__)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a retry can help (5xx, timeouts, refused or dropped connections, 429).

    A plain ``def``: Prefect silently ignores a callable object or a ``functools.partial``.
    """
    return isinstance(state.data, TransientSyncError)


async def _rate_limited(exc: RateLimitedError, max_delay: float) -> None:
    """Prefect never honours a server's Retry-After: sleep it (capped) before the retry."""
    if exc.retry_after:
        await asyncio.sleep(min(exc.retry_after, max_delay))


def _check_lease(run: engine.InstanceRun, when: str) -> None:
    if lease.lost(instance_id=run.instance_id, category=run.category, owner=run.owner):
        raise LeaseLostError(f"{run.instance_name}: lost the single-flight lease {when}")


async def begin_sync(
    record_id: int, owner: str, lease_seconds: float, flow_run_id: str | None, options: dict[str, Any] | None
) -> engine.InstanceRun | engine.Skipped:
    """Mark the record running, take the single-flight lease and keep it alive until finish."""
    run = await asyncio.to_thread(
        lambda: engine.begin_instance_sync(
            record_id=record_id, owner=owner, lease_seconds=lease_seconds, flow_run_id=flow_run_id, options=options
        )
    )
    if isinstance(run, engine.InstanceRun):
        lease.keep(instance_id=run.instance_id, category=run.category, owner=owner, lease_seconds=lease_seconds)
    return run


async def preload_blocks(records: Iterable[Any]) -> dict[str, list[str]]:
    """Read ahead the blocks of a session's instances (``kind``, ``block_name``, ``config``: a
    :class:`syncflow.book.PlannedRecord`) whose source this process has not opened: a page of
    block documents per Prefect request, instead of one request per instance on its critical
    path. A failure only logs: each instance then reads its own block, and its record says what
    is wrong. Returns what was asked for, per kind (for :func:`drop_preloaded`)."""
    wanted: dict[str, list[str]] = {}
    for rec in records:
        if rec.block_name and not connections.is_open(rec.kind, rec.block_name, rec.config):
            wanted.setdefault(rec.kind, []).append(rec.block_name)
    for kind, names in wanted.items():
        try:
            await connections.preload_blocks(kind, names)
        except Exception as exc:  # the instances load their own blocks
            log.debug("could not read the %s blocks ahead: %s: %s", kind, type(exc).__name__, exc)
    return wanted


def drop_preloaded(wanted: dict[str, list[str]]) -> None:
    """Forget the blocks :func:`preload_blocks` read that no instance took (the session ended)."""
    for kind, names in wanted.items():
        connections.drop_preloaded(kind, names)


@dataclass(frozen=True)
class ReadPlan:
    """The non-secret part of the block: page size, retries, and what the source is."""

    batch_size: int
    retry_delays: list[float]
    jitter: float
    max_delay: float
    source: str
    adaptive: AdaptiveBounds | None = None  # the block's bounds when the page size adapts

    def retry_options(self) -> dict[str, Any]:
        """Task options for a read: retries per the instance block's policy."""
        return {
            "retries": len(self.retry_delays),
            "retry_delay_seconds": self.retry_delays or 0,
            "retry_jitter_factor": self.jitter or None,
        }


async def plan_read(run: engine.InstanceRun) -> ReadPlan:
    opened = await open_source(run.kind, run.block_name, run.instance_name, run.config, run.block_binding)
    p = opened.policy
    adaptive = None
    if p.adaptive and run.opts.batch_size is None and run.incremental:  # an explicit --batch-size stays fixed
        assert p.min_batch_size is not None and p.max_batch_size is not None and p.target_page_seconds
        adaptive = AdaptiveBounds(p.min_batch_size, p.max_batch_size, p.target_page_seconds)
    size = run.opts.batch_size or p.batch_size or 500
    if adaptive is not None:  # start where the last adaptive read of this instance ended
        size = adaptive.clamp(run.adaptive_batch_size or size)
    return ReadPlan(
        batch_size=size,
        adaptive=adaptive,
        retry_delays=p.delays(),
        jitter=p.jitter,
        max_delay=p.max_delay,
        source=opened.describe,
    )


@dataclass(frozen=True)
class Chunk:
    result: engine.ChunkResult
    attempts: int
    repaired: engine.RepairResult | None = None  # the gap ledger's repair, before the pages
    reconciled: dict[str, Any] | None = None  # the per-run reconciliation, after the last page


@task(name="sync-batches", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
async def sync_batches(
    run: engine.InstanceRun,
    count: int,
    max_batches: int,
    max_delay: float = 60,
    adaptive: AdaptiveBounds | None = None,
    repair: bool = False,
    reconcile: bool = False,
    server: tuple[int, int, int] | None = None,
    first_seq: int | None = None,
    resume: tuple[int, int] | None = None,
) -> Chunk:
    """Fetch and store up to ``max_batches`` pages from the committed cursor on (one
    transaction per page). With ``adaptive`` the page size starts at ``count`` and adapts
    within its bounds (the result's ``batch_size`` is where it ended).

    A retry resumes after the last committed page and stops after its first page: the next
    chunk is a new task run with the whole retry budget, so every fetch gets the block's
    max_retries, however long the sync. The gap ledger (dense-seq sources) rides along, with no
    task run of its own: ``repair`` (the run's first chunk) re-reads the open holes first, with
    range reads that never move the cursor; ``reconcile``: when this chunk reaches the end,
    compare the server's counts at the start (``server``/``first_seq``: what earlier chunks
    saw) with the store. ``resume``: the record's committed (cursor, batches) as the flow knows
    it; a retry reads it from the record, and re-reads the gap ledger too (the failed attempt
    may have recorded holes)."""
    opened = await open_source(run.kind, run.block_name, run.instance_name, run.config, run.block_binding)
    attempt = task_run_runtime.get_run_count()
    batches = 1 if attempt > 1 else max_batches
    if attempt > 1:
        run, resume = replace(run, open_holes=None), None

    sizer = AdaptiveBatch(count, adaptive) if adaptive is not None else None

    def work() -> Chunk:
        read = page_reader(opened.source, run.opts)
        repaired = engine.repair_gaps(run, read, count=count) if repair else None
        result = engine.sync_chunk(run, read, count=count, max_batches=batches, sizer=sizer, resume=resume)
        reconciled = None
        if reconcile and not result.has_more and not result.cancelled:
            first = first_seq if first_seq is not None else result.first_seq
            reconciled = engine.reconcile(run, server=server or result.server, first_seq=first)
        return Chunk(result=result, attempts=attempt, repaired=repaired, reconciled=reconciled)

    try:
        chunk = await asyncio.to_thread(work)
    except RateLimitedError as exc:
        await _rate_limited(exc, max_delay)
        raise
    _check_lease(run, "between batches")
    return chunk


@dataclass(frozen=True)
class Snapshot:
    items: list[Any]
    attempts: int


@task(name="read-snapshot", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
async def read_snapshot(run: engine.InstanceRun, max_delay: float = 60) -> Snapshot:
    """Everything the source has for ``run.category`` now. A :class:`SyncError` leaves with
    ``attempts``: how many times this read ran (for the record's details)."""
    opened = await open_source(run.kind, run.block_name, run.instance_name, run.config, run.block_binding)
    attempt = task_run_runtime.get_run_count()
    try:
        items = await asyncio.to_thread(opened.source.read_snapshot, run.category)
    except RateLimitedError as exc:
        exc.attempts = attempt  # type: ignore[attr-defined]
        await _rate_limited(exc, max_delay)
        raise
    except SyncError as exc:
        exc.attempts = attempt  # type: ignore[attr-defined]
        raise
    return Snapshot(items=items, attempts=attempt)


@task(name="store-snapshot", cache_policy=NO_CACHE)
async def store_snapshot(run: engine.InstanceRun, items: list[Any]) -> engine.Stored:
    """Diff/append the snapshot with the record's counts and the lease check, in one transaction."""
    _check_lease(run, "while reading")
    return await asyncio.to_thread(engine.store_snapshot, run, items)


FINISH_RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0)
"""Seconds before each new try of :func:`finish_sync` (a store blip must not leave the record open)."""


async def finish_sync(
    run: engine.InstanceRun,
    outcome: str,
    details: dict[str, Any] | None,
    error: str | None,
    batch_size: int | None = None,
) -> str:
    """Record the outcome and give the lease back (the keeper stops first); tried again after
    each of :data:`FINISH_RETRY_DELAYS` when the store fails. ``batch_size``: the adaptive
    page size reached, remembered in the sync state."""
    lease.release(instance_id=run.instance_id, category=run.category, owner=run.owner)
    for delay in (*FINISH_RETRY_DELAYS, None):
        try:
            return await asyncio.to_thread(
                lambda: engine.finish_instance_sync(
                    run, outcome=outcome, details=details, error=error, batch_size=batch_size
                )
            )
        except Exception:
            if delay is None:
                raise
            log.warning("%s: could not record the outcome (%s); again in %ss", run.instance_name, outcome, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


__all__ = [
    "FINISH_RETRY_DELAYS",
    "Chunk",
    "ReadPlan",
    "Snapshot",
    "begin_sync",
    "drop_preloaded",
    "finish_sync",
    "plan_read",
    "preload_blocks",
    "read_snapshot",
    "retry_transient",
    "store_snapshot",
    "sync_batches",
]
