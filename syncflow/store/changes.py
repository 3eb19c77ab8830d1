"""What changed: the instance records whose snapshot sync changed something (accounts, grants,
settings, conversations, capacity), newest first — the read behind ``syncflow changes`` and
``GET /sync_sessions/api/changes``.

A snapshot sync keeps its change list in the record's ``sync_details`` (``changes``: the first
lines in words, ``changes_total``; :mod:`syncflow.store.snapshot_diff`), so the history of
changes is the history of records, kept as long as their sessions (``syncflow cleanup``).
Read-only: functions take a SQLAlchemy ``Session`` and never write.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syncflow.errors import ConfigError, NotFoundError
from syncflow.store.models import Category, Instance, SyncInstanceRecord

# The categories whose syncs diff a snapshot and say what changed.
CHANGE_CATEGORIES = (
    Category.ACCOUNT.value,
    Category.CONFIG.value,
    Category.METADATA.value,
    Category.CAPACITY.value,
)


def records_with_changes(
    session: Session,
    *,
    instance: str | None = None,
    category: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[SyncInstanceRecord]:
    """Records whose snapshot sync changed something (``sync_details.changes_total > 0``),
    newest first, optionally of one instance (by name), one category, since a time."""
    if limit < 1 or limit > 1000:
        raise ConfigError(f"limit must be between 1 and 1000, not {limit}")
    if offset < 0:
        raise ConfigError(f"offset must not be negative, not {offset}")
    when = func.coalesce(SyncInstanceRecord.completed_at, SyncInstanceRecord.started_at, SyncInstanceRecord.created_at)
    conds = [
        SyncInstanceRecord.sync_details["changes_total"].as_integer() > 0,
        SyncInstanceRecord.sync_category.in_(CHANGE_CATEGORIES),
    ]
    if category is not None:
        cat = Category.parse(category, what="category").value
        if cat not in CHANGE_CATEGORIES:
            raise ConfigError(
                f"{cat} syncs keep no change list (only {', '.join(CHANGE_CATEGORIES)} do); "
                "see their counts with `syncflow sessions show`"
            )
        conds.append(SyncInstanceRecord.sync_category == cat)
    if instance is not None:
        iid = session.scalar(select(Instance.id).where(Instance.name == instance))
        if iid is None:
            raise NotFoundError(f"unknown instance {instance!r}")
        conds.append(SyncInstanceRecord.instance_id == iid)
    if since is not None:
        conds.append(when >= since)
    return list(
        session.scalars(
            select(SyncInstanceRecord)
            .where(*conds)
            .order_by(when.desc(), SyncInstanceRecord.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )


__all__ = ["CHANGE_CATEGORIES", "records_with_changes"]
