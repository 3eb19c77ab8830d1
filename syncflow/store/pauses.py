"""The store side of the queue admin (the seed's SyncQueueAdminController, per category).

Functions take a SQLAlchemy ``Session`` and flush; the caller commits. The Prefect side
(run states, deployment schedules, cancelling queued runs) is the seam's, ``tasks.prefect_api``.

Pause: a paused category starts no new instance sync. Sessions still open (their records
stay ``pending``) and wait in ``tasks.prefect_api.hold_slot`` until the category is
resumed; syncs already running go on to their end.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from syncflow.store.models import (
    Category,
    CategoryPause,
    RecordStatus,
    SessionStatus,
    SyncInstanceRecord,
    SyncSession,
    utcnow,
)

# Retry sessions started by the queue admin get a deterministic id per failed session, so
# asking twice (or from two consoles) starts one retry, not two.
_RETRY_NS = uuid.UUID("5b0f3c4e-8d1a-4f57-9a53-2c1f6e0d9b71")


def _category(category: str) -> str:
    return Category.parse(category, what="category").value


def get_pause(session: Session, *, category: str) -> CategoryPause | None:
    return session.scalar(select(CategoryPause).where(CategoryPause.category == _category(category)))


def is_paused(session: Session, *, category: str) -> bool:
    """Whether new syncs of ``category`` must wait."""
    return bool(session.scalar(select(CategoryPause.paused).where(CategoryPause.category == _category(category))))


def pause(
    session: Session,
    *,
    category: str,
    paused_by: str | None = None,
    reason: str | None = None,
    deployments: Sequence[str] = (),
) -> CategoryPause:
    """Set the pause flag of ``category`` (idempotent); ``deployments`` (ids whose schedules the
    pause switched off) are added to those of an earlier pause."""
    cat = _category(category)
    row = session.scalar(select(CategoryPause).where(CategoryPause.category == cat).with_for_update())
    if row is None:
        row = CategoryPause(category=cat, paused=False, paused_deployments=[])
        session.add(row)
    if not row.paused:
        row.paused = True
        row.paused_at = utcnow()
        row.paused_by = paused_by
        row.reason = reason
        row.paused_deployments = []
    row.paused_deployments = list(dict.fromkeys([*(row.paused_deployments or []), *deployments]))
    session.flush()
    return row


def resume(session: Session, *, category: str) -> tuple[bool, list[str]]:
    """Clear the pause flag. Returns (whether it was paused, the deployment ids to resume)."""
    cat = _category(category)
    row = session.scalar(select(CategoryPause).where(CategoryPause.category == cat).with_for_update())
    if row is None or not row.paused:
        return False, list(row.paused_deployments or []) if row is not None else []
    deployments = list(row.paused_deployments or [])
    row.paused = False
    row.resumed_at = utcnow()
    row.paused_deployments = []
    session.flush()
    return True, deployments


@dataclass
class StoreQueueStats:
    """What the store knows about a category's syncs since a point in time."""

    records: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    last_processed_at: dt.datetime | None = None
    last_failed_at: dt.datetime | None = None
    last_error: str | None = None
    failed_not_retried: int = 0


def store_stats(session: Session, *, category: str, since: dt.datetime) -> StoreQueueStats:
    cat = _category(category)
    rec = SyncInstanceRecord
    out = StoreQueueStats()
    out.records = {
        status: n
        for status, n in session.execute(
            select(rec.status, func.count())
            .where(rec.sync_category == cat, rec.created_at >= since)
            .group_by(rec.status)
        ).all()
    }
    out.sessions = {
        status: n
        for status, n in session.execute(
            select(SyncSession.status, func.count())
            .where(SyncSession.sync_category == cat, SyncSession.created_at >= since)
            .group_by(SyncSession.status)
        ).all()
    }
    out.last_processed_at = session.scalar(
        select(func.max(rec.completed_at)).where(rec.sync_category == cat, rec.status == RecordStatus.COMPLETED.value)
    )
    last_failed = session.execute(
        select(rec.completed_at, rec.instance_name, rec.error_message)
        .where(rec.sync_category == cat, rec.status == RecordStatus.FAILED.value)
        .order_by(rec.completed_at.desc().nulls_last(), rec.id.desc())
        .limit(1)
    ).first()
    if last_failed is not None:
        out.last_failed_at = last_failed[0]
        out.last_error = f"{last_failed[1]}: {last_failed[2]}" if last_failed[2] else None
    out.failed_not_retried = len(failed_sessions_to_retry(session, category=cat, since=since, limit=10_000))
    return out


def failed_sessions_to_retry(
    session: Session, *, category: str, since: dt.datetime | None = None, limit: int = 20
) -> list[SyncSession]:
    """Failed sessions of ``category`` (newest first) that no session retries yet: the
    category's dead letter."""
    cat = _category(category)
    retry = aliased(SyncSession)
    conds = [
        SyncSession.sync_category == cat,
        SyncSession.status == SessionStatus.FAILED.value,
        SyncSession.failed_instances > 0,
        ~select(retry.id).where(retry.retry_of == SyncSession.session_id).exists(),
    ]
    if since is not None:
        conds.append(SyncSession.created_at >= since)
    return list(
        session.scalars(
            select(SyncSession)
            .where(*conds)
            .order_by(SyncSession.created_at.desc(), SyncSession.id.desc())
            .limit(limit)
        )
    )


def retry_session_id(failed_session_id: str) -> str:
    """The id the queue admin gives the retry of ``failed_session_id`` (the same every time)."""
    return str(uuid.uuid5(_RETRY_NS, f"retry-of:{failed_session_id}"))


def pause_state(row: CategoryPause | None) -> dict[str, Any]:
    if row is None:
        return {"paused": False, "paused_at": None, "paused_by": None, "reason": None, "paused_deployments": []}
    return {
        "paused": row.paused,
        "paused_at": row.paused_at if row.paused else None,
        "paused_by": row.paused_by if row.paused else None,
        "reason": row.reason if row.paused else None,
        "paused_deployments": list(row.paused_deployments or []),
    }


__all__ = [
    "StoreQueueStats",
    "failed_sessions_to_retry",
    "get_pause",
    "is_paused",
    "pause",
    "pause_state",
    "resume",
    "retry_session_id",
    "store_stats",
]
