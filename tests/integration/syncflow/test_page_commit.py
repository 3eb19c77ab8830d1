"""The one-statement page commit on PostgreSQL (:mod:`syncflow.store.page_commit`) against the
three statements it replaces (upsert, cursor + lease, record counters), on a real PostgreSQL
store: same rows, same counts, same cursor, same record, and the same refusals."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from syncflow.errors import NotFoundError
from syncflow.store import instances, messages, page_commit, sessions, sync_state
from syncflow.store.db import session_scope
from syncflow.store.models import Message, SyncConfigItem, SyncInstanceRecord, SyncSession
from syncflow.store.sessions import ItemCounts

pytestmark = pytest.mark.postgres
OWNER = "run:page-commit-test"


@pytest.fixture
def store_url(pg_url: str) -> str:
    """PostgreSQL only: conftest's ``engine`` (wiped before and after) then runs on it."""
    return pg_url


@pytest.fixture
def pg(engine: Engine) -> Engine:
    return engine


def _open(engine: Engine, name: str) -> dict[str, Any]:
    """An instance holding its lease, and a running record of a messages session."""
    with session_scope(engine) as s:
        inst = instances.add_instance(s, name=name, kind="http-seq", block_name=None)
        sync_state.ensure_item(s, instance_id=inst.id, category="messages")
        row = sessions.open_session(s, sync_category="messages", instances=[name], created_by="test")
        rec = sessions.records_in_order(s, session_id=row.session_id)[0]
        ids = {"instance_id": int(inst.id), "record_id": int(rec.id), "session_id": row.session_id}
    with session_scope(engine) as s:
        sync_state.acquire_lock(s, instance_id=ids["instance_id"], category="messages", owner=OWNER, lease_seconds=60)
    return ids


def _row(i: int, *, content: str | None = None) -> tuple[Any, ...]:
    text = content or f"text {i}"
    return (f"m-{i}", f"s-{i}", i, "c-1", "u-1", 1, text, 1_700_000_000_000 + i, 1_700_000_000_500 + i)


def _three_statements(engine: Engine, ids: dict[str, Any], rows: list[tuple[Any, ...]], last_seq: int | None, n: int):
    with engine.connect() as conn, conn.begin():
        counts = messages.apply_message_batch(
            conn, instance_id=ids["instance_id"], rows=rows, session_id=ids["session_id"]
        )
        sync_state.advance_cursor(
            conn, instance_id=ids["instance_id"], category="messages", owner=OWNER, last_seq=last_seq, lease_seconds=60
        )
        statuses = sessions.add_record_progress(
            conn, record_id=ids["record_id"], counts=counts, details={"batches": n, "cursor": last_seq}
        )
    return counts, statuses


def _one_statement(engine: Engine, ids: dict[str, Any], rows: list[tuple[Any, ...]], last_seq: int | None, n: int):
    with engine.connect() as conn:
        messages.prepare(conn)
        with conn.begin():
            return page_commit.commit_page(
                conn,
                instance_id=ids["instance_id"],
                category="messages",
                owner=OWNER,
                record_id=ids["record_id"],
                session_id=ids["session_id"],
                rows=rows,
                last_seq=last_seq,
                lease_seconds=60,
                details={"batches": n, "cursor": last_seq},
            )


def _state(engine: Engine, ids: dict[str, Any]) -> dict[str, Any]:
    with session_scope(engine) as s:
        stored = s.execute(
            select(
                Message.message_id,
                Message.server_msg_id,
                Message.seq,
                Message.conversation_id,
                Message.sender_id,
                Message.message_type,
                Message.content,
                Message.create_time,
                Message.server_time,
            )
            .where(Message.instance_id == ids["instance_id"])
            .order_by(Message.seq)
        ).all()
        item = s.scalars(select(SyncConfigItem).where(SyncConfigItem.instance_id == ids["instance_id"])).one()
        rec = s.get(SyncInstanceRecord, ids["record_id"])
        assert rec is not None
        return {
            "rows": [tuple(r) for r in stored],
            "cursor": item.last_seq,
            "lease_until": item.lock_expires_at,
            "counts": (rec.items_synced, rec.items_created, rec.items_updated, rec.items_unchanged),
            "details": rec.sync_details,
        }


# Pages: new rows; an overlap with one changed and one duplicated id; rows below the cursor only.
PAGES: list[tuple[list[tuple[Any, ...]], int | None]] = [
    ([_row(i) for i in range(1, 6)], 5),
    ([_row(4), _row(5, content="edited"), _row(6), _row(6), _row(7)], 7),
    ([_row(2), _row(3, content="edited too")], 7),
]


