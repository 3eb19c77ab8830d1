"""The session parent flow on Prefect: concurrency limits enforced by Prefect (across two
sessions), stale slots, priority order, cancellation (our CLI and the Prefect run state),
retry-failed, the crashed-worker sweep, and the artifacts — against the real reference seq
server, through the Prefect test harness, on SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from blocks.connections import forget_sources
from blocks.seq_http import SeqHttpInstance
from flows.session_sync import sync_session
from syncflow.settings import reset_settings
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import Instance, Message, SyncConfigItem, SyncInstanceRecord, SyncSession, utcnow
from syncflow.store.sessions import max_overlap
from syncflow.testing.seqserver import SeqServer

TOKEN = "test-token-not-a-secret"


# --------------------------------------------------------------------------- helpers


async def _set_limit(category: str, limit: int, active_slots: int = 0) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    name = f"tag:sync:{category}"
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit, active_slots=active_slots)
        )


async def _read_limit(category: str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_global_concurrency_limit_by_name(f"tag:sync:{category}")


def set_limit(category: str, limit: int, active_slots: int = 0) -> None:
    asyncio.run(_set_limit(category, limit, active_slots))


def records(engine: Engine, session_id: str | None = None) -> list[SyncInstanceRecord]:
    with session_scope(engine) as s:
        stmt = select(SyncInstanceRecord).order_by(SyncInstanceRecord.id)
        if session_id is not None:
            stmt = stmt.where(SyncInstanceRecord.session_id == session_id)
        out = list(s.scalars(stmt))
        for r in out:
            s.expunge(r)
        return out


def session_row(engine: Engine, session_id: str) -> SyncSession:
    with session_scope(engine) as s:
        row = book.get_session(s, session_id=session_id)
        s.expunge(row)
        return row


async def _run_state(**kw: Any) -> tuple[Any, Any]:
    kw.setdefault("refresh_metadata", False)  # the messages tests count only their own session
    state = await sync_session(return_state=True, **kw)
    return state, await state.aresult(raise_on_failure=False)


def run_session(**kw: Any) -> tuple[Any, Any]:
    return asyncio.run(_run_state(**kw))


class Background:
    """Runs a session flow in a thread (with this thread's context: the harness's settings)."""

    def __init__(self, **kw: Any) -> None:
        self.out: dict[str, Any] = {}
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=lambda: ctx.run(self._go, kw), daemon=True)
        self.thread.start()

    def _go(self, kw: dict[str, Any]) -> None:
        try:
            self.out["state"], self.out["result"] = run_session(**kw)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.out["error"] = exc

    def join(self, timeout: float = 120) -> tuple[Any, Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the session did not end"
        assert "error" not in self.out, self.out.get("error")
        return self.out["state"], self.out["result"]


def wait_for(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stored(engine: Engine, name: str) -> tuple[int, int | None, int | None]:
    """(messages stored, their max seq, the cursor) of an instance."""
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == name))
        n, top = s.execute(select(func.count(), func.max(Message.seq)).where(Message.instance_id == iid)).one()
        cur = s.scalar(
            select(SyncConfigItem.last_seq).where(
                SyncConfigItem.instance_id == iid, SyncConfigItem.category == "messages"
            )
        )
        return n, top, cur


# ------------------------------------------------------------------- 1. concurrency


def test_two_concurrent_sessions_never_run_more_instances_than_the_limit(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    seq_server.append(2000)
    # 10 pages of 200 at 0.6 s each: a sync (~6 s) outlasts the 2-4 s it can take the harness
    # (SQLite) to start the next subflow, so the limit is reached every time
    seq_server.set_faults(latency=0.6)
    a = [f"a{i}" for i in range(6)]
    b = [f"b{i}" for i in range(6)]
    for name in a + b:
        wiring.add(name, seq_server, batch_size=200)
    set_limit("messages", 3)

    async def both() -> list[Any]:
        return await asyncio.gather(
            _run_state(category="messages", instances=a), _run_state(category="messages", instances=b)
        )

    outcomes = asyncio.run(both())
    assert all(state.is_completed() for state, _ in outcomes), outcomes
    recs = records(engine)
    assert len(recs) == 12 and {r.status for r in recs} == {"completed"}
    assert all(r.items_synced == 2000 for r in recs)
    spans = [(r.started_at, r.completed_at) for r in recs]
    assert max_overlap(spans) == 3  # the limit is reached, never exceeded, across both sessions
    assert asyncio.run(_read_limit("messages")).active_slots == 0  # every slot given back


def test_the_limit_is_created_with_the_default_when_missing(wiring: Any, seq_server: SeqServer, engine: Engine) -> None:
    from prefect.client.orchestration import get_client

    async def drop() -> None:
        async with get_client() as client:
            try:
                await client.delete_global_concurrency_limit_by_name("tag:sync:metadata")
            except Exception:
                pass

    asyncio.run(drop())
    wiring.add("m1", seq_server)
    state, _ = run_session(category="metadata", instances=["m1"])
    assert state.is_completed()
    assert asyncio.run(_read_limit("metadata")).limit == 5  # the seed's default for metadata
    # an existing limit keeps its value: the parameter only applies on creation
    state, _ = run_session(category="metadata", instances=["m1"], concurrency=2)
    assert state.is_completed()
    assert asyncio.run(_read_limit("metadata")).limit == 5


def test_stale_slots_of_dead_holders_are_released(wiring: Any, seq_server: SeqServer, engine: Engine) -> None:
    seq_server.append(600)
    wiring.add("s1", seq_server)
    set_limit("messages", 3, active_slots=3)  # as a SIGKILLed ephemeral holder leaves them
    assert asyncio.run(_read_limit("messages")).active_slots == 3

    async def bounded() -> tuple[Any, Any]:
        # without the reset the session would wait for a slot forever; the bound is generous
        # because a loaded machine (CI shares it) slows every Prefect API call
        return await asyncio.wait_for(_run_state(category="messages", instances=["s1"]), 240)

    state, _ = asyncio.run(bounded())
    assert state.is_completed()
    (rec,) = records(engine)
    assert (rec.status, rec.items_synced) == ("completed", 600)
    assert asyncio.run(_read_limit("messages")).active_slots == 0


def test_live_slots_are_not_reset_while_a_sync_holds_a_lease(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    from tasks.prefect_api import ensure_concurrency_limit

    wiring.add("h1", seq_server)
    set_limit("messages", 3, active_slots=2)
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == "h1"))
        s.add(
            SyncConfigItem(
                instance_id=iid,
                category="messages",
                options={},
                lock_owner="run:x",
                lock_expires_at=utcnow() + dt.timedelta(seconds=60),
            )
        )
    out = asyncio.run(ensure_concurrency_limit("messages", 3))
    assert out["reset_slots"] == 0
    assert asyncio.run(_read_limit("messages")).active_slots == 2
    set_limit("messages", 3)


def test_a_held_slot_is_renewed_and_a_lost_lease_stops_its_holder_with_a_clear_error(
    wiring: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hold_slot`` renews its lease while the body runs; when the server no longer has it
    (revoked, or lost with a restart of in-memory lease storage) the body is cancelled and the
    error names the limit, as ``concurrency(strict=True)`` does; the slot count is back to 0."""
    from prefect.client.orchestration import PrefectClient, get_client

    from syncflow.errors import SlotError
    from tasks import prefect_api as pf

    set_limit("messages", 3)
    monkeypatch.setattr(pf, "RENEW_EVERY", 0.01)  # every 0.6 s instead of every 30 s
    renewals: list[int] = []
    real_renew = PrefectClient.renew_concurrency_lease

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = await real_renew(self, *args, **kwargs)
        renewals.append(response.status_code)
        return response

    monkeypatch.setattr(PrefectClient, "renew_concurrency_lease", counted)
    leases: list[Any] = []
    real_take = pf._take_slot

    async def take(client: Any, name: str) -> Any:
        got = await real_take(client, name)
        leases.append(got[0] if got else None)
        return got

    monkeypatch.setattr(pf, "_take_slot", take)
    seen: dict[str, Any] = {}

    async def hold() -> None:
        async with pf.hold_slot("tag:sync:messages"):
            seen["held"] = (await _read_limit("messages")).active_slots
            while len(renewals) < 2:
                await asyncio.sleep(0.1)
            async with get_client() as client:  # the server forgets the lease
                await client.release_concurrency_slots_with_lease(lease_id=leases[0])
            await asyncio.sleep(3600)  # stopped by the failed renewal, not run out
            seen["ran out"] = True

    with pytest.raises(SlotError, match=r"^tag:sync:messages: the slot's lease could not be renewed \(the server no"):
        asyncio.run(hold())
    assert seen == {"held": 1}
    assert len(renewals) >= 2 and set(renewals) == {204}  # renewed while held (410s raise, not counted)
    assert asyncio.run(_read_limit("messages")).active_slots == 0


