"""Per-(instance, category) sync state: the cursor and the single-flight lease.

The lease is a row lock by convention: ``lock_owner`` + ``lock_expires_at`` on the
``sync_config_items`` row, taken with one conditional UPDATE (atomic on every backend, so it
holds across processes and machines sharing the store). A holder renews it while it works
and every batch commit re-checks it (:func:`advance_cursor`): a sync that lost its lease —
it stalled past the lease and another took over — cannot commit another batch. A killed
holder's lease simply runs out.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, and_, case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncflow.errors import LockedError, SyncflowError
from syncflow.store.models import Category, ItemStatus, SyncConfigItem, utcnow

log = logging.getLogger(__name__)


class LeaseLostError(SyncflowError):
    """The single-flight lease was taken over by another sync: stop without committing."""


@dataclass(frozen=True)
class SyncState:
    instance_id: int
    category: str
    last_seq: int | None
    metadata_version: int
    options: dict[str, Any]
    lock_owner: str | None
    lock_expires_at: dt.datetime | None


def ensure_item(session: Session, *, instance_id: int, category: str) -> None:
    """Create the (instance, category) state row if it does not exist yet (race-free)."""
    cat = Category.parse(category, what="category").value
    values = {"instance_id": instance_id, "category": cat, "options": {}, "status": ItemStatus.IDLE.value}
    dialect = session.get_bind().dialect.name
    stmt: Insert
    if dialect == "postgresql":
        stmt = pg_insert(SyncConfigItem).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite_insert(SyncConfigItem).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - other backends: check, then insert
        if _item(session, instance_id, cat) is not None:
            return
        session.add(SyncConfigItem(**values))
        session.flush()
        return
    session.execute(stmt)


def _item(
    session: Session, instance_id: int, category: str, *, lock: bool = False, fresh: bool = False
) -> SyncConfigItem | None:
    """The (instance, category) state row; ``lock``: FOR UPDATE; ``fresh``: re-read over the
    session's identity map. (The statement's type is left to inference: SQLAlchemy 2.0 and 2.1
    spell ``Select``'s parameters differently.)"""
    stmt = select(SyncConfigItem).where(SyncConfigItem.instance_id == instance_id, SyncConfigItem.category == category)
    if lock:
        stmt = stmt.with_for_update()
    if fresh:
        stmt = stmt.execution_options(populate_existing=True)
    return session.scalar(stmt)


def get_state(session: Session, *, instance_id: int, category: str) -> SyncState:
    ensure_item(session, instance_id=instance_id, category=category)
    item = _item(session, instance_id, category, fresh=True)
    assert item is not None
    return _state_of(instance_id, category, item)


def _state_of(instance_id: int, category: str, row: Any) -> SyncState:
    """The state from a state row, or from a row of the columns :data:`_STATE`."""
    return SyncState(
        instance_id=instance_id,
        category=category,
        last_seq=row.last_seq,
        metadata_version=row.metadata_version,
        options=dict(row.options or {}),
        lock_owner=row.lock_owner,
        lock_expires_at=row.lock_expires_at,
    )


_STATE = (
    SyncConfigItem.last_seq,
    SyncConfigItem.metadata_version,
    SyncConfigItem.options,
    SyncConfigItem.lock_owner,
    SyncConfigItem.lock_expires_at,
)


