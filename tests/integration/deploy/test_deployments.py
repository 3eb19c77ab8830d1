"""The deployment path end to end: a real ``prefect server start`` on 127.0.0.1, ``syncflow
setup``, ``prefect deploy --all`` (the ``local_prefect`` fixture), process workers and
``syncflow runner``, driven the way an operator does: ``prefect deployment run``,
``prefect flow-run cancel``, ``syncflow sync run --deployment``.

Instances are registered with the CLI (blocks on the local server, rows in its PostgreSQL
store). Each test uses its own instance names and seq servers; assertions read the store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from syncflow.store import sessions as book
from syncflow.store.db import make_engine, session_scope
from syncflow.store.models import Account, Instance, Message, SyncInstanceRecord, SyncSession, utcnow
from syncflow.store.sessions import max_overlap
from syncflow.testing.seqserver import SeqServer
from tests.support.prefect_server import BIN, LocalPrefect

TOKEN_ENV = "SYNCFLOW_TEST_SEQ_TOKEN"
TOKEN = "deploy-test-token"
SYNCFLOW = str(BIN / "syncflow")
PREFECT = str(BIN / "prefect")


@pytest.fixture
def lp(local_prefect: LocalPrefect) -> Iterator[LocalPrefect]:
    yield local_prefect
    local_prefect.quiesce()  # this test's workers and runs stop; nothing it queued runs later


@pytest.fixture
def store(local_prefect: LocalPrefect) -> Iterator[Engine]:
    eng = make_engine(local_prefect.store_url)
    yield eng
    eng.dispose()


@pytest.fixture
def seq() -> Iterator[SeqServer]:
    server = SeqServer(messages=0, token=TOKEN, conversations=2, seed=3)
    server.start()
    yield server
    server.stop()


def wait_for(check: Callable[[], Any], *, what: str, timeout: float = 240, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def add_seq_instances(lp: LocalPrefect, server: SeqServer, names: list[str], batch_size: int = 500) -> None:
    for name in names:
        lp.run(
            [
                SYNCFLOW,
                "instances",
                "add",
                name,
                "--kind",
                "http-seq",
                "--url",
                server.url,
                "--token-env",
                TOKEN_ENV,
                "--batch-size",
                str(batch_size),
            ],
            **{TOKEN_ENV: TOKEN},
        )


def session(store: Engine, session_id: str) -> SyncSession | None:
    with session_scope(store) as s:
        row = s.scalar(select(SyncSession).where(SyncSession.session_id == session_id))
        if row is not None:
            s.expunge(row)
        return row


def records(store: Engine, session_id: str) -> list[SyncInstanceRecord]:
    with session_scope(store) as s:
        out = list(s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.session_id == session_id)))
        for r in out:
            s.expunge(r)
        return out


def finished(store: Engine, session_id: str) -> SyncSession | None:
    row = session(store, session_id)
    return row if row is not None and row.status != "running" else None


def deployment_run(lp: LocalPrefect, name: str, params: dict[str, Any]) -> str:
    """``prefect deployment run NAME --params JSON``; returns the flow run id."""
    out = lp.run([PREFECT, "deployment", "run", name, "--params", json.dumps(params)]).stdout
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def stored(store: Engine, instance: str) -> int:
    with session_scope(store) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == instance))
        return s.scalar(select(func.count()).select_from(Message).where(Message.instance_id == iid)) or 0


def set_limit(lp: LocalPrefect, category: str, slots: int) -> None:
    lp.run([SYNCFLOW, "setup", "--limit", f"{category}={slots}", "--reset-limits"])


# ------------------------------------------------------------------------ setup


def test_setup_is_idempotent_and_the_deployments_exist(lp: LocalPrefect) -> None:
    out = json.loads(lp.run([SYNCFLOW, "setup", "--json"]).stdout)
    assert out["work_pool"] == "syncflow" and out["work_pool_created"] is False  # the fixture made it
    assert out["limits_created"] == [] and out["limits"]["messages"] == 3 and out["limits"]["metadata"] == 5

    async def read() -> dict[str, Any]:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            deps = {f"{d.name}": d for d in await client.read_deployments()}
            return {name: (d.work_pool_name, [s.schedule.cron for s in d.schedules]) for name, d in deps.items()}

    with lp.client_settings():
        deps = asyncio.run(read())
    assert deps["manual-batch"] == ("syncflow", [])
    assert deps["scheduled-account"] == ("syncflow", ["0 * * * *"])
    assert deps["scheduled-messages"] == ("syncflow", ["*/15 * * * *"])
    assert deps["daily"] == ("syncflow", ["30 3 * * *"])
    assert deps["every-5-minutes"] == ("syncflow", ["*/5 * * * *"])  # the sweep
    assert deps["instance"][0] == deps["db-instance"][0] == "syncflow"


# ------------------------------------------------------------------------ manual batch


def test_prefect_deployment_run_of_manual_batch_syncs_real_instances(
    lp: LocalPrefect, store: Engine, seq: SeqServer
) -> None:
    seq.append(1500)
    add_seq_instances(lp, seq, ["dep-a", "dep-b"])
    lp.start_worker("w-manual")
    sid = str(uuid.uuid4())
    deployment_run(
        lp, "sync-session/manual-batch", {"category": "messages", "instances": ["dep-a", "dep-b"], "session_id": sid}
    )
    row = wait_for(lambda: finished(store, sid), what="the manual-batch session to finish")
    assert (row.status, row.sync_type, row.total_instances, row.successful_instances) == (
        "completed",
        "manual_batch",
        2,
        2,
    )
    assert row.flow_run_id
    assert {(r.instance_name, r.status, r.items_synced) for r in records(store, sid)} == {
        ("dep-a", "completed", 1500),
        ("dep-b", "completed", 1500),
    }
    assert stored(store, "dep-a") == 1500
    with session_scope(store) as s:  # the seed's rule: metadata came first, in its own session
        meta = s.scalar(
            select(SyncSession).where(SyncSession.sync_category == "metadata", SyncSession.started_at <= row.started_at)
        )
        assert meta is not None and meta.status == "completed"


def test_sync_run_deployment_cli_follows_the_run_and_reports(lp: LocalPrefect, store: Engine, seq: SeqServer) -> None:
    seq.append(400)
    add_seq_instances(lp, seq, ["cli-d1"])
    lp.start_worker("w-cli")
    done = lp.run(
        [SYNCFLOW, "sync", "run", "--category", "messages", "--instance", "cli-d1", "--deployment", "--json"],
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    payload = json.loads(done.stdout)
    assert payload["status"] == "completed" and payload["sync_type"] == "manual_batch"
    assert [(r["instance_name"], r["items_synced"]) for r in payload["records"]] == [("cli-d1", 400)]
    assert session(store, payload["session_id"]) is not None

    # the human output: plain text (no literal rich markup), and no "no live worker" warning
    human = lp.run(
        [SYNCFLOW, "sync", "run", "--category", "messages", "--instance", "cli-d1", "--deployment"],
        timeout=300,
        check=False,
        COLUMNS="200",
    )
    assert human.returncode == 0, human.stdout + human.stderr
    assert "[bold]" not in human.stdout and "[/]" not in human.stdout
    line = r"^flow run \S+ \([0-9a-f-]{36}\) of sync-session/manual-batch: session [0-9a-f-]{36}$"
    assert re.search(line, human.stdout, re.MULTILINE), human.stdout
    assert "no live worker" not in human.stderr

    # bad input is refused before any run is created
    bad = lp.run([SYNCFLOW, "sync", "run", "--category", "messages", "--instance", "nope", "--deployment"], check=False)
    assert bad.returncode == 1 and "unknown instance(s): 'nope'" in bad.stderr


# ------------------------------------------------------------------------ scale-out


def test_scale_out_two_workers_share_one_session_under_the_limit(
    lp: LocalPrefect, store: Engine, seq: SeqServer
) -> None:
    seq.append(600)
    seq.set_faults(latency=0.25)  # ~6 pages of 100: a few seconds per instance
    names = [f"so-{i}" for i in range(6)]
    add_seq_instances(lp, seq, names, batch_size=100)
    set_limit(lp, "messages", 2)
    try:
        # The parent runs on w-a (its only worker then) and takes one of w-a's two runs; w-b comes
        # up with one. Each worker can then run one child at a time, and the limit lets two run
        # at once: both workers run instance syncs. (Two workers of 2 up front let the one
        # without the parent take every child, which a loaded machine did.)
        lp.start_worker("w-a", limit=2)
        sid = str(uuid.uuid4())
        parent = deployment_run(
            lp,
            "sync-session/manual-batch",
            {
                "category": "messages",
                "instances": names,
                "session_id": sid,
                "scale_out": True,
                "refresh_metadata": False,
            },
        )
        wait_for(lambda: parent in lp.log("w-a"), what="w-a to take the session's parent run")
        lp.start_worker("w-b", limit=1)
        row = wait_for(lambda: finished(store, sid), what="the scale-out session to finish", timeout=400)
    finally:
        set_limit(lp, "messages", 3)
    recs = records(store, sid)
    assert (row.status, row.successful_instances) == ("completed", 6), [
        (r.instance_name, r.error_message) for r in recs
    ]
    assert all(r.items_synced == 600 for r in recs)
    assert max_overlap([(r.started_at, r.completed_at) for r in recs]) <= 2  # the limit held across processes
    child_runs = {r.flow_run_id for r in recs}
    assert len(child_runs) == 6 and row.flow_run_id == parent not in child_runs  # each its own deployment run
    by_worker = {w: {run for run in child_runs if run in lp.log(w)} for w in ("w-a", "w-b")}
    assert by_worker["w-a"] and by_worker["w-b"], by_worker  # both workers ran instance syncs
    assert by_worker["w-a"] | by_worker["w-b"] == child_runs


def test_scale_out_gives_up_a_child_run_whose_worker_died_while_starting_it(
    lp: LocalPrefect, store: Engine, seq: SeqServer
) -> None:
    """A worker killed while it starts an instance run leaves that run Pending for ever (found
    by ``python -m bench.scale``): the parent gives it up after SYNCFLOW_CHILD_START_SECONDS —
    run Crashed, record failed saying so, the category's slot freed — and the session ends."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.states import Pending

    seq.append(100)
    add_seq_instances(lp, seq, ["lost-1"])
    # the parent in this CLI process; its child is a run of sync-instance/instance that no worker
    # runs: the test takes it as a worker would (Pending) and then "dies" (never starts it)
    parent = lp.spawn(
        "lost-parent",
        [SYNCFLOW, "sync", "run", "--category", "messages", "--instance", "lost-1", "--scale-out", "--no-metadata"],
        env=lp.env(SYNCFLOW_CHILD_START_SECONDS="4"),
    )

    async def child_runs() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["instance"])), limit=50
            )

    def scheduled_child() -> Any:
        with lp.client_settings():
            runs = asyncio.run(child_runs())
        return next((r for r in runs if r.parameters.get("instance") == "lost-1" and r.state.is_scheduled()), None)

    child = wait_for(scheduled_child, what="the parent to create the instance run", timeout=120)

    async def take(run_id: Any) -> None:
        async with get_client() as client:
            await client.set_flow_run_state(run_id, Pending(), force=True)

    with lp.client_settings():
        asyncio.run(take(child.id))
    assert parent.wait(timeout=180) == 1  # the session failed: its one instance was lost
    with session_scope(store) as s:
        sid = s.scalar(select(SyncInstanceRecord.session_id).where(SyncInstanceRecord.instance_name == "lost-1"))
    row = finished(store, sid)
    (rec,) = records(store, sid)
    assert row is not None and row.status == "failed" and rec.status == "failed" and rec.items_synced == 0
    assert "instance run lost before it started" in rec.error_message
    assert "its worker is gone" in rec.error_message

    async def final_state_and_slots() -> tuple[Any, int]:
        async with get_client() as client:
            run = await client.read_flow_run(child.id)
            limit = await client.read_global_concurrency_limit_by_name("tag:sync:messages")
            return run.state, limit.active_slots

    with lp.client_settings():
        state, active = asyncio.run(final_state_and_slots())
    assert state.is_crashed() and "without starting its sync" in state.message
    assert active == 0  # the parent's slot for the lost run came back at once