def test_a_waiter_cancelled_while_its_slot_request_is_answered_gives_the_slot_back(
    wiring: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import PrefectClient

    from tasks import prefect_api as pf

    set_limit("messages", 3)
    real = PrefectClient.increment_concurrency_slots_with_lease
    answered: list[bool] = []

    async def late(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = await real(self, *args, **kwargs)  # the server grants the slot...
        await asyncio.sleep(0.5)  # ... and its answer arrives after the waiter was cancelled
        answered.append(True)
        return response

    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", late)

    async def enter() -> None:
        async with pf.hold_slot("tag:sync:messages"):
            raise AssertionError("a cancelled waiter never runs its body")

    async def go() -> tuple[int, int]:
        waiter = asyncio.create_task(enter())
        while (await _read_limit("messages")).active_slots == 0:
            await asyncio.sleep(0.02)
        granted = (await _read_limit("messages")).active_slots
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return granted, (await _read_limit("messages")).active_slots

    assert asyncio.run(go()) == (1, 0)
    assert answered == [True]


def test_a_missing_limit_is_an_error_naming_it(wiring: Any) -> None:
    from syncflow.errors import SlotError
    from tasks import prefect_api as pf

    async def hold() -> None:
        async with pf.hold_slot("tag:sync:no-such-limit"):
            raise AssertionError("no slot without a limit")

    with pytest.raises(SlotError, match=r"concurrency limit tag:sync:no-such-limit does not exist"):
        asyncio.run(hold())


def _count_slot_requests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The status of every slot request this process makes (granted 200, refused 423)."""
    import httpx
    from prefect.client.orchestration import PrefectClient

    real = PrefectClient.increment_concurrency_slots_with_lease
    statuses: list[int] = []

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await real(self, *args, **kwargs)
        except httpx.HTTPStatusError as exc:
            statuses.append(exc.response.status_code)
            raise
        statuses.append(response.status_code)
        return response

    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", counted)
    return statuses


def test_waiters_that_know_the_limit_is_full_wait_for_a_slot_of_their_own_instead_of_asking(
    wiring: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's waiters, one after the other (as its priority turns run them), under a limit
    of 2: once a request is refused, the next waiter does not ask while the process holds every
    slot it knows of — it asks when one of its own comes back, and gets it. One refusal in all,
    not one per hand-over; never more than 2 held; every slot given back."""
    from tasks import prefect_api as pf

    set_limit("messages", 2)
    statuses = _count_slot_requests(monkeypatch)
    holding: list[int] = []
    peak: list[int] = []

    async def session(n: int) -> None:
        turns = [asyncio.Event() for _ in range(n)]

        async def one(i: int) -> None:
            if i:
                await turns[i - 1].wait()
            # no poll within the test: a slot can only come from a holder of this process
            async with pf.hold_slot("tag:sync:messages", poll_seconds=60):
                turns[i].set()
                holding.append(i)
                peak.append(len(holding))
                await asyncio.sleep(0.3)
                holding.remove(i)

        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(session(6))
    assert statuses.count(200) == 6
    assert statuses.count(423) == 1, statuses  # 3-4 before: one per hand-over
    assert max(peak) == 2
    assert asyncio.run(_read_limit("messages")).active_slots == 0
    set_limit("messages", 3)


def test_a_waiter_gets_a_slot_freed_by_another_process_at_its_next_poll(
    wiring: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from tasks import prefect_api as pf

    set_limit("messages", 1)
    statuses = _count_slot_requests(monkeypatch)

    async def go() -> float:
        async with get_client() as other:  # another process holds the only slot
            held = await other.increment_concurrency_slots_with_lease(
                names=["tag:sync:messages"], slots=1, mode="concurrency", lease_duration=60
            )
            lease = held.json()["lease_id"]
            entered = asyncio.Event()

            async def waiter() -> float:
                async with pf.hold_slot("tag:sync:messages", poll_seconds=0.2):
                    entered.set()
                    return time.monotonic()

            task = asyncio.create_task(waiter())
            while statuses.count(423) < 2:  # refused, then refused again at its poll
                await asyncio.sleep(0.05)
            assert not entered.is_set()
            freed = time.monotonic()
            await other.release_concurrency_slots_with_lease(lease_id=lease)
            return await task - freed

    assert asyncio.run(go()) >= 0  # it entered after the other process gave the slot back
    assert statuses[-1] == 200
    assert asyncio.run(_read_limit("messages")).active_slots == 0
    set_limit("messages", 3)


def _count_block_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The block documents read one by one (by name) and the pages read ahead, in this process."""
    from prefect.client.orchestration import PrefectClient

    from blocks import connections

    real_one, real_ahead = PrefectClient.read_block_document_by_name, connections.preload_blocks
    reads: dict[str, list[Any]] = {"by_name": [], "ahead": []}

    async def by_name(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        reads["by_name"].append(name)
        return await real_one(self, name, *args, **kwargs)

    async def ahead(kind: str, block_names: list[str]) -> int:
        reads["ahead"].append(sorted(block_names))
        return await real_ahead(kind, block_names)

    monkeypatch.setattr(PrefectClient, "read_block_document_by_name", by_name)
    monkeypatch.setattr(connections, "preload_blocks", ahead)
    return reads


def test_a_session_reads_its_blocks_ahead_in_one_request_and_each_instance_still_checks_its_own(
    wiring: Any, seq_server: SeqServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent reads the blocks of all its instances in one request, not one per instance on
    each instance's critical path. Each instance still gets the errors of its own block: one
    whose block does not exist fails naming it (read by name, found missing), one whose block
    carries another instance's key is refused; the others sync; nothing read ahead is kept."""
    from blocks import connections

    seq_server.append(300)
    blocks = {name: wiring.add(name, seq_server) for name in ("ra-1", "ra-2", "ra-3", "ra-wrong")}
    with session_scope(engine) as s:
        s.execute(update(Instance).where(Instance.name == "ra-wrong").values(block_binding="e" * 64))
        inst_svc.add_instance(s, name="ra-missing", kind="http-seq", block_name="t-no-such-block")
    reads = _count_block_reads(monkeypatch)

    state, _ = run_session(category="messages", instances=["ra-1", "ra-2", "ra-3", "ra-wrong", "ra-missing"])

    assert state.is_failed()  # two instances failed, as they should
    assert reads["ahead"] == [sorted([*blocks.values(), "t-no-such-block"])]  # one read ahead, every block
    assert reads["by_name"] == ["t-no-such-block"]  # only the block that was not found is asked for again
    by_name = {r.instance_name: r for r in records(engine)}
    assert {n: by_name[n].status for n in ("ra-1", "ra-2", "ra-3")} == dict.fromkeys(
        ("ra-1", "ra-2", "ra-3"), "completed"
    )
    assert all(by_name[n].items_synced == 300 for n in ("ra-1", "ra-2", "ra-3"))
    assert by_name["ra-missing"].status == "failed"
    assert "t-no-such-block" in (by_name["ra-missing"].error_message or "")
    assert by_name["ra-wrong"].status == "failed"
    assert "is not the one it was registered with" in (by_name["ra-wrong"].error_message or "")
    assert connections._preloaded == {}  # taken by its instance, or dropped at the session's end


def test_when_the_blocks_cannot_be_read_ahead_each_instance_reads_its_own(
    wiring: Any, seq_server: SeqServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading ahead only saves requests: when it fails, the session goes on as before."""
    from blocks import connections

    seq_server.append(200)
    blocks = [wiring.add(name, seq_server) for name in ("rb-1", "rb-2")]
    reads = _count_block_reads(monkeypatch)

    async def refused(kind: str, block_names: list[str]) -> int:
        raise RuntimeError("the Prefect API refused the filter")

    monkeypatch.setattr(connections, "preload_blocks", refused)
    state, _ = run_session(category="messages", instances=["rb-1", "rb-2"])

    assert state.is_completed()
    assert sorted(reads["by_name"]) == sorted(blocks)
    assert [(r.status, r.items_synced) for r in records(engine)] == [("completed", 200), ("completed", 200)]


# ------------------------------------------------------------------ 2. priority order


def test_limit_1_runs_instances_in_priority_order(wiring: Any, seq_server: SeqServer, engine: Engine) -> None:
    seq_server.append(100)
    for name in ("p-a", "p-b", "p-c", "p-d"):
        wiring.add(name, seq_server)
    set_limit("messages", 1)
    try:
        state, _ = run_session(
            category="messages",
            instances=["p-a", "p-b", "p-c", "p-d"],
            priorities={"p-a": 1, "p-b": 4, "p-c": 2, "p-d": 3},
        )
    finally:
        set_limit("messages", 3)
    assert state.is_completed()
    recs = sorted(records(engine), key=lambda r: r.started_at)
    assert [r.instance_name for r in recs] == ["p-b", "p-d", "p-c", "p-a"]
    assert max_overlap([(r.started_at, r.completed_at) for r in recs]) == 1


def test_a_messages_session_first_brings_metadata_up_to_date(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    from syncflow.store.models import Conversation

    seq_server.append(300)
    wiring.add("mm-1", seq_server)
    wiring.add("mm-2", seq_server)
    set_limit("messages", 3)
    set_limit("metadata", 5)
    state, summary = run_session(category="messages", instances=["mm-1", "mm-2"], refresh_metadata=True)
    assert state.is_completed(), state
    meta_id = summary["metadata_session_id"]
    meta, msgs = session_row(engine, meta_id), session_row(engine, summary["session_id"])
    assert (meta.sync_category, meta.status, meta.total_instances) == ("metadata", "completed", 2)
    assert meta.completed_at is not None and meta.completed_at <= msgs.started_at  # metadata first
    assert {r.instance_name for r in records(engine, meta_id)} == {"mm-1", "mm-2"}
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Conversation)) == 6  # 3 per instance
    assert (msgs.status, msgs.successful_instances) == ("completed", 2)
    assert all(r.items_synced == 300 for r in records(engine, summary["session_id"]))


def test_a_failed_metadata_refresh_does_not_stop_the_messages(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    seq_server.append(50)
    wiring.add("mf-1", seq_server)
    set_limit("messages", 3)
    set_limit("metadata", 5)
    seq_server.set_faults(scope="conversations", code_error_rate=1.0)  # metadata fails, messages work
    state, summary = run_session(category="messages", instances=["mf-1"], refresh_metadata=True)
    assert state.is_completed(), state
    meta = session_row(engine, summary["metadata_session_id"])
    assert (meta.status, meta.failed_instances) == ("failed", 1)
    assert records(engine, summary["session_id"])[0].items_synced == 50


def test_fresh_metadata_is_not_refreshed_again_until_it_is_older_than_the_max_age(
    wiring: Any, seq_server: SeqServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq_server.append(40)
    wiring.add("mx-1", seq_server)
    wiring.add("mx-2", seq_server)
    set_limit("messages", 3)
    set_limit("metadata", 5)
    state, first = run_session(category="messages", instances=["mx-1", "mx-2"], refresh_metadata=True)
    assert state.is_completed(), state
    assert {r.instance_name for r in records(engine, first["metadata_session_id"])} == {"mx-1", "mx-2"}

    # both refreshed just now (default max age 1 h): no metadata session at all
    seq_server.append(10)
    state, second = run_session(category="messages", instances=["mx-1", "mx-2"], refresh_metadata=True)
    assert state.is_completed(), state
    assert "metadata_session_id" not in second
    assert [r.items_synced for r in records(engine, second["session_id"])] == [10, 10]

    # mx-1's metadata grows old: only mx-1 is refreshed
    with session_scope(engine) as s:
        s.execute(
            update(SyncConfigItem)
            .where(
                SyncConfigItem.instance_id == select(Instance.id).where(Instance.name == "mx-1").scalar_subquery(),
                SyncConfigItem.category == "metadata",
            )
            .values(last_sync_time=utcnow() - dt.timedelta(hours=2))
        )
    state, third = run_session(category="messages", instances=["mx-1", "mx-2"], refresh_metadata=True)
    assert state.is_completed(), state
    assert [r.instance_name for r in records(engine, third["metadata_session_id"])] == ["mx-1"]

    # metadata_max_age=0 (the CLI's --refresh-metadata) refreshes every one, fresh or not
    state, forced = run_session(
        category="messages", instances=["mx-1", "mx-2"], refresh_metadata=True, metadata_max_age=0
    )
    assert state.is_completed(), state
    assert {r.instance_name for r in records(engine, forced["metadata_session_id"])} == {"mx-1", "mx-2"}

    # and the setting moves the default
    monkeypatch.setenv("SYNCFLOW_METADATA_MAX_AGE", "0")
    reset_settings()
    state, by_setting = run_session(category="messages", instances=["mx-1", "mx-2"], refresh_metadata=True)
    assert state.is_completed(), state
    assert {r.instance_name for r in records(engine, by_setting["metadata_session_id"])} == {"mx-1", "mx-2"}


# ------------------------------------------------------------------- 3. cancellation


def _start_slow_session(wiring: Any, server: SeqServer, engine: Engine) -> tuple[Background, str]:
    server.append(20_000)
    server.set_faults(latency=0.15)
    wiring.add("c1", server, batch_size=200)
    wiring.add("c2", server, batch_size=200)
    set_limit("messages", 3)
    bg = Background(category="messages", instances=["c1", "c2"])

    def both_progressing() -> bool:
        recs = records(engine)
        return len(recs) == 2 and all(r.status == "running" and r.items_synced >= 400 for r in recs)

    wait_for(both_progressing, what="both instance syncs to commit batches")
    return bg, records(engine)[0].session_id


def _assert_cancelled_with_progress_kept(engine: Engine, session_id: str, state: Any) -> None:
    assert state.is_cancelled(), state
    row = session_row(engine, session_id)
    assert row.status == "cancelled" and row.completed_at is not None
    for rec in records(engine, session_id):
        assert rec.status == "cancelled", (rec.instance_name, rec.status)
        n, top, cur = stored(engine, rec.instance_name or "")
        assert 0 < n < 20_000  # stopped early, kept what was committed
        assert rec.items_synced == n  # the record's counts agree with the committed rows
        assert top == cur  # the cursor is exactly the last committed batch


def test_cli_cancel_stops_syncs_at_a_batch_boundary_and_keeps_progress(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    import syncflow.cli  # noqa: F401  (the CLI package is entered through syncflow.cli)
    from syncflow.cli.sessions import cancel_everywhere

    bg, sid = _start_slow_session(wiring, seq_server, engine)
    out = cancel_everywhere(sid)
    assert out["flow_run_id"] and "cancelling" in (out["prefect"] or ""), out
    state, _ = bg.join()
    _assert_cancelled_with_progress_kept(engine, sid, state)


def test_cancelling_the_parent_run_in_prefect_cancels_the_session(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    bg, sid = _start_slow_session(wiring, seq_server, engine)
    flow_run_id = session_row(engine, sid).flow_run_id
    assert flow_run_id

    async def cancel() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(flow_run_id, Cancelling(message="from the UI"))

    asyncio.run(cancel())  # no syncflow code involved: the parent's watcher notices
    state, _ = bg.join()
    _assert_cancelled_with_progress_kept(engine, sid, state)
    assert "cancelled" in (session_row(engine, sid).error_message or "")


# ------------------------------------------------------------------- 4. retry-failed


def test_retry_failed_runs_only_the_failed_instance_linked_to_the_old_session(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    seq_server.append(700)
    wiring.add("good", seq_server)
    bad_block = wiring.add("bad", seq_server, token="wrong-token")
    set_limit("messages", 3)
    state, _ = run_session(category="messages", instances=["good", "bad"], priorities={"bad": 7})
    assert state.is_failed()
    (old_id,) = {r.session_id for r in records(engine)}
    before = session_row(engine, old_id)
    assert (before.status, before.total_instances, before.successful_instances, before.failed_instances) == (
        "failed",
        2,
        1,
        1,
    )

    SeqHttpInstance(base_url=seq_server.url, token=TOKEN, max_retries=3, base_delay=0.05, max_delay=1.0).save(
        bad_block, overwrite=True
    )
    forget_sources()
    state, summary = run_session(category="messages", retry_of=old_id)
    assert state.is_completed(), summary
    new_id = summary["session_id"]
    new = session_row(engine, new_id)
    assert (new.retry_of, new.status, new.total_instances, new.successful_instances) == (old_id, "completed", 1, 1)
    (rec,) = records(engine, new_id)
    assert (rec.instance_name, rec.status, rec.items_synced, rec.priority) == ("bad", "completed", 700, 7)
    after = session_row(engine, old_id)
    assert (after.status, after.total_instances, after.successful_instances, after.failed_instances) == (
        "failed",
        2,
        1,
        1,
    )
    assert after.completed_at == before.completed_at
    with session_scope(engine) as s, pytest.raises(Exception, match="no failed instance"):
        book.retry_failed(s, session_id=new_id)


# --------------------------------------------------------------------------- 5. sweep


def test_sweep_fails_records_left_running_by_a_lost_worker(wiring: Any, seq_server: SeqServer, engine: Engine) -> None:
    wiring.add("lost", seq_server)
    wiring.add("alive", seq_server)
    sid, recs = wiring.open(["lost", "alive"])
    past = utcnow() - dt.timedelta(seconds=600)
    with session_scope(engine) as s:
        for name in ("lost", "alive"):
            book.start_instance_sync(s, record_id=recs[name], flow_run_id=None)
        ids = {name: iid for name, iid in s.execute(select(Instance.name, Instance.id))}
        s.add(
            SyncConfigItem(
                instance_id=ids["lost"],
                category="messages",
                options={},
                status="running",
                lock_owner="run:dead",
                lock_expires_at=past,
            )
        )
        s.add(
            SyncConfigItem(
                instance_id=ids["alive"],
                category="messages",
                options={},
                status="running",
                lock_owner="run:live",
                lock_expires_at=utcnow() + dt.timedelta(seconds=60),
            )
        )
    with session_scope(engine) as s:
        s.execute(update(SyncInstanceRecord).values(updated_at=past))
    with session_scope(engine) as s:
        out = book.sweep(s, older_than_seconds=60)
    assert out.records_failed == [recs["lost"]] and out.leases_released == 1
    by_name = {r.instance_name: r for r in records(engine, sid)}
    assert by_name["lost"].status == "failed" and "worker lost" in (by_name["lost"].error_message or "")
    assert by_name["alive"].status == "running"  # its lease is live: not touched
    assert session_row(engine, sid).status == "running"
    # once the live one's lease runs out too, the sweep finishes the session
    with session_scope(engine) as s:
        s.execute(update(SyncConfigItem).values(lock_expires_at=past))
    from typer.testing import CliRunner

    from syncflow.cli import app

    res = CliRunner().invoke(app, ["--json", "sweep", "--older-than", "60"])
    assert res.exit_code == 0, res.output
    row = session_row(engine, sid)
    assert (row.status, row.failed_instances) == ("failed", 2)
    with session_scope(engine) as s:
        assert (
            s.scalar(select(func.count()).select_from(SyncConfigItem).where(SyncConfigItem.lock_owner.is_not(None)))
            == 0
        )


def test_a_crashed_parent_closes_its_open_records(wiring: Any, seq_server: SeqServer, engine: Engine) -> None:
    from types import SimpleNamespace

    from tasks.session_control import close_on_cancel, close_on_crash

    wiring.add("x1", seq_server)
    wiring.add("x2", seq_server)
    sid, _ = wiring.open(["x1"], flow_run_id="11111111-1111-1111-1111-111111111111")
    sid2, _ = wiring.open(["x2"], flow_run_id="22222222-2222-2222-2222-222222222222")
    close_on_crash(
        None,
        SimpleNamespace(id="11111111-1111-1111-1111-111111111111"),
        SimpleNamespace(message="boom", name="Crashed"),
    )
    close_on_cancel(
        None, SimpleNamespace(id="22222222-2222-2222-2222-222222222222"), SimpleNamespace(message="", name="Cancelled")
    )
    (r1,) = records(engine, sid)
    assert (session_row(engine, sid).status, r1.status) == ("failed", "failed")
    assert "parent run crashed" in (r1.error_message or "")
    (r2,) = records(engine, sid2)
    assert (session_row(engine, sid2).status, r2.status) == ("cancelled", "cancelled")


# ----------------------------------------------------------------------- 6. artifacts


def test_session_artifacts_summary_table_and_progress(wiring: Any, seq_server: SeqServer, engine: Engine) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    seq_server.append(300)
    wiring.add("art-1", seq_server)
    wiring.add("art-2", seq_server, token="wrong-token")
    set_limit("messages", 3)
    state, _ = run_session(category="messages", instances=["art-1", "art-2"])
    assert state.is_failed()
    (sid,) = {r.session_id for r in records(engine)}
    key = f"session-{sid}"

    async def read() -> dict[str, Any]:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[f"{key}-summary", f"{key}-records", f"{key}-progress"])
                )
            )
            return {a.key: a for a in arts}

    arts = asyncio.run(read())
    assert set(arts) == {f"{key}-summary", f"{key}-records", f"{key}-progress"}
    summary = arts[f"{key}-summary"]
    assert summary.type == "markdown" and sid in summary.data and "art-2" in summary.data
    assert "1 ok, 1 failed" in summary.data
    table = arts[f"{key}-records"]
    assert table.type == "table"
    import json

    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    by = {r["instance_name"]: r for r in rows}
    assert by["art-1"]["status"] == "completed" and by["art-1"]["items_synced"] == 300
    assert by["art-2"]["status"] == "failed" and "art-2" in by["art-2"]["error_message"]
    assert by["art-1"]["duration_seconds"] is not None and by["art-1"]["items_per_second"] > 0
    progress = arts[f"{key}-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert progress.description == f"session {sid} (messages): 2/2 instances done; 300 msgs"


def test_artifacts_belong_to_the_run_that_publishes_them_tables_without_nan_progress_clamped() -> None:
    """``tasks.prefect_api.create_artifact`` (what ``prefect.artifacts`` did, without its import):
    the artifact is the calling flow run's, a table's NaN shows empty, a progress stays in 0-100,
    and an update without a description keeps the one shown."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    from tasks import prefect_api as pf

    @flow(name="artifact-probe")
    async def probe() -> str:
        await pf.create_artifact("table", [{"a": float("nan"), "b": [1.5, float("nan")]}], key="probe-table")
        progress = await pf.create_artifact("progress", 250.0, description="first")
        await pf.update_progress_artifact(progress, -5.0)
        return str(flow_run.id)

    async def read(run_id: str) -> dict[str, Any]:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)]))
            )
            return {a.type: a for a in arts}

    arts = asyncio.run(read(asyncio.run(probe())))
    assert set(arts) == {"table", "progress"}
    import json

    assert arts["table"].key == "probe-table"
    assert json.loads(arts["table"].data) == [{"a": None, "b": [1.5, None]}]
    assert float(arts["progress"].data) == 0.0 and arts["progress"].description == "first"