def test_one_statement_equals_the_three_statements_it_replaces(pg: Engine) -> None:
    a, b = _open(pg, "three"), _open(pg, "one")
    for n, (rows, last_seq) in enumerate(PAGES, start=1):
        expected = _three_statements(pg, a, rows, last_seq, n)
        got = _one_statement(pg, b, rows, last_seq, n)
        assert got == expected, f"page {n}"
    three, one = _state(pg, a), _state(pg, b)
    assert one["rows"] == three["rows"] and len(one["rows"]) == 7
    assert one["rows"][4][6] == "edited" and one["rows"][2][6] == "edited too"
    assert one["cursor"] == three["cursor"] == 7
    assert one["counts"] == three["counts"] == (12, 7, 2, 3)
    assert one["details"] == three["details"] == {"batches": 3, "cursor": 7}
    assert one["lease_until"] > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=50)  # renewed by every page


def test_counts_and_statuses_come_back_as_the_record_sees_them(pg: Engine) -> None:
    ids = _open(pg, "statuses")
    counts, statuses = _one_statement(pg, ids, [_row(1), _row(2)], 2, 1)
    assert counts == ItemCounts(synced=2, created=2, updated=0, unchanged=0)
    assert statuses == ("running", "pending")  # (session, record): the record was never begun here
    with session_scope(pg) as s:  # an operator cancels the session: the next page learns it
        s.execute(update(SyncSession).where(SyncSession.session_id == ids["session_id"]).values(status="cancelled"))
    counts, statuses = _one_statement(pg, ids, [_row(2), _row(3)], 3, 2)
    assert counts == ItemCounts(synced=2, created=1, updated=0, unchanged=1)
    assert statuses == ("cancelled", "pending")


def test_range_mode_stores_rows_and_leaves_the_cursor(pg: Engine) -> None:
    ids = _open(pg, "range")
    _one_statement(pg, ids, [_row(10), _row(11)], 11, 1)
    _one_statement(pg, ids, [_row(3), _row(4)], None, 2)
    state = _state(pg, ids)
    assert state["cursor"] == 11 and [r[2] for r in state["rows"]] == [3, 4, 10, 11]


def test_the_cursor_never_moves_back(pg: Engine) -> None:
    ids = _open(pg, "back")
    _one_statement(pg, ids, [_row(9)], 9, 1)
    _one_statement(pg, ids, [_row(5)], 5, 2)
    assert _state(pg, ids)["cursor"] == 9


def test_a_lost_lease_rolls_the_whole_page_back(pg: Engine) -> None:
    ids = _open(pg, "stolen")
    _one_statement(pg, ids, [_row(1)], 1, 1)
    with session_scope(pg) as s:  # another sync took the lease over
        s.execute(
            update(SyncConfigItem)
            .where(SyncConfigItem.instance_id == ids["instance_id"])
            .values(lock_owner="run:thief", lock_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60))
        )
    with pytest.raises(sync_state.LeaseLostError, match="lost the single-flight lease of messages"):
        _one_statement(pg, ids, [_row(2), _row(3)], 3, 2)
    state = _state(pg, ids)
    assert [r[2] for r in state["rows"]] == [1]
    assert state["cursor"] == 1 and state["counts"] == (1, 1, 0, 0)
    assert state["details"] == {"batches": 1, "cursor": 1}


def test_an_unknown_record_is_refused_and_nothing_is_stored(pg: Engine) -> None:
    ids = _open(pg, "norecord")
    with pytest.raises(NotFoundError, match="unknown instance record 987654"):
        _one_statement(pg, {**ids, "record_id": 987654}, [_row(1)], 1, 1)
    state = _state(pg, ids)
    assert state["rows"] == [] and state["cursor"] is None


def test_telegram_rows_take_the_extended_stage(pg: Engine) -> None:
    ids = _open(pg, "tg")
    rows = [(*_row(i), 1_700_000_009_000, "text", None, {"views": i}) for i in (1, 2)]
    counts, _ = _one_statement(pg, ids, rows, 2, 1)
    assert counts == ItemCounts(synced=2, created=2, updated=0, unchanged=0)
    rows[1] = (*rows[1][:-1], {"views": 99})
    counts, _ = _one_statement(pg, ids, rows, 2, 2)
    assert counts == ItemCounts(synced=2, created=0, updated=1, unchanged=1)
    with session_scope(pg) as s:
        extra = s.scalar(select(Message.extra).where(Message.instance_id == ids["instance_id"], Message.seq == 2))
    assert extra == {"views": 99}