# ------------------------------------------------------------------------ cancellation


def _start_slow(lp: LocalPrefect, store: Engine, seq: SeqServer, prefix: str) -> tuple[str, str]:
    seq.append(20_000)
    seq.set_faults(latency=0.15)
    names = [f"{prefix}-1", f"{prefix}-2"]
    add_seq_instances(lp, seq, names, batch_size=200)
    sid = str(uuid.uuid4())
    run_id = deployment_run(
        lp,
        "sync-session/manual-batch",
        {"category": "messages", "instances": names, "session_id": sid, "refresh_metadata": False},
    )

    def progressing() -> bool:
        recs = records(store, sid)
        return len(recs) == 2 and all(r.status == "running" and r.items_synced >= 400 for r in recs)

    wait_for(progressing, what="both instance syncs to commit batches", timeout=90)
    return sid, run_id


def _assert_cancelled_with_progress_kept(lp: LocalPrefect, store: Engine, sid: str, run_id: str) -> None:
    row = wait_for(lambda: finished(store, sid), what="the session to end", timeout=120)
    assert row.status == "cancelled", (row.status, row.error_message)
    for rec in records(store, sid):
        assert rec.status == "cancelled", (rec.instance_name, rec.status, rec.error_message)
        n = stored(store, rec.instance_name or "")
        assert 0 < n < 20_000  # stopped early, kept what was committed
        assert rec.items_synced == n  # the record's counts agree with the committed rows

    async def run_state() -> str:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state.type.value  # type: ignore[union-attr]

    with lp.client_settings():
        assert wait_for(lambda: asyncio.run(run_state()) == "CANCELLED", what="the run to be Cancelled", timeout=120)


