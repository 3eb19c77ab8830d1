"""Database-instance snapshots in the store: accounts, server settings, capacity samples.

Accounts and settings are full snapshots diffed against what is stored for the instance
(like :mod:`syncflow.store.conversations`): new ones are created, changed ones updated, ones the
server no longer lists are marked deleted (kept, with ``deleted_at``), a deleted one that
comes back is restored (counted as updated), the rest counted unchanged. Every diff also
says, in words, what changed::

    alice: +CREATEDB, -member of ops, +SELECT on public.orders
    work_mem: 4MB -> 8MB

Capacity is a time series: :func:`append_capacity` adds one row per (instance, database,
session); applying the same session again replaces that session's rows (a retried task
does not double them). Its change list compares each database with its previous sample.

Functions take a SQLAlchemy ``Session`` and flush, never commit: the caller's unit of work
(``syncflow.engine.snapshot.store_snapshot``) puts the rows, the record's counts and the lease
check in one transaction. Accounts and settings use the generic differ,
:mod:`syncflow.store.snapshot_diff`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syncflow.sources.db_snapshots import AccountSnapshot, DatabaseSize, SettingSnapshot
from syncflow.store.models import Account, CapacitySample, ServerSetting, utcnow
from syncflow.store.sessions import ItemCounts
from syncflow.store.snapshot_diff import DETAILS_LIMIT, DiffResult, SnapshotTable, apply_snapshot, unique_by_key

__all__ = [
    "DETAILS_LIMIT",
    "LINE_ITEMS_LIMIT",
    "DiffResult",
    "account_changes",
    "append_capacity",
    "apply_accounts",
    "apply_settings",
    "capacity_history",
    "human_bytes",
    "list_accounts",
    "list_settings",
    "setting_change",
]

LINE_ITEMS_LIMIT: Final = 30  # changes listed on one account's line before "... and N more"


def _coerce(items: Iterable[Any], cls: Any) -> list[Any]:
    return [item if isinstance(item, cls) else cls.from_json(item) for item in items]


# ===================================================================== accounts


def _flag(name: str) -> str:
    return name.upper().replace("_", " ").replace(".", " ")


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def account_changes(old: AccountSnapshot, new: AccountSnapshot) -> list[str]:
    """``["+CREATEDB", "connection_limit: -1 -> 5", "-member of ops", "+SELECT on public.orders"]``.

    Attributes first (a boolean one as ``+FLAG`` / ``-FLAG``), then memberships, then
    privileges; each group sorted, a removal before the addition of the same item.
    """
    out: list[str] = []
    missing = object()
    for key in sorted(set(old.attributes) | set(new.attributes)):
        before, after = old.attributes.get(key, missing), new.attributes.get(key, missing)
        if before == after and type(before) is type(after):
            continue
        if isinstance(after, bool) and (isinstance(before, bool) or before is missing or before is None):
            out.append(("+" if after else "-") + _flag(key))
        elif isinstance(before, bool) and after is missing:
            out.append(f"{key}: {before} -> (gone)")
        else:
            b = "(none)" if before is missing else _show(before)
            a = "(gone)" if after is missing else _show(after)
            out.append(f"{key}: {b} -> {a}")

    def sets(before: Sequence[str], after: Sequence[str], fmt: str) -> list[str]:
        gone, came = set(before) - set(after), set(after) - set(before)
        marked = [(item, 0, "-") for item in gone] + [(item, 1, "+") for item in came]
        return [sign + fmt.format(item) for item, _, sign in sorted(marked)]

    out += sets(old.memberships, new.memberships, "member of {}")
    out += sets(old.privileges, new.privileges, "{}")
    return out


def _line(identity: str, items: list[str]) -> str:
    if len(items) > LINE_ITEMS_LIMIT:
        items = [*items[:LINE_ITEMS_LIMIT], f"... and {len(items) - LINE_ITEMS_LIMIT} more"]
    return f"{identity}: {', '.join(items)}"


def _stored_account(row: Account) -> AccountSnapshot:
    return AccountSnapshot(
        identity=row.identity,
        attributes=dict(row.attributes or {}),
        privileges=list(row.privileges or []),
        memberships=list(row.memberships or []),
    )


def _account_created(new: AccountSnapshot) -> str:
    return f"{new.identity}: created ({len(new.privileges)} privileges, {len(new.memberships)} memberships)"


def _account_updated(row: Account, new: AccountSnapshot, restored: bool) -> str:
    diff = account_changes(_stored_account(row), new)
    if restored:
        diff.insert(0, "restored")
    # Equal content under another fingerprint (e.g. an older hashing) is still an update.
    return _line(new.identity, diff or ["refreshed"])


ACCOUNTS: Final = SnapshotTable[AccountSnapshot](
    model=Account,
    key="identity",
    what="account",
    plural="accounts",
    coerce=lambda item: item if isinstance(item, AccountSnapshot) else AccountSnapshot.from_json(item),
    item_key=lambda a: a.identity,
    same=lambda row, new: row.fingerprint == new.fingerprint,
    values=lambda new: {
        "attributes": new.attributes,
        "privileges": new.privileges,
        "memberships": new.memberships,
        "fingerprint": new.fingerprint,
    },
    created=_account_created,
    updated=_account_updated,
    deleted=lambda row: f"{row.identity}: deleted",
)


def apply_accounts(
    session: Session,
    *,
    instance_id: int,
    snapshot: Iterable[AccountSnapshot | Mapping[str, Any]],
    session_id: str | None = None,
    instance_name: str = "",
) -> DiffResult:
    """Diff a full accounts snapshot against the instance's stored accounts; flushes, never commits.

    ``snapshot`` holds :class:`AccountSnapshot` (or their ``to_json()`` dicts). An identity
    listed twice raises :class:`~syncflow.errors.ProtocolError` and changes nothing.
    """
    return apply_snapshot(
        session,
        ACCOUNTS,
        instance_id=instance_id,
        snapshot=snapshot,
        session_id=session_id,
        instance_name=instance_name,
    )


def list_accounts(session: Session, *, instance_id: int, include_deleted: bool = False) -> list[Account]:
    stmt = select(Account).where(Account.instance_id == instance_id)
    if not include_deleted:
        stmt = stmt.where(Account.deleted.is_(False))
    return list(session.scalars(stmt.order_by(Account.identity)))


# ===================================================================== settings


def setting_change(old: SettingSnapshot, new: SettingSnapshot) -> str:
    """``work_mem: 4MB -> 8MB (source: default -> database)``."""
    parts = []
    for key in sorted(set(old.attributes) | set(new.attributes)):
        before, after = old.attributes.get(key), new.attributes.get(key)
        if before != after and key != "setting":  # ``setting`` is the raw form of the value
            parts.append(f"{key}: {_show(before)} -> {_show(after)}")
    if old.value != new.value:
        head = f"{new.name}: {_show(old.value)} -> {_show(new.value)}"
        return f"{head} ({'; '.join(parts)})" if parts else head
    if parts:
        return f"{new.name}: {'; '.join(parts)}"
    return f"{new.name}: refreshed"


def _stored_setting(row: ServerSetting) -> SettingSnapshot:
    return SettingSnapshot(name=row.name, value=row.value, attributes=dict(row.attributes or {}))


def _setting_updated(row: ServerSetting, new: SettingSnapshot, restored: bool) -> str:
    if restored:
        return f"+{new.name} = {_show(new.value)} (restored, was {_show(row.value)})"
    return setting_change(_stored_setting(row), new)


SETTINGS: Final = SnapshotTable[SettingSnapshot](
    model=ServerSetting,
    key="name",
    what="setting",
    plural="settings",
    coerce=lambda item: item if isinstance(item, SettingSnapshot) else SettingSnapshot.from_json(item),
    item_key=lambda s: s.name,
    same=lambda row, new: row.value == new.value and dict(row.attributes or {}) == new.attributes,
    values=lambda new: {"value": new.value, "attributes": new.attributes},
    created=lambda new: f"+{new.name} = {_show(new.value)}",
    updated=_setting_updated,
    deleted=lambda row: f"-{row.name} (was {_show(row.value)})",
)


def apply_settings(
    session: Session,
    *,
    instance_id: int,
    snapshot: Iterable[SettingSnapshot | Mapping[str, Any]],
    session_id: str | None = None,
    instance_name: str = "",
) -> DiffResult:
    """Diff a full settings snapshot against the instance's stored settings; flushes, never commits."""
    return apply_snapshot(
        session,
        SETTINGS,
        instance_id=instance_id,
        snapshot=snapshot,
        session_id=session_id,
        instance_name=instance_name,
    )


