"""Issue 9, points 1 and 5, at the engine and store level (SQLite and PostgreSQL): a sync
refuses an instance that shares its block with another (stores from before block keys), a
retired instance's pending record fails without running, and a retirement or purge waits for
a running sync."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError

from syncflow.engine.run import begin_instance_sync
from syncflow.errors import AlreadyExistsError, ConfigError
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import make_engine, session_scope
from syncflow.store.migrations import upgrade
from syncflow.store.models import Instance, Message, SyncConfigItem, SyncInstanceRecord
from syncflow.store.retirement import retire_instance
from syncflow.store.sync_state import acquire_lock


def _record(engine: Engine, name: str) -> int:
    with session_scope(engine) as s:
        row = book.open_session(s, sync_category="messages", instances=[name])
        return book.records_in_order(s, session_id=row.session_id)[0].id


def _status(engine: Engine, rid: int) -> tuple[str, str | None]:
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        return rec.status, rec.error_message


def test_two_instances_on_one_block_without_keys_are_refused(engine: Engine) -> None:
    with session_scope(engine) as s:  # what `instances add coll` then `add COLL` left before keys
        inst_svc.add_instance(s, name="coll", kind="http-seq", block_name="syncflow-coll")
        inst_svc.add_instance(s, name="COLL", kind="http-seq", block_name="syncflow-coll-2")
        s.execute(update(Instance).where(Instance.name == "COLL").values(block_name="syncflow-coll"))
    rid = _record(engine, "coll")
    with pytest.raises(ConfigError, match="is also the connection of instance 'COLL'"):
        begin_instance_sync(record_id=rid, owner="run:x", lease_seconds=60, engine=engine)
    status, error = _status(engine, rid)
    assert status == "failed" and error is not None and "refusing to sync" in error
    with session_scope(engine) as s:  # no lease taken, nothing written
        assert s.scalar(select(func.count()).select_from(SyncConfigItem)) == 0

    # adding a third one on that block is refused up front
    with session_scope(engine) as s, pytest.raises(AlreadyExistsError, match="already the connection"):
        inst_svc.add_instance(s, name="coll-3", kind="http-seq", block_name="syncflow-coll")
    # once the other is retired, the remaining one syncs again
    with session_scope(engine) as s:
        retire_instance(s, name="COLL")
    run = begin_instance_sync(record_id=_record(engine, "coll"), owner="run:y", lease_seconds=60, engine=engine)
    assert getattr(run, "instance_name", None) == "coll"


def test_a_retired_instance_never_runs_and_retiring_waits_for_a_running_sync(engine: Engine) -> None:
    with session_scope(engine) as s:
        iid = inst_svc.add_instance(s, name="im-1", kind="http-seq", block_name="b-1").id
        s.add(Message(instance_id=iid, message_id="m-1", seq=1))
    pending = _record(engine, "im-1")  # opened before the retirement
    with session_scope(engine) as s:
        acquire_lock(s, instance_id=iid, category="messages", owner="run:busy", lease_seconds=600)
    with session_scope(engine) as s, pytest.raises(ConfigError, match="is being synced now"):
        retire_instance(s, name="im-1", purge=True)
    with session_scope(engine) as s:
        s.execute(update(SyncConfigItem).values(lock_owner=None, lock_expires_at=None))
    with session_scope(engine) as s:
        done = retire_instance(s, name="im-1")
        assert done.retired and done.purged == {}
    with pytest.raises(ConfigError, match="instance 'im-1' is retired"):
        begin_instance_sync(record_id=pending, owner="run:z", lease_seconds=60, engine=engine)
    assert _status(engine, pending)[0] == "failed"
    with session_scope(engine) as s:
        with pytest.raises(ConfigError, match="is retired"):
            inst_svc.select_instances(s, category="messages", names=["im-1"])
        assert inst_svc.select_instances(s, category="messages") == []
        assert s.scalar(select(func.count()).select_from(Message)) == 1  # data stays until purged
    with session_scope(engine) as s:
        purged = retire_instance(s, name="im-1", purge=True)
        assert not purged.retired and purged.purged["messages"] == 1
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0
        assert s.scalar(select(func.count()).select_from(SyncInstanceRecord)) == 1  # history stays


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_0008_keeps_existing_records_and_makes_them_restrict(
    backend: str, tmp_path: Any, pg_databases: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else pg_databases.create("mig0008")
    eng = make_engine(url)
    try:
        upgrade(eng, "0006")
        with eng.begin() as conn:
            conn.execute(
                text("INSERT INTO instances (name, kind, tags, categories) VALUES ('old', 'http-seq', '[]', '[]')")
            )
            conn.execute(
                text(
                    "INSERT INTO sync_sessions (session_id, sync_type, sync_category, status, total_instances,"
                    " successful_instances) VALUES ('s-1', 'manual_batch', 'messages', 'completed', 1, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO sync_instance_records (session_id, instance_id, instance_name, sync_category,"
                    " status, items_synced) SELECT 's-1', id, 'old', 'messages', 'completed', 42 FROM instances"
                )
            )
        upgrade(eng)
        with eng.connect() as conn:
            row = conn.execute(text("SELECT instance_name, status, items_synced FROM sync_instance_records")).one()
            assert tuple(row) == ("old", "completed", 42)
        with pytest.raises(IntegrityError), eng.begin() as conn:
            conn.execute(text("DELETE FROM instances WHERE name = 'old'"))
        with eng.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM sync_instance_records")) == 1
    finally:
        eng.dispose()