def test_prefect_flow_run_cancel_under_a_worker_cancels_the_session(
    lp: LocalPrefect, store: Engine, seq: SeqServer
) -> None:
    lp.start_worker("w-cancel")
    sid, run_id = _start_slow(lp, store, seq, "wc")
    lp.run([PREFECT, "flow-run", "cancel", run_id])
    _assert_cancelled_with_progress_kept(lp, store, sid, run_id)


def processes_of_flow_run(run_id: str) -> list[int]:
    """PIDs whose environment says they execute flow run ``run_id`` (the worker's child)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = open(f"/proc/{entry}/environ", "rb").read()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ.split(b"\0"):
            out.append(int(entry))
    assert out, f"no process runs flow run {run_id}"
    return out


def _active_slots(lp: LocalPrefect, category: str) -> int:
    async def read() -> int:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(f"tag:sync:{category}")).active_slots

    with lp.client_settings():
        return asyncio.run(read())


def _store_busy(store: Engine) -> bool:
    """Whether another connection to the store's database is inside a statement or a transaction."""
    with store.connect() as conn:
        busy = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
        ).scalar()
    return bool(busy)


def test_a_killed_worker_frees_its_slots_and_the_sweep_closes_its_session(
    lp: LocalPrefect, store: Engine, seq: SeqServer
) -> None:
    """A worker SIGKILLed mid-session (machine lost): the server's filesystem leases free the
    category's slots by themselves, `syncflow sweep` fails the orphaned records, and the next
    session of the category runs."""
    # a run an earlier test cancelled may have died holding slots: their leases run out first
    wait_for(lambda: _active_slots(lp, "messages") == 0, what="no messages slot held", timeout=150)
    worker = lp.spawn(
        "w-killed",
        [PREFECT, "worker", "start", "--pool", "syncflow", "--name", "w-killed", "--type", "process"],
        env=lp.env(SYNCFLOW_LOCK_LEASE_SECONDS="10"),
    )
    sid, run_id = _start_slow(lp, store, seq, "kw")
    assert _active_slots(lp, "messages") == 2
    os.killpg(worker.pid, signal.SIGKILL)
    for pid in processes_of_flow_run(run_id):  # the run's own process (a session of its own)
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # a COMMIT the killed process had already sent still lands: read once the store is quiet
    wait_for(lambda: not _store_busy(store), what="the killed run's last statements to end", timeout=30)
    synced = {r.instance_name: r.items_synced for r in records(store, sid)}
    wait_for(lambda: _active_slots(lp, "messages") == 0, what="the dead holder's slots to be freed", timeout=180)
    recovered = time.monotonic() - killed_at
    print(f"slots of a SIGKILLed holder freed after {recovered:.0f} s")
    assert {r.instance_name: r.items_synced for r in records(store, sid)} == synced  # nothing ran on
    assert session(store, sid).status == "running"  # nobody closed it: the sweep's job

    swept = json.loads(lp.run([SYNCFLOW, "sweep", "--older-than", "10", "--json"]).stdout)
    ours = {r.id for r in records(store, sid)}
    assert sid in swept["sessions_finished"] and ours <= set(swept["records_failed"])
    row = session(store, sid)
    assert (row.status, row.failed_instances) == ("failed", 2)
    for rec in records(store, sid):
        assert rec.items_synced == stored(store, rec.instance_name or "")  # committed batches kept

    seq.clear_faults()
    lp.start_worker("w-after")
    again = str(uuid.uuid4())
    deployment_run(
        lp,
        "sync-session/manual-batch",
        {"category": "messages", "instances": ["kw-1"], "session_id": again, "refresh_metadata": False},
    )
    row = wait_for(lambda: finished(store, again), what="the next session of the category")
    assert row.status == "completed" and stored(store, "kw-1") == 20_000  # resumed at the cursor


