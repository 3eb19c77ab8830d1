"""Request models and API-only response wrappers of the console API (the OpenAPI schema is
built from these). A session and a record are answered in the one shape of
:mod:`syncflow.schemas` (``SessionView``, ``SessionDetailView``, ``RecordView``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from syncflow.schemas import CategoryName, RecordView, SessionStatusName, SessionView, SyncTypeName
from syncflow.store.models import InstanceKind

KindName = Literal["http-seq", "postgres", "mysql", "sql-table", "telegram"]
ChatTypeName = Literal["user", "bot", "group", "supergroup", "channel"]

assert set(KindName.__args__) == set(InstanceKind.values())  # type: ignore[attr-defined]


InstanceName = str


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in words.")


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[ValidationErrorItem] | str


class QueuedSessionOut(BaseModel):
    """A session whose flow run has not opened it in the store yet (no worker picked it up)."""

    session_id: str
    status: Literal["queued"] = "queued"
    flow_run_id: str
    flow_run_name: str
    flow_run_state: str | None
    expected_start_time: dt.datetime | None
    records: list[RecordView] = Field(default_factory=list)


class SessionPageOut(BaseModel):
    items: list[SessionView]
    total: int = Field(description="Sessions matching the filters.")
    limit: int
    offset: int


class BreakdownItem(BaseModel):
    sync_type: SyncTypeName
    sync_category: CategoryName
    status: SessionStatusName
    count: int


class DurationStats(BaseModel):
    count: int = 0
    avg: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


class Throughput(BaseModel):
    items_synced: int = Field(description="Items synced by finished records in the window.")
    record_seconds: float = Field(description="Summed duration of those records.")
    items_per_second: float | None = Field(description="items_synced / record_seconds.")
    by_category: dict[str, float | None] = Field(default_factory=dict)


class TimelinePoint(BaseModel):
    start: dt.datetime = Field(description="Start of the bucket (UTC).")
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0


class StatisticsOut(BaseModel):
    since: dt.datetime
    until: dt.datetime
    bucket: Literal["hour", "day"]
    total_sessions: int
    by_status: dict[str, int]
    breakdown: list[BreakdownItem] = Field(description="Counts by sync_type x sync_category x status.")
    success_rate: float | None = Field(description="completed / (completed + failed) sessions.")
    duration_seconds: DurationStats = Field(description="Durations of finished sessions (percentiles).")
    instances: dict[str, int] = Field(description="Instance records by status.")
    throughput: Throughput
    timeline: list[TimelinePoint] = Field(description="Sessions started per bucket, by status.")


class ManualBatchIn(BaseModel):
    """A manual batch: which instances (by name, by tag, or all enabled ones of the category)."""

    model_config = ConfigDict(extra="forbid")

    category: CategoryName = Field(description="What to sync.")
    instances: list[InstanceName] | None = Field(
        default=None, max_length=1000, description="Instance names (each must exist and support the category)."
    )
    tags: list[str] | None = Field(default=None, max_length=100, description="Every enabled instance with any tag.")
    all: bool = Field(default=False, description="Every enabled instance supporting the category.")
    priorities: dict[InstanceName, int] | None = Field(
        default=None, description="Instance name -> priority (higher first); names must be in the batch."
    )
    options: dict[InstanceName, dict[str, Any]] | None = Field(
        default=None,
        description=("Instance name -> sync options (messages: full / incremental, from_seq, to_seq, batch_size)."),
    )
    created_by: str | None = Field(default=None, max_length=255, description="Who asks (shown in the session).")
    concurrency: int | None = Field(
        default=None, ge=1, le=100, description="Slots of the category limit when it must be created."
    )
    scale_out: bool | None = Field(default=None, description="Run each instance as its own deployment run.")
    refresh_metadata: bool | None = Field(default=None, description="Refresh metadata before messages.")

    @model_validator(mode="after")
    def _one_selection(self) -> ManualBatchIn:
        chosen = sum([bool(self.instances), bool(self.tags), self.all])
        if chosen != 1:
            raise ValueError("say which instances: exactly one of 'instances' (names), 'tags' or 'all': true")
        for what, values in (("instances", self.instances), ("tags", self.tags)):
            for v in values or []:
                if not v.strip() or len(v) > 255:
                    raise ValueError(f"{what}: names must be 1-255 characters, not {v!r}")
        for what, mapping in (("priorities", self.priorities), ("options", self.options)):
            for v in mapping or {}:
                if not v.strip() or len(v) > 255:
                    raise ValueError(f"{what}: instance names must be 1-255 characters, not {v!r}")
        for p in (self.priorities or {}).values():
            if not -1_000_000 <= p <= 1_000_000:
                raise ValueError(f"priorities must be between -1000000 and 1000000, not {p}")
        return self


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    created_by: str | None = Field(default=None, max_length=255)


class TriggeredOut(BaseModel):
    session_id: str = Field(description="The new session's id: follow it at /sync_sessions/api/sessions/{id}.")
    status: Literal["queued"] = "queued"
    flow_run_id: str
    flow_run_name: str
    deployment: str
    instances: list[str] = Field(description="The instances the session will run over.")
    retry_of: str | None = None
    held: bool = Field(default=False, description="True when the category is paused: the run waits for resume.")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)


class CancelOut(BaseModel):
    session_id: str
    status: SessionStatusName | Literal["queued"] = Field(description="The session's status after the request.")
    flow_run_id: str | None
    prefect: str | None = Field(description="What happened to the Prefect flow run, in words.")
    records: dict[str, str] = Field(default_factory=dict, description="Instance name -> record status.")


class PauseState(BaseModel):
    paused: bool
    paused_at: dt.datetime | None = None
    paused_by: str | None = None
    reason: str | None = None
    paused_deployments: list[str] = Field(default_factory=list, description="Deployment ids the pause paused.")


class RunCounts(BaseModel):
    queued: int = Field(description="Runs waiting to start: Scheduled and due (incl. Late) or Pending.")
    upcoming: int = Field(description="Scheduled runs not due yet.")
    awaiting_retry: int
    pending: int
    running: int
    cancelling: int
    completed: int = Field(description="Completed since 'since'.")
    failed: int = Field(description="Failed or crashed since 'since'.")
    cancelled: int = Field(description="Cancelled since 'since'.")
    last_completed_at: dt.datetime | None
    last_failed_at: dt.datetime | None


class StoreCounts(BaseModel):
    records: dict[str, int] = Field(description="Instance records of the category by status since 'since'.")
    sessions: dict[str, int] = Field(description="Sessions of the category by status since 'since'.")
    skipped: int
    failed_records: int
    pending_records: int = Field(description="Records waiting for a slot (or for resume when paused).")
    failed_sessions_not_retried: int = Field(description="Failed sessions no retry covers yet: the dead letter.")
    last_processed_at: dt.datetime | None
    last_failed_at: dt.datetime | None
    last_error: str | None


class QueueStatsOut(BaseModel):
    category: CategoryName
    since: dt.datetime
    pause: PauseState
    runs: RunCounts | None = Field(description="From Prefect; null when Prefect could not be reached.")
    prefect_error: str | None = None
    store: StoreCounts
    deployments: list[dict[str, Any]] = Field(default_factory=list, description="Deployments tagged category:<c>.")


class QueueRetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since_hours: float | None = Field(
        default=None, gt=0, le=24 * 366, description="Only failed sessions that started within this many hours."
    )
    limit: int = Field(default=20, ge=1, le=200, description="At most this many retries.")
    created_by: str | None = Field(default=None, max_length=255)


class QueueRetryOut(BaseModel):
    category: CategoryName
    triggered: list[TriggeredOut]
    skipped: list[dict[str, str]] = Field(default_factory=list, description="Failed sessions not retried, and why.")


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)
    paused_by: str | None = Field(default=None, max_length=255)


class PauseOut(BaseModel):
    category: CategoryName
    pause: PauseState
    deployments: list[dict[str, str]] = Field(description="Deployments paused (pause) or resumed (resume) now.")
    changed: bool = Field(description="False when it was paused (pause) / not paused (resume) already.")


class ClearOut(BaseModel):
    category: CategoryName
    cancelled: list[dict[str, Any]] = Field(
        description="Runs cancelled: id, name, expected start time, state before and after."
    )
    include_future: bool = Field(False, description="Whether future scheduled runs were cancelled too.")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    store: str = Field(description="'ok' or the error.")
    prefect: str = Field(description="'ok' or the error.")
    version: str
