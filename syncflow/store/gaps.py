"""The gap ledger (``seq_gaps``): every seq hole an incremental page revealed, and what became of it.

A hole is recorded by :func:`record_holes` in the transaction of the page that revealed it
(with the page's rows and the advanced cursor), so a crash can neither lose one nor record one
twice. Holes already covered by a recorded one (a full re-sync or a backfill reading the same
seqs again) are not recorded again. Later syncs re-read the open holes
(``syncflow.engine.gaps``) and settle them with :func:`settle_holes`: ``found`` is always
recounted from the store, so a re-read after a crash counts each late message once.

Statuses: ``open`` (watched), ``filled`` (every seq arrived), ``partly_filled`` (the watch
ended with some seqs found), ``confirmed_empty`` (read ``checks`` times across the window and
nothing came). Seqs are BIGINT (up to 2^63-1); widths are summed in Python (a sum of widths
can pass 2^63).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncflow.store.models import GapStatus, Instance, Message, SeqGap, utcnow

ACTIVE = (GapStatus.OPEN.value,)
CLOSED_UNFILLED = (GapStatus.PARTLY_FILLED.value, GapStatus.CONFIRMED_EMPTY.value)


@dataclass(frozen=True)
class Gap:
    """One ledger row, detached from any session."""

    id: int
    instance_id: int
    category: str
    from_seq: int
    to_seq: int
    first_seen: dt.datetime
    last_checked: dt.datetime | None
    checks: int
    status: str
    found: int

    @property
    def width(self) -> int:
        return self.to_seq - self.from_seq + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            # exact as text too: seqs pass 2^53, where JavaScript's numbers stop being exact
            "seqs": str(self.from_seq) if self.from_seq == self.to_seq else f"{self.from_seq}..{self.to_seq}",
            "width": self.width,
            "status": self.status,
            "found": self.found,
            "checks": self.checks,
            "first_seen": self.first_seen.isoformat(),
            "last_checked": self.last_checked.isoformat() if self.last_checked else None,
            "category": self.category,
        }


_COLUMNS = (
    SeqGap.id,
    SeqGap.instance_id,
    SeqGap.category,
    SeqGap.from_seq,
    SeqGap.to_seq,
    SeqGap.first_seen,
    SeqGap.last_checked,
    SeqGap.checks,
    SeqGap.status,
    SeqGap.found,
)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _gap(row: Any) -> Gap:
    return Gap(
        id=int(row[0]),
        instance_id=int(row[1]),
        category=str(row[2]),
        from_seq=int(row[3]),
        to_seq=int(row[4]),
        first_seen=_aware(row[5]) or utcnow(),
        last_checked=_aware(row[6]),
        checks=int(row[7]),
        status=str(row[8]),
        found=int(row[9]),
    )


def _conn(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def record_holes(
    db: Session | Connection,
    *,
    instance_id: int,
    category: str,
    holes: Sequence[tuple[int, int]],
    session_id: str | None = None,
    now: dt.datetime | None = None,
) -> list[tuple[int, int]]:
    """Record ``holes`` (inclusive seq ranges) as open, in the caller's transaction; never commits.

    A hole that overlaps one already in the ledger is not recorded again (re-reading seqs
    already read: a full re-sync, a backfill). Returns the holes recorded.
    """
    if not holes:
        return []
    conn = _conn(db)
    lo = min(a for a, _ in holes)
    hi = max(b for _, b in holes)
    known = [
        (int(a), int(b))
        for a, b in conn.execute(
            select(SeqGap.from_seq, SeqGap.to_seq).where(
                SeqGap.instance_id == instance_id,
                SeqGap.category == category,
                SeqGap.from_seq <= hi,
                SeqGap.to_seq >= lo,
            )
        )
    ]
    new = [(a, b) for a, b in holes if not any(ka <= b and kb >= a for ka, kb in known)]
    if new:
        when = _naive(now or utcnow())
        conn.execute(
            insert(SeqGap),
            [
                {
                    "instance_id": instance_id,
                    "category": category,
                    "from_seq": a,
                    "to_seq": b,
                    "first_seen": when,
                    "checks": 0,
                    "status": GapStatus.OPEN.value,
                    "found": 0,
                    "session_id": session_id,
                }
                for a, b in new
            ],
        )
    return new


def holes_to_read(
    db: Session | Connection, *, instance_id: int, category: str, statuses: Iterable[str] = ACTIVE
) -> list[Gap]:
    """The holes with one of ``statuses`` (default: open), ascending by seq."""
    rows = _conn(db).execute(
        select(*_COLUMNS)
        .where(
            SeqGap.instance_id == instance_id,
            SeqGap.category == category,
            SeqGap.status.in_(list(statuses)),
        )
        .order_by(SeqGap.from_seq)
    )
    return [_gap(r) for r in rows]


def any_open(db: Session | Connection, *, instance_id: int, category: str) -> bool:
    """Whether the (instance, category) has an open hole (what a repair would read)."""
    found = _conn(db).scalar(
        select(SeqGap.id)
        .where(SeqGap.instance_id == instance_id, SeqGap.category == category, SeqGap.status.in_(ACTIVE))
        .limit(1)
    )
    return found is not None


def stored_in(db: Session | Connection, *, instance_id: int, from_seq: int, to_seq: int) -> int:
    """How many messages the store holds with ``from_seq <= seq <= to_seq``."""
    return int(
        _conn(db).scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.instance_id == instance_id, Message.seq >= from_seq, Message.seq <= to_seq)
        )
        or 0
    )


@dataclass(frozen=True)
class Settled:
    """What one read did to one hole."""

    gap_id: int
    status: str
    found: int
    new: int  # found by this read


def settle_holes(
    db: Session | Connection,
    *,
    gaps: Sequence[Gap],
    now: dt.datetime,
    window: dt.timedelta,
    checks: int,
    found: Mapping[int, int] | None = None,
) -> list[Settled]:
    """After a read that covered ``gaps`` (and stored what it found in them, in this same
    transaction): count the check, take what each holds and set its status. ``found`` (by gap
    id): how many seqs of the hole the covering read returned — all the source holds there;
    without it, what the store holds in the hole is counted.

    ``filled`` when every seq is stored. An open hole is closed when this read found nothing
    new in it, it has been read at least ``checks`` times and it is at least ``window`` old:
    ``confirmed_empty`` when nothing was ever found, else ``partly_filled``. A closed hole
    re-read on request (``syncflow gaps repair``) takes the status of what it holds now.
    """
    conn = _conn(db)
    out: list[Settled] = []
    updates: list[dict[str, Any]] = []
    when = _naive(now)
    for gap in gaps:
        if found is not None and gap.id in found:
            holds = found[gap.id]
        else:
            holds = stored_in(conn, instance_id=gap.instance_id, from_seq=gap.from_seq, to_seq=gap.to_seq)
        new = max(holds - gap.found, 0)
        n = gap.checks + 1
        if holds >= gap.width:
            status = GapStatus.FILLED.value
        elif gap.status == GapStatus.OPEN.value:
            old_enough = now - gap.first_seen >= window
            if new == 0 and n >= checks and old_enough:
                status = GapStatus.PARTLY_FILLED.value if holds else GapStatus.CONFIRMED_EMPTY.value
            else:
                status = GapStatus.OPEN.value
        else:
            status = GapStatus.PARTLY_FILLED.value if holds else GapStatus.CONFIRMED_EMPTY.value
        updates.append({"b_id": gap.id, "checks": n, "last_checked": when, "found": holds, "status": status})
        out.append(Settled(gap_id=gap.id, status=status, found=holds, new=new))
    if updates:
        conn.execute(
            update(SeqGap)
            .where(SeqGap.id == bindparam("b_id"))
            .values(
                checks=bindparam("checks"),
                last_checked=bindparam("last_checked"),
                found=bindparam("found"),
                status=bindparam("status"),
            )
            .execution_options(synchronize_session=False),
            updates,
        )
    return out


def open_width(db: Session | Connection, *, instance_id: int, category: str, after: int, upto: int) -> tuple[int, int]:
    """(how many open holes, how many of their seqs) lie in ``after < seq <= upto``."""
    rows = _conn(db).execute(
        select(SeqGap.from_seq, SeqGap.to_seq).where(
            SeqGap.instance_id == instance_id,
            SeqGap.category == category,
            SeqGap.status.in_(ACTIVE),
            SeqGap.to_seq > after,
            SeqGap.from_seq <= upto,
        )
    )
    n = width = 0
    for a, b in rows:
        n += 1
        width += min(int(b), upto) - max(int(a), after + 1) + 1
    return n, width


def hole_accounting(
    db: Session | Connection, *, instance_id: int, category: str, after: int, upto: int
) -> tuple[int, int, int]:
    """For the ledger's holes clipped to ``after < seq <= upto``: (how many open holes, how many
    of the holes' seqs hold no stored message, how many of the open holes' seqs hold none)."""
    conn = _conn(db)
    rows = conn.execute(
        select(SeqGap.from_seq, SeqGap.to_seq, SeqGap.status).where(
            SeqGap.instance_id == instance_id,
            SeqGap.category == category,
            SeqGap.to_seq > after,
            SeqGap.from_seq <= upto,
        )
    ).all()
    if not rows:
        return 0, 0, 0
    inside: dict[str, int] = {}
    for status, n in conn.execute(
        select(SeqGap.status, func.count(Message.id))
        .join(
            Message,
            and_(
                Message.instance_id == SeqGap.instance_id,
                Message.seq >= SeqGap.from_seq,
                Message.seq <= SeqGap.to_seq,
            ),
        )
        .where(
            SeqGap.instance_id == instance_id,
            SeqGap.category == category,
            Message.seq > after,
            Message.seq <= upto,
        )
        .group_by(SeqGap.status)
    ).all():
        inside[str(status)] = int(n)
    n_open = empty = open_empty = 0
    widths: dict[str, int] = {}
    for a, b, status in rows:
        w = min(int(b), upto) - max(int(a), after + 1) + 1
        widths[str(status)] = widths.get(str(status), 0) + w
        n_open += status in ACTIVE
    for status, w in widths.items():
        unstored = w - int(inside.get(status, 0))
        empty += unstored
        if status in ACTIVE:
            open_empty += unstored
    return n_open, empty, open_empty


def stored_split(db: Session | Connection, *, instance_id: int, after: int, upto: int, to: int) -> tuple[int, int]:
    """How many messages the store holds with ``after < seq <= to``, and how many of those have
    ``seq <= upto`` (``upto <= to``), in one statement."""
    if to <= after:
        return 0, 0
    row = (
        _conn(db)
        .execute(
            select(func.count(), func.coalesce(func.sum(case((Message.seq <= upto, 1), else_=0)), 0))
            .select_from(Message)
            .where(Message.instance_id == instance_id, Message.seq > after, Message.seq <= to)
        )
        .one()
    )
    return int(row[0] or 0), int(row[1] or 0)


def gap_counts(session: Session, *, instance_id: int) -> dict[str, int]:
    """How many holes of each status the instance has (every status present, 0 when none)."""
    counts = {s.value: 0 for s in GapStatus}
    for status, n in session.execute(
        select(SeqGap.status, func.count()).where(SeqGap.instance_id == instance_id).group_by(SeqGap.status)
    ):
        counts[str(status)] = int(n)
    return counts


@dataclass(frozen=True)
class ListedGap:
    instance: str
    gap: Gap

    def to_json(self) -> dict[str, Any]:
        return {"instance": self.instance, **self.gap.to_json()}


def list_gaps(
    session: Session,
    *,
    instance: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[ListedGap]:
    """Ledger rows, by instance name then seq (optionally one instance, one status)."""
    stmt = (
        select(Instance.name, *_COLUMNS)
        .join(Instance, Instance.id == SeqGap.instance_id)
        .order_by(Instance.name, SeqGap.category, SeqGap.from_seq)
    )
    conditions = []
    if instance is not None:
        conditions.append(Instance.name == instance)
    if status is not None:
        conditions.append(SeqGap.status == GapStatus.parse(status, what="gap status").value)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [ListedGap(instance=str(r[0]), gap=_gap(r[1:])) for r in session.execute(stmt)]


__all__ = [
    "ACTIVE",
    "CLOSED_UNFILLED",
    "Gap",
    "ListedGap",
    "Settled",
    "any_open",
    "gap_counts",
    "hole_accounting",
    "holes_to_read",
    "list_gaps",
    "open_width",
    "record_holes",
    "settle_holes",
    "stored_in",
    "stored_split",
]