# ------------------------------------------------------------------------ scheduled + cleanup


def test_scheduled_account_deployment_syncs_database_servers(lp: LocalPrefect, store: Engine) -> None:
    lp.run([SYNCFLOW, "instances", "add", "sched-pg", "--kind", "postgres", "--host", "127.0.0.1",
            "--port", "5432", "--user", "postgres", "--database", "postgres"])  # fmt: skip
    lp.run([SYNCFLOW, "instances", "add", "sched-my", "--kind", "mysql", "--host", "127.0.0.1",
            "--port", "3306", "--user", "root"])  # fmt: skip
    lp.run([SYNCFLOW, "instances", "add", "sched-bad", "--kind", "mysql", "--host", "127.0.0.1", "--port", "3306",
            "--user", "root", "--password-env", "SCHED_BAD_PW", "--no-check"],
           SCHED_BAD_PW="not-the-password")  # fmt: skip
    lp.start_worker("w-sched")
    run_id = deployment_run(lp, "sync-session/scheduled-account", {})  # what the hourly schedule starts

    def the_session() -> SyncSession | None:
        with session_scope(store) as s:
            row = s.scalar(select(SyncSession).where(SyncSession.flow_run_id == run_id))
            if row is not None:
                s.expunge(row)
            return row if row is not None and row.status != "running" else None

    row = wait_for(the_session, what="the scheduled account session to finish")
    assert (row.sync_type, row.sync_category, row.created_by) == ("scheduled", "account", "schedule")
    recs = {r.instance_name: r for r in records(store, row.session_id)}
    assert set(recs) == {"sched-pg", "sched-my", "sched-bad"}
    assert (row.status, row.total_instances, row.successful_instances, row.failed_instances) == ("failed", 3, 2, 1)
    assert recs["sched-pg"].status == recs["sched-my"].status == "completed"
    assert recs["sched-pg"].items_created > 0 and recs["sched-my"].items_created > 0  # roles / users@hosts
    bad = recs["sched-bad"]
    assert bad.status == "failed" and "sched-bad" in (bad.error_message or "")
    assert "not-the-password" not in (bad.error_message or "")
    with session_scope(store) as s:
        assert (
            s.scalar(select(func.count()).select_from(Account))
            == recs["sched-pg"].items_created + recs["sched-my"].items_created
        )


