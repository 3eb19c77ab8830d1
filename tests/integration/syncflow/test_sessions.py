"""Session book-keeping: life cycle, totals, illegal transitions, listing, stats, retention."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp

import pytest
from sqlalchemy import Engine, select, update

from syncflow.errors import ConfigError, IllegalTransitionError, NotFoundError
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as svc
from syncflow.store.db import make_engine, session_scope
from syncflow.store.models import Instance, SyncInstanceRecord, SyncSession, utcnow
from syncflow.store.sessions import ItemCounts, RecordSpec


def _instances(engine: Engine, n: int, kind: str = "http-seq", prefix: str = "im") -> list[int]:
    with session_scope(engine) as s:
        return [inst_svc.add_instance(s, name=f"{prefix}-{i:03d}", kind=kind, priority=i % 3).id for i in range(n)]


def _session_with_records(engine: Engine, n: int, category: str = "messages") -> tuple[str, list[int]]:
    ids = _instances(engine, n)
    with session_scope(engine) as s:
        sess = svc.create_session(s, sync_type="manual_batch", sync_category=category, created_by="alice")
        recs = svc.add_instance_records(s, session_id=sess.session_id, instances=[s.get(Instance, i) for i in ids])
        return sess.session_id, [r.id for r in recs]


def _session(engine: Engine, sid: str) -> SyncSession:
    with session_scope(engine) as s:
        return svc.get_session(s, session_id=sid, with_records=True)


def test_a_started_record_stays_running_when_its_progress_follows_in_the_same_transaction(engine: Engine) -> None:
    # start_instance_sync no longer recounts (which flushed): it must still write the record
    # before add_record_progress's Core UPDATE, whose expire_all() drops what is unflushed
    sid, recs = _session_with_records(engine, 2)
    with session_scope(engine) as s:
        svc.start_instance_sync(s, record_id=recs[0], flow_run_id="00000000-0000-0000-0000-000000000002")
        assert svc.add_record_progress(s, record_id=recs[0], counts=ItemCounts(synced=7), details={"batches": 1}) == (
            "running",
            "running",
        )
    got = _session(engine, sid)
    rec = next(r for r in got.records if r.id == recs[0])
    assert (rec.status, rec.items_synced, rec.sync_details) == ("running", 7, {"batches": 1})
    assert rec.started_at is not None and str(rec.flow_run_id) == "00000000-0000-0000-0000-000000000002"
    assert (got.status, got.total_instances, got.successful_instances, got.failed_instances) == ("running", 2, 0, 0)


def test_full_life_cycle_counts_and_finishes(engine: Engine) -> None:
    sid, recs = _session_with_records(engine, 3)
    assert _session(engine, sid).total_instances == 3
    with session_scope(engine) as s:
        for rid in recs:
            svc.start_instance_sync(s, record_id=rid, flow_run_id="00000000-0000-0000-0000-000000000001")
        svc.add_record_progress(
            s, record_id=recs[0], counts=ItemCounts(synced=500, created=500), details={"batches": 1}
        )
        svc.complete_instance_sync(
            s,
            record_id=recs[0],
            counts=ItemCounts(synced=10, created=2, updated=3, unchanged=5),
            details={"seq": [1, 510]},
        )
        svc.complete_instance_sync(s, record_id=recs[1])
    mid = _session(engine, sid)
    assert (mid.status, mid.successful_instances, mid.failed_instances) == ("running", 2, 0)
    with session_scope(engine) as s:
        svc.fail_instance_sync(s, record_id=recs[2], error_message="im-002: 401 unauthorized")
    done = _session(engine, sid)
    assert (done.status, done.total_instances, done.successful_instances, done.failed_instances) == ("failed", 3, 2, 1)
    assert done.completed_at is not None and done.completed_at >= done.started_at
    first = done.records[0]
    assert (first.items_synced, first.items_created, first.items_updated, first.items_unchanged) == (510, 502, 3, 5)
    assert first.sync_details == {"batches": 1, "seq": [1, 510]}
    assert first.flow_run_id == "00000000-0000-0000-0000-000000000001"
    assert done.records[2].error_message == "im-002: 401 unauthorized"


def test_all_succeeded_or_skipped_means_completed(engine: Engine) -> None:
    sid, recs = _session_with_records(engine, 2)
    with session_scope(engine) as s:
        svc.start_instance_sync(s, record_id=recs[0])
        svc.complete_instance_sync(s, record_id=recs[0])
        svc.skip_instance_sync(s, record_id=recs[1], reason="already syncing in session X")
    done = _session(engine, sid)
    assert (done.status, done.successful_instances, done.failed_instances) == ("completed", 1, 0)
    assert done.records[1].status == "skipped"


def test_completing_twice_is_illegal(engine: Engine) -> None:
    sid, recs = _session_with_records(engine, 2)
    with session_scope(engine) as s:
        svc.start_instance_sync(s, record_id=recs[0])
        svc.complete_instance_sync(s, record_id=recs[0])
    with pytest.raises(IllegalTransitionError, match=r"im-000.*completed already"):
        with session_scope(engine) as s:
            svc.complete_instance_sync(s, record_id=recs[0])
    with pytest.raises(IllegalTransitionError, match="pending"):
        with session_scope(engine) as s:
            svc.complete_instance_sync(s, record_id=recs[1])  # never started
    assert _session(engine, sid).successful_instances == 1


def test_cancelled_session_cannot_be_touched(engine: Engine) -> None:
    sid, recs = _session_with_records(engine, 3)
    with session_scope(engine) as s:
        svc.start_instance_sync(s, record_id=recs[0])
        svc.complete_instance_sync(s, record_id=recs[0])
        svc.start_instance_sync(s, record_id=recs[1])
        svc.cancel_session(s, session_id=sid, reason="operator asked")
    done = _session(engine, sid)
    assert done.status == "cancelled" and done.completed_at is not None
    assert [r.status for r in done.records] == ["completed", "cancelled", "cancelled"]
    assert done.successful_instances == 1
    for action in (
        lambda s: svc.complete_instance_sync(s, record_id=recs[1]),
        lambda s: svc.start_instance_sync(s, record_id=recs[2]),
        lambda s: svc.cancel_session(s, session_id=sid),
        lambda s: svc.add_instance_records(s, session_id=sid, instances=[]),
    ):
        with pytest.raises(IllegalTransitionError, match=f"session {sid} is cancelled"):
            with session_scope(engine) as s:
                action(s)


def test_unknown_ids_raise_not_found(engine: Engine) -> None:
    with pytest.raises(NotFoundError, match="unknown session 'nope'"):
        with session_scope(engine) as s:
            svc.get_session(s, session_id="nope")
    with pytest.raises(NotFoundError, match="unknown instance record 999999"):
        with session_scope(engine) as s:
            svc.start_instance_sync(s, record_id=999999)


def test_bad_parameters_are_named(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="unknown sync type 'weekly'"):
        with session_scope(engine) as s:
            svc.create_session(s, sync_type="weekly", sync_category="account")
    with pytest.raises(ConfigError, match="unknown category 'mail'"):
        with session_scope(engine) as s:
            svc.create_session(s, sync_type="scheduled", sync_category="mail")


def test_records_refuse_instances_without_the_category(engine: Engine) -> None:
    ids = _instances(engine, 1, kind="postgres")
    with pytest.raises(ConfigError, match="does not support category 'messages'"):
        with session_scope(engine) as s:
            sess = svc.create_session(s, sync_type="scheduled", sync_category="messages")
            svc.add_instance_records(s, session_id=sess.session_id, instances=[s.get(Instance, ids[0])])


def test_record_priority_and_options_from_spec(engine: Engine) -> None:
    ids = _instances(engine, 2)
    with session_scope(engine) as s:
        sess = svc.create_session(s, sync_type="manual_batch", sync_category="messages")
        a, b = (s.get(Instance, i) for i in ids)
        recs = svc.add_instance_records(
            s, session_id=sess.session_id, instances=[RecordSpec(a, priority=9, options={"batch_size": 100}), b]
        )
        assert (recs[0].priority, recs[0].options) == (9, {"batch_size": 100})
        assert (recs[1].priority, recs[1].options) == (b.priority, None)


def test_finish_session_without_instances_and_with_error(engine: Engine) -> None:
    with session_scope(engine) as s:
        empty = svc.create_session(s, sync_type="scheduled", sync_category="account").session_id
        svc.finish_session(s, session_id=empty)
    assert _session(engine, empty).status == "completed"
    sid, recs = _session_with_records(engine, 2)
    with session_scope(engine) as s:
        svc.start_instance_sync(s, record_id=recs[0])
        svc.complete_instance_sync(s, record_id=recs[0])
        svc.finish_session(s, session_id=sid, error_message="parent flow crashed")
    done = _session(engine, sid)
    assert (done.status, done.failed_instances, done.error_message) == ("failed", 1, "parent flow crashed")
    assert done.records[1].error_message == "parent flow crashed"


def test_retry_of_links_sessions_and_must_exist(engine: Engine) -> None:
    with session_scope(engine) as s:
        first = svc.create_session(s, sync_type="scheduled", sync_category="account").session_id
        second = svc.create_session(s, sync_type="manual_batch", sync_category="account", retry_of=first)
        assert second.retry_of == first
    with pytest.raises(NotFoundError):
        with session_scope(engine) as s:
            svc.create_session(s, sync_type="manual_batch", sync_category="account", retry_of="missing")


def test_list_sessions_filters_and_pages_newest_first(engine: Engine) -> None:
    with session_scope(engine) as s:
        made = []
        for i in range(7):
            row = svc.create_session(
                s,
                sync_type="scheduled" if i % 2 else "manual_batch",
                sync_category="account" if i < 5 else "capacity",
            )
            row.created_at = utcnow() - dt.timedelta(hours=10 - i)
            made.append(row.session_id)
    with session_scope(engine) as s:
        page = svc.list_sessions(s, limit=3)
        assert page.total == 7 and [r.session_id for r in page.items] == made[::-1][:3]
        page2 = svc.list_sessions(s, limit=3, offset=3)
        assert [r.session_id for r in page2.items] == made[::-1][3:6]
        assert svc.list_sessions(s, sync_type="scheduled").total == 3
        assert svc.list_sessions(s, sync_category="capacity").total == 2
        assert svc.list_sessions(s, status="running").total == 7
        assert svc.list_sessions(s, since=utcnow() - dt.timedelta(hours=5, minutes=30)).total == 2
        with pytest.raises(ConfigError, match="limit"):
            svc.list_sessions(s, limit=0)
        with pytest.raises(ConfigError, match="unknown session status 'done'"):
            svc.list_sessions(s, status="done")


def test_statistics(engine: Engine) -> None:
    sid_ok, recs_ok = _session_with_records(engine, 2)
    with session_scope(engine) as s:
        for rid in recs_ok:
            svc.start_instance_sync(s, record_id=rid)
            svc.complete_instance_sync(s, record_id=rid)
        row = svc.get_session(s, session_id=sid_ok)
        row.started_at = row.completed_at - dt.timedelta(seconds=10)
        bad = svc.create_session(s, sync_type="scheduled", sync_category="messages")
        inst = s.scalars(select(Instance)).first()
        (rec,) = svc.add_instance_records(s, session_id=bad.session_id, instances=[inst])
        svc.fail_instance_sync(s, record_id=rec.id, error_message="boom")
        bad.started_at = bad.completed_at - dt.timedelta(seconds=30)
        svc.create_session(s, sync_type="scheduled", sync_category="account")
    with session_scope(engine) as s:
        st = svc.get_statistics(s)
    assert st.total_sessions == 3
    assert st.by_status == {"completed": 1, "failed": 1, "running": 1}
    assert {"sync_type": "scheduled", "sync_category": "messages", "status": "failed", "count": 1} in st.breakdown
    assert st.success_rate == 0.5
    assert st.duration_seconds["max"] == pytest.approx(30, abs=0.01)
    assert st.duration_seconds["avg"] == pytest.approx(20, abs=0.01)
    assert st.instances == {"completed": 2, "failed": 1}


def test_cleanup_deletes_only_old_finished_sessions(engine: Engine) -> None:
    old_done, recs = _session_with_records(engine, 1)
    with session_scope(engine) as s:
        svc.start_instance_sync(s, record_id=recs[0])
        svc.complete_instance_sync(s, record_id=recs[0])
        old_running = svc.create_session(s, sync_type="scheduled", sync_category="account").session_id
        recent = svc.create_session(s, sync_type="scheduled", sync_category="account").session_id
        svc.finish_session(s, session_id=recent)
    long_ago = utcnow() - dt.timedelta(days=31)
    with engine.begin() as conn:
        conn.execute(
            update(SyncSession)
            .where(SyncSession.session_id.in_([old_done, old_running]))
            .values(started_at=long_ago, completed_at=None)
        )
        conn.execute(update(SyncSession).where(SyncSession.session_id == old_done).values(completed_at=long_ago))
    with session_scope(engine) as s:
        assert svc.cleanup_sessions(s, older_than_days=30) == 1
    with session_scope(engine) as s:
        left = set(s.scalars(select(SyncSession.session_id)))
        assert left == {old_running, recent}
        assert s.scalar(select(SyncInstanceRecord.id)) is None


# ----------------------------------------------------------- concurrent writers


def _finish_records(url: str, record_ids: list[int], fail_every: int, barrier) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    for rid in record_ids:
        with session_scope(engine) as s:
            svc.start_instance_sync(s, record_id=rid)
    for rid in record_ids:
        barrier.wait()  # every worker finishes a record at the same instant, the last ones too
        with session_scope(engine) as s:
            if rid % fail_every == 0:
                svc.fail_instance_sync(s, record_id=rid, error_message=f"record {rid} failed")
            else:
                svc.complete_instance_sync(s, record_id=rid, counts=ItemCounts(synced=1, created=1))
    engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("fail_every", [7, 10**9])
def test_totals_exact_with_concurrent_writers(engine: Engine, store_url: str, fail_every: int) -> None:
    """Many processes finish records of one session at once: totals and status stay exact."""
    workers, per_worker = 8, 12
    sid, recs = _session_with_records(engine, workers * per_worker)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_finish_records, args=(store_url, recs[w::workers], fail_every, barrier))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    done = _session(engine, sid)
    failed = sum(1 for r in recs if r % fail_every == 0)
    assert done.total_instances == workers * per_worker
    assert done.failed_instances == failed
    assert done.successful_instances == workers * per_worker - failed
    assert done.status == ("failed" if failed else "completed")
    assert done.completed_at is not None
    assert sum(r.items_created for r in done.records) == workers * per_worker - failed


def test_sweep_leaves_queued_records_of_a_live_parent_alone(engine: Engine) -> None:
    """Pending records wait for a slot (limit 1, a paused category) as long as their parent
    lives: the parent's heartbeat (touch_session) keeps the sweep off them; once the
    heartbeat is as old as the records, they are orphans and get swept."""
    sid, recs = _session_with_records(engine, 2)
    past = utcnow() - dt.timedelta(seconds=600)
    with session_scope(engine) as s:
        s.execute(update(SyncInstanceRecord).values(updated_at=past))
        s.execute(update(SyncSession).values(updated_at=past))
        assert svc.touch_session(s, session_id=sid) is True  # the parent's watcher does this every ~10 s
    with session_scope(engine) as s:
        assert svc.sweep(s, older_than_seconds=60).records_failed == []
    assert _session(engine, sid).status == "running"
    with session_scope(engine) as s:  # the parent died: no heartbeat for longer than the cutoff
        s.execute(update(SyncSession).values(updated_at=past))
    with session_scope(engine) as s:
        assert sorted(svc.sweep(s, older_than_seconds=60).records_failed) == sorted(recs)
    row = _session(engine, sid)
    assert (row.status, row.failed_instances) == ("failed", 2)
    with session_scope(engine) as s:
        assert svc.touch_session(s, session_id=sid) is False  # finished: nothing to touch
