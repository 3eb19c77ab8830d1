"""The session book-keeping as units of work: each function opens its own transaction
(:func:`syncflow.store.db.session_scope`, the one place that commits) around the data
functions of :mod:`syncflow.store.sessions`, and returns plain data.

This is what the session flow's tasks call (``tasks/session.py``, ``tasks/session_control.py``,
``tasks/artifacts.py``, the slot holder of ``tasks/prefect_api.py``), each through
``asyncio.to_thread``; the flows and tasks themselves open no transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.schemas import SessionDetailView, session_detail_view
from syncflow.settings import get_settings
from syncflow.store import pauses
from syncflow.store import sessions as sessions_
from syncflow.store.db import session_scope
from syncflow.store.models import (
    Category,
    Instance,
    ItemStatus,
    RecordStatus,
    SessionStatus,
    SyncConfigItem,
    SyncSession,
    utcnow,
)
from syncflow.store.session_ids import short_ids


@dataclass(frozen=True)
class PlannedRecord:
    record_id: int
    instance: str
    priority: int
    options: dict[str, Any] | None
    kind: str = "http-seq"  # the instance's kind: which subflow syncs it
    block_name: str | None = None  # the instance's connection block (read ahead by the session)
    config: dict[str, Any] | None = None  # its non-secret settings (a Telegram chat's id)


@dataclass(frozen=True)
class PlannedSession:
    session_id: str
    category: str
    records: list[PlannedRecord]


def _planned(s: Session, row: SyncSession) -> PlannedSession:
    recs = sessions_.records_in_order(s, session_id=row.session_id)
    ids = {r.instance_id for r in recs}
    found = {
        iid: (kind, block_name, config)
        for iid, kind, block_name, config in s.execute(
            select(Instance.id, Instance.kind, Instance.block_name, Instance.config).where(Instance.id.in_(ids))
        )
    }
    records = []
    for r in recs:
        kind, block_name, config = found.get(r.instance_id, ("http-seq", None, None))
        records.append(PlannedRecord(r.id, r.instance_name or "", r.priority, r.options, kind, block_name, config))
    return PlannedSession(session_id=row.session_id, category=row.sync_category, records=records)


# ------------------------------------------------------------------------- opening


def plan_session(**spec: Any) -> PlannedSession:
    """Open a session and its records (``spec``: the keywords of
    :func:`syncflow.store.sessions.open_session`) and return its plan, highest priority first;
    a session with no record finishes at once."""
    with session_scope() as s:
        row = sessions_.open_session(s, **spec)
        plan = _planned(s, row)
        if not plan.records:
            sessions_.finish_session(s, session_id=row.session_id)
        return plan


def plan_retry(
    *, retry_of: str, created_by: str | None, flow_run_id: str | None, session_id: str | None
) -> PlannedSession:
    """Open a new session over the failed instances of ``retry_of`` and return its plan."""
    with session_scope() as s:
        row = sessions_.retry_failed(
            s, session_id=retry_of, created_by=created_by, flow_run_id=flow_run_id, new_session_id=session_id
        )
        return _planned(s, row)


def metadata_targets(names: Sequence[str], tags: Sequence[str], max_age_seconds: float | None = None) -> list[str]:
    """The instances of a messages session (by names / tags / all) that also have metadata.

    With ``max_age_seconds`` (> 0) an instance whose last metadata sync completed less than
    that long ago is left out: its metadata is fresh enough (``SYNCFLOW_METADATA_MAX_AGE``)."""
    from syncflow.store.instances import select_instances

    with session_scope() as s:
        chosen = select_instances(s, category=Category.MESSAGES.value, names=names, tags=tags)
        targets = [i for i in chosen if i.supports(Category.METADATA.value) and i.enabled]
        if not targets or not max_age_seconds or max_age_seconds <= 0:
            return [i.name for i in targets]
        since = utcnow() - dt.timedelta(seconds=max_age_seconds)
        fresh = set(
            s.scalars(
                select(SyncConfigItem.instance_id).where(
                    SyncConfigItem.instance_id.in_([i.id for i in targets]),
                    SyncConfigItem.category == Category.METADATA.value,
                    SyncConfigItem.status == ItemStatus.COMPLETED.value,
                    SyncConfigItem.last_sync_time >= since,
                )
            )
        )
        return [i.name for i in targets if i.id not in fresh]


# --------------------------------------------------------------------------- reading


def session_status(session_id: str) -> str:
    with session_scope() as s:
        return sessions_.get_session(s, session_id=session_id).status


def session_exists(session_id: str) -> bool:
    with session_scope() as s:
        return s.scalar(select(SyncSession.id).where(SyncSession.session_id == session_id)) is not None


def session_detail(session_id: str) -> SessionDetailView:
    """The session and its records, as the one view (CLI ``--json``, flow result, artifacts)."""
    with session_scope() as s:
        row = sessions_.get_session(s, session_id=session_id, with_records=True)
        return session_detail_view(row, short_id=short_ids(s, [session_id])[session_id])


def category_busy(category: str) -> bool:
    """Whether a sync of ``category`` is alive anywhere (an unexpired lease, or an open record
    touched within the lease): the store's answer to "are these held slots leaked?"."""
    with session_scope() as s:
        return sessions_.category_busy(s, category=category, lease_seconds=get_settings().lock_lease_seconds)