def test_daily_cleanup_deployment_deletes_sessions_past_the_retention(lp: LocalPrefect, store: Engine) -> None:
    with session_scope(store) as s:
        old = book.create_session(s, sync_category="other", sync_type="manual_batch", created_by="test")
        book.finish_session(s, session_id=old.session_id)
        old.completed_at = utcnow() - dt.timedelta(days=31)
        recent = book.create_session(s, sync_category="other", sync_type="manual_batch", created_by="test")
        book.finish_session(s, session_id=recent.session_id)
        old_id, recent_id = old.session_id, recent.session_id
    lp.start_worker("w-clean")
    deployment_run(lp, "cleanup/daily", {})
    wait_for(lambda: session(store, old_id) is None, what="the 31-day-old session to be deleted")
    assert session(store, recent_id) is not None


# ------------------------------------------------------------------------ serve


@pytest.fixture
def bare_prefect(local_prefect: LocalPrefect, pg_databases: Any, tmp_path: Any) -> Iterator[LocalPrefect]:
    """A second Prefect server with nothing deployed (the same store): an installation that
    runs `syncflow runner` instead of a work pool and workers."""
    from sqlalchemy.engine import make_url

    db = make_url(pg_databases.create(f"prefect_{uuid.uuid4().hex[:6]}")).set(drivername="postgresql+asyncpg")
    other = LocalPrefect(tmp_path / "bare", db.render_as_string(hide_password=False), local_prefect.store_url)
    try:
        other.start()
        yield other
    finally:
        other.stop()


def test_prefect_flow_run_cancel_under_syncflow_runner_cancels_the_session(
    bare_prefect: LocalPrefect, store: Engine, seq: SeqServer
) -> None:
    lp = bare_prefect
    lp.spawn("runner", [SYNCFLOW, "runner", "--no-schedules"])
    wait_for(lambda: "serving 7 deployment(s)" in lp.log("runner"), what="the runner to serve", timeout=120)
    sid, run_id = _start_slow(lp, store, seq, "rc")
    lp.run([PREFECT, "flow-run", "cancel", run_id])
    _assert_cancelled_with_progress_kept(lp, store, sid, run_id)


def test_syncflow_runner_refuses_to_take_over_work_pool_deployments(lp: LocalPrefect) -> None:
    done = lp.run([SYNCFLOW, "runner", "--no-schedules"], check=False, timeout=120)
    assert done.returncode == 1
    assert "sync-session/manual-batch" in done.stderr and "already deployed to a work pool" in done.stderr
