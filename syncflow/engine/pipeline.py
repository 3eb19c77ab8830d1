"""The steps of one instance sync, as plain functions the Prefect tasks wrap.

Each step is one transaction (``session_scope``): begin (record running + single-flight
lease), apply one page (rows + cursor + record counters together), finish (record outcome +
lease released). A crash between steps loses nothing: the cursor only ever covers committed
rows, and the lease runs out by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncflow.errors import ConfigError, IllegalTransitionError, LockedError
from syncflow.sources.http_seq import Page
from syncflow.store import messages as message_store
from syncflow.store import sessions as book
from syncflow.store import sync_state
from syncflow.store.conversations import ConversationRow, apply_conversations
from syncflow.store.db import get_engine, session_scope
from syncflow.store.messages import MessageRow, apply_message_batch
from syncflow.store.models import (
    Instance,
    ItemStatus,
    RecordStatus,
    SessionStatus,
    SyncInstanceRecord,
    SyncSession,
)
from syncflow.store.sessions import ItemCounts

log = logging.getLogger(__name__)

MAX_HOLES_LISTED = 20


@dataclass(frozen=True)
class SyncOptions:
    """Per-instance, per-run options (JSON: flow parameters, record options, state options).

    ``full`` resets the cursor first; ``from_seq``/``to_seq`` backfill a seq range without
    moving the main cursor; ``batch_size`` overrides the block's.
    """

    full: bool = False
    from_seq: int | None = None
    to_seq: int | None = None
    batch_size: int | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, *, instance: str = "?") -> SyncOptions:
        raw = dict(raw or {})
        aliases = {"fromSeq": "from_seq", "toSeq": "to_seq", "batchSize": "batch_size"}
        for alias, name in aliases.items():
            if alias in raw:
                raw[name] = raw.pop(alias)
        if "incremental" in raw:
            raw["full"] = not bool(raw.pop("incremental"))
        unknown = sorted(set(raw) - {"full", "from_seq", "to_seq", "batch_size"})
        if unknown:
            raise ConfigError(f"instance {instance}: unknown sync option(s): {', '.join(unknown)}")
        opts = cls(**raw)
        for name in ("from_seq", "to_seq"):
            v = getattr(opts, name)
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ConfigError(f"instance {instance}: {name} must be a non-negative integer, not {v!r}")
        if opts.from_seq is not None and opts.to_seq is not None and opts.from_seq > opts.to_seq:
            raise ConfigError(f"instance {instance}: from_seq {opts.from_seq} is above to_seq {opts.to_seq}")
        if opts.to_seq is not None and opts.from_seq is None:
            raise ConfigError(f"instance {instance}: to_seq needs from_seq")
        if opts.batch_size is not None and not (isinstance(opts.batch_size, int) and 1 <= opts.batch_size <= 10_000):
            raise ConfigError(f"instance {instance}: batch_size must be 1..10000, not {opts.batch_size!r}")
        if opts.full and opts.from_seq is not None:
            raise ConfigError(f"instance {instance}: full re-sync and a seq range exclude each other")
        return opts

    @property
    def is_range(self) -> bool:
        return self.from_seq is not None


@dataclass
class InstanceRun:
    """What the steps of one instance sync share (JSON-serialisable; no secrets)."""

    record_id: int
    session_id: str
    instance_id: int
    instance_name: str
    kind: str
    block_name: str | None
    category: str
    owner: str
    lease_seconds: float
    start_seq: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def opts(self) -> SyncOptions:
        return SyncOptions.parse(self.options, instance=self.instance_name)


@dataclass
class Skipped:
    record_id: int
    reason: str


def begin_instance_sync(
    *,
    record_id: int,
    owner: str,
    lease_seconds: float,
    flow_run_id: str | None = None,
    options: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> InstanceRun | Skipped:
    """Mark the record running and take the (instance, category) lease.

    When another sync holds the lease the record ends ``skipped`` with the holder named.
    """
    engine = engine or get_engine()
    with session_scope(engine) as s:
        rec = book.get_record(s, record_id=record_id)
        inst = s.get(Instance, rec.instance_id)
        assert inst is not None
        merged = {**(rec.options or {}), **(options or {})}
        opts = SyncOptions.parse(merged, instance=inst.name)
        book.start_instance_sync(s, record_id=record_id, flow_run_id=flow_run_id)
        run_base = {
            "record_id": record_id,
            "session_id": rec.session_id,
            "instance_id": inst.id,
            "instance_name": inst.name,
            "kind": inst.kind,
            "block_name": inst.block_name,
            "category": rec.sync_category,
        }
    try:
        with session_scope(engine) as s:
            sync_state.acquire_lock(
                s,
                instance_id=run_base["instance_id"],
                category=run_base["category"],
                owner=owner,
                lease_seconds=lease_seconds,
            )
            if opts.full:
                sync_state.reset_cursor(
                    s, instance_id=run_base["instance_id"], category=run_base["category"], owner=owner
                )
            state = sync_state.get_state(s, instance_id=run_base["instance_id"], category=run_base["category"])
    except LockedError as exc:
        reason = f"{run_base['instance_name']}: {exc}"
        with session_scope(engine) as s:
            book.skip_instance_sync(s, record_id=record_id, reason=reason)
        log.info("skipped %s", reason)
        return Skipped(record_id=record_id, reason=reason)
    start = (opts.from_seq - 1 if opts.from_seq else 0) if opts.is_range else (state.last_seq or 0)
    return InstanceRun(
        **run_base,
        owner=owner,
        lease_seconds=lease_seconds,
        start_seq=max(start, 0),
        options=asdict(opts),
    )


@dataclass
class BatchResult:
    counts: ItemCounts
    cursor: int
    first_seq: int | None
    last_seq: int | None
    holes: list[tuple[int, int]]
    stop: bool  # the range end was reached
    cancelled: str | None = None  # why the sync must stop at this boundary


def seq_holes(seqs: Sequence[int], after: int) -> list[tuple[int, int]]:
    """Missing seq ranges (inclusive) in ``seqs`` (ascending), counting from ``after``."""
    holes: list[tuple[int, int]] = []
    prev = after
    for s in seqs:
        if s <= prev:
            continue
        if s > prev + 1:
            holes.append((prev + 1, s - 1))
        prev = s
    return holes


def apply_batch(
    run: InstanceRun,
    *,
    rows: Sequence[MessageRow],
    last_seq: int,
    batch_no: int,
    remaining: int | None = None,
    engine: Engine | None = None,
    connection: Connection | None = None,
) -> BatchResult:
    """Store one validated page: rows, cursor and the record's counters in one transaction.

    ``last_seq`` is the cursor the page was requested with; ``remaining`` how many messages
    the source still has after this page (for progress). Rows at or below it are stored
    (deduplicated, usually unchanged) but never move the cursor back. In range mode rows
    above ``to_seq`` are dropped and the main cursor is left alone. ``connection`` lets a
    caller that stores many batches keep one connection (it must not be in a transaction).
    """
    opts = run.opts
    stop = False
    if opts.to_seq is not None:
        kept = [r for r in rows if r[2] <= opts.to_seq]
        stop = len(kept) < len(rows) or (bool(kept) and kept[-1][2] >= opts.to_seq)
        rows = kept
    seqs = [r[2] for r in rows]
    new = [s for s in seqs if s > last_seq]
    cursor = max(last_seq, new[-1]) if new else last_seq
    with ExitStack() as stack:
        conn = connection or stack.enter_context((engine or get_engine()).connect())
        with conn.begin():
            counts = apply_message_batch(conn, instance_id=run.instance_id, rows=rows, session_id=run.session_id)
            sync_state.advance_cursor(
                conn,
                instance_id=run.instance_id,
                category=run.category,
                owner=run.owner,
                last_seq=None if opts.is_range else cursor,
                lease_seconds=run.lease_seconds,
            )
            statuses = book.add_record_progress(
                conn,
                record_id=run.record_id,
                counts=counts,
                details={"batches": batch_no, "cursor": cursor, "remaining": remaining},
            )
    return BatchResult(
        counts=counts,
        cursor=cursor,
        first_seq=new[0] if new else None,
        last_seq=new[-1] if new else None,
        holes=seq_holes(seqs, last_seq),
        stop=stop,
        cancelled=_cancel_reason_of(run, *statuses),
    )


def resume_point(run: InstanceRun, *, engine: Engine | None = None) -> tuple[int, int]:
    """(cursor, batches) this record has committed so far — where a (re)tried chunk starts.

    A retried chunk must not re-store what an earlier attempt committed: counts stay exact.
    """
    with session_scope(engine or get_engine()) as s:
        details = s.scalar(select(SyncInstanceRecord.sync_details).where(SyncInstanceRecord.id == run.record_id))
    details = details or {}
    cursor = details.get("cursor")
    if isinstance(cursor, int):
        return cursor, int(details.get("batches") or 0)
    return run.start_seq, 0


@dataclass
class ChunkResult:
    """What one chunk of batches (one Prefect task run) did."""

    cursor: int
    batch_no: int
    batches: int = 0
    new: int = 0
    counts: ItemCounts = field(default_factory=ItemCounts)
    has_more: bool = True
    remaining: int | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    holes: list[tuple[int, int]] = field(default_factory=list)
    nbytes: int = 0
    store_seconds: float = 0.0
    stop: bool = False
    cancelled: str | None = None


def sync_chunk(
    run: InstanceRun,
    fetch: Callable[[int, int], Page],
    *,
    count: int,
    max_batches: int,
    engine: Engine | None = None,
) -> ChunkResult:
    """Fetch and store up to ``max_batches`` pages from the committed cursor on, one
    transaction per page, fetching the next page while the current one is stored.

    Stops early at the end of the source (hasMore=false), the end of a range, or when the
    session was cancelled. Any error propagates after the batches before it committed.
    """
    engine = engine or get_engine()
    last, batch_no = resume_point(run, engine=engine)
    out = ChunkResult(cursor=last, batch_no=batch_no)
    to_seq = run.opts.to_seq
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fetch-{run.instance_name}")
    try:
        with engine.connect() as conn:
            message_store.prepare(conn)
            pending = pool.submit(fetch, last, count)
            while True:
                page = pending.result()
                in_range = to_seq is None or not page.rows or page.rows[-1][2] < to_seq
                more = page.has_more and in_range
                prefetch = more and out.batches + 1 < max_batches
                pending = pool.submit(fetch, page.cursor_after(last), count) if prefetch else None
                started = time.perf_counter()
                new = sum(1 for r in page.rows if r[2] > last)
                result = apply_batch(
                    run,
                    rows=page.rows,
                    last_seq=last,
                    batch_no=out.batch_no + 1,
                    remaining=max(page.total_count - new, 0),
                    connection=conn,
                )
                out.store_seconds += time.perf_counter() - started
                out.batch_no += 1
                out.batches += 1
                out.new += new
                out.nbytes += page.nbytes
                out.counts = out.counts + result.counts
                out.holes.extend(result.holes)
                if result.first_seq is not None and out.first_seq is None:
                    out.first_seq = result.first_seq
                if result.last_seq is not None:
                    out.last_seq = result.last_seq
                out.remaining = max(page.total_count - new, 0)
                last = out.cursor = result.cursor
                out.has_more = more and not result.stop
                out.stop = result.stop
                out.cancelled = result.cancelled
                if pending is None or result.stop or result.cancelled:
                    return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def apply_metadata(
    run: InstanceRun, *, conversations: Sequence[ConversationRow], engine: Engine | None = None
) -> ItemCounts:
    """Store a conversations snapshot with the record's counts, in one transaction."""
    engine = engine or get_engine()
    with session_scope(engine) as s:
        diff = apply_conversations(
            s, instance_id=run.instance_id, snapshot=conversations, instance_name=run.instance_name
        )
        details: dict[str, Any] = diff.details()
        if diff.changed:
            details["metadata_version"] = sync_state.bump_metadata_version(
                s, instance_id=run.instance_id, category=run.category
            )
        sync_state.advance_cursor(
            s,
            instance_id=run.instance_id,
            category=run.category,
            owner=run.owner,
            last_seq=None,
            lease_seconds=run.lease_seconds,
        )
        book.add_record_progress(s, record_id=run.record_id, counts=diff.counts, details=details)
    return diff.counts


