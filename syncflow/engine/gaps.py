"""Completeness of an incremental sync: late-arrival repair and per-run reconciliation.

**Repair** (:func:`repair_gaps`, before a sync moves forward): the open holes of the gap ledger
(``syncflow.store.gaps``) are re-read with range reads that never move the main cursor.
Neighbouring holes are merged into one read (a read after ``hole.from_seq - 1`` returns the
messages above it: a hole of any width that is still empty costs one read), the reads per run
are capped (``gap_max_reads``; the holes checked longest ago go first, the rest wait for the
next run). What the reads find in holes is stored, counted (``created`` on the record,
``late_arrivals`` in its details) and the holes settled, in one transaction per
:data:`READS_PER_COMMIT` reads (a crash loses at most those reads, which the next run redoes). A hole read
``gap_checks`` times (default 3) and at least ``gap_window_hours`` old (default 24) with
nothing new in it is closed: ``confirmed_empty`` (or ``partly_filled``); until then it is
re-read on every sync. The clock is injectable (``now``).

**Reconciliation** (:func:`reconcile`, at the end of a sync): what the server said at the start
(``totalCount`` messages after the cursor, up to ``maxSeq``) against what the store holds in
that range plus the seqs the ledger's open holes (and a tail not read yet) explain. A
difference they do not explain marks the record with a ``warning``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sqlalchemy import Engine, select, update

from syncflow.engine.run import InstanceRun
from syncflow.errors import ConfigError
from syncflow.sources.base import PageLike
from syncflow.store import gaps as ledger
from syncflow.store import messages as message_store
from syncflow.store import sessions as book
from syncflow.store import sync_state
from syncflow.store.db import get_engine, session_scope
from syncflow.store.models import ItemStatus, SyncConfigItem, SyncInstanceRecord, utcnow
from syncflow.store.sessions import ItemCounts

log = logging.getLogger(__name__)

DEFAULT_WINDOW_HOURS = 24.0
DEFAULT_CHECKS = 3
DEFAULT_MAX_READS = 20
READS_PER_COMMIT = 8  # the repair's reads commit together, this many at a time

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class GapPolicy:
    """How holes are watched: the window, the reads before closing, the reads per run."""

    window_hours: float = DEFAULT_WINDOW_HOURS
    checks: int = DEFAULT_CHECKS
    max_reads: int = DEFAULT_MAX_READS

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(hours=self.window_hours)

    @classmethod
    def of(cls, *sources: dict[str, Any] | None, instance: str = "?") -> GapPolicy:
        """The policy from option mappings, the first that has a key winning (per-run options,
        then the instance's settings); bad values are a :class:`ConfigError` naming them."""
        values: dict[str, Any] = {}
        for key in ("gap_window_hours", "gap_checks", "gap_max_reads"):
            for src in sources:
                if src and src.get(key) is not None:
                    values[key] = src[key]
                    break
        window = values.get("gap_window_hours", DEFAULT_WINDOW_HOURS)
        checks = values.get("gap_checks", DEFAULT_CHECKS)
        max_reads = values.get("gap_max_reads", DEFAULT_MAX_READS)
        if isinstance(window, bool) or not isinstance(window, int | float) or window < 0:
            raise ConfigError(f"instance {instance}: gap_window_hours must be a number >= 0, not {window!r}")
        for name, v in (("gap_checks", checks), ("gap_max_reads", max_reads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"instance {instance}: {name} must be an integer >= 1, not {v!r}")
        return cls(window_hours=float(window), checks=checks, max_reads=max_reads)


@dataclass
class RepairResult:
    """What one repair did (for ``sync_details`` and ``syncflow gaps repair``)."""

    holes: int = 0  # holes to read this run (before the cap)
    reads: int = 0
    late_arrivals: int = 0  # messages found in holes and created
    counts: ItemCounts = field(default_factory=ItemCounts)
    filled: int = 0
    closed_empty: int = 0
    partly_filled: int = 0
    left: int = 0  # holes not read this run (cap)
    seconds: float = 0.0
    record_late: int | None = None  # the record's late_arrivals after this repair (a retry adds to it)

    def details(self) -> dict[str, Any]:
        return {
            "late_arrivals": self.late_arrivals if self.record_late is None else self.record_late,
            "gap_repair": {
                "holes": self.holes,
                "reads": self.reads,
                "filled": self.filled,
                "partly_filled": self.partly_filled,
                "confirmed_empty": self.closed_empty,
                "left_for_next_run": self.left,
                "seconds": round(self.seconds, 3),
            },
        }


def watches_gaps(run: InstanceRun) -> bool:
    """Whether this run keeps the gap ledger: a dense-seq kind, read incrementally, not a range."""
    return run.keeps_gap_ledger


def policy_of(run: InstanceRun, state_options: dict[str, Any] | None = None) -> GapPolicy:
    return GapPolicy.of(run.options, state_options, run.config, instance=run.instance_name)


def group_holes(gaps: Sequence[ledger.Gap], count: int) -> list[list[ledger.Gap]]:
    """Neighbouring holes merged into one read: a read after ``first.from_seq - 1`` returns up
    to ``count`` messages, so holes are merged while the stored messages between them leave
    room for half a page of late arrivals."""
    groups: list[list[ledger.Gap]] = []
    budget = max(count // 2, 1)
    for gap in gaps:
        if groups:
            group = groups[-1]
            between = gap.from_seq - group[-1].to_seq - 1  # at most this many stored messages
            used = sum(g.from_seq - p.to_seq - 1 for p, g in pairwise(group))
            if used + between <= budget:
                group.append(gap)
                continue
        groups.append([gap])
    return groups


def _oldest_check(group: list[ledger.Gap]) -> tuple[int, dt.datetime, int]:
    never = any(g.last_checked is None for g in group)
    checked = min((g.last_checked for g in group if g.last_checked is not None), default=dt.datetime.min)
    return (0 if never else 1, checked.replace(tzinfo=None), group[0].from_seq)


def repair_gaps(
    run: InstanceRun,
    fetch: Callable[[int, int], PageLike],
    *,
    count: int,
    record_id: int | None = -1,
    policy: GapPolicy | None = None,
    now: Clock | None = None,
    every_hole: bool = False,
    engine: Engine | None = None,
) -> RepairResult:
    """Re-read the holes of ``run``'s (instance, category) and store what arrived late.

    ``fetch(after, count)`` is the source's page read. Every :data:`READS_PER_COMMIT` reads
    commit in one transaction: the rows found in their holes, the holes settled
    (:func:`syncflow.store.gaps.settle_holes`), the lease renewed (never the cursor moved)
    and, when ``record_id`` (default: the run's record; None: no record, ``syncflow gaps
    repair``), the record's counts and ``late_arrivals``. ``every_hole``: also the closed
    holes that are not filled, and no cap.
    """
    started = time.perf_counter()
    engine = engine or get_engine()
    clock = now or utcnow
    rid = run.record_id if record_id == -1 else record_id
    out = RepairResult()
    if run.open_holes is False and not every_hole:  # begin saw none, and only this run's pages add holes
        return out
    with engine.connect() as conn:
        with conn.begin():
            state = run.state_options
            if state is None:
                state = conn.scalar(
                    select(SyncConfigItem.options).where(
                        SyncConfigItem.instance_id == run.instance_id, SyncConfigItem.category == run.category
                    )
                )
            statuses = ledger.ACTIVE + (ledger.CLOSED_UNFILLED if every_hole else ())
            gaps = ledger.holes_to_read(conn, instance_id=run.instance_id, category=run.category, statuses=statuses)
        policy = policy or policy_of(run, state)
        out.holes = len(gaps)
        if not gaps:
            return out
        groups = sorted(group_holes(gaps, count), key=_oldest_check)
        max_reads = None if every_hole else policy.max_reads
        message_store.prepare(conn)
        batch = _Batch()
        for n, group in enumerate(groups):
            if max_reads is not None and out.reads >= max_reads:
                out.left = sum(len(g) for g in groups[n:])
                break
            _read_group(fetch, group, count=count, out=out, batch=batch)
            if batch.reads >= READS_PER_COMMIT:
                _commit(run, conn, batch, record_id=rid, policy=policy, clock=clock, out=out)
                batch = _Batch()
        _commit(run, conn, batch, record_id=rid, policy=policy, clock=clock, out=out)
    out.seconds = time.perf_counter() - started
    return out


@dataclass
class _Batch:
    """What reads found since the last commit: the rows in holes, the holes they covered."""

    reads: int = 0
    rows: list[Any] = field(default_factory=list)
    done: list[tuple[ledger.Gap, int]] = field(default_factory=list)  # (hole, seqs found in it)


def _read_group(
    fetch: Callable[[int, int], PageLike],
    group: list[ledger.Gap],
    *,
    count: int,
    out: RepairResult,
    batch: _Batch,
) -> None:
    """Read one group of holes: usually one read, asking for no more messages than the group
    has seqs (a one-seq hole is a one-message read); a group whose messages fill more than a
    page takes more. A hole is done once a read has covered it."""
    after = group[0].from_seq - 1
    end = group[-1].to_seq
    pending = list(group)
    seen: dict[int, set[int]] = {g.id: set() for g in group}  # seqs the reads returned in each hole
    while pending:
        page = fetch(after, max(1, min(count, end - after)))
        out.reads += 1
        batch.reads += 1
        rows = list(page.rows)
        covered = rows[-1][2] if rows and page.has_more else None  # None: the group's end was reached
        for r in rows:
            for g in pending:
                if g.from_seq <= r[2] <= g.to_seq:
                    batch.rows.append(r)
                    seen[g.id].add(r[2])
                    break
        done = [g for g in pending if covered is None or g.to_seq <= covered]
        batch.done.extend((g, len(seen[g.id])) for g in done)
        pending = [g for g in pending if g not in done]
        if covered is None or not rows:
            return
        after = max(after, covered)


def _commit(
    run: InstanceRun,
    conn: Any,
    batch: _Batch,
    *,
    record_id: int | None,
    policy: GapPolicy,
    clock: Clock,
    out: RepairResult,
) -> None:
    """One transaction for the reads of ``batch``: the rows found in holes, the lease renewed
    (the cursor never moves), the holes settled, the record's counts and ``late_arrivals``."""
    if not batch.reads:
        return
    with conn.begin():
        counts = message_store.apply_message_batch(
            conn, instance_id=run.instance_id, rows=batch.rows, session_id=run.session_id or None
        )
        sync_state.advance_cursor(
            conn,
            instance_id=run.instance_id,
            category=run.category,
            owner=run.owner,
            last_seq=None,  # range reads: renew the lease, never move the cursor
            lease_seconds=run.lease_seconds,
        )
        settled = ledger.settle_holes(
            conn,
            gaps=[g for g, _ in batch.done],
            now=clock(),
            window=policy.window,
            checks=policy.checks,
            found={g.id: n for g, n in batch.done},
        )
        if record_id is not None:
            out.record_late = _count_on_record(conn, record_id, counts)
    out.counts = out.counts + counts
    out.late_arrivals += counts.created
    for st in settled:
        out.filled += st.status == "filled"
        out.closed_empty += st.status == "confirmed_empty"
        out.partly_filled += st.status == "partly_filled"


def repair_now(
    *,
    instance_id: int,
    instance_name: str,
    kind: str,
    fetch: Callable[[int, int], PageLike],
    count: int = 500,
    category: str = "messages",
    lease_seconds: float = 120.0,
    now: Clock | None = None,
    engine: Engine | None = None,
) -> RepairResult:
    """``syncflow gaps repair``: read every hole of an instance that is not filled, whatever its
    age and status, now, under the (instance, category) lease (:class:`LockedError` while a
    sync holds it). No session record: the counts are returned."""
    engine = engine or get_engine()
    owner = f"gaps-repair:{uuid.uuid4().hex[:12]}"
    with session_scope(engine) as s:
        before = s.execute(
            select(SyncConfigItem.status, SyncConfigItem.last_error, SyncConfigItem.last_sync_time).where(
                SyncConfigItem.instance_id == instance_id, SyncConfigItem.category == category
            )
        ).first()
        status, error, synced_at = before if before is not None else (ItemStatus.IDLE.value, None, None)
        sync_state.acquire_lock(s, instance_id=instance_id, category=category, owner=owner, lease_seconds=lease_seconds)
    run = InstanceRun(
        record_id=0,
        session_id="",
        instance_id=instance_id,
        instance_name=instance_name,
        kind=kind,
        block_name=None,
        category=category,
        owner=owner,
        lease_seconds=lease_seconds,
        start_seq=0,
    )
    try:
        return repair_gaps(run, fetch, count=count, record_id=None, now=now, every_hole=True, engine=engine)
    finally:
        with session_scope(engine) as s:
            sync_state.release_lock(
                s,
                instance_id=instance_id,
                category=category,
                owner=owner,
                status=ItemStatus.FAILED.value if status == ItemStatus.RUNNING.value else status,
                error=error,
            )
            s.execute(  # a repair is not a sync: the state says when the last sync was, as before
                update(SyncConfigItem)
                .where(SyncConfigItem.instance_id == instance_id, SyncConfigItem.category == category)
                .values(last_sync_time=synced_at)
                .execution_options(synchronize_session=False)
            )


def _count_on_record(conn: Any, record_id: int, counts: ItemCounts) -> int:
    """Add a repair commit's counts to the record; returns its ``late_arrivals`` now."""
    details = conn.scalar(select(SyncInstanceRecord.sync_details).where(SyncInstanceRecord.id == record_id)) or {}
    late = int(details.get("late_arrivals") or 0) + counts.created
    book.add_record_progress(conn, record_id=record_id, counts=counts, details={"late_arrivals": late})
    return late


def reconcile(
    run: InstanceRun,
    *,
    server: Sequence[int] | None,
    first_seq: int | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Compare what the server said at the start of the run with the store, and mark the
    record with a ``warning`` when the gap ledger cannot explain the difference.

    ``server`` is ``(cursor asked, totalCount, maxSeq)`` of the run's first page: the server had
    ``totalCount`` messages in ``cursor < seq <= maxSeq`` (``first_seq``: the first seq a first
    read, from cursor 0, saw; the seqs below it are not the source's). Two checks:

    * seqs: every seq of the range the run read is stored or inside a recorded hole (dense
      seqs: one that is neither was lost, e.g. two seqs sharing one message id);
    * count: the server's count is at most what the store holds plus the seqs of the open
      holes plus the seqs above the cursor the run ended at (read by the next run).

    Returns the ``reconciliation`` entry of ``sync_details`` ({} when there is nothing to check).
    """
    if server is None or not watches_gaps(run):
        return {}
    after, expected, max_seq = (int(v) for v in server)
    if after == 0 and first_seq:
        after = first_seq - 1
    engine = engine or get_engine()
    with engine.begin() as conn:
        cursor = conn.scalar(
            select(SyncConfigItem.last_seq).where(
                SyncConfigItem.instance_id == run.instance_id, SyncConfigItem.category == run.category
            )
        )
        upto = min(max_seq, max(int(cursor or 0), after))  # the part of the range the run read
        stored, stored_read = ledger.stored_split(conn, instance_id=run.instance_id, after=after, upto=upto, to=max_seq)
        holes, hole_empty, open_empty = ledger.hole_accounting(
            conn, instance_id=run.instance_id, category=run.category, after=after, upto=upto
        )
        tail = max_seq - upto
        unaccounted = max((upto - after) - stored_read - hole_empty, 0)
        uncounted = max(expected - stored - open_empty - tail, 0)
        unexplained = max(unaccounted, uncounted)
        rec: dict[str, Any] = {
            "expected": expected,
            "stored": stored,
            "seq_range": [after + 1, max_seq] if max_seq > after else None,
            "open_holes": holes,
            "open_hole_seqs": open_empty,
            "not_read_yet": tail,
            "unaccounted_seqs": unaccounted,
            "unexplained": unexplained,
        }
        if unexplained:
            why = []
            if unaccounted:
                why.append(f"{unaccounted} seq(s) of {after + 1}..{upto} neither stored nor in a recorded hole")
            if uncounted:
                why.append(
                    f"the server counted {expected} messages at the start, the store holds {stored} "
                    f"and the gap ledger explains {open_empty + tail}"
                )
            warning = (
                f"{run.instance_name}: reconciliation: {unexplained} missing without a recorded hole ("
                + "; ".join(why)
                + ")"
            )
            conn.execute(
                update(SyncInstanceRecord).where(SyncInstanceRecord.id == run.record_id).values(warning=warning)
            )
            rec["warning"] = warning
            log.warning("%s", warning)
    return {"reconciliation": rec}


__all__ = [
    "DEFAULT_CHECKS",
    "DEFAULT_MAX_READS",
    "DEFAULT_WINDOW_HOURS",
    "GapPolicy",
    "RepairResult",
    "group_holes",
    "policy_of",
    "reconcile",
    "repair_gaps",
    "repair_now",
    "watches_gaps",
]
