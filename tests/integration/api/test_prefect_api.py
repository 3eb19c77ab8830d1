"""The API's Prefect side against the real Prefect test harness: manual batches become flow
runs of a deployment (no work pool here, so they stay queued), cancel reaches the flow run,
retry-failed starts a linked run, and the queue admin counts, pauses, resumes and clears."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from syncflow.names import session_key
from syncflow.store import pauses as queue_admin
from syncflow.store.db import session_scope
from tests.integration.api.conftest import AUTH, Deployments, Store

pytestmark = pytest.mark.asyncio(loop_scope="session")

API = "/sync_sessions/api"
Q = "/api/admin/sync-queue"


async def _run(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


async def test_manual_batch_creates_a_run_and_answers_queued_until_a_worker_starts_it(
    pclient: httpx.AsyncClient, store: Store
) -> None:
    store.instance("a", priority=1)
    store.instance("b")
    body = {
        "category": "messages",
        "instances": ["a", "b"],
        "priorities": {"b": 9},
        "options": {"a": {"full": True}},
        "created_by": "alice",
    }
    r = await pclient.post(f"{API}/sessions", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["status"] == "queued" and out["instances"] == ["a", "b"] and out["held"] is False
    uuid.UUID(out["session_id"])
    run = await _run(out["flow_run_id"])
    assert run.idempotency_key == session_key(out["session_id"])
    assert run.parameters["session_id"] == out["session_id"]
    assert run.parameters["instances"] == ["a", "b"] and run.parameters["priorities"] == {"b": 9}
    assert run.parameters["options"] == {"a": {"full": True}} and run.parameters["created_by"] == "alice"
    assert "category:messages" in run.tags
    assert run.state.is_scheduled()

    r = await pclient.get(f"{API}/sessions/{out['session_id']}")
    assert r.status_code == 200
    q = r.json()
    assert q["status"] == "queued" and q["flow_run_id"] == out["flow_run_id"] and q["records"] == []

    # cancelling a queued session cancels its run; the id then answers 404 with why
    r = await pclient.post(f"{API}/sessions/{out['session_id']}/cancel", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and "-> cancelled" in r.json()["prefect"]
    assert (await _run(out["flow_run_id"])).state.is_cancelled()
    r = await pclient.get(f"{API}/sessions/{out['session_id']}")
    assert r.status_code == 404 and "never opened" in r.json()["detail"] and "Cancelled" in r.json()["detail"]
    r = await pclient.post(f"{API}/sessions/{out['session_id']}/cancel", headers=AUTH)
    assert r.status_code == 409


async def test_manual_batch_by_tag_or_all_passes_the_selection(pclient: httpx.AsyncClient, store: Store) -> None:
    store.instance("t1", tags=["eu"])
    store.instance("t2", tags=["us"])
    r = await pclient.post(f"{API}/sessions", json={"category": "messages", "tags": ["eu"]}, headers=AUTH)
    assert r.status_code == 202 and r.json()["instances"] == ["t1"]
    run = await _run(r.json()["flow_run_id"])
    assert run.parameters["tags"] == ["eu"] and "instances" not in run.parameters
    r = await pclient.post(f"{API}/sessions", json={"category": "messages", "all": True}, headers=AUTH)
    assert r.status_code == 202 and sorted(r.json()["instances"]) == ["t1", "t2"]
    await pclient.delete(f"{Q}/messages/clear", headers=AUTH)


async def test_missing_deployment_is_503_and_unsupported_parameter_422(
    store_env: str, engine, prefect_env: str, prefect_settings, store: Store
) -> None:
    from syncflow.api import create_app

    store.instance("a")
    app = create_app(
        prefect_settings.model_copy(update={"manual_batch_deployment": "sync-session/nope"}), engine=engine
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
        r = await c.post(f"{API}/sessions", json={"category": "messages", "all": True}, headers=AUTH)
        assert r.status_code == 503 and "prefect deploy --all" in r.json()["detail"]
    old = prefect_settings.model_copy(update={"manual_batch_deployment": "sync-session/console-old"})
    body = {"category": "messages", "all": True, "scale_out": True, "refresh_metadata": False}
    app = create_app(old, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
        r = await c.post(f"{API}/sessions", json=body, headers=AUTH)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "does not take refresh_metadata, scale_out" in detail and "redeploy" in detail
        r = await c.post(f"{API}/sessions", json={"category": "messages", "all": True}, headers=AUTH)
        assert r.status_code == 202  # without them the old deployment is fine
    app = create_app(prefect_settings, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
        r = await c.post(f"{API}/sessions", json=body, headers=AUTH)
        assert r.status_code == 202, r.text
        run = await _run(r.json()["flow_run_id"])
        assert run.parameters["scale_out"] is True and run.parameters["refresh_metadata"] is False
        await c.delete(f"{Q}/messages/clear", headers=AUTH)


async def test_cancel_reaches_the_sessions_flow_run(
    pclient: httpx.AsyncClient, store: Store, deployments: Deployments
) -> None:
    from prefect.deployments import run_deployment

    store.instance("a")
    run = await run_deployment(deployments.manual, parameters={"category": "messages"}, timeout=0, as_subflow=False)
    sid = store.session(["a"], outcome={"a": "running"}, flow_run_id=str(run.id))
    r = await pclient.post(f"{API}/sessions/{sid}/cancel", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["flow_run_id"] == str(run.id)
    assert (await _run(str(run.id))).state.is_cancelled()
    assert (await pclient.get(f"{API}/sessions/{sid}")).json()["record_counts"] == {"cancelled": 1}


async def test_retry_failed_starts_a_linked_run(pclient: httpx.AsyncClient, store: Store) -> None:
    for n in ("a", "b", "c"):
        store.instance(n)
    sid = store.session(["a", "b", "c"], outcome={"a": "completed", "b": "failed", "c": "failed"})
    r = await pclient.post(f"{API}/sessions/{sid}/retry-failed", headers=AUTH, json={"created_by": "bob"})
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["retry_of"] == sid and sorted(out["instances"]) == ["b", "c"] and out["session_id"] != sid
    run = await _run(out["flow_run_id"])
    assert run.parameters["retry_of"] == sid and run.parameters["category"] == "messages"
    assert run.parameters["session_id"] == out["session_id"] and run.parameters["created_by"] == "bob"
    assert "category:messages" in run.tags
    await pclient.delete(f"{Q}/messages/clear", headers=AUTH)


async def test_queue_stats_count_runs_and_records(pclient: httpx.AsyncClient, store: Store) -> None:
    store.instance("pg1", kind="postgres")
    store.instance("pg2", kind="postgres")
    await pclient.delete(f"{Q}/capacity/clear", headers=AUTH)
    store.session(["pg1", "pg2"], category="capacity", outcome={"pg1": "completed", "pg2": "skipped"})
    failed = store.session(["pg1"], category="capacity", outcome={"pg1": "failed"})
    for _ in range(2):
        r = await pclient.post(f"{API}/sessions", json={"category": "capacity", "all": True}, headers=AUTH)
        assert r.status_code == 202
    r = await pclient.get(f"{Q}/stats/capacity")
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["runs"]["queued"] == 2 and st["runs"]["running"] == 0 and st["prefect_error"] is None
    assert st["store"]["skipped"] == 1 and st["store"]["failed_records"] == 1
    assert st["store"]["failed_sessions_not_retried"] == 1
    assert st["store"]["last_processed_at"] is not None and st["store"]["last_failed_at"] is not None
    assert st["store"]["last_error"] == "pg1: pg1: boom"
    assert st["pause"]["paused"] is False

    # clear cancels the two queued runs, and only those
    r = await pclient.delete(f"{Q}/capacity/clear", headers=AUTH)
    assert r.status_code == 200, r.text
    assert len(r.json()["cancelled"]) == 2 and {c["now"] for c in r.json()["cancelled"]} == {"Cancelled"}
    st = (await pclient.get(f"{Q}/stats/capacity")).json()
    assert st["runs"]["queued"] == 0 and st["runs"]["cancelled"] >= 2

    # retry-failed retries the dead letter once, however often it is asked
    r1 = (await pclient.post(f"{Q}/capacity/retry-failed", headers=AUTH)).json()
    r2 = (await pclient.post(f"{Q}/capacity/retry-failed", headers=AUTH)).json()
    assert [t["retry_of"] for t in r1["triggered"]] == [failed]
    assert r1["triggered"][0]["flow_run_id"] == r2["triggered"][0]["flow_run_id"]
    assert r1["triggered"][0]["session_id"] == queue_admin.retry_session_id(failed)
    await pclient.delete(f"{Q}/capacity/clear", headers=AUTH)

    r = await pclient.get(f"{Q}/stats/bogus")
    assert r.status_code == 422
    r = await pclient.get(f"{Q}/stats/capacity", params={"since_hours": 0})
    assert r.status_code == 422


async def test_pause_and_resume_switch_schedules_and_the_hold_flag(
    pclient: httpx.AsyncClient, deployments: Deployments, engine
) -> None:
    from prefect.client.orchestration import get_client

    r = await pclient.post(f"{Q}/config/pause", headers=AUTH, json={"reason": "maintenance", "paused_by": "ops"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["changed"] is True and out["pause"]["paused"] is True and out["pause"]["reason"] == "maintenance"
    assert [d["id"] for d in out["deployments"]] == [deployments.scheduled_id]
    async with get_client() as client:
        assert (await client.read_deployment(deployments.scheduled_id)).paused is True
    with session_scope(engine) as s:
        assert queue_admin.is_paused(s, category="config")
    # again: idempotent, nothing more to pause, the list is kept for resume
    again = (await pclient.post(f"{Q}/config/pause", headers=AUTH)).json()
    assert again["changed"] is False and again["deployments"] == []
    assert again["pause"]["paused_deployments"] == [deployments.scheduled_id]
    st = (await pclient.get(f"{Q}/stats/config")).json()
    assert st["pause"]["paused"] is True
    assert {d["name"]: d["paused"] for d in st["deployments"]} == {"console-scheduled-config": True}

    r = await pclient.post(f"{Q}/config/resume", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True and r.json()["pause"]["paused"] is False
    assert [d["id"] for d in r.json()["deployments"]] == [deployments.scheduled_id]
    async with get_client() as client:
        assert (await client.read_deployment(deployments.scheduled_id)).paused is False
    with session_scope(engine) as s:
        assert not queue_admin.is_paused(s, category="config")
    assert (await pclient.post(f"{Q}/config/resume", headers=AUTH)).json()["changed"] is False


async def test_a_deployment_paused_by_hand_stays_paused_after_resume(
    pclient: httpx.AsyncClient, deployments: Deployments
) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.pause_deployment(deployments.scheduled_id)
    try:
        out = (await pclient.post(f"{Q}/config/pause", headers=AUTH)).json()
        assert out["deployments"] == []
        await pclient.post(f"{Q}/config/resume", headers=AUTH)
        async with get_client() as client:
            assert (await client.read_deployment(deployments.scheduled_id)).paused is True
    finally:
        async with get_client() as client:
            await client.resume_deployment(deployments.scheduled_id)


async def test_paused_category_holds_a_run_until_resume(
    pclient: httpx.AsyncClient, store_env: str, engine, tmp_path
) -> None:
    """A session started while its category is paused opens, but syncs nothing until resume."""
    from blocks.connections import forget_sources
    from blocks.seq_http import SeqHttpInstance
    from flows.session_sync import sync_session
    from syncflow.store import instances as inst_svc
    from syncflow.store.models import Message
    from syncflow.testing.seqserver import SYNC_PATH, SeqServer

    forget_sources()
    server = SeqServer(messages=120, token="hold-token", seed=5)
    server.start()
    try:
        block = f"t-{uuid.uuid4().hex[:12]}"
        await SeqHttpInstance(base_url=server.url, token="hold-token", max_retries=1, base_delay=0.05).save(
            block, overwrite=True
        )
        with session_scope(engine) as s:
            inst_svc.add_instance(s, name="held-1", kind="http-seq", block_name=block)
        r = await pclient.post(f"{Q}/messages/pause", headers=AUTH)
        assert r.status_code == 200 and r.json()["pause"]["paused"]

        sid = str(uuid.uuid4())
        run = asyncio.create_task(
            sync_session(category="messages", instances=["held-1"], session_id=sid, created_by="t", return_state=True)
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            d = await pclient.get(f"{API}/sessions/{sid}")
            if d.status_code == 200 and d.json()["status"] == "running":
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError("the held session never opened")
        await asyncio.sleep(5)  # several pause polls
        d = (await pclient.get(f"{API}/sessions/{sid}")).json()
        assert d["status"] == "running" and d["record_counts"] == {"pending": 1}
        assert not [q for q in server.requests if q.path == SYNC_PATH], "synced while paused"
        assert not run.done()
        st = (await pclient.get(f"{Q}/stats/messages")).json()
        assert st["store"]["pending_records"] >= 1

        r = await pclient.post(f"{Q}/messages/resume", headers=AUTH)
        assert r.status_code == 200 and r.json()["changed"] is True
        state = await asyncio.wait_for(run, 90)
        assert state.is_completed(), state
        d = (await pclient.get(f"{API}/sessions/{sid}")).json()
        assert d["status"] == "completed" and d["items_synced"] == 120
        with session_scope(engine) as s:
            assert s.query(Message).count() == 120
    finally:
        with session_scope(engine) as s:
            queue_admin.resume(s, category="messages")
        server.stop()
        forget_sources()


async def test_clear_cancels_runs_waiting_to_start_but_not_future_scheduled_runs(
    pclient: httpx.AsyncClient, deployments: Deployments
) -> None:
    """Issue 9 defect 7: clear cancels what waits to start (scheduled time passed, Late,
    Pending), never a deployment's future scheduled runs unless ``include_future=true``."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Scheduled

    await pclient.delete(f"{Q}/account/clear", headers=AUTH, params={"include_future": True})
    now = dt.datetime.now(dt.UTC)
    tags = ["syncflow", "category:account"]
    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployments.manual)

        async def make(state: Any) -> str:
            run = await client.create_flow_run_from_deployment(dep.id, state=state, tags=tags)
            return str(run.id)

        due = await make(Scheduled(scheduled_time=now - dt.timedelta(minutes=1)))
        late = await make(Scheduled(scheduled_time=now - dt.timedelta(hours=1)))
        await client.set_flow_run_state(
            late, Scheduled(scheduled_time=now - dt.timedelta(hours=1)).model_copy(update={"name": "Late"}), force=True
        )
        pending = await make(Scheduled(scheduled_time=now - dt.timedelta(seconds=5)))
        await client.set_flow_run_state(pending, Pending(), force=True)
        future = [await make(Scheduled(scheduled_time=now + dt.timedelta(hours=h))) for h in (1, 2)]

    r = await pclient.delete(f"{Q}/account/clear", headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["include_future"] is False
    got = {c["flow_run_id"]: c for c in out["cancelled"]}
    assert set(got) == {due, late, pending}
    assert got[pending]["now"] == "Cancelling" and got[due]["now"] == "Cancelled"
    assert got[late]["was"] == "Late"
    for fid in future:
        assert (await _run(fid)).state.is_scheduled()
    assert (await _run(due)).state.is_cancelled()

    # asked explicitly, the future scheduled runs go too
    r = await pclient.delete(f"{Q}/account/clear", headers=AUTH, params={"include_future": "true"})
    assert r.status_code == 200, r.text
    assert {c["flow_run_id"] for c in r.json()["cancelled"]} == set(future)
    for fid in future:
        assert (await _run(fid)).state.is_cancelled()
