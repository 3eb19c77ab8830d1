"""The ONE shape of a session and of an instance record, as pydantic views.

The CLI's ``--json`` (``sync run``, ``sync instance``, ``sessions show``, ``sessions list``,
``sessions retry-failed``), the console API, the session flow's return value and its Prefect
artifacts all answer these views, built from the ORM rows by one function each:
:func:`record_view`, :func:`session_view` and :func:`session_detail_view`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from syncflow.store.models import (
    Category,
    RecordStatus,
    SessionStatus,
    SyncInstanceRecord,
    SyncSession,
    SyncType,
    utcnow,
)
from syncflow.store.session_ids import MIN_LEN

SHORT_ID_LEN = MIN_LEN  # the console's short session ids: at least this long, longer when ambiguous

CategoryName = Literal["account", "capacity", "config", "metadata", "messages", "other"]
SyncTypeName = Literal["scheduled", "manual_batch"]
SessionStatusName = Literal["running", "completed", "failed", "cancelled"]
RecordStatusName = Literal["pending", "running", "completed", "failed", "cancelled", "skipped"]

assert set(CategoryName.__args__) == set(Category.values())  # type: ignore[attr-defined]
assert set(SyncTypeName.__args__) == set(SyncType.values())  # type: ignore[attr-defined]
assert set(SessionStatusName.__args__) == set(SessionStatus.values())  # type: ignore[attr-defined]
assert set(RecordStatusName.__args__) == set(RecordStatus.values())  # type: ignore[attr-defined]


class Progress(BaseModel):
    """How far a record got: its counters, what its batches reported, and (once a batch was
    measured) its rate and ETA. Built by :func:`measure_progress`, the one place that computes them."""

    batches: int | None = Field(default=None, description="Batches committed so far.")
    cursor: int | None = Field(default=None, description="Last seq committed (seq syncs).")
    remaining: int | None = Field(default=None, description="Items the source says are left, when it says.")
    percent: float | None = Field(default=None, description="synced / (synced + remaining), when remaining is known.")
    elapsed_seconds: float | None = Field(default=None, description="Seconds since the record started.")
    expected: int | None = Field(
        default=None, description="Items expected in all: synced + remaining (the source's totalCount), when known."
    )
    rate_per_second: float | None = Field(
        default=None, description="Items synced per second since the record started, once a batch was committed."
    )
    eta_seconds: float | None = Field(
        default=None,
        description="remaining / rate: seconds still to go, once a batch was measured and remaining is known.",
    )


class SessionProgress(BaseModel):
    """How far a running session got, summed over its records (:func:`measure_session_progress`)."""

    instances_done: int = Field(description="Records that ended (completed, failed, cancelled, skipped).")
    instances_total: int
    items_synced: int = Field(description="Items synced by all records so far.")
    expected: int | None = Field(
        description="Items expected in all, when every record's total is known (finished: what it synced; "
        "running: synced + remaining); unknown while a record is pending or its source gave no count."
    )
    percent: float | None = Field(description="items_synced / expected.")
    rate_per_second: float | None = Field(description="Sum of the running records' rates.")
    eta_seconds: float | None = Field(
        description="The longest ETA of the running records, when expected is known and each has been measured."
    )


class RecordView(BaseModel):
    """One instance's part of a session."""

    id: int
    instance_id: int
    instance_name: str | None
    sync_category: CategoryName
    status: RecordStatusName
    priority: int
    options: dict[str, Any] | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    duration_seconds: float | None
    items_synced: int
    items_created: int
    items_updated: int
    items_unchanged: int
    items_deleted: int
    items_per_second: float | None = Field(description="items_synced / duration, once finished.")
    error_message: str | None
    warning: str | None = Field(
        default=None,
        description="Set when the sync ran but something is wrong: the reconciliation found messages "
        "missing that the gap ledger cannot explain.",
    )
    sync_details: dict[str, Any] | None
    flow_run_id: str | None
    progress: Progress | None = Field(description="Set while the record is running.")
    title: str | None = Field(default=None, description="The chat's title, for chat instances (Telegram).")


