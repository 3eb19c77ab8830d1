"""How many times in a row an instance's sync of a category has failed (the alert "an instance
failing N runs in a row" is raised when this reaches N)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from syncflow.store.db import get_engine, session_scope
from syncflow.store.models import RecordStatus, SyncInstanceRecord

_ENDED = (RecordStatus.COMPLETED.value, RecordStatus.FAILED.value)


def failure_streak(instance_id: int, category: str, *, engine: Engine | None = None, limit: int = 1000) -> int:
    """The number of the instance's latest finished syncs of ``category`` that failed, newest
    first, up to the last one that completed (skipped and cancelled syncs do not count)."""
    with session_scope(engine or get_engine()) as s:
        statuses = s.scalars(
            select(SyncInstanceRecord.status)
            .where(
                SyncInstanceRecord.instance_id == instance_id,
                SyncInstanceRecord.sync_category == category,
                SyncInstanceRecord.status.in_(_ENDED),
            )
            .order_by(SyncInstanceRecord.completed_at.desc(), SyncInstanceRecord.id.desc())
            .limit(limit)
        )
        streak = 0
        for status in statuses:
            if status != RecordStatus.FAILED.value:
                break
            streak += 1
        return streak


__all__ = ["failure_streak"]
