"""Per-account leases: how many processes may use an account's session at once, across machines.

An account has ``limit`` slots (one row each in ``account_leases``); a process takes a free
or expired slot with one conditional UPDATE (atomic on every backend, like the single-flight
lease of ``sync_state``), renews it while it uses the account and clears it when it is done.
A killed holder's slot runs out by itself. Functions take a Session and flush, never commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from syncflow.errors import ConfigError
from syncflow.store.models import AccountLease, utcnow


@dataclass(frozen=True)
class Holder:
    """Who holds a slot of an account, and until when."""

    slot: int
    owner: str
    expires_at: dt.datetime | None


def _ensure_slots(session: Session, account: str, limit: int) -> None:
    dialect = session.get_bind().dialect.name
    values = [{"account": account, "slot": i} for i in range(limit)]
    if dialect in ("postgresql", "sqlite"):
        ins = pg_insert if dialect == "postgresql" else sqlite_insert
        session.execute(ins(AccountLease).values(values).on_conflict_do_nothing())
        return
    have = set(session.scalars(select(AccountLease.slot).where(AccountLease.account == account)))  # pragma: no cover
    for v in values:  # pragma: no cover - other backends
        if v["slot"] not in have:
            session.add(AccountLease(**v))
    session.flush()  # pragma: no cover


def try_acquire(session: Session, *, account: str, owner: str, limit: int, lease_seconds: float) -> int | None:
    """Take a slot of ``account`` for ``owner`` (one of ``limit``): its number, or None when
    every slot is held by someone else. Re-taking a slot ``owner`` already holds renews it."""
    if limit < 1:
        raise ConfigError(f"account {account}: the limit must be at least 1, not {limit}")
    _ensure_slots(session, account, limit)
    now = utcnow()
    expires = now + dt.timedelta(seconds=lease_seconds)
    mine = session.scalar(
        select(AccountLease.slot).where(
            AccountLease.account == account, AccountLease.owner == owner, AccountLease.slot < limit
        )
    )
    candidates = [mine] if mine is not None else range(limit)
    for slot in candidates:
        result = session.execute(
            update(AccountLease)
            .where(
                AccountLease.account == account,
                AccountLease.slot == slot,
                or_(AccountLease.owner.is_(None), AccountLease.owner == owner, AccountLease.expires_at < now),
            )
            .values(owner=owner, acquired_at=now, expires_at=expires)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return slot
    return None


def renew(session: Session, *, account: str, owner: str, slot: int, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease of the slot; False when someone else holds it now."""
    result = session.execute(
        update(AccountLease)
        .where(AccountLease.account == account, AccountLease.slot == slot, AccountLease.owner == owner)
        .values(expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def release(session: Session, *, account: str, owner: str, slot: int) -> bool:
    """Give the slot back; False when ``owner`` no longer held it."""
    result = session.execute(
        update(AccountLease)
        .where(AccountLease.account == account, AccountLease.slot == slot, AccountLease.owner == owner)
        .values(owner=None, acquired_at=None, expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def holders(session: Session, *, account: str) -> list[Holder]:
    """The live (unexpired) holders of ``account``'s slots."""
    now = utcnow()
    rows = session.execute(
        select(AccountLease.slot, AccountLease.owner, AccountLease.expires_at)
        .where(AccountLease.account == account, AccountLease.owner.is_not(None))
        .order_by(AccountLease.slot)
    )
    return [Holder(slot, owner, exp) for slot, owner, exp in rows if owner is not None and (exp is None or exp >= now)]


__all__ = ["Holder", "holders", "release", "renew", "try_acquire"]
