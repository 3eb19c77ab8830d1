"""The one view of a session and a record, and the session report rendered from it (no
database needed: the views are built from transient ORM rows)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from syncflow.reports.sessions import TABLE_FIELDS, records_table, summary_markdown
from syncflow.schemas import RecordView, SessionView, record_view, session_detail_view, session_view
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
        sync_category="messages",
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
        **{"error_message": None, "sync_details": None, **kw},
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
    assert set(SessionView.model_fields) == set(detail.model_dump()) - {"records"}
    assert listed.model_dump() == detail.model_dump(exclude={"records"})
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
