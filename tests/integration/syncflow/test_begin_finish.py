"""Begin and finish of one instance sync as units of work (SQLite and PostgreSQL, issue 11):
begin marks the record running and takes the lease in one transaction, and reads what the run
needs (cursor, remembered page size, gap-ledger options, open holes) in it; a transition told
the record's session locks that session and no other."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, update

from syncflow.engine import run as run_mod
from syncflow.engine.run import InstanceRun, Skipped, begin_instance_sync, finish_instance_sync
from syncflow.errors import IllegalTransitionError
from syncflow.store import gaps as ledger
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import SyncConfigItem, SyncInstanceRecord, SyncSession
from syncflow.store.sync_state import acquire_lock, ensure_item, get_state


def _instance(engine: Engine, name: str) -> int:
    with session_scope(engine) as s:
        return inst_svc.add_instance(s, name=name, kind="http-seq", block_name=f"b-{name}").id


def _open(engine: Engine, *names: str) -> tuple[str, list[int]]:
    with session_scope(engine) as s:
        row = book.open_session(s, sync_category="messages", instances=list(names))
        return row.session_id, [r.id for r in book.records_in_order(s, session_id=row.session_id)]


def _record(engine: Engine, rid: int) -> SyncInstanceRecord:
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        s.expunge(rec)
        return rec


def _session(engine: Engine, sid: str) -> SyncSession:
    with session_scope(engine) as s:
        row = book.get_session(s, session_id=sid)
        s.expunge(row)
        return row


def test_a_begin_that_fails_at_the_lease_leaves_the_record_pending(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _instance(engine, "im-1")
    sid, [rid] = _open(engine, "im-1")

    def store_gone(*_a: object, **_k: object) -> None:
        raise RuntimeError("the store went away mid-begin")

    monkeypatch.setattr(run_mod.sync_state, "acquire_lock", store_gone)
    with pytest.raises(RuntimeError, match="went away"):
        begin_instance_sync(record_id=rid, owner="run:a", lease_seconds=60, engine=engine)
    # nothing of the begin committed: the record is not left running without a lease
    rec = _record(engine, rid)
    assert (rec.status, rec.started_at, rec.flow_run_id) == ("pending", None, None)
    assert _session(engine, sid).status == "running"

    monkeypatch.undo()  # the store is back: the same record begins as if nothing happened
    run = begin_instance_sync(record_id=rid, owner="run:a", lease_seconds=60, flow_run_id="fr-1", engine=engine)
    assert isinstance(run, InstanceRun)
    rec = _record(engine, rid)
    assert (rec.status, rec.flow_run_id) == ("running", "fr-1") and rec.started_at is not None


def test_a_held_lease_skips_the_record_naming_the_holder_in_the_same_begin(engine: Engine) -> None:
    iid = _instance(engine, "im-1")
    with session_scope(engine) as s:
        acquire_lock(s, instance_id=iid, category="messages", owner="someone-else", lease_seconds=600)
    sid, [rid] = _open(engine, "im-1")
    out = begin_instance_sync(record_id=rid, owner="run:b", lease_seconds=60, engine=engine)
    assert isinstance(out, Skipped) and "'someone-else'" in out.reason and "im-1" in out.reason
    rec = _record(engine, rid)
    assert (rec.status, rec.error_message) == ("skipped", out.reason)
    done = _session(engine, sid)  # its only record skipped: the session is over, and completed
    assert (done.status, done.total_instances) == ("completed", 1)
    with session_scope(engine) as s:  # the holder keeps its lease
        assert get_state(s, instance_id=iid, category="messages").lock_owner == "someone-else"


def test_begin_reads_the_cursor_page_size_gap_options_and_open_holes(engine: Engine) -> None:
    holed, clean = _instance(engine, "im-1"), _instance(engine, "im-2")
    with session_scope(engine) as s:
        for iid in (holed, clean):
            ensure_item(s, instance_id=iid, category="messages")
        s.execute(
            update(SyncConfigItem)
            .where(SyncConfigItem.instance_id == holed)
            .values(last_seq=41, options={"adaptive_batch_size": 800, "gap_checks": 2})
        )
        ledger.record_holes(s, instance_id=holed, category="messages", holes=[(10, 12)])
    _, [r1, r2] = _open(engine, "im-1", "im-2")
    run = begin_instance_sync(record_id=r1, owner="run:c", lease_seconds=60, engine=engine)
    assert isinstance(run, InstanceRun)
    assert (run.start_seq, run.adaptive_batch_size, run.open_holes) == (41, 800, True)
    assert run.state_options == {"adaptive_batch_size": 800, "gap_checks": 2}
    other = begin_instance_sync(record_id=r2, owner="run:c", lease_seconds=60, engine=engine)
    assert isinstance(other, InstanceRun)
    assert (other.start_seq, other.adaptive_batch_size, other.open_holes) == (0, None, False)
    with session_scope(engine) as s:  # both leases are held by the run
        assert get_state(s, instance_id=holed, category="messages").lock_owner == "run:c"
        assert get_state(s, instance_id=clean, category="messages").lock_owner == "run:c"

    # a full re-sync starts at 0 and forgets the cursor; a range neither reads nor keeps the ledger
    for begun in (run, other):
        assert finish_instance_sync(begun, outcome="completed", engine=engine) == "completed"
    _, [full] = _open(engine, "im-1")
    run = begin_instance_sync(record_id=full, owner="run:d", lease_seconds=60, options={"full": True}, engine=engine)
    assert isinstance(run, InstanceRun) and run.start_seq == 0 and run.open_holes is True
    with session_scope(engine) as s:
        assert get_state(s, instance_id=holed, category="messages").last_seq is None
    finish_instance_sync(run, outcome="completed", engine=engine)
    _, [ranged] = _open(engine, "im-1")
    run = begin_instance_sync(
        record_id=ranged, owner="run:e", lease_seconds=60, options={"from_seq": 5, "to_seq": 9}, engine=engine
    )
    assert isinstance(run, InstanceRun) and (run.start_seq, run.open_holes) == (4, None)


def test_a_transition_told_another_session_changes_nothing(engine: Engine) -> None:
    _instance(engine, "im-1")
    sid_a, [rid_a] = _open(engine, "im-1")
    sid_b, _ = _open(engine, "im-1")
    run = begin_instance_sync(record_id=rid_a, owner="run:f", lease_seconds=60, engine=engine)
    assert isinstance(run, InstanceRun) and run.session_id == sid_a
    with session_scope(engine) as s, pytest.raises(IllegalTransitionError, match=f"not a record of session {sid_b}"):
        book.complete_instance_sync(s, record_id=rid_a, session_id=sid_b)
    assert _record(engine, rid_a).status == "running"
    assert finish_instance_sync(run, outcome="completed", engine=engine) == "completed"
    assert _session(engine, sid_a).status == "completed" and _session(engine, sid_b).status == "running"