def list_settings(session: Session, *, instance_id: int, include_deleted: bool = False) -> list[ServerSetting]:
    stmt = select(ServerSetting).where(ServerSetting.instance_id == instance_id)
    if not include_deleted:
        stmt = stmt.where(ServerSetting.deleted.is_(False))
    return list(session.scalars(stmt.order_by(ServerSetting.name)))


# ===================================================================== capacity


def human_bytes(n: int | float) -> str:
    """``1536`` -> ``1.5 KiB``; ``-2097152`` -> ``-2.0 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _latest_samples(session: Session, *, instance_id: int, before_session: str | None) -> dict[str, int]:
    """Bytes of the newest sample of each database of the instance (other sessions only)."""
    cond = [CapacitySample.instance_id == instance_id]
    if before_session is not None:
        cond.append((CapacitySample.session_id != before_session) | CapacitySample.session_id.is_(None))
    newest = (
        select(CapacitySample.database, func.max(CapacitySample.collected_at).label("at"))
        .where(*cond)
        .group_by(CapacitySample.database)
        .subquery()
    )
    rows = session.execute(
        select(CapacitySample.database, CapacitySample.bytes, CapacitySample.id)
        .join(
            newest,
            (newest.c.database == CapacitySample.database) & (newest.c.at == CapacitySample.collected_at),
        )
        .where(*cond)
        .order_by(CapacitySample.id)
    )
    return {database: size for database, size, _ in rows}  # the last id wins a tie


def append_capacity(
    session: Session,
    *,
    instance_id: int,
    session_id: str | None,
    sizes: Iterable[DatabaseSize | Mapping[str, Any]],
    collected_at: dt.datetime | None = None,
    instance_name: str = "",
) -> DiffResult:
    """Add one capacity sample per database; flushes, never commits.

    Counts: ``created`` = samples added, ``updated`` = samples of this same session
    replaced (a retry), ``synced`` = databases measured. ``changes`` compares each database
    with its newest earlier sample: ``app: 8.0 MiB -> 9.5 MiB (+1.5 MiB)``, ``+newdb: 7.4 MiB``,
    ``-olddb (last 7.4 MiB)``; databases whose size did not move are not listed.
    """
    where = instance_name or str(instance_id)
    live = unique_by_key(_coerce(sizes, DatabaseSize), lambda d: d.database, what="database", instance=where)
    at = collected_at or utcnow()
    previous = _latest_samples(session, instance_id=instance_id, before_session=session_id)
    existing: dict[str, CapacitySample] = {}
    if session_id is not None:
        existing = {
            row.database: row
            for row in session.scalars(
                select(CapacitySample).where(
                    CapacitySample.instance_id == instance_id, CapacitySample.session_id == session_id
                )
            )
        }
    result = DiffResult(counts=ItemCounts())
    for name in sorted(live):
        size = live[name]
        row = existing.get(name)
        if row is None:
            session.add(
                CapacitySample(
                    instance_id=instance_id,
                    session_id=session_id,
                    database=name,
                    bytes=int(size.bytes),
                    tables=size.tables,
                    collected_at=at,
                )
            )
            result.created.append(name)
        else:
            row.bytes = int(size.bytes)
            row.tables = size.tables
            row.collected_at = at
            result.updated.append(name)
        before = previous.get(name)
        if before is None:
            result.changes.append(f"+{name}: {human_bytes(size.bytes)}")
        elif before != size.bytes:
            delta = size.bytes - before
            sign = "+" if delta > 0 else "-"
            result.changes.append(
                f"{name}: {human_bytes(before)} -> {human_bytes(size.bytes)} ({sign}{human_bytes(abs(delta))})"
            )
    for name in sorted(set(previous) - set(live)):
        result.changes.append(f"-{name} (last {human_bytes(previous[name])})")
    session.flush()
    result.counts = ItemCounts(synced=len(live), created=len(result.created), updated=len(result.updated))
    return result


def capacity_history(
    session: Session,
    *,
    instance_id: int,
    database: str | None = None,
    since: dt.datetime | None = None,
) -> list[CapacitySample]:
    """The instance's samples (of one database, since a time), oldest first."""
    stmt = select(CapacitySample).where(CapacitySample.instance_id == instance_id)
    if database is not None:
        stmt = stmt.where(CapacitySample.database == database)
    if since is not None:
        stmt = stmt.where(CapacitySample.collected_at >= since)
    return list(session.scalars(stmt.order_by(CapacitySample.collected_at, CapacitySample.id)))
