"""The ONE shape of a session and of an instance record, as pydantic views.

The CLI's ``--json`` (``sync run``, ``sync instance``, ``sessions show``, ``sessions list``,
``sessions retry-failed``), the console API, the session flow's return value and its Prefect
artifacts all answer these views, built from the ORM rows by one function each:
:func:`record_view`, :func:`session_view` and :func:`session_detail_view`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
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

CategoryName = Literal["account", "capacity", "config", "metadata", "messages", "other"]
SyncTypeName = Literal["scheduled", "manual_batch"]
SessionStatusName = Literal["running", "completed", "failed", "cancelled"]
RecordStatusName = Literal["pending", "running", "completed", "failed", "cancelled", "skipped"]

assert set(CategoryName.__args__) == set(Category.values())  # type: ignore[attr-defined]
assert set(SyncTypeName.__args__) == set(SyncType.values())  # type: ignore[attr-defined]
assert set(SessionStatusName.__args__) == set(SessionStatus.values())  # type: ignore[attr-defined]
assert set(RecordStatusName.__args__) == set(RecordStatus.values())  # type: ignore[attr-defined]


class Progress(BaseModel):
    """How far a record got: its counters and what its batches reported."""

    batches: int | None = Field(default=None, description="Batches committed so far.")
    cursor: int | None = Field(default=None, description="Last seq committed (seq syncs).")
    remaining: int | None = Field(default=None, description="Items the source says are left, when it says.")
    percent: float | None = Field(default=None, description="synced / (synced + remaining), when remaining is known.")
    elapsed_seconds: float | None = Field(default=None, description="Seconds since the record started.")


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
    sync_details: dict[str, Any] | None
    flow_run_id: str | None
    progress: Progress | None = Field(description="Set while the record is running.")


class SessionView(BaseModel):
    """A session with its totals (no records)."""

    session_id: str
    sync_type: SyncTypeName
    sync_category: CategoryName
    status: SessionStatusName
    started_at: dt.datetime
    completed_at: dt.datetime | None
    duration_seconds: float | None
    total_instances: int
    successful_instances: int
    failed_instances: int
    record_counts: dict[str, int] = Field(description="Records by status (pending, running, completed, ...).")
    items_synced: int = Field(description="Items synced by all records so far.")
    created_by: str | None
    flow_run_id: str | None
    retry_of: str | None
    error_message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SessionDetailView(SessionView):
    """A session and its records, highest priority first."""

    records: list[RecordView]


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def record_view(r: SyncInstanceRecord, now: dt.datetime | None = None) -> RecordView:
    """The view of one record (``progress`` only while it runs, measured at ``now``)."""
    dur = r.duration_seconds
    progress = None
    if r.status == RecordStatus.RUNNING:
        details = r.sync_details or {}
        remaining = _int(details.get("remaining"))
        percent = None
        if remaining is not None and r.items_synced + remaining > 0:
            percent = round(100.0 * r.items_synced / (r.items_synced + remaining), 1)
        elapsed = ((now or utcnow()) - r.started_at).total_seconds() if r.started_at else None
        progress = Progress(
            batches=_int(details.get("batches")),
            cursor=_int(details.get("cursor")),
            remaining=remaining,
            percent=percent,
            elapsed_seconds=round(elapsed, 3) if elapsed is not None else None,
        )
    return RecordView(
        id=r.id,
        instance_id=r.instance_id,
        instance_name=r.instance_name,
        sync_category=r.sync_category,  # type: ignore[arg-type]
        status=r.status,  # type: ignore[arg-type]
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
        sync_details=r.sync_details,
        flow_run_id=r.flow_run_id,
        progress=progress,
    )


def _session_fields(row: SyncSession, record_counts: Mapping[str, int], items_synced: int) -> dict[str, Any]:
    return {
        "session_id": row.session_id,
        "sync_type": row.sync_type,
        "sync_category": row.sync_category,
        "status": row.status,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "duration_seconds": row.duration_seconds,
        "total_instances": row.total_instances,
        "successful_instances": row.successful_instances,
        "failed_instances": row.failed_instances,
        "record_counts": dict(record_counts),
        "items_synced": items_synced,
        "created_by": row.created_by,
        "flow_run_id": row.flow_run_id,
        "retry_of": row.retry_of,
        "error_message": row.error_message,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def session_view(row: SyncSession, totals: tuple[Mapping[str, int], int] = ({}, 0)) -> SessionView:
    """The view of a session without its records; ``totals`` are its records by status and
    the items they synced (``syncflow.store.sessions.record_totals``)."""
    counts, items = totals
    return SessionView(**_session_fields(row, counts, items))


def session_detail_view(row: SyncSession, now: dt.datetime | None = None) -> SessionDetailView:
    """The view of a session loaded with its records (``get_session(..., with_records=True)``)."""
    counts: dict[str, int] = {}
    for r in row.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    now = now or utcnow()
    records = sorted(row.records, key=lambda r: (-r.priority, r.instance_name or "", r.id))
    return SessionDetailView(
        **_session_fields(row, counts, sum(r.items_synced for r in row.records)),
        records=[record_view(r, now) for r in records],
    )


__all__ = [
    "CategoryName",
    "Progress",
    "RecordStatusName",
    "RecordView",
    "SessionDetailView",
    "SessionStatusName",
    "SessionView",
    "SyncTypeName",
    "record_view",
    "session_detail_view",
    "session_view",
]