class SessionView(BaseModel):
    """A session with its totals (no records)."""

    session_id: str
    short_id: str = Field(
        description="The shortest prefix of session_id (8 characters or more) that no other session shares, "
        "as the console shows it; the CLI accepts any unique prefix."
    )
    sync_type: SyncTypeName
    sync_category: CategoryName
    status: SessionStatusName
    started_at: dt.datetime
    completed_at: dt.datetime | None
    duration_seconds: float | None
    total_instances: int
    successful_instances: int
    failed_instances: int
    skipped_instances: int = Field(
        default=0, description="Records skipped because another sync held the instance (their error_message names it)."
    )
    record_counts: dict[str, int] = Field(description="Records by status (pending, running, completed, ...).")
    items_synced: int = Field(description="Items synced by all records so far.")
    created_by: str | None
    flow_run_id: str | None
    retry_of: str | None
    error_message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class MetadataRefresh(BaseModel):
    """The metadata session a messages session ran first (the seed's rule), in short."""

    session_id: str
    status: SessionStatusName
    total_instances: int
    failed_instances: int
    failed: list[str] = Field(description="Names of the instances whose metadata failed.")
    errors: list[str] = Field(description="Their error messages, in the same order.")


class SessionDetailView(SessionView):
    """A session and its records, highest priority first."""

    records: list[RecordView]
    progress: SessionProgress | None = Field(default=None, description="Set while the session is running.")
    metadata_session: MetadataRefresh | None = Field(
        default=None, description="messages: the metadata session it ran first (None: it ran none)."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What the operator must know although the session ran, in words: its records' "
        "warnings (reconciliation), its metadata session's failures (messages sessions).",
    )


class ChangeEntry(BaseModel):
    """What one snapshot sync changed (``syncflow changes``, ``GET /sync_sessions/api/changes``):
    a record's counts and its change list in words, from its ``sync_details``."""

    session_id: str
    short_id: str = Field(description="The session's short id (see SessionView.short_id).")
    record_id: int
    instance_name: str | None
    sync_category: CategoryName
    status: RecordStatusName
    changed_at: dt.datetime = Field(description="When the record finished (else started).")
    items_created: int
    items_updated: int
    items_deleted: int
    changes: list[str] = Field(description="The first changes in words (sync_details.changes, at most 100).")
    changes_total: int = Field(description="How many changes there were in all.")


class ChangesPage(BaseModel):
    """What changed, newest first: ``syncflow changes --json`` and ``GET /sync_sessions/api/changes``."""

    items: list[ChangeEntry]
    limit: int
    offset: int


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def measure_progress(
    *,
    done: int,
    remaining: int | None,
    batches: int | None,
    elapsed: float | None,
    cursor: int | None = None,
) -> Progress:
    """The one computation of progress, rate and ETA (records, the CLI bar, the console, the
    Prefect artifacts): ``expected`` = done + remaining; the rate (items/s over ``elapsed``) and
    the ETA only once at least one batch was committed and took time — never a guess from nothing."""
    expected = done + remaining if remaining is not None else None
    percent = round(100.0 * done / expected, 1) if expected else None
    measured = bool(batches) and elapsed is not None and elapsed > 0
    rate = done / elapsed if measured and done > 0 and elapsed else None
    eta = None
    if rate and remaining is not None:
        eta = round(remaining / rate, 1)
    return Progress(
        batches=batches,
        cursor=cursor,
        remaining=remaining,
        percent=percent,
        elapsed_seconds=round(elapsed, 3) if elapsed is not None else None,
        expected=expected,
        rate_per_second=round(rate, 1) if rate else None,
        eta_seconds=eta,
    )


_ENDED = frozenset({"completed", "failed", "cancelled", "skipped"})


