"""Retiring an instance (``syncflow instances remove``) and purging what was synced from it.

Removing an instance never rewrites history: the instance row stays, marked retired
(``retired_at``), so its records, sessions and statistics stay exactly as they were and still
name it (``sync_instance_records.instance_id`` is ``ON DELETE RESTRICT``; each record keeps
``instance_name``). A retired instance is never synced again and leaves ``instances list``.
Its synced data — every table that points at ``instances.id`` except the history (messages,
conversations, accounts, settings, capacity samples, its sync state, ...) — is deleted only
when asked (``--purge-data``). Functions take a Session and flush, never commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Table, and_, delete, select
from sqlalchemy.orm import Session

from syncflow.errors import ConfigError
from syncflow.store.instances import get_instance, retired_note
from syncflow.store.models import Base, Instance, SyncConfigItem, utcnow

# Tables that are the history of sessions: never purged.
HISTORY_TABLES = frozenset({"sync_instance_records"})


@dataclass(frozen=True)
class Retired:
    name: str
    instance_id: int
    retired: bool  # False: it was retired before (only a purge happened now)
    purged: dict[str, int] = field(default_factory=dict)  # table -> rows deleted


def data_tables() -> list[tuple[Table, str]]:
    """(table, column) of every table whose rows belong to an instance, history excluded;
    children before parents."""
    out: list[tuple[Table, str]] = []
    for table in reversed(Base.metadata.sorted_tables):
        if table.name in HISTORY_TABLES or table.name == Instance.__tablename__:
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name == Instance.__tablename__ and fk.column.name == "id":
                out.append((table, fk.parent.name))
    return out


def _check_not_syncing(session: Session, instance: Instance) -> None:
    held = session.execute(
        select(SyncConfigItem.category, SyncConfigItem.lock_owner, SyncConfigItem.lock_expires_at).where(
            and_(
                SyncConfigItem.instance_id == instance.id,
                SyncConfigItem.lock_owner.is_not(None),
                SyncConfigItem.lock_expires_at > utcnow(),
            )
        )
    ).first()
    if held is not None:
        raise ConfigError(
            f"instance {instance.name!r} is being synced now ({held[0]}, lease until "
            f"{held[2]:%Y-%m-%d %H:%M:%S} UTC): wait for that sync or cancel its session, then remove it"
        )


def purge_data(session: Session, *, instance_id: int) -> dict[str, int]:
    """Delete everything synced from the instance and its sync state (never its records)."""
    counts: dict[str, int] = {}
    for table, column in data_tables():
        result = session.execute(delete(table).where(table.c[column] == instance_id))
        counts[table.name] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    session.flush()
    return counts


def retire_instance(session: Session, *, name: str, purge: bool = False) -> Retired:
    """Retire the instance (it keeps its history; never synced again) and, with ``purge``,
    delete its synced data. Purging an already retired instance is allowed; retiring it twice
    is not (ConfigError). Refused while a sync of it holds its lease."""
    instance = get_instance(session, name=name)
    if instance.retired and not purge:
        raise ConfigError(retired_note(instance) + " (it was removed before; --purge-data deletes its data)")
    _check_not_syncing(session, instance)
    newly = not instance.retired
    if newly:
        instance.retired_at = utcnow()
        instance.enabled = False
    purged = purge_data(session, instance_id=instance.id) if purge else {}
    session.flush()
    return Retired(name=instance.name, instance_id=instance.id, retired=newly, purged=purged)


__all__ = ["HISTORY_TABLES", "Retired", "data_tables", "purge_data", "retire_instance"]