def acquire_lock(session: Session, *, instance_id: int, category: str, owner: str, lease_seconds: float) -> SyncState:
    """Take the single-flight lease or raise :class:`LockedError` naming its holder. Returns
    the state with the lease taken (from the UPDATE itself where the store returns rows from
    one: PostgreSQL, SQLite)."""
    ensure_item(session, instance_id=instance_id, category=category)
    now = utcnow()
    where = (SyncConfigItem.instance_id == instance_id, SyncConfigItem.category == category)
    stmt = (
        update(SyncConfigItem)
        .where(
            *where,
            or_(
                SyncConfigItem.lock_owner.is_(None),
                SyncConfigItem.lock_owner == owner,
                SyncConfigItem.lock_expires_at < now,
            ),
        )
        .values(
            lock_owner=owner,
            lock_expires_at=now + dt.timedelta(seconds=lease_seconds),
            status=ItemStatus.RUNNING.value,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    row: Any = None
    if session.get_bind().dialect.update_returning:
        row = session.execute(stmt.returning(*_STATE)).first()
        taken = row is not None
    else:  # pragma: no cover - a store without UPDATE ... RETURNING: update, then read
        taken = session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]
    if not taken:
        holder = session.execute(select(SyncConfigItem.lock_owner, SyncConfigItem.lock_expires_at).where(*where)).one()
        raise LockedError(
            f"already syncing: {category} of instance {instance_id} is held by {holder[0]} "
            f"until {holder[1].isoformat() if holder[1] else '?'}"
        )
    if row is None:  # pragma: no cover - see above
        row = session.execute(select(*_STATE).where(*where)).one()
    return _state_of(instance_id, category, row)


def renew_lock(session: Session, *, instance_id: int, category: str, owner: str, lease_seconds: float) -> None:
    """Extend our lease; :class:`LeaseLostError` if another sync holds it now."""
    now = utcnow()
    result = session.execute(
        update(SyncConfigItem)
        .where(
            SyncConfigItem.instance_id == instance_id,
            SyncConfigItem.category == category,
            SyncConfigItem.lock_owner == owner,
        )
        .values(lock_expires_at=now + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLostError(f"lost the single-flight lease of {category} for instance {instance_id} ({owner})")


def advance_cursor(
    session: Session | Connection,
    *,
    instance_id: int,
    category: str,
    owner: str,
    last_seq: int | None,
    lease_seconds: float,
) -> None:
    """In a batch's transaction: move the cursor forward (never back) and renew the lease,
    in one statement.

    Raises :class:`LeaseLostError` — rolling the whole batch back — when we no longer hold
    the lease.
    """
    now = utcnow()
    values: dict[str, Any] = {"lock_expires_at": now + dt.timedelta(seconds=lease_seconds), "updated_at": now}
    if last_seq is not None:
        col = SyncConfigItem.last_seq
        values["last_seq"] = case((or_(col.is_(None), col < last_seq), last_seq), else_=col)
    result = session.execute(
        update(SyncConfigItem)
        .where(
            SyncConfigItem.instance_id == instance_id,
            SyncConfigItem.category == category,
            SyncConfigItem.lock_owner == owner,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLostError(f"lost the single-flight lease of {category} for instance {instance_id} ({owner})")


def reset_cursor(session: Session, *, instance_id: int, category: str, owner: str) -> None:
    """Full re-sync: forget the cursor (only while holding the lease)."""
    session.execute(
        update(SyncConfigItem)
        .where(
            SyncConfigItem.instance_id == instance_id,
            SyncConfigItem.category == category,
            SyncConfigItem.lock_owner == owner,
        )
        .values(last_seq=None)
        .execution_options(synchronize_session=False)
    )


def bump_metadata_version(session: Session, *, instance_id: int, category: str) -> int:
    item = _item(session, instance_id, category, lock=True)
    assert item is not None
    item.metadata_version += 1
    session.flush()
    return item.metadata_version


def release_lock(
    session: Session,
    *,
    instance_id: int,
    category: str,
    owner: str,
    status: str,
    error: str | None = None,
) -> bool:
    """Give the lease back and record how the sync ended. False if we no longer held it."""
    now = utcnow()
    values: dict[str, Any] = {
        "lock_owner": None,
        "lock_expires_at": None,
        "status": ItemStatus.parse(status, what="sync state status").value,
        "last_error": error,
        "updated_at": now,
    }
    if status == ItemStatus.COMPLETED:
        values["last_sync_time"] = now
    result = session.execute(
        update(SyncConfigItem)
        .where(
            SyncConfigItem.instance_id == instance_id,
            SyncConfigItem.category == category,
            SyncConfigItem.lock_owner == owner,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def merge_options(session: Session, *, instance_id: int, category: str, values: dict[str, Any]) -> None:
    """Merge ``values`` into the (instance, category) state's ``options`` (e.g. the adaptive
    page size reached), keeping its other keys."""
    item = _item(session, instance_id, category)
    if item is None:
        return
    item.options = {**(item.options or {}), **values}
    session.flush()


def release_expired(session: Session, *, now: dt.datetime | None = None) -> int:
    """Clear leases that ran out (their holder died): status back to failed. Returns how many."""
    now = now or utcnow()
    result = session.execute(
        update(SyncConfigItem)
        .where(and_(SyncConfigItem.lock_owner.is_not(None), SyncConfigItem.lock_expires_at < now))
        .values(
            lock_owner=None,
            lock_expires_at=None,
            status=ItemStatus.FAILED.value,
            last_error="the sync holding this lease stopped renewing it (crashed or killed)",
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]