def measure_session_progress(records: Sequence[RecordView]) -> SessionProgress:
    """A session's progress from its records' views (see :class:`SessionProgress`)."""
    done = sum(1 for r in records if r.status in _ENDED)
    items = sum(r.items_synced for r in records)
    expected: int | None = 0
    rate = 0.0
    etas: list[float | None] = []
    for r in records:
        if r.status in _ENDED:
            expected = None if expected is None else expected + r.items_synced
        elif r.status == "running" and r.progress is not None and r.progress.expected is not None:
            expected = None if expected is None else expected + r.progress.expected
            rate += r.progress.rate_per_second or 0.0
            etas.append(r.progress.eta_seconds)
        else:  # pending, or a running record whose source gave no count
            expected = None
            if r.progress is not None:
                rate += r.progress.rate_per_second or 0.0
    eta = None
    if expected is not None and etas and all(e is not None for e in etas):
        eta = max(e for e in etas if e is not None)
    return SessionProgress(
        instances_done=done,
        instances_total=len(records),
        items_synced=items,
        expected=expected,
        percent=round(100.0 * items / expected, 1) if expected else None,
        rate_per_second=round(rate, 1) if rate else None,
        eta_seconds=eta,
    )


def record_view(r: SyncInstanceRecord, now: dt.datetime | None = None, title: str | None = None) -> RecordView:
    """The view of one record (``progress`` only while it runs, measured at ``now``; ``title``:
    the chat's title for chat instances, ``syncflow.store.chats.chat_titles``)."""
    dur = r.duration_seconds
    details = r.sync_details or {}
    progress = None
    if r.status == RecordStatus.RUNNING:
        elapsed = ((now or utcnow()) - r.started_at).total_seconds() if r.started_at else None
        progress = measure_progress(
            done=r.items_synced,
            remaining=_int(details.get("remaining")),
            batches=_int(details.get("batches")),
            elapsed=elapsed,
            cursor=_int(details.get("cursor")),
        )
    return RecordView(
        id=r.id,
        instance_id=r.instance_id,
        instance_name=r.instance_name,
        sync_category=r.sync_category,
        status=r.status,
        priority=r.priority,
        options=r.options,
        started_at=r.started_at,
        completed_at=r.completed_at,
        duration_seconds=dur,
        items_synced=r.items_synced,
        items_created=r.items_created,
        items_updated=r.items_updated,
        items_unchanged=r.items_unchanged,
        items_deleted=r.items_deleted,
        items_per_second=round(r.items_synced / dur, 1) if dur else None,
        error_message=r.error_message,
        warning=r.warning,
        sync_details=r.sync_details,
        flow_run_id=r.flow_run_id,
        progress=progress,
        title=title,
    )


def change_entry(r: SyncInstanceRecord, short_id: str | None = None) -> ChangeEntry:
    """The change list of a record (:func:`syncflow.store.changes.records_with_changes`)."""
    details = r.sync_details or {}
    changes = [str(c) for c in details.get("changes") or []]
    return ChangeEntry(
        session_id=r.session_id,
        short_id=short_id or short_id_of(r.session_id),
        record_id=r.id,
        instance_name=r.instance_name,
        sync_category=r.sync_category,
        status=r.status,
        changed_at=r.completed_at or r.started_at or r.created_at,
        items_created=r.items_created,
        items_updated=r.items_updated,
        items_deleted=r.items_deleted,
        changes=changes,
        changes_total=_int(details.get("changes_total")) or len(changes),
    )


def short_id_of(session_id: str) -> str:
    """The console's short form of a session id when nothing longer is needed (8 characters)."""
    return session_id[:SHORT_ID_LEN]


