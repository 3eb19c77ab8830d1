"""The schema as the database enforces it, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from syncflow.store import instances as inst_svc
from syncflow.store import sessions as svc
from syncflow.store.db import session_scope
from syncflow.store.models import (
    Base,
    Instance,
    Message,
    SyncConfigItem,
    SyncInstanceRecord,
    SyncSession,
)

MAX_SEQ = 2**63 - 1


def _instance(engine: Engine, name: str = "im-1", kind: str = "http-seq") -> int:
    with session_scope(engine) as s:
        return inst_svc.add_instance(s, name=name, kind=kind).id


def test_models_match_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


@pytest.mark.parametrize(
    ("table", "values"),
    [
        ("sync_sessions", {"session_id": "s-1", "sync_type": "nightly", "sync_category": "account"}),
        ("sync_sessions", {"session_id": "s-2", "sync_type": "scheduled", "sync_category": "bogus"}),
        ("sync_sessions", {"session_id": "s-3", "sync_type": "scheduled", "status": "paused"}),
        ("instances", {"name": "x", "kind": "ftp", "tags": "[]", "categories": "[]"}),
    ],
)
def test_database_rejects_bad_enum_values(engine: Engine, table: str, values: dict[str, str]) -> None:
    cols = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    with pytest.raises(IntegrityError, match=r"(?i)check"):
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({params})"), values)


def test_database_rejects_bad_record_status(engine: Engine) -> None:
    iid = _instance(engine)
    with session_scope(engine) as s:
        sid = svc.create_session(s, sync_type="scheduled", sync_category="messages").session_id
    with pytest.raises(IntegrityError, match=r"(?i)check"):
        with engine.begin() as conn:
            conn.execute(
                insert(SyncInstanceRecord.__table__).values(
                    session_id=sid, instance_id=iid, sync_category="messages", status="halfway"
                )
            )


def test_server_defaults_fill_seed_columns(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sync_sessions (session_id, sync_type) VALUES ('raw-1', 'scheduled')"))
    with session_scope(engine) as s:
        row = s.scalar(select(SyncSession).where(SyncSession.session_id == "raw-1"))
        assert row is not None
        assert (row.status, row.sync_category, row.total_instances) == ("running", "account", 0)
        assert row.started_at is not None and row.started_at.tzinfo is not None


def test_unique_instance_name_enforced_by_database(engine: Engine) -> None:
    _instance(engine, "dup")
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(insert(Instance.__table__).values(name="dup", kind="postgres", tags=[], categories=[]))


def test_unique_message_per_instance_and_config_item(engine: Engine) -> None:
    iid = _instance(engine)
    row = {"instance_id": iid, "message_id": "m-1", "seq": 1}
    with engine.begin() as conn:
        conn.execute(insert(Message.__table__).values(**row))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(insert(Message.__table__).values(**row, content="again"))
    item = {"instance_id": iid, "category": "messages", "options": {}}
    with engine.begin() as conn:
        conn.execute(insert(SyncConfigItem.__table__).values(**item))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(insert(SyncConfigItem.__table__).values(**item))


def test_one_record_per_session_and_instance(engine: Engine) -> None:
    iid = _instance(engine)
    with session_scope(engine) as s:
        sid = svc.create_session(s, sync_type="scheduled", sync_category="messages").session_id
    rec = {"session_id": sid, "instance_id": iid, "sync_category": "messages"}
    with engine.begin() as conn:
        conn.execute(insert(SyncInstanceRecord.__table__).values(**rec))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(insert(SyncInstanceRecord.__table__).values(**rec))


def test_cursor_and_seq_hold_2_pow_63_minus_1(engine: Engine) -> None:
    iid = _instance(engine)
    with session_scope(engine) as s:
        s.add(SyncConfigItem(instance_id=iid, category="messages", last_seq=MAX_SEQ))
        s.add(Message(instance_id=iid, message_id="last", seq=MAX_SEQ, server_time=MAX_SEQ))
    with session_scope(engine) as s:
        assert s.scalar(select(SyncConfigItem.last_seq)) == MAX_SEQ
        assert s.scalar(select(Message.seq).where(Message.message_id == "last")) == MAX_SEQ
        assert s.scalar(select(Message.message_id).where(Message.seq > MAX_SEQ - 1)) == "last"


def test_deleting_a_session_cascades_to_its_records(engine: Engine) -> None:
    iid = _instance(engine)
    with session_scope(engine) as s:
        sess = svc.create_session(s, sync_type="manual_batch", sync_category="messages")
        svc.add_instance_records(s, session_id=sess.session_id, instances=[s.get(Instance, iid)])
        sid = sess.session_id
    with engine.begin() as conn:  # plain SQL: the database itself must cascade
        conn.execute(text("DELETE FROM sync_sessions WHERE session_id = :sid"), {"sid": sid})
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM sync_instance_records")) == 0


def test_deleting_an_instance_with_history_is_refused_by_the_database(engine: Engine) -> None:
    """Issue 9, point 5: no deletion of an instance can rewrite past sessions (records are
    ``ON DELETE RESTRICT``; ``instances remove`` retires instead). Without records, its sync
    state and data still cascade."""
    iid = _instance(engine)
    with session_scope(engine) as s:
        sess = svc.create_session(s, sync_type="manual_batch", sync_category="messages")
        svc.add_instance_records(s, session_id=sess.session_id, instances=[s.get(Instance, iid)])
        s.add(SyncConfigItem(instance_id=iid, category="messages", last_seq=5))
        s.add(Message(instance_id=iid, message_id="m", seq=5))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:  # plain SQL: the database itself must refuse
            conn.execute(text("DELETE FROM instances WHERE id = :id"), {"id": iid})
    with engine.connect() as conn:
        for table in ("sync_instance_records", "sync_config_items", "messages"):
            assert conn.scalar(text(f"SELECT count(*) FROM {table}")) == 1, table

    other = _instance(engine, "im-2")
    with session_scope(engine) as s:
        s.add(SyncConfigItem(instance_id=other, category="messages", last_seq=5))
        s.add(Message(instance_id=other, message_id="m", seq=5))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM instances WHERE id = :id"), {"id": other})
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM messages WHERE instance_id = :i"), {"i": other}) == 0


def test_record_must_reference_existing_session_and_instance(engine: Engine) -> None:
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(
                insert(SyncInstanceRecord.__table__).values(
                    session_id="no-such-session", instance_id=12345, sync_category="account"
                )
            )


def test_seed_indexes_exist(engine: Engine) -> None:
    from sqlalchemy import inspect

    insp = inspect(engine)
    names = {ix["name"] for t in ("sync_sessions", "sync_instance_records") for ix in insp.get_indexes(t)}
    for col in ("session_id", "sync_type", "sync_category", "status", "created_at"):
        assert f"idx_sync_sessions_{col}" in names
    for col in ("session_id", "instance_id", "sync_category", "status", "created_at"):
        assert f"idx_sync_instance_records_{col}" in names