def test_a_long_instance_sync_shows_done_expected_rate_and_eta(
    wiring: Any, seq_server: SeqServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance sync longer than one chunk has a progress artifact whose description says
    items done / expected (the source's totalCount), the rate and the ETA (14.4)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    from syncflow.settings import reset_settings

    monkeypatch.setenv("SYNCFLOW_BATCHES_PER_TASK", "1")  # one page per chunk: 3 chunks
    reset_settings()
    seq_server.append(300)
    wiring.add("eta-1", seq_server, batch_size=100)
    state, _ = run_session(category="messages", instances=["eta-1"], refresh_metadata=False)
    assert state.is_completed()
    (rec,) = records(engine)
    assert rec.items_synced == 300 and rec.flow_run_id

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(rec.flow_run_id)]),
                    type=ArtifactFilterType(any_=["progress"]),
                )
            )

    (art,) = asyncio.run(read())
    assert float(art.data) == 100.0
    assert art.description.startswith("messages of eta-1: 300 / 300 msgs (100.0 %), "), art.description
    assert "/s, ETA 0s" in art.description


def test_cli_refuses_to_cancel_a_finished_session_or_retry_one_without_failures(
    wiring: Any, seq_server: SeqServer, engine: Engine
) -> None:
    from typer.testing import CliRunner

    from syncflow.cli import app

    wiring.add("done-1", seq_server)
    sid, recs = wiring.open(["done-1"])
    with session_scope(engine) as s:
        book.start_instance_sync(s, record_id=recs["done-1"])
        book.complete_instance_sync(s, record_id=recs["done-1"])
    runner = CliRunner()
    res = runner.invoke(app, ["sessions", "cancel", sid, "--no-prefect"])
    assert res.exit_code == 1 and "completed" in res.output, res.output
    res = runner.invoke(app, ["sessions", "retry-failed", sid])
    assert res.exit_code == 1 and "no failed instance" in res.output, res.output
    sid2, _ = wiring.open(["done-1"])
    res = runner.invoke(app, ["sessions", "retry-failed", sid2])
    assert res.exit_code == 1 and "still running" in res.output, res.output
    res = runner.invoke(app, ["--json", "sessions", "cancel", sid2, "--no-prefect"])
    assert res.exit_code == 0, res.output
    assert session_row(engine, sid2).status == "cancelled"
