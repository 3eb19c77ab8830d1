"""Session book-keeping (the seed's SyncSessionService).

Functions take a SQLAlchemy ``Session`` and flush; the caller's ``session_scope()``
commits. Every change of a record's status locks its session row first (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite transactions are ``BEGIN IMMEDIATE``), then recounts the
session's totals from its records, so totals and the final status stay exact when many
records finish at once from different processes.

Life cycle:

* session: ``running`` -> ``completed`` (no record failed) | ``failed`` (any failed) |
  ``cancelled``; it finishes by itself when its last record reaches a terminal status.
* record: ``pending`` -> ``running`` -> ``completed`` | ``failed`` | ``cancelled`` |
  ``skipped``; a pending record may also go straight to failed, cancelled or skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import statistics
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, delete, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, selectinload

from syncflow.errors import ConfigError, IllegalTransitionError, NotFoundError
from syncflow.store.models import (
    FINISHED_SESSION_STATUSES,
    TERMINAL_RECORD_STATUSES,
    Category,
    Instance,
    RecordStatus,
    SessionStatus,
    SyncInstanceRecord,
    SyncSession,
    SyncType,
    utcnow,
)

log = logging.getLogger(__name__)

_ALLOWED: dict[str, tuple[str, ...]] = {
    RecordStatus.PENDING: (
        RecordStatus.RUNNING,
        RecordStatus.FAILED,
        RecordStatus.CANCELLED,
        RecordStatus.SKIPPED,
    ),
    RecordStatus.RUNNING: (
        RecordStatus.COMPLETED,
        RecordStatus.FAILED,
        RecordStatus.CANCELLED,
        RecordStatus.SKIPPED,
    ),
}


@dataclass(frozen=True)
class RecordSpec:
    """One instance to add to a session, with its priority and per-instance options."""

    instance: Instance
    priority: int | None = None
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ItemCounts:
    """What one instance sync did to the store."""

    synced: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    def __add__(self, other: ItemCounts) -> ItemCounts:
        return ItemCounts(
            self.synced + other.synced,
            self.created + other.created,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.unchanged + other.unchanged,
        )


# --------------------------------------------------------------------------- sessions


def create_session(
    session: Session,
    *,
    sync_type: str,
    sync_category: str,
    created_by: str | None = None,
    flow_run_id: str | None = None,
    retry_of: str | None = None,
    session_id: str | None = None,
    metadata_session_id: str | None = None,
) -> SyncSession:
    """Create a running session (no records yet: see :func:`add_instance_records`).
    ``metadata_session_id``: a messages session's metadata session, run first."""
    st = SyncType.parse(sync_type, what="sync type").value
    cat = Category.parse(sync_category, what="category").value
    if retry_of is not None:
        get_session(session, session_id=retry_of)
    row = SyncSession(
        session_id=session_id or str(uuid.uuid4()),
        sync_type=st,
        sync_category=cat,
        status=SessionStatus.RUNNING.value,
        started_at=utcnow(),
        created_by=created_by,
        flow_run_id=flow_run_id,
        retry_of=retry_of,
        metadata_session_id=metadata_session_id,
    )
    session.add(row)
    session.flush()
    return row


def get_session(session: Session, *, session_id: str, with_records: bool = False) -> SyncSession:
    stmt = select(SyncSession).where(SyncSession.session_id == session_id)
    if with_records:
        stmt = stmt.options(selectinload(SyncSession.records))
    row = session.scalar(stmt)
    if row is None:
        raise NotFoundError(f"unknown session {session_id!r}")
    return row