def _cancel_reason_of(run: InstanceRun, session_status: str, record_status: str) -> str | None:
    if session_status == SessionStatus.CANCELLED or record_status == RecordStatus.CANCELLED:
        return f"session {run.session_id} was cancelled"
    return None


def _cancel_reason(s: Session, run: InstanceRun) -> str | None:
    row = s.execute(
        select(SyncSession.status, SyncInstanceRecord.status)
        .join(SyncInstanceRecord, SyncInstanceRecord.session_id == SyncSession.session_id)
        .where(SyncInstanceRecord.id == run.record_id)
    ).one()
    return _cancel_reason_of(run, row[0], row[1])


def should_stop(run: InstanceRun, *, engine: Engine | None = None) -> str | None:
    """Why the sync should stop at this boundary (session or record cancelled), or None."""
    with session_scope(engine or get_engine()) as s:
        return _cancel_reason(s, run)


def finish_instance_sync(
    run: InstanceRun,
    *,
    outcome: str,
    details: dict[str, Any] | None = None,
    error: str | None = None,
    engine: Engine | None = None,
) -> str:
    """Record how the sync ended and give the lease back. Returns the record's final status.

    ``outcome`` is completed | failed | cancelled. When the session was cancelled meanwhile
    the record is already cancelled: only the details and the lease are settled.
    """
    status = RecordStatus.parse(outcome, what="outcome")
    engine = engine or get_engine()
    with session_scope(engine) as s:
        try:
            if status == RecordStatus.COMPLETED:
                book.complete_instance_sync(s, record_id=run.record_id, details=details)
            elif status == RecordStatus.FAILED:
                book.fail_instance_sync(s, record_id=run.record_id, error_message=error or "failed", details=details)
            else:
                book.cancel_instance_sync(s, record_id=run.record_id, reason=error, details=details)
        except IllegalTransitionError:
            rec = book.get_record(s, record_id=run.record_id)
            if details:
                rec.sync_details = {**(rec.sync_details or {}), **details}
            status = RecordStatus(rec.status)
        item_status = {
            RecordStatus.COMPLETED: ItemStatus.COMPLETED,
            RecordStatus.FAILED: ItemStatus.FAILED,
        }.get(status, ItemStatus.CANCELLED)
        sync_state.release_lock(
            s,
            instance_id=run.instance_id,
            category=run.category,
            owner=run.owner,
            status=item_status.value,
            error=error if status == RecordStatus.FAILED else None,
        )
    return status.value


