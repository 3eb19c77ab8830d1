"""The incremental read of one instance: pages after the cursor, each stored in one transaction.

A page's rows, the advanced cursor and the record's counters commit together
(:func:`apply_batch`); a chunk (:func:`sync_chunk`, one Prefect task run) stores up to N pages
from the committed cursor on, fetching the next page while the current one is stored. A retried
chunk resumes after the last committed page (:func:`resume_point`), so counts stay exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from syncflow.engine.batch_size import AdaptiveBatch
from syncflow.engine.run import InstanceRun, cancel_reason_of
from syncflow.sources.base import PageLike, source_kind
from syncflow.store import gaps as gap_ledger
from syncflow.store import messages as message_store
from syncflow.store import page_commit, sync_state
from syncflow.store import sessions as book
from syncflow.store.db import get_engine, session_scope
from syncflow.store.messages import MessageRow, apply_message_batch
from syncflow.store.models import SyncInstanceRecord
from syncflow.store.sessions import ItemCounts


@dataclass
class BatchResult:
    counts: ItemCounts
    cursor: int
    first_seq: int | None
    last_seq: int | None
    holes: list[tuple[int, int]]
    stop: bool  # the range end was reached
    cancelled: str | None = None  # why the sync must stop at this boundary
    recorded: list[tuple[int, int]] = field(default_factory=list)  # holes new to the gap ledger


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


def ledger_holes(run: InstanceRun, holes: list[tuple[int, int]], last_seq: int) -> list[tuple[int, int]]:
    """The holes of a page that go into the gap ledger: none for a source whose seqs are not
    dense (Telegram), and not the seqs below the first one a first read (cursor 0) sees: the
    source's sequence starts where it starts."""
    if not holes or not source_kind(run.kind).dense_seq:
        return []
    if last_seq == 0 and not run.opts.is_range and holes[0][0] == 1:
        return holes[1:]
    return holes


def _server_counts(page: PageLike, asked: int) -> tuple[int, int, int] | None:
    max_seq = getattr(page, "max_seq", None)
    if page.total_count is None or not isinstance(max_seq, int):
        return None
    return (asked, page.total_count, max_seq)


def _remaining(page: PageLike, new: int) -> int | None:
    """How many items the source still has after this page, when it says how many it has."""
    return None if page.total_count is None else max(page.total_count - new, 0)


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
    holes = seq_holes(seqs, last_seq)
    to_record = ledger_holes(run, holes, last_seq)
    recorded: list[tuple[int, int]] = []
    details = {"batches": batch_no, "cursor": cursor, "remaining": remaining}
    with ExitStack() as stack:
        conn = connection or stack.enter_context((engine or get_engine()).connect())
        with conn.begin():
            if rows and not to_record and conn.dialect.name == "postgresql":
                # the usual page: rows, cursor + lease and counters in one statement
                counts, statuses = page_commit.commit_page(
                    conn,
                    instance_id=run.instance_id,
                    category=run.category,
                    owner=run.owner,
                    record_id=run.record_id,
                    session_id=run.session_id,
                    rows=rows,
                    last_seq=None if opts.is_range else cursor,
                    lease_seconds=run.lease_seconds,
                    details=details,
                )
            else:
                counts = apply_message_batch(conn, instance_id=run.instance_id, rows=rows, session_id=run.session_id)
                sync_state.advance_cursor(
                    conn,
                    instance_id=run.instance_id,
                    category=run.category,
                    owner=run.owner,
                    last_seq=None if opts.is_range else cursor,
                    lease_seconds=run.lease_seconds,
                )
                if to_record:  # the page that revealed a hole records it, in its own transaction
                    recorded = gap_ledger.record_holes(
                        conn,
                        instance_id=run.instance_id,
                        category=run.category,
                        holes=to_record,
                        session_id=run.session_id,
                    )
                statuses = book.add_record_progress(conn, record_id=run.record_id, counts=counts, details=details)
    return BatchResult(
        counts=counts,
        cursor=cursor,
        first_seq=new[0] if new else None,
        last_seq=new[-1] if new else None,
        holes=holes,
        stop=stop,
        cancelled=cancel_reason_of(run, *statuses),
        recorded=recorded,
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
    recorded_holes: int = 0  # holes new to the gap ledger
    # (cursor asked, totalCount, maxSeq) of the chunk's first page: what the server said it had
    server: tuple[int, int, int] | None = None
    nbytes: int = 0
    store_seconds: float = 0.0
    stop: bool = False
    cancelled: str | None = None
    batch_size: int | None = None  # adaptive: the page size reached (the next chunk starts from it)


def sync_chunk(
    run: InstanceRun,
    fetch: Callable[[int, int], PageLike],
    *,
    count: int,
    max_batches: int,
    engine: Engine | None = None,
    sizer: AdaptiveBatch | None = None,
    resume: tuple[int, int] | None = None,
) -> ChunkResult:
    """Fetch and store up to ``max_batches`` pages from the committed cursor on, one
    transaction per page, fetching the next page while the current one is stored.

    Stops early at the end of the source (hasMore=false), the end of a range, or when the
    session was cancelled. Any error propagates after the batches before it committed.
    With ``sizer`` the page size adapts after every page (``count`` is then its start).
    ``resume``: (cursor, batches) where the caller knows the record's committed point (the end
    of the chunk before, or the start); None reads it from the record (a retried chunk).
    """
    if sizer is not None:
        fetch = sizer.timed(fetch)
        count = sizer.size
    engine = engine or get_engine()
    last, batch_no = resume if resume is not None else resume_point(run, engine=engine)
    out = ChunkResult(cursor=last, batch_no=batch_no)
    to_seq = run.opts.to_seq
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fetch-{run.instance_name}")
    try:
        with engine.connect() as conn:
            message_store.prepare(conn)
            current: Future[PageLike] = pool.submit(fetch, last, count)
            while True:
                page = current.result()
                if out.server is None:
                    out.server = _server_counts(page, last)
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
                    remaining=_remaining(page, new),
                    connection=conn,
                )
                out.store_seconds += time.perf_counter() - started
                if sizer is not None:
                    spent = time.perf_counter() - started
                    count = out.batch_size = sizer.observe(after=last, rows=len(page.rows), store_seconds=spent)
                out.batch_no += 1
                out.batches += 1
                out.new += new
                out.nbytes += page.nbytes
                out.counts = out.counts + result.counts
                out.holes.extend(result.holes)
                out.recorded_holes += len(result.recorded)
                if result.first_seq is not None and out.first_seq is None:
                    out.first_seq = result.first_seq
                if result.last_seq is not None:
                    out.last_seq = result.last_seq
                out.remaining = _remaining(page, new)
                last = out.cursor = result.cursor
                out.has_more = more and not result.stop
                out.stop = result.stop
                out.cancelled = result.cancelled
                if pending is None or result.stop or result.cancelled:
                    return out
                current = pending
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["BatchResult", "ChunkResult", "apply_batch", "ledger_holes", "resume_point", "seq_holes", "sync_chunk"]