def _session_fields(
    row: SyncSession, record_counts: Mapping[str, int], items_synced: int, short_id: str | None
) -> dict[str, Any]:
    return {
        "session_id": row.session_id,
        "short_id": short_id or short_id_of(row.session_id),
        "sync_type": row.sync_type,
        "sync_category": row.sync_category,
        "status": row.status,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "duration_seconds": row.duration_seconds,
        "total_instances": row.total_instances,
        "successful_instances": row.successful_instances,
        "failed_instances": row.failed_instances,
        "skipped_instances": int(record_counts.get("skipped", 0)),
        "record_counts": dict(record_counts),
        "items_synced": items_synced,
        "created_by": row.created_by,
        "flow_run_id": row.flow_run_id,
        "retry_of": row.retry_of,
        "error_message": row.error_message,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def session_view(
    row: SyncSession, totals: tuple[Mapping[str, int], int] = ({}, 0), short_id: str | None = None
) -> SessionView:
    """The view of a session without its records; ``totals`` are its records by status and
    the items they synced (``syncflow.store.sessions.record_totals``), ``short_id`` its unique
    prefix (``syncflow.store.sessions.short_ids``; default: the first 8 characters)."""
    counts, items = totals
    return SessionView(**_session_fields(row, counts, items, short_id))


def session_detail_view(
    row: SyncSession,
    now: dt.datetime | None = None,
    short_id: str | None = None,
    titles: Mapping[int, str] | None = None,
) -> SessionDetailView:
    """The view of a session loaded with its records (``get_session(..., with_records=True)``);
    ``progress`` while it runs; ``titles`` by instance id (chat instances)."""
    counts: dict[str, int] = {}
    for r in row.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    now = now or utcnow()
    records = sorted(row.records, key=lambda r: (-r.priority, r.instance_name or "", r.id))
    views = [record_view(r, now, (titles or {}).get(r.instance_id)) for r in records]
    refresh = metadata_refresh(row.metadata_session)
    return SessionDetailView(
        **_session_fields(row, counts, sum(r.items_synced for r in row.records), short_id),
        records=views,
        progress=measure_session_progress(views) if row.status == SessionStatus.RUNNING else None,
        metadata_session=refresh,
        warnings=metadata_warnings(refresh) + [v.warning for v in views if v.warning],
    )


def metadata_refresh(row: SyncSession | None) -> MetadataRefresh | None:
    """The short view of a messages session's metadata session (``SyncSession.metadata_session``)."""
    if row is None:
        return None
    failed = sorted((r for r in row.records if r.status == RecordStatus.FAILED), key=lambda r: r.instance_name or "")
    return MetadataRefresh(
        session_id=row.session_id,
        status=row.status,
        total_instances=row.total_instances,
        failed_instances=row.failed_instances,
        failed=[r.instance_name or str(r.instance_id) for r in failed],
        errors=[r.error_message or "failed" for r in failed],
    )


def metadata_warnings(refresh: MetadataRefresh | None) -> list[str]:
    """The warning lines of a metadata session that did not complete (none when it did)."""
    if refresh is None or refresh.status in ("completed", "running"):
        return []
    head = (
        f"metadata session {refresh.session_id} run first {refresh.status}: "
        f"{refresh.failed_instances} of {refresh.total_instances} instance(s) failed"
    )
    if refresh.failed:
        head += f" ({', '.join(refresh.failed)}); their messages were synced against older metadata"
    return [head] + [f"metadata of {n}: {e}" for n, e in zip(refresh.failed, refresh.errors, strict=True)]


__all__ = [
    "SHORT_ID_LEN",
    "CategoryName",
    "ChangeEntry",
    "ChangesPage",
    "MetadataRefresh",
    "Progress",
    "RecordStatusName",
    "RecordView",
    "SessionDetailView",
    "SessionProgress",
    "SessionStatusName",
    "SessionView",
    "SyncTypeName",
    "change_entry",
    "measure_progress",
    "measure_session_progress",
    "metadata_refresh",
    "metadata_warnings",
    "record_view",
    "session_detail_view",
    "session_view",
    "short_id_of",
]