class BatchClock:
    """Collects the metrics that end up in ``sync_details``."""

    def __init__(self, start_seq: int) -> None:
        self.t0 = time.perf_counter()
        self.batches = 0  # stored by this run
        self.batch_no = 0  # the record's batch count after the last finished chunk
        self.batch_seconds = 0.0
        self.bytes = 0
        self.retries = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.start_seq = start_seq
        self.holes: list[tuple[int, int]] = []
        self.hole_count = 0
        self.counts = ItemCounts()

    def add_chunk(self, chunk: ChunkResult, *, retries: int) -> None:
        self.batches += chunk.batches
        self.batch_no = chunk.batch_no
        self.batch_seconds += chunk.store_seconds
        self.bytes += chunk.nbytes
        self.retries += retries
        self.counts = self.counts + chunk.counts
        if chunk.first_seq is not None and self.first_seq is None:
            self.first_seq = chunk.first_seq
        if chunk.last_seq is not None:
            self.last_seq = chunk.last_seq
        self._holes(chunk.holes)

    def _holes(self, holes: list[tuple[int, int]]) -> None:
        self.hole_count += sum(b - a + 1 for a, b in holes)
        room = MAX_HOLES_LISTED - len(self.holes)
        if room > 0:
            self.holes.extend(holes[:room])

    def details(self, *, complete: bool = True) -> dict[str, Any]:
        """The metrics for ``sync_details``. After a failure (``complete=False``) the batch
        count is left out: each batch's own transaction keeps the record's count right even
        when a chunk failed half-way, and this clock did not see that chunk's batches."""
        duration = time.perf_counter() - self.t0
        return {
            **({"batches": self.batch_no} if complete else {}),
            "seq_range": [self.first_seq, self.last_seq],
            "start_cursor": self.start_seq,
            "duration_s": round(duration, 3),
            "avg_batch_s": round(self.batch_seconds / self.batches, 4) if self.batches else None,
            "throughput_msgs_per_s": round(self.counts.synced / duration, 1) if duration > 0 else None,
            "retries": self.retries,
            "bytes": self.bytes,
            "seq_holes": self.hole_count,
            "seq_hole_ranges": [list(h) for h in self.holes],
            "created": self.counts.created,
            "updated": self.counts.updated,
            "unchanged": self.counts.unchanged,
        }


__all__ = [
    "BatchClock",
    "BatchResult",
    "InstanceRun",
    "Skipped",
    "SyncOptions",
    "apply_batch",
    "apply_metadata",
    "begin_instance_sync",
    "finish_instance_sync",
    "seq_holes",
    "should_stop",
]
