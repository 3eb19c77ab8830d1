"""The one view of a session and a record, and the session report rendered from it (no
database needed: the views are built from transient ORM rows)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from syncflow.reports.changes import change_lines
from syncflow.reports.sessions import (
    TABLE_FIELDS,
    fmt_eta,
    progress_text,
    records_table,
    session_progress_description,
    summary_markdown,
)
from syncflow.schemas import (
    RecordView,
    SessionView,
    change_entry,
    measure_progress,
    measure_session_progress,
    record_view,
    session_detail_view,
    session_view,
)
from syncflow.store.models import SyncInstanceRecord, SyncSession

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def _record(
    rid: int,
    name: str,
    status: str,
    priority: int,
    seconds: float | None,
    items: tuple[int, ...] = (0, 0, 0, 0),
    **kw: Any,
) -> SyncInstanceRecord:
    synced, created, updated, unchanged = items
    return SyncInstanceRecord(
        id=rid,
        session_id="s-1",
        instance_id=10 + rid,
        instance_name=name,
        status=status,
        priority=priority,
        options=None,
        started_at=T0,
        completed_at=None if seconds is None else T0 + dt.timedelta(seconds=seconds),
        items_synced=synced,
        items_created=created,
        items_updated=updated,
        items_unchanged=unchanged,
        items_deleted=0,
        flow_run_id=None,
        **{"error_message": None, "sync_details": None, "sync_category": "messages", **kw},
    )


def _session() -> SyncSession:
    row = SyncSession(
        session_id="s-1",
        sync_type="manual_batch",
        sync_category="messages",
        status="failed",
        started_at=T0,
        completed_at=T0 + dt.timedelta(seconds=12),
        total_instances=3,
        successful_instances=1,
        failed_instances=1,
        created_by="cli:op",
        flow_run_id=None,
        retry_of="s-0",
        error_message=None,
        created_at=T0,
        updated_at=T0,
    )
    row.records = [
        _record(1, "low", "completed", 1, 4, items=(400, 300, 50, 50), sync_details={"batches": 1}),
        _record(2, "high", "failed", 9, 1, error_message="HTTP 401 from high | auth"),
        _record(3, "busy", "running", 5, None, items=(250, 250, 0, 0), sync_details={"cursor": 250, "remaining": 750}),
    ]
    return row


def test_the_detail_view_has_the_canonical_names_and_priority_order() -> None:
    view = session_detail_view(_session(), now=T0 + dt.timedelta(seconds=5))
    assert [r.instance_name for r in view.records] == ["high", "busy", "low"]
    assert view.record_counts == {"completed": 1, "failed": 1, "running": 1}
    assert view.items_synced == 650 and view.duration_seconds == 12.0
    low = view.records[2]
    assert (low.items_synced, low.items_created, low.items_updated, low.items_unchanged) == (400, 300, 50, 50)
    assert low.duration_seconds == 4.0 and low.items_per_second == 100.0 and low.progress is None
    busy = view.records[1].progress
    assert busy is not None and (busy.cursor, busy.remaining, busy.percent, busy.elapsed_seconds) == (
        250,
        750,
        25.0,
        5.0,
    )
    assert set(view.model_dump()["records"][0]) == set(RecordView.model_fields)
    json.dumps(view.model_dump(mode="json"))  # the flow's return value is plain JSON data


def test_the_list_view_is_the_detail_view_without_records() -> None:
    row = _session()
    listed = session_view(row, ({"completed": 1, "failed": 1, "running": 1}, 650))
    detail = session_detail_view(row)
    detail_only = {"records", "progress", "metadata_session", "warnings"}
    assert set(SessionView.model_fields) == set(detail.model_dump()) - detail_only
    assert listed.model_dump() == detail.model_dump(exclude=detail_only)
    assert record_view(row.records[0]) == detail.records[2].model_copy(update={"progress": None})


def test_the_session_report_is_rendered_from_the_view() -> None:
    view = session_detail_view(_session())
    rows = records_table(view)
    assert [tuple(r) for r in rows] == [TABLE_FIELDS] * 3
    by = {r["instance_name"]: r for r in rows}
    assert by["low"]["items_synced"] == 400 and by["low"]["items_per_second"] == 100.0
    assert by["low"]["error_message"] == "" and by["high"]["error_message"].startswith("HTTP 401")
    md = summary_markdown(view)
    assert "# Sync session `s-1`" in md and "3 (1 ok, 1 failed)" in md and "retry of: `s-0`" in md
    assert "| low | completed | 400 | 300 | 50 | 4.0 | 100.0 |  |" in md
    assert "HTTP 401 from high \\| auth" in md  # a pipe in an error does not break the table


# ------------------------------------------------------------ progress, rate, ETA (14.4)


def test_no_rate_or_eta_before_a_batch_was_measured() -> None:
    p = measure_progress(done=0, remaining=1000, batches=None, elapsed=3.0)
    assert (p.expected, p.percent, p.rate_per_second, p.eta_seconds) == (1000, 0.0, None, None)
    p = measure_progress(done=500, remaining=None, batches=None, elapsed=3.0)  # a snapshot: no batches
    assert (p.expected, p.percent, p.rate_per_second, p.eta_seconds) == (None, None, None, None)


def test_rate_and_eta_once_a_batch_was_measured() -> None:
    p = measure_progress(done=500, remaining=1500, batches=1, elapsed=2.0, cursor=500)
    assert (p.expected, p.percent, p.rate_per_second, p.eta_seconds, p.cursor) == (2000, 25.0, 250.0, 6.0, 500)
    assert progress_text(p, 500, "msgs") == "500 / 2,000 msgs (25.0 %), 250/s, ETA 6s"
    unknown = measure_progress(done=500, remaining=None, batches=2, elapsed=2.0)
    assert (unknown.rate_per_second, unknown.eta_seconds) == (250.0, None)  # a rate, but no total: no ETA
    assert progress_text(unknown, 500, "msgs") == "500 msgs, 250/s"
    assert measure_progress(done=800, remaining=0, batches=3, elapsed=4.0).eta_seconds == 0.0


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0.2, "0s"), (42, "42s"), (185, "3m05s"), (7620, "2h07m")])
def test_eta_reads_like_a_duration(seconds: float | None, text: str) -> None:
    assert fmt_eta(seconds) == text


def test_a_running_record_has_its_rate_and_eta_in_the_view() -> None:
    row = _session()
    row.status = "running"
    row.records[2].sync_details = {"cursor": 250, "remaining": 750, "batches": 1}
    view = session_detail_view(row, now=T0 + dt.timedelta(seconds=5))
    busy = next(r for r in view.records if r.instance_name == "busy").progress
    assert busy is not None and (busy.expected, busy.rate_per_second, busy.eta_seconds) == (1000, 50.0, 15.0)
    sp = view.progress
    assert sp is not None and (sp.instances_done, sp.instances_total, sp.items_synced) == (2, 3, 650)
    # finished records count what they synced, the running one synced + remaining
    assert (sp.expected, sp.rate_per_second, sp.eta_seconds) == (400 + 0 + 1000, 50.0, 15.0)
    assert "2/3 instances done" in session_progress_description(view, 2, 3)
    assert "ETA 15s" in session_progress_description(view, 2, 3)
    assert session_detail_view(_session()).progress is None  # a finished session has none


def test_the_session_has_no_total_while_a_record_is_pending_or_gave_no_count() -> None:
    def rv(status: str, items: int, **progress: object) -> RecordView:
        rec = _record(1, "x", status, 0, None if status == "running" else 1, items=(items, 0, 0, 0))
        view = record_view(rec, now=T0 + dt.timedelta(seconds=10))
        if progress:
            view = view.model_copy(update={"progress": measure_progress(done=items, elapsed=10.0, **progress)})
        return view

    done = rv("completed", 100)
    fast = rv("running", 100, remaining=100, batches=1)  # 10/s, 10 s to go
    slow = rv("running", 50, remaining=450, batches=1)  # 5/s, 90 s to go
    sp = measure_session_progress([done, fast, slow])
    assert (sp.expected, sp.rate_per_second, sp.eta_seconds, sp.percent) == (800, 15.0, 90.0, 31.2)
    assert measure_session_progress([done, fast, rv("pending", 0)]).expected is None
    no_count = measure_session_progress([fast, rv("running", 10, remaining=None, batches=1)])
    assert (no_count.expected, no_count.eta_seconds, no_count.rate_per_second) == (None, None, 11.0)
    unmeasured = measure_session_progress([fast, rv("running", 0, remaining=500, batches=None)])
    assert (unmeasured.expected, unmeasured.eta_seconds) == (700, None)  # one instance not measured yet


# ------------------------------------------------------------------- change lists (14.3)


def test_change_lines_show_the_first_n_and_how_many_more() -> None:
    lines = [f"user{i}: +LOGIN" for i in range(100)]
    assert change_lines(lines, 250, 3) == ["user0: +LOGIN", "user1: +LOGIN", "user2: +LOGIN", "... and 247 more"]
    assert change_lines(lines[:2], 2, 10) == lines[:2]
    assert change_lines(lines[:2], None, 1) == ["user0: +LOGIN", "... and 1 more"]
    assert change_lines(lines[:2], 2, 0) == ["... and 2 more"]


def test_a_change_entry_is_read_from_the_record() -> None:
    rec = _record(
        7,
        "pg-main",
        "completed",
        0,
        2,
        items=(5, 1, 1, 3),
        sync_category="account",
        sync_details={"changes": ["bob: created", "alice: +CREATEDB"], "changes_total": 2},
    )
    e = change_entry(rec, "s-1")
    assert (e.session_id, e.short_id, e.record_id, e.instance_name, e.sync_category) == (
        "s-1",
        "s-1",
        7,
        "pg-main",
        "account",
    )
    assert e.changes == ["bob: created", "alice: +CREATEDB"] and e.changes_total == 2
    assert e.changed_at == T0 + dt.timedelta(seconds=2)