def is_paused(category: str) -> bool:
    """Whether the queue admin paused ``category`` (its new syncs wait for resume)."""
    with session_scope() as s:
        return pauses.is_paused(s, category=category)


# --------------------------------------------------------------------------- closing


def cancel_if_running(session_id: str, reason: str) -> bool:
    """Cancel the session when it still runs; False when it had ended."""
    with session_scope() as s:
        row = sessions_.get_session(s, session_id=session_id)
        if row.status != SessionStatus.RUNNING:
            return False
        sessions_.cancel_session(s, session_id=session_id, reason=reason)
        return True


def touch(session_id: str) -> None:
    """The parent's heartbeat (:func:`syncflow.store.sessions.touch_session`)."""
    with session_scope() as s:
        sessions_.touch_session(s, session_id=session_id)


def record_started(record_id: int) -> bool:
    """Whether the record left ``pending`` (its instance run opened it)."""
    with session_scope() as s:
        return sessions_.get_record(s, record_id=record_id).status != RecordStatus.PENDING


def fail_unstarted_record(record_id: int, reason: str) -> bool:
    """Fail the record when it is still ``pending`` (its run was lost before it started) and
    its session runs; False when it had started or the session ended."""
    with session_scope() as s:
        return sessions_.fail_pending_record(s, record_id=record_id, error_message=reason)


def close_open_records(session_id: str, reason: str) -> None:
    """Fail the records that never ran (the session then finishes); no-op when it ended."""
    with session_scope() as s:
        sessions_.finish_session(s, session_id=session_id, error_message=reason)


def close_session_of_run(flow_run_id: str, outcome: str, reason: str) -> list[str]:
    """Finish the running session(s) of a parent run that is gone (crashed, cancelled,
    failed); returns their ids."""
    with session_scope() as s:
        return sessions_.close_session_of_run(s, flow_run_id=flow_run_id, outcome=outcome, reason=reason)


def cleanup(retention_days: int) -> dict[str, Any]:
    """Delete finished sessions older than ``retention_days`` days, then release expired
    single-flight leases (two transactions)."""
    from syncflow.store.sync_state import release_expired

    with session_scope() as s:
        deleted = sessions_.cleanup_sessions(s, older_than_days=retention_days)
    with session_scope() as s:
        released = release_expired(s)
    return {"deleted_sessions": deleted, "retention_days": retention_days, "released_leases": released}


RECHECK_HOURS = 24  # how far back a sweep checks again the flow runs of records it failed
SWEEP_CRASH_REASON = "process gone: its lease ran out with no update (syncflow sweep)"


def sweep(older_than_seconds: float | None = None) -> dict[str, Any]:
    """Fail the records whose worker is gone, finish their sessions, release expired leases
    (one transaction); ``dead_flow_runs`` lists the Prefect runs to mark Crashed: this sweep's,
    and those of records swept within :data:`RECHECK_HOURS` (checked again: a sweep may not
    have reached Prefect). Default age: the lease (SYNCFLOW_LOCK_LEASE_SECONDS)."""
    import datetime as dt

    from syncflow.store.models import utcnow

    seconds = float(get_settings().lock_lease_seconds) if older_than_seconds is None else older_than_seconds
    with session_scope() as s:
        out = sessions_.sweep(s, older_than_seconds=seconds).as_dict()
        earlier = sessions_.swept_flow_runs(s, since=utcnow() - dt.timedelta(hours=RECHECK_HOURS))
    out["dead_flow_runs"] += [r for r in earlier if r not in out["dead_flow_runs"]]
    return dict(out)


__all__ = [
    "PlannedRecord",
    "PlannedSession",
    "cancel_if_running",
    "category_busy",
    "cleanup",
    "close_open_records",
    "close_session_of_run",
    "is_paused",
    "metadata_targets",
    "plan_retry",
    "plan_session",
    "session_detail",
    "session_exists",
    "session_status",
    "sweep",
    "touch",
]