def _lock_session(session: Session, session_id: str) -> SyncSession:
    row = session.scalar(
        select(SyncSession)
        .where(SyncSession.session_id == session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise NotFoundError(f"unknown session {session_id!r}")
    return row


def _require_running(row: SyncSession, action: str) -> None:
    if row.status != SessionStatus.RUNNING:
        raise IllegalTransitionError(f"cannot {action}: session {row.session_id} is {row.status}")


def add_instance_records(
    session: Session,
    *,
    session_id: str,
    instances: Sequence[Instance | RecordSpec],
) -> list[SyncInstanceRecord]:
    """Add one pending record per instance and set the session's total."""
    row = _lock_session(session, session_id)
    _require_running(row, "add instance records")
    specs = [i if isinstance(i, RecordSpec) else RecordSpec(i) for i in instances]
    existing = set(
        session.scalars(select(SyncInstanceRecord.instance_id).where(SyncInstanceRecord.session_id == session_id))
    )
    records: list[SyncInstanceRecord] = []
    for spec in specs:
        inst = spec.instance
        if inst.id in existing:
            raise ConfigError(f"instance {inst.name!r} is already part of session {session_id}")
        if not inst.supports(row.sync_category):
            raise ConfigError(f"instance {inst.name!r} ({inst.kind}) does not support category {row.sync_category!r}")
        existing.add(inst.id)
        rec = SyncInstanceRecord(
            session_id=session_id,
            instance_id=inst.id,
            instance_name=inst.name,
            sync_category=row.sync_category,
            status=RecordStatus.PENDING.value,
            priority=inst.priority if spec.priority is None else spec.priority,
            options=dict(spec.options) if spec.options else None,
        )
        session.add(rec)
        records.append(rec)
    session.flush()
    _recount(session, row)
    return records


def open_session(
    session: Session,
    *,
    sync_category: str,
    sync_type: str = SyncType.MANUAL_BATCH.value,
    instances: Sequence[str] = (),
    tags: Sequence[str] = (),
    created_by: str | None = None,
    priorities: Mapping[str, int] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    flow_run_id: str | None = None,
    retry_of: str | None = None,
    session_id: str | None = None,
    metadata_session_id: str | None = None,
) -> SyncSession:
    """Create a session and its records in one go: the instances named, else those with any of
    ``tags``, else every enabled instance supporting the category. ``priorities`` and
    ``options`` are keyed by instance name (unknown names are an error)."""
    from syncflow.store.instances import select_instances

    chosen = select_instances(session, category=sync_category, names=instances, tags=tags)
    names = {i.name for i in chosen}
    for what, mapping in (("priority", priorities), ("options", options)):
        stray = sorted(set(mapping or {}) - names)
        if stray:
            raise ConfigError(f"{what} given for instance(s) not in this session: {', '.join(stray)}")
    row = create_session(
        session,
        sync_type=sync_type,
        sync_category=sync_category,
        created_by=created_by,
        flow_run_id=flow_run_id,
        retry_of=retry_of,
        session_id=session_id,
        metadata_session_id=metadata_session_id,
    )
    specs = [
        RecordSpec(i, priority=(priorities or {}).get(i.name), options=(options or {}).get(i.name)) for i in chosen
    ]
    add_instance_records(session, session_id=row.session_id, instances=specs)
    return row


def records_in_order(session: Session, *, session_id: str) -> list[SyncInstanceRecord]:
    """The session's records, highest priority first (then instance name)."""
    return list(
        session.scalars(
            select(SyncInstanceRecord)
            .where(SyncInstanceRecord.session_id == session_id)
            .order_by(SyncInstanceRecord.priority.desc(), SyncInstanceRecord.instance_name)
        )
    )


def _recount(session: Session, row: SyncSession) -> None:
    """Recompute the session's totals from its records; finish it when all are terminal."""
    counts: dict[str, int] = {
        status: n
        for status, n in session.execute(
            select(SyncInstanceRecord.status, func.count())
            .where(SyncInstanceRecord.session_id == row.session_id)
            .group_by(SyncInstanceRecord.status)
        )
    }
    row.total_instances = sum(counts.values())
    row.successful_instances = counts.get(RecordStatus.COMPLETED, 0)
    row.failed_instances = counts.get(RecordStatus.FAILED, 0)
    open_records = counts.get(RecordStatus.PENDING, 0) + counts.get(RecordStatus.RUNNING, 0)
    if row.status == SessionStatus.RUNNING and row.total_instances and not open_records:
        _finish(row, counts)
    session.flush()


def _finish(row: SyncSession, counts: Mapping[str, int]) -> None:
    if counts.get(RecordStatus.FAILED, 0):
        row.status = SessionStatus.FAILED.value
    elif counts.get(RecordStatus.CANCELLED, 0):
        row.status = SessionStatus.CANCELLED.value
    else:
        row.status = SessionStatus.COMPLETED.value
    row.completed_at = utcnow()


def finish_session(session: Session, *, session_id: str, error_message: str | None = None) -> SyncSession:
    """Finish a running session explicitly (e.g. one with no instances, or a parent flow that
    failed before its records could run: open records are then failed with ``error_message``)."""
    row = _lock_session(session, session_id)
    if row.finished:
        return row
    if error_message:
        row.error_message = error_message
        now = utcnow()
        for rec in _open_records(session, session_id):
            rec.status = RecordStatus.FAILED.value
            rec.error_message = error_message
            rec.completed_at = now
        session.flush()
    _recount(session, row)
    if not row.total_instances:
        row.status = SessionStatus.FAILED.value if error_message else SessionStatus.COMPLETED.value
        row.completed_at = utcnow()
        session.flush()
    if not row.finished:
        raise IllegalTransitionError(f"session {session_id} still has pending or running records")
    return row


def _open_records(session: Session, session_id: str) -> list[SyncInstanceRecord]:
    return list(
        session.scalars(
            select(SyncInstanceRecord)
            .where(
                SyncInstanceRecord.session_id == session_id,
                SyncInstanceRecord.status.in_([RecordStatus.PENDING.value, RecordStatus.RUNNING.value]),
            )
            .with_for_update()
        )
    )


def cancel_session(session: Session, *, session_id: str, reason: str | None = None) -> SyncSession:
    """Cancel a running session: its pending and running records become cancelled.

    Batches already committed stay; a running sync notices at its next batch boundary.
    """
    row = _lock_session(session, session_id)
    _require_running(row, "cancel")
    now = utcnow()
    for rec in _open_records(session, session_id):
        rec.status = RecordStatus.CANCELLED.value
        rec.completed_at = now
        if reason:
            rec.error_message = reason
    row.status = SessionStatus.CANCELLED.value
    row.completed_at = now
    if reason:
        row.error_message = reason
    session.flush()
    _recount(session, row)
    return row


# ----------------------------------------------------------------------------- records


def get_record(session: Session, *, record_id: int) -> SyncInstanceRecord:
    rec = session.get(SyncInstanceRecord, record_id)
    if rec is None:
        raise NotFoundError(f"unknown instance record {record_id}")
    return rec


def _lock_record(
    session: Session, record_id: int, session_id: str | None = None
) -> tuple[SyncSession, SyncInstanceRecord]:
    """Lock the record's session row, then the record (the order every transition takes).
    ``session_id``: the record's session, when the caller knows it (one read fewer)."""
    row = _lock_session(session, session_id or get_record(session, record_id=record_id).session_id)
    rec = session.scalar(
        select(SyncInstanceRecord)
        .where(SyncInstanceRecord.id == record_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if rec is None:
        raise NotFoundError(f"unknown instance record {record_id}")
    if rec.session_id != row.session_id:  # a wrong session_id: the wrong session row was locked
        raise IllegalTransitionError(f"record {record_id} is not a record of session {row.session_id}")
    return row, rec


def _transition(
    session: Session, record_id: int, to: RecordStatus, session_id: str | None = None
) -> tuple[SyncSession, SyncInstanceRecord]:
    row, rec = _lock_record(session, record_id, session_id)
    if row.status != SessionStatus.RUNNING:
        raise IllegalTransitionError(
            f"cannot mark record {record_id} ({rec.instance_name}) {to}: session {row.session_id} is {row.status}"
        )
    if to not in _ALLOWED.get(rec.status, ()):
        raise IllegalTransitionError(
            f"cannot mark record {record_id} ({rec.instance_name}) {to}: it is {rec.status} already"
        )
    rec.status = to.value
    return row, rec


def start_instance_sync(
    session: Session, *, record_id: int, flow_run_id: str | None = None, session_id: str | None = None
) -> SyncInstanceRecord:
    _, rec = _transition(session, record_id, RecordStatus.RUNNING, session_id)
    rec.started_at = utcnow()
    if flow_run_id:
        rec.flow_run_id = flow_run_id
    # No recount: pending -> running changes none of the session's totals, and a session with
    # a running record cannot finish (the GROUP BY here was O(records) per instance for nothing).
    return rec


def complete_instance_sync(
    session: Session,
    *,
    record_id: int,
    counts: ItemCounts | None = None,
    details: Mapping[str, Any] | None = None,
    session_id: str | None = None,
) -> SyncInstanceRecord:
    """Mark a running record completed.

    ``counts`` are *added* to what batches already recorded (:func:`add_record_progress`);
    ``details`` are merged into ``sync_details``. ``session_id`` (here and in the other
    transitions): the record's session, when the caller knows it.
    """
    row, rec = _transition(session, record_id, RecordStatus.COMPLETED, session_id)
    _add_counts(rec, counts)
    _merge_details(rec, details)
    rec.completed_at = utcnow()
    rec.error_message = None
    _recount(session, row)
    return rec


def fail_instance_sync(
    session: Session,
    *,
    record_id: int,
    error_message: str,
    details: Mapping[str, Any] | None = None,
    session_id: str | None = None,
) -> SyncInstanceRecord:
    row, rec = _transition(session, record_id, RecordStatus.FAILED, session_id)
    rec.error_message = error_message
    _merge_details(rec, details)
    rec.completed_at = utcnow()
    _recount(session, row)
    return rec


def fail_pending_record(session: Session, *, record_id: int, error_message: str) -> bool:
    """Fail the record only while it is still ``pending`` and its session runs (its instance run
    was lost before it started); False otherwise. Locks like every transition (session row,
    then record), so a run that opens the record at the same moment is never failed."""
    row, rec = _lock_record(session, record_id)
    if rec.status != RecordStatus.PENDING or row.status != SessionStatus.RUNNING:
        return False
    fail_instance_sync(session, record_id=record_id, error_message=error_message)
    return True


def skip_instance_sync(
    session: Session, *, record_id: int, reason: str, session_id: str | None = None
) -> SyncInstanceRecord:
    row, rec = _transition(session, record_id, RecordStatus.SKIPPED, session_id)
    rec.error_message = reason
    rec.completed_at = utcnow()
    _recount(session, row)
    return rec


def cancel_instance_sync(
    session: Session,
    *,
    record_id: int,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    session_id: str | None = None,
) -> SyncInstanceRecord:
    row, rec = _transition(session, record_id, RecordStatus.CANCELLED, session_id)
    rec.error_message = reason
    _merge_details(rec, details)
    rec.completed_at = utcnow()
    _recount(session, row)
    return rec


def add_record_progress(
    session: Session | Connection,
    *,
    record_id: int,
    counts: ItemCounts,
    details: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Add one batch's counts to a record (and merge ``details`` into its ``sync_details``), in
    the batch's own transaction, with one UPDATE. Returns (session status, record status), so
    the caller learns at each batch boundary whether the session was cancelled.

    Does not lock the session row (batches of different instances must not queue on it).
    """
    rec = cast(Table, SyncInstanceRecord.__table__)  # declarative types it as any FromClause
    if isinstance(session, Session):
        session.flush()  # this Core UPDATE bypasses autoflush, and expire_all() below drops what is unflushed
    conn = session.connection() if isinstance(session, Session) else session
    values: dict[str, Any] = {
        "items_synced": rec.c.items_synced + counts.synced,
        "items_created": rec.c.items_created + counts.created,
        "items_updated": rec.c.items_updated + counts.updated,
        "items_deleted": rec.c.items_deleted + counts.deleted,
        "items_unchanged": rec.c.items_unchanged + counts.unchanged,
        "updated_at": utcnow(),
    }
    if details:
        if conn.dialect.name == "postgresql":
            values["sync_details"] = func.coalesce(rec.c.sync_details, literal({}, JSONB)).op("||")(
                literal(dict(details), JSONB)
            )
        else:
            patch = json.dumps(dict(details), default=str)
            values["sync_details"] = func.json_patch(func.coalesce(rec.c.sync_details, "{}"), patch)
    session_status = select(SyncSession.status).where(SyncSession.session_id == rec.c.session_id).scalar_subquery()
    row = conn.execute(
        update(rec).where(rec.c.id == record_id).values(**values).returning(session_status, rec.c.status)
    ).first()
    if row is None:
        raise NotFoundError(f"unknown instance record {record_id}")
    if isinstance(session, Session):
        session.expire_all()  # ORM objects loaded earlier must not hide the new counts
    return row[0], row[1]


def _add_counts(rec: SyncInstanceRecord, counts: ItemCounts | None) -> None:
    if counts is None:
        return
    rec.items_synced += counts.synced
    rec.items_created += counts.created
    rec.items_updated += counts.updated
    rec.items_deleted += counts.deleted
    rec.items_unchanged += counts.unchanged


def _merge_details(rec: SyncInstanceRecord, details: Mapping[str, Any] | None) -> None:
    if details:
        merged = dict(rec.sync_details or {})
        merged.update(details)
        rec.sync_details = merged


# ------------------------------------------------------- retry, sweep, lost parent runs


def retry_failed(
    session: Session,
    *,
    session_id: str,
    created_by: str | None = None,
    flow_run_id: str | None = None,
    new_session_id: str | None = None,
) -> SyncSession:
    """Open a new session over only the failed instances of ``session_id`` (same category and
    type, ``retry_of`` linking back), each record keeping its priority and options.

    The old session is only read: its statistics stay as they are. Raises
    :class:`IllegalTransitionError` while it still runs and :class:`ConfigError` when none of
    its records failed.
    """
    old = get_session(session, session_id=session_id, with_records=True)
    if old.status == SessionStatus.RUNNING:
        raise IllegalTransitionError(f"session {session_id} is still running: retry its failed instances when it ends")
    failed = [r for r in old.records if r.status == RecordStatus.FAILED]
    if not failed:
        raise ConfigError(f"session {session_id} has no failed instance to retry")
    insts = {
        i.id: i
        for i in session.scalars(
            select(Instance).where(Instance.id.in_([r.instance_id for r in failed]), Instance.retired_at.is_(None))
        )
    }
    specs = [
        RecordSpec(insts[r.instance_id], priority=r.priority, options=r.options)
        for r in failed
        if r.instance_id in insts
    ]
    if not specs:
        raise ConfigError(f"session {session_id}: the failed instances were removed (retired)")
    row = create_session(
        session,
        sync_type=old.sync_type,
        sync_category=old.sync_category,
        created_by=created_by,
        flow_run_id=flow_run_id,
        retry_of=session_id,
        session_id=new_session_id,
    )
    add_instance_records(session, session_id=row.session_id, instances=specs)
    return row


def category_busy(session: Session, *, category: str, lease_seconds: float, now: dt.datetime | None = None) -> bool:
    """Whether a sync of ``category`` is alive anywhere: a lease that has not run out, or an
    open record (pending/running) of a running session touched within ``lease_seconds``
    (a session that just opened and waits for its first slot)."""
    from syncflow.store.models import SyncConfigItem

    now = now or utcnow()
    cat = Category.parse(category, what="category").value
    lease = session.scalar(
        select(func.count())
        .select_from(SyncConfigItem)
        .where(SyncConfigItem.category == cat, SyncConfigItem.lock_expires_at > now)
    )
    if lease:
        return True
    recent = session.scalar(
        select(func.count())
        .select_from(SyncInstanceRecord)
        .join(SyncSession, SyncSession.session_id == SyncInstanceRecord.session_id)
        .where(
            SyncInstanceRecord.sync_category == cat,
            SyncSession.status == SessionStatus.RUNNING.value,
            SyncInstanceRecord.status.in_([RecordStatus.PENDING.value, RecordStatus.RUNNING.value]),
            SyncInstanceRecord.updated_at > now - dt.timedelta(seconds=lease_seconds),
        )
    )
    return bool(recent)


SWEPT_PREFIX = "worker lost:"  # how a record the sweep failed starts its error message


@dataclass
class SweepResult:
    records_failed: list[int] = field(default_factory=list)
    sessions_finished: list[str] = field(default_factory=list)
    leases_released: int = 0
    # Prefect flow runs whose process is gone: the swept records' runs, and the parent runs of
    # sessions whose heartbeat is as old as the records (the caller marks them Crashed)
    dead_flow_runs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_failed": self.records_failed,
            "sessions_finished": self.sessions_finished,
            "leases_released": self.leases_released,
            "dead_flow_runs": self.dead_flow_runs,
        }


def sweep(session: Session, *, older_than_seconds: float, now: dt.datetime | None = None) -> SweepResult:
    """Repair what crashed workers left behind.

    A ``pending``/``running`` record of a running session whose (instance, category) lease ran
    out or is absent and which nobody updated for ``older_than_seconds`` (use the lease) is
    failed with "worker lost: ..."; its session finishes through the normal recount. A
    ``pending`` record waits for a slot (or a paused category) while its parent lives: it is
    only swept when the session's heartbeat (:func:`touch_session`) is as old too. Leases
    that ran out are released (:func:`syncflow.store.sync_state.release_expired`).
    """
    from syncflow.store import sync_state
    from syncflow.store.models import SyncConfigItem

    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=older_than_seconds)
    live = (
        select(SyncConfigItem.id)
        .where(
            SyncConfigItem.instance_id == SyncInstanceRecord.instance_id,
            SyncConfigItem.category == SyncInstanceRecord.sync_category,
            SyncConfigItem.lock_expires_at > now,
        )
        .exists()
    )
    stale = list(
        session.execute(
            select(
                SyncInstanceRecord.id,
                SyncInstanceRecord.session_id,
                SyncInstanceRecord.status,
                SyncInstanceRecord.updated_at,
                SyncSession.updated_at,
            )
            .join(SyncSession, SyncSession.session_id == SyncInstanceRecord.session_id)
            .where(
                SyncSession.status == SessionStatus.RUNNING.value,
                SyncInstanceRecord.status.in_([RecordStatus.PENDING.value, RecordStatus.RUNNING.value]),
                SyncInstanceRecord.updated_at < cutoff,
                ~live,
                or_(SyncInstanceRecord.status == RecordStatus.RUNNING.value, SyncSession.updated_at < cutoff),
            )
            .order_by(SyncInstanceRecord.id)
        ).all()
    )
    out = SweepResult()
    for rec_id, sid, status, updated, heartbeat in stale:
        row = _lock_session(session, sid)
        parent_dead = heartbeat < cutoff  # the parent's heartbeat (touch_session) stopped too
        rec = session.scalar(
            select(SyncInstanceRecord)
            .where(SyncInstanceRecord.id == rec_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if (
            rec is None
            or row.status != SessionStatus.RUNNING
            or rec.status not in (RecordStatus.PENDING, RecordStatus.RUNNING)
        ):
            continue
        rec.status = RecordStatus.FAILED.value
        rec.error_message = (
            f"{SWEPT_PREFIX} {rec.instance_name} was {status} with no live lease and no update since "
            f"{updated.isoformat() if updated else '?'} (swept)"
        )
        rec.completed_at = now
        session.flush()
        out.records_failed.append(rec_id)
        for run_id in (rec.flow_run_id, row.flow_run_id if parent_dead else None):
            if run_id and run_id not in out.dead_flow_runs:
                out.dead_flow_runs.append(run_id)
        _recount(session, row)
        if row.finished and sid not in out.sessions_finished:
            out.sessions_finished.append(sid)
    out.leases_released = sync_state.release_expired(session, now=now)
    log.info("sweep: %s", out.as_dict())
    return out


def swept_flow_runs(session: Session, *, since: dt.datetime) -> list[str]:
    """The flow runs of records the sweep failed since ``since`` ("worker lost"): what a later
    sweep checks again in Prefect (the sweep that failed them may not have reached Prefect)."""
    return list(
        session.scalars(
            select(SyncInstanceRecord.flow_run_id)
            .where(
                SyncInstanceRecord.status == RecordStatus.FAILED.value,
                SyncInstanceRecord.error_message.like(f"{SWEPT_PREFIX}%"),
                SyncInstanceRecord.completed_at >= since,
                SyncInstanceRecord.flow_run_id.is_not(None),
            )
            .distinct()
        )
    )


def max_overlap(intervals: Iterable[tuple[dt.datetime, dt.datetime]]) -> int:
    """The most intervals open at one instant (an end at t counts before a start at t): how
    many instance syncs of a session ran at once, from their records' started/completed."""
    spans = list(intervals)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    cur = peak = 0
    for _, step in events:
        cur += step
        peak = max(peak, cur)
    return peak


def touch_session(session: Session, *, session_id: str, now: dt.datetime | None = None) -> bool:
    """The parent's heartbeat: a running session's ``updated_at`` becomes now (what tells the
    sweep that its pending records are queued, not orphaned). False when it is not running."""
    result = session.execute(
        update(SyncSession)
        .where(SyncSession.session_id == session_id, SyncSession.status == SessionStatus.RUNNING.value)
        .values(updated_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def close_session_of_run(session: Session, *, flow_run_id: str, outcome: str, reason: str) -> list[str]:
    """A parent run is gone (crashed, cancelled, failed): finish its running session(s) so no
    record stays open. ``outcome`` cancelled cancels them; anything else fails the open
    records with ``reason``. Returns the ids of the sessions closed."""
    ids = list(
        session.scalars(
            select(SyncSession.session_id).where(
                SyncSession.flow_run_id == flow_run_id, SyncSession.status == SessionStatus.RUNNING.value
            )
        )
    )
    for sid in ids:
        if outcome == "cancelled":
            cancel_session(session, session_id=sid, reason=reason)
        else:
            finish_session(session, session_id=sid, error_message=reason)
    return ids


# ------------------------------------------------------------------------- read side


@dataclass
class SessionPage:
    items: list[SyncSession]
    total: int
    limit: int
    offset: int


def list_sessions(
    session: Session,
    *,
    sync_type: str | None = None,
    sync_category: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> SessionPage:
    """Sessions, newest first, filtered and paged."""
    if limit < 1 or limit > 1000:
        raise ConfigError(f"limit must be between 1 and 1000, not {limit}")
    if offset < 0:
        raise ConfigError(f"offset must not be negative, not {offset}")
    conds = []
    if sync_type is not None:
        conds.append(SyncSession.sync_type == SyncType.parse(sync_type, what="sync type").value)
    if sync_category is not None:
        conds.append(SyncSession.sync_category == Category.parse(sync_category, what="category").value)
    if status is not None:
        conds.append(SyncSession.status == SessionStatus.parse(status, what="session status").value)
    if since is not None:
        conds.append(SyncSession.created_at >= since)
    if until is not None:
        conds.append(SyncSession.created_at < until)
    total = session.scalar(select(func.count()).select_from(SyncSession).where(*conds)) or 0
    items = list(
        session.scalars(
            select(SyncSession)
            .where(*conds)
            .order_by(SyncSession.created_at.desc(), SyncSession.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    return SessionPage(items=items, total=total, limit=limit, offset=offset)


def record_totals(session: Session, session_ids: Sequence[str]) -> dict[str, tuple[dict[str, int], int]]:
    """Per session id: its records by status and the items they synced (the totals of
    :func:`syncflow.schemas.session_view`), in one query."""
    out: dict[str, tuple[dict[str, int], int]] = {sid: ({}, 0) for sid in session_ids}
    if not session_ids:
        return out
    rows = session.execute(
        select(
            SyncInstanceRecord.session_id,
            SyncInstanceRecord.status,
            func.count(),
            func.coalesce(func.sum(SyncInstanceRecord.items_synced), 0),
        )
        .where(SyncInstanceRecord.session_id.in_(list(session_ids)))
        .group_by(SyncInstanceRecord.session_id, SyncInstanceRecord.status)
    ).all()
    for sid, status, n, items in rows:
        counts, total = out[sid]
        counts[status] = n
        out[sid] = (counts, total + int(items))
    return out


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Statistics:
    total_sessions: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    breakdown: list[dict[str, Any]] = field(default_factory=list)
    success_rate: float | None = None
    duration_seconds: dict[str, float | None] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_sessions": self.total_sessions,
            "by_status": self.by_status,
            "breakdown": self.breakdown,
            "success_rate": self.success_rate,
            "duration_seconds": self.duration_seconds,
            "instances": self.instances,
        }


def get_statistics(session: Session, *, since: dt.datetime | None = None) -> Statistics:
    """Counts by sync_type x category x status, success rate and durations."""
    conds = [SyncSession.created_at >= since] if since is not None else []
    rows = session.execute(
        select(SyncSession.sync_type, SyncSession.sync_category, SyncSession.status, func.count())
        .where(*conds)
        .group_by(SyncSession.sync_type, SyncSession.sync_category, SyncSession.status)
        .order_by(SyncSession.sync_type, SyncSession.sync_category, SyncSession.status)
    ).all()
    stats = Statistics()
    for sync_type, category, status, n in rows:
        stats.breakdown.append({"sync_type": sync_type, "sync_category": category, "status": status, "count": n})
        stats.by_status[status] = stats.by_status.get(status, 0) + n
        stats.total_sessions += n
    finished = sum(stats.by_status.get(s, 0) for s in (SessionStatus.COMPLETED, SessionStatus.FAILED))
    if finished:
        stats.success_rate = round(stats.by_status.get(SessionStatus.COMPLETED, 0) / finished, 4)
    spans = session.execute(
        select(SyncSession.started_at, SyncSession.completed_at).where(*conds, SyncSession.completed_at.is_not(None))
    ).all()
    durations = sorted((c - s).total_seconds() for s, c in spans if s is not None and c is not None)
    stats.duration_seconds = {
        "avg": round(sum(durations) / len(durations), 3) if durations else None,
        "p50": _percentile(durations, 50),
        "p95": _percentile(durations, 95),
        "max": durations[-1] if durations else None,
    }
    inst = session.execute(
        select(SyncInstanceRecord.status, func.count())
        .join(SyncSession, SyncSession.session_id == SyncInstanceRecord.session_id)
        .where(*conds)
        .group_by(SyncInstanceRecord.status)
    ).all()
    stats.instances = {status: n for status, n in inst}
    return stats


def cleanup_sessions(session: Session, *, older_than_days: int = 30, now: dt.datetime | None = None) -> int:
    """Delete finished sessions that completed more than ``older_than_days`` ago, with their
    records (FK cascade). Running sessions are never deleted. Returns how many went."""
    if older_than_days < 0:
        raise ConfigError(f"older_than_days must not be negative, not {older_than_days}")
    cutoff = (now or utcnow()) - dt.timedelta(days=older_than_days)
    ids = list(
        session.scalars(
            select(SyncSession.session_id).where(
                SyncSession.status.in_([s.value for s in FINISHED_SESSION_STATUSES]),
                SyncSession.completed_at < cutoff,
            )
        )
    )
    if ids:
        session.execute(delete(SyncSession).where(SyncSession.session_id.in_(ids)))
        session.flush()
        session.expire_all()
    log.info("cleanup: deleted %d session(s) finished before %s", len(ids), cutoff.isoformat())
    return len(ids)


__all__ = [
    "TERMINAL_RECORD_STATUSES",
    "ItemCounts",
    "RecordSpec",
    "SessionPage",
    "Statistics",
    "add_instance_records",
    "add_record_progress",
    "cancel_instance_sync",
    "cancel_session",
    "category_busy",
    "cleanup_sessions",
    "close_session_of_run",
    "complete_instance_sync",
    "create_session",
    "fail_instance_sync",
    "fail_pending_record",
    "finish_session",
    "get_record",
    "get_session",
    "get_statistics",
    "list_sessions",
    "max_overlap",
    "open_session",
    "record_totals",
    "records_in_order",
    "retry_failed",
    "skip_instance_sync",
    "start_instance_sync",
    "sweep",
    "touch_session",
]
