"""One snapshot differ for every full-snapshot category: conversations, accounts, settings.

A snapshot is everything the source lists now. Diffed against the instance's stored rows:
new items are created, changed ones updated, ones the source no longer lists are marked
deleted (kept, with ``deleted_at``), a deleted one that comes back is restored (counted as
updated), the rest counted unchanged. Every change is also said in words (the record's
``sync_details``, ``sessions show``, the artifacts)::

    alice: +CREATEDB, -member of ops, +SELECT on public.orders
    work_mem: 4MB -> 8MB
    c-17: title: 'ops' -> 'ops-eu'

What differs between categories — the table, the identity, what "changed" means, how a change
reads — is one :class:`SnapshotTable` each (in :mod:`syncflow.store.snapshots` and
:mod:`syncflow.store.conversations`). :func:`apply_snapshot` flushes, never commits: the
caller's unit of work puts the rows, the record's counts and the lease check in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.errors import ProtocolError
from syncflow.store.models import utcnow
from syncflow.store.sessions import ItemCounts

DETAILS_LIMIT: Final = 100  # change lines / names kept in sync_details

T = TypeVar("T")


@dataclass
class DiffResult:
    """What one apply did: exact counts and, in words, every change."""

    counts: ItemCounts
    changes: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def details(self, limit: int = DETAILS_LIMIT) -> dict[str, Any]:
        """For the record's ``sync_details``: capped lists, with the full totals."""
        return {
            "changes": self.changes[:limit],
            "changes_total": len(self.changes),
            "changes_truncated": len(self.changes) > limit,
            "created": self.created[:limit],
            "updated": self.updated[:limit],
            "deleted": self.deleted[:limit],
        }


@dataclass(frozen=True)
class SnapshotTable(Generic[T]):
    """How one category's snapshot items map onto its table.

    ``model`` has ``instance_id``, ``deleted``, ``deleted_at`` and the identity column ``key``;
    ``coerce`` turns a transported item (a dict) back into ``T``; ``item_key`` is an item's
    identity; ``same(row, item)`` says the stored row already holds the item; ``values(item)``
    are the columns written on create and update. ``created``/``updated``/``deleted`` say a
    change in words (``updated`` gets the row *before* the update, ``restored`` when it came
    back from deleted). ``refuse_empty``: an empty snapshot over stored rows is a reading
    problem, not a server whose every item vanished (refused, nothing changed). ``versioned``:
    a ``version`` column goes up on every change; ``stamps_session``: ``last_session_id`` names
    the session that last changed the row.
    """

    model: type[Any]
    key: str
    what: str
    plural: str
    coerce: Callable[[Any], T]
    item_key: Callable[[T], str]
    same: Callable[[Any, T], bool]
    values: Callable[[T], dict[str, Any]]
    created: Callable[[T], str]
    updated: Callable[[Any, T, bool], str]
    deleted: Callable[[Any], str]
    refuse_empty: bool = True
    versioned: bool = False
    stamps_session: bool = True


def unique_by_key(items: Iterable[T], key: Callable[[T], str], *, what: str, instance: str) -> dict[str, T]:
    out: dict[str, T] = {}
    for item in items:
        k = key(item)
        if k in out:
            raise ProtocolError(f"instance {instance}: {what} {k!r} listed twice in one snapshot")
        out[k] = item
    return out


def _refuse_empty(live: Mapping[str, Any], stored: Mapping[str, Any], *, what: str, instance: str) -> None:
    if live:
        return
    active = sum(1 for row in stored.values() if not row.deleted)
    if active:
        raise ProtocolError(
            f"instance {instance}: the server listed no {what} while {active} are stored; refusing to mark "
            f"them all deleted (can the sync user still read them?). Nothing was changed."
        )


def apply_snapshot(
    session: Session,
    table: SnapshotTable[T],
    *,
    instance_id: int,
    snapshot: Iterable[Any],
    session_id: str | None = None,
    instance_name: str = "",
    now: dt.datetime | None = None,
) -> DiffResult:
    """Diff a full snapshot against the instance's stored rows of ``table``; flushes, never commits.

    An identity listed twice raises :class:`~syncflow.errors.ProtocolError` and changes nothing.
    """
    where = instance_name or str(instance_id)
    live = unique_by_key((table.coerce(item) for item in snapshot), table.item_key, what=table.what, instance=where)
    model = table.model
    stored = {
        getattr(row, table.key): row for row in session.scalars(select(model).where(model.instance_id == instance_id))
    }
    if table.refuse_empty:
        _refuse_empty(live, stored, what=table.plural, instance=where)
    now = now or utcnow()
    stamp = {"last_session_id": session_id} if table.stamps_session else {}
    result = DiffResult(counts=ItemCounts())
    unchanged = 0
    for key in sorted(live):
        item = live[key]
        row = stored.get(key)
        if row is None:
            session.add(model(instance_id=instance_id, **{table.key: key}, **table.values(item), **stamp))
            result.created.append(key)
            result.changes.append(table.created(item))
            continue
        if not row.deleted and table.same(row, item):
            unchanged += 1
            continue
        result.changes.append(table.updated(row, item, bool(row.deleted)))
        for column, value in {**table.values(item), **stamp}.items():
            setattr(row, column, value)
        row.deleted = False
        row.deleted_at = None
        if table.versioned:
            row.version += 1
        result.updated.append(key)
    for key in sorted(stored):
        row = stored[key]
        if key not in live and not row.deleted:
            result.changes.append(table.deleted(row))
            row.deleted = True
            row.deleted_at = now
            for column, value in stamp.items():
                setattr(row, column, value)
            if table.versioned:
                row.version += 1
            result.deleted.append(key)
    session.flush()
    result.counts = ItemCounts(
        synced=len(live),
        created=len(result.created),
        updated=len(result.updated),
        deleted=len(result.deleted),
        unchanged=unchanged,
    )
    return result


__all__ = ["DETAILS_LIMIT", "DiffResult", "SnapshotTable", "apply_snapshot", "unique_by_key"]
