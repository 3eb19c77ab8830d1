"""The seq engine's required behaviour, end to end: the ``sync-instance`` subflow through the
Prefect test harness, against the real reference seq server, on SQLite and on PostgreSQL.

Every test checks the store against the server's truth or the server's request log, so each
one fails when the engine loses, duplicates, miscounts or over-fetches. Faults are injected
per request by :class:`ScriptedSeqServer` (by ``lastSeq`` and attempt), so the request log of
every run is exact and the tests are deterministic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select, update

from flows.instance_sync import sync_instance
from syncflow.settings import reset_settings
from syncflow.store.db import session_scope
from syncflow.store.models import Conversation, Instance, Message, SyncConfigItem, SyncInstanceRecord
from syncflow.store.sync_state import acquire_lock
from syncflow.testing.seqserver import CONVERSATIONS_PATH, SYNC_PATH, RequestRecord, SeqServer

TOKEN = "test-token-not-a-secret"  # the token conftest's Wiring.add puts into the blocks
SEQ_MAX = 2**63 - 1
BATCH = 500


# --------------------------------------------------------------------------- helpers


class ScriptedSeqServer(SeqServer):
    """The reference server plus what these tests need to observe and steer it exactly.

    * ``script``: faults by request, ``{lastSeq: ["drop", "error", ...]}``: the first sync
      request with that lastSeq gets the first fault, the next one the second, and so on;
      later requests are answered normally. ``conversations_script``: the same for the
      successive ``GET /conversations``. ``fail_from``: every sync request with
      ``lastSeq >= fail_from`` gets ``fail_with`` (a cut that never heals).
    * ``stamps``: (monotonic time of arrival, path, lastSeq) of each protocol request.
    * ``gate``: while cleared, sync requests wait before being answered (the server thread
      blocks: nothing is answered until the gate opens). ``arrived`` is set by the first
      sync request that reaches the gate.
    """

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("token", TOKEN)
        super().__init__(**kw)
        self.script: dict[int, list[str]] = {}
        self.conversations_script: list[str] = []
        self.fail_from: int | None = None
        self.fail_with = "error"
        self.stamps: list[tuple[float, str, int | None]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()
        self._current_last_seq: int | None = None

    def _handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        path = target.split("?", 1)[0]
        last_seq = None
        if path == SYNC_PATH:
            try:
                last_seq = orjson.loads(body).get("lastSeq")
            except (orjson.JSONDecodeError, AttributeError):
                pass
            self.arrived.set()
            self.gate.wait(timeout=120)
        if path in (SYNC_PATH, CONVERSATIONS_PATH):
            self.stamps.append((time.monotonic(), path, last_seq))
        self._current_last_seq = last_seq
        return super()._handle(method, target, headers, body)

    def _decide_faults(self, path: str) -> dict[str, Any]:
        fired = super()._decide_faults(path)
        if path == CONVERSATIONS_PATH and self.conversations_script:
            fired[self.conversations_script.pop(0)] = True
        last_seq = self._current_last_seq
        if path != SYNC_PATH or last_seq is None:
            return fired
        planned = self.script.get(last_seq)
        if planned:
            fired[planned.pop(0)] = True
        if self.fail_from is not None and last_seq >= self.fail_from:
            fired[self.fail_with] = True
        return fired


MakeServer = Callable[..., ScriptedSeqServer]


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    servers: list[ScriptedSeqServer] = []

    def make(**kw: Any) -> ScriptedSeqServer:
        kw.setdefault("seed", 11)
        server = ScriptedSeqServer(**kw)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.gate.set()
        server.stop()


def run(record_id: int, **kw: Any) -> tuple[Any, Any]:
    """Run the subflow to its end: (final state, result or the exception it failed with)."""

    async def go() -> tuple[Any, Any]:
        state = await sync_instance(record_id=record_id, return_state=True, **kw)
        return state, await state.aresult(raise_on_failure=False)

    return asyncio.run(go())


def run_ok(record_id: int, **kw: Any) -> dict[str, Any]:
    state, result = run(record_id, **kw)
    assert state.is_completed(), f"sync failed: {result!r}"
    assert result["status"] == "completed", result
    return result  # type: ignore[no-any-return]


def record(engine: Engine, rid: int) -> SyncInstanceRecord:
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        s.expunge(rec)
        return rec


def counts(rec: SyncInstanceRecord) -> dict[str, int]:
    return {
        "synced": rec.items_synced,
        "created": rec.items_created,
        "updated": rec.items_updated,
        "unchanged": rec.items_unchanged,
        "deleted": rec.items_deleted,
    }


def instance_id(engine: Engine, name: str) -> int:
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == name))
        assert iid is not None
        return iid


def state_item(engine: Engine, name: str, category: str = "messages") -> SyncConfigItem | None:
    with session_scope(engine) as s:
        item = s.scalar(
            select(SyncConfigItem)
            .join(Instance, Instance.id == SyncConfigItem.instance_id)
            .where(Instance.name == name, SyncConfigItem.category == category)
        )
        if item is not None:
            s.expunge(item)
        return item


def cursor(engine: Engine, name: str) -> int | None:
    item = state_item(engine, name)
    return None if item is None else item.last_seq


_FIELDS = (
    "message_id",
    "server_msg_id",
    "seq",
    "conversation_id",
    "sender_id",
    "message_type",
    "content",
    "create_time",
    "server_time",
)
_WIRE = (
    "messageID",
    "serverMsgID",
    "seq",
    "conversationID",
    "senderID",
    "messageType",
    "content",
    "createTime",
    "serverTime",
)


def stored_rows(engine: Engine, name: str) -> list[tuple[Any, ...]]:
    """Every stored message of the instance, in seq order, as tuples in ``_FIELDS`` order."""
    iid = instance_id(engine, name)
    with session_scope(engine) as s:
        cols = [getattr(Message, f) for f in _FIELDS]
        return [tuple(r) for r in s.execute(select(*cols).where(Message.instance_id == iid).order_by(Message.seq))]


def row_count(engine: Engine, name: str) -> int:
    iid = instance_id(engine, name)
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(Message).where(Message.instance_id == iid)) or 0


def truth(server: SeqServer, upto: int | None = None) -> list[tuple[Any, ...]]:
    """What the server holds (seq <= upto), in seq order, as tuples in ``_FIELDS`` order."""
    return [tuple(m.get(k) for k in _WIRE) for m in server.messages_after(-1) if upto is None or m["seq"] <= upto]


def assert_store_equals_truth(engine: Engine, name: str, server: SeqServer) -> None:
    """Same set of message ids, no duplicates, every field equal, cursor = the server's max seq."""
    rows = stored_rows(engine, name)
    expected = truth(server)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate message ids in the store"
    assert len(rows) == len(expected)
    assert set(ids) == {r[0] for r in expected}
    assert rows == expected
    assert cursor(engine, name) == server.max_seq


def sync_log(server: SeqServer) -> list[RequestRecord]:
    return [r for r in server.requests if r.path == SYNC_PATH]


def last_seqs(server: SeqServer) -> list[int | None]:
    return [r.last_seq for r in sync_log(server)]


# ------------------------------------------------------------------ 1. batching


def test_10000_messages_in_exactly_20_fetches_of_500(wiring: Any, make_server: MakeServer, engine: Engine) -> None:
    server = make_server(messages=10_000)
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])

    result = run_ok(recs["im-1"])

    log = sync_log(server)
    assert [(r.last_seq, r.count, r.status) for r in log] == [(i * BATCH, BATCH, 200) for i in range(20)]
    rec = record(engine, recs["im-1"])
    assert rec.status == "completed"
    assert rec.sync_details["batches"] == 20 == result["sync_details"]["batches"]
    assert rec.sync_details["seq_range"] == [1, 10_000]
    assert counts(rec) == {"synced": 10_000, "created": 10_000, "updated": 0, "unchanged": 0, "deleted": 0}
    assert_store_equals_truth(engine, "im-1", server)
    assert cursor(engine, "im-1") == 10_000


# --------------------------------------------------------------------- 2. dedup


def test_overlapping_pages_store_each_message_once_with_exact_counts(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    server = make_server(messages=1_200)
    server.set_faults(overlap=100)  # every page re-sends the 100 messages before lastSeq
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])

    run_ok(recs["im-1"])

    # pages: 1..500, 401..900 (100 re-sent), 801..1200 (100 re-sent)
    assert last_seqs(server) == [0, 500, 900]
    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 1_400, "created": 1_200, "updated": 0, "unchanged": 200, "deleted": 0}
    assert_store_equals_truth(engine, "im-1", server)


def test_a_changed_message_re_sent_is_updated_in_place(wiring: Any, make_server: MakeServer, engine: Engine) -> None:
    server = make_server(messages=1_000)
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])
    assert row_count(engine, "im-1") == 1_000

    # An edit on the server of an already-synced message, plus 200 new ones; the server
    # re-sends the last 50 messages before the cursor (the edited one among them).
    server.add_messages([{"seq": 990, "content": "edited on the server"}])
    server.append(200)
    server.set_faults(overlap=50)
    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])

    assert last_seqs(server) == [1_000]
    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 250, "created": 200, "updated": 1, "unchanged": 49, "deleted": 0}
    edited = [r for r in stored_rows(engine, "im-1") if r[2] == 990]
    assert len(edited) == 1 and edited[0][6] == "edited on the server"
    assert_store_equals_truth(engine, "im-1", server)


# ------------------------------------------------------------------ 3. no new messages


def test_no_new_messages_fetches_once_and_creates_nothing(wiring: Any, make_server: MakeServer, engine: Engine) -> None:
    server = make_server(messages=700)
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])
    before = stored_rows(engine, "im-1")

    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    result = run_ok(recs["im-1"])

    assert [(r.last_seq, r.status) for r in sync_log(server)] == [(700, 200)]
    rec = record(engine, recs["im-1"])
    assert rec.status == "completed"
    assert counts(rec) == {"synced": 0, "created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    assert result["sync_details"]["batches"] == 1
    assert stored_rows(engine, "im-1") == before
    assert cursor(engine, "im-1") == 700


# ------------------------------------------------------------ 4. concurrent syncs


def test_five_concurrent_syncs_of_one_instance_one_runs_four_are_skipped(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    server = make_server(messages=1_500)
    # timeout: the holder's gated first fetch must not time out however long the others take
    wiring.add("im-1", server, timeout=300.0)
    rids = [wiring.open(["im-1"])[1]["im-1"] for _ in range(5)]
    server.gate.clear()  # the holder's first fetch waits until the other four have ended

    def ended_count() -> int:
        with session_scope(engine) as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(SyncInstanceRecord)
                    .where(SyncInstanceRecord.id.in_(rids), SyncInstanceRecord.status.not_in(["pending", "running"]))
                )
                or 0
            )

    async def open_gate_when_four_ended() -> None:
        deadline = time.monotonic() + 240
        while await asyncio.to_thread(ended_count) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.gate.set()  # on timeout too: the assertions below then say what went wrong

    async def go() -> list[Any]:
        states = await asyncio.gather(
            *[sync_instance(record_id=rid, return_state=True) for rid in rids], open_gate_when_four_ended()
        )
        return states[:5]

    states = asyncio.run(go())

    # The records say who ran (a subflow's in-memory result can be missing under load:
    # Prefect's MissingResult when the final state came back from the API).
    assert all(state.is_completed() for state in states)
    recs = [record(engine, rid) for rid in rids]
    assert sorted(r.status for r in recs) == ["completed"] + ["skipped"] * 4
    (holder,) = [r for r in recs if r.status == "completed"]
    skipped = [r for r in recs if r.status == "skipped"]
    assert len(skipped) == 4
    assert holder.flow_run_id
    for rec in skipped:
        assert "already being synced" in rec.error_message
        assert f"flow run {holder.flow_run_id}" in rec.error_message  # names the holder's run
        assert holder.session_id in rec.error_message and "its lease ends at" in rec.error_message
        assert "messages of im-1" in rec.error_message
        assert counts(rec)["synced"] == 0
    assert counts(holder)["created"] == 1_500
    assert last_seqs(server) == [0, 500, 1_000]  # only the holder fetched
    assert_store_equals_truth(engine, "im-1", server)
    assert state_item(engine, "im-1").lock_owner is None  # released at the end


# --------------------------------------------------------------- 5. network cut


@pytest.mark.parametrize("drop_mode", ["mid", "before"])
def test_dropped_connections_and_5xx_are_retried_and_nothing_is_lost(
    wiring: Any, make_server: MakeServer, engine: Engine, drop_mode: str
) -> None:
    server = make_server(messages=3_000)
    server.set_faults(drop_mode=drop_mode, error_status=503)
    server.script = {500: ["drop"], 1_000: ["error", "drop"], 2_500: ["error"]}
    wiring.add("im-1", server, max_retries=3)
    _, recs = wiring.open(["im-1"])

    result = run_ok(recs["im-1"])

    log = sync_log(server)
    assert [(r.last_seq, r.status) for r in log] == [
        (0, 200),
        (500, None),
        (500, 200),
        (1_000, 503),
        (1_000, None),
        (1_000, 200),
        (1_500, 200),
        (2_000, 200),
        (2_500, 503),
        (2_500, 200),
    ]
    rec = record(engine, recs["im-1"])
    assert rec.status == "completed"
    assert rec.sync_details["retries"] == 4 == result["sync_details"]["retries"]
    assert rec.sync_details["batches"] == 6
    assert counts(rec)["created"] == 3_000
    assert_store_equals_truth(engine, "im-1", server)


def test_a_cut_that_outlasts_the_retries_fails_keeps_the_batches_and_resumes(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    server = make_server(messages=3_000)
    server.fail_from = 1_500  # from the 4th page on, every request gets 503
    wiring.add("im-1", server, max_retries=2)
    _, recs = wiring.open(["im-1"])

    state, error = run(recs["im-1"])

    assert state.is_failed()
    assert last_seqs(server) == [0, 500, 1_000, 1_500, 1_500, 1_500]  # 1 try + 2 retries
    rec = record(engine, recs["im-1"])
    assert rec.status == "failed"
    assert "im-1" in rec.error_message and "503" in rec.error_message and "lastSeq=1500" in rec.error_message
    assert "503" in str(error)
    assert rec.sync_details["batches"] == 3
    assert counts(rec)["created"] == 1_500  # the counters of every committed batch
    assert cursor(engine, "im-1") == 1_500  # every committed batch, nothing more
    assert stored_rows(engine, "im-1") == truth(server, upto=1_500)
    item = state_item(engine, "im-1")
    assert item.lock_owner is None and item.status == "failed" and "503" in item.last_error

    server.fail_from = None
    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])

    assert last_seqs(server) == [1_500, 2_000, 2_500]  # resumes at the stored cursor
    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 1_500, "created": 1_500, "updated": 0, "unchanged": 0, "deleted": 0}
    assert_store_equals_truth(engine, "im-1", server)


def test_a_timed_out_request_is_retried(
    wiring: Any, make_server: MakeServer, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(messages=1_200)
    # answered after 60 s: the client gives up after 5 s (generous, so that on a slow machine no
    # other request of the run times out too; the server drops the late answer when it stops)
    server.set_faults(slow_seconds=60.0)
    server.script = {500: ["slow"]}
    wiring.add("im-1", server, timeout=5.0)
    _, recs = wiring.open(["im-1"])

    result = run_ok(recs["im-1"])

    assert last_seqs(server) == [0, 500, 500, 1_000]
    # the retry was the timeout's: the server's arrival stamps cannot say so (on a busy machine
    # the server thread stamps a request late), the task's failure can
    failures = [r.getMessage() for r in caplog.records if "Retry 1/" in r.getMessage()]
    assert len(failures) == 1 and "lastSeq=500" in failures[0] and "timed out after 5s" in failures[0]
    assert result["sync_details"]["retries"] == 1
    assert_store_equals_truth(engine, "im-1", server)


# ------------------------------------------------------------------- 6. huge seq


def test_seqs_up_to_2_63_minus_1(wiring: Any, make_server: MakeServer, engine: Engine) -> None:
    first = SEQ_MAX - 100
    server = make_server(messages=101, start_seq=first)
    wiring.add("im-1", server, batch_size=40)
    _, recs = wiring.open(["im-1"])

    run_ok(recs["im-1"])

    assert last_seqs(server) == [0, first + 39, first + 79]
    assert [r[2] for r in stored_rows(engine, "im-1")] == list(range(first, SEQ_MAX + 1))
    assert_store_equals_truth(engine, "im-1", server)
    assert cursor(engine, "im-1") == SEQ_MAX
    rec = record(engine, recs["im-1"])
    assert rec.sync_details["seq_range"] == [first, SEQ_MAX]

    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])  # at the very top: one empty page, nothing created
    assert last_seqs(server) == [SEQ_MAX]
    assert counts(record(engine, recs["im-1"]))["created"] == 0
    assert cursor(engine, "im-1") == SEQ_MAX


# ----------------------------------------------------------------- 7. auth error


def test_a_wrong_token_fails_that_instance_only_without_retrying(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    bad_server = make_server(messages=600)
    good_server = make_server(messages=600)
    wiring.add("im-bad", bad_server, token="not-the-token", max_retries=3)
    wiring.add("im-good", good_server)
    _, recs = wiring.open(["im-bad", "im-good"])

    async def go() -> list[Any]:
        return list(
            await asyncio.gather(
                sync_instance(record_id=recs["im-bad"], return_state=True),
                sync_instance(record_id=recs["im-good"], return_state=True),
            )
        )

    bad_state, good_state = asyncio.run(go())

    assert bad_state.is_failed() and good_state.is_completed()
    assert [(r.last_seq, r.status) for r in sync_log(bad_server)] == [(0, 401)]  # not retried
    bad = record(engine, recs["im-bad"])
    assert bad.status == "failed"
    assert "im-bad" in bad.error_message and "401" in bad.error_message
    assert row_count(engine, "im-bad") == 0
    assert cursor(engine, "im-bad") is None
    good = record(engine, recs["im-good"])
    assert good.status == "completed" and counts(good)["created"] == 600
    assert_store_equals_truth(engine, "im-good", good_server)


# -------------------------------------------------------------- 8. 429 Retry-After


def test_429_waits_at_least_retry_after_then_completes(wiring: Any, make_server: MakeServer, engine: Engine) -> None:
    server = make_server(messages=800)
    server.set_faults(retry_after="1.5")
    server.script = {500: ["rate_limit"]}
    # base_delay alone would retry after 0.05 s; max_delay must not cap Retry-After here
    wiring.add("im-1", server, base_delay=0.05, max_delay=5.0)
    _, recs = wiring.open(["im-1"])

    result = run_ok(recs["im-1"])

    assert [(r.last_seq, r.status) for r in sync_log(server)] == [(0, 200), (500, 429), (500, 200)]
    (t429, *_), (t_retry, *_) = [s for s in server.stamps if s[2] == 500]
    assert t_retry - t429 >= 1.5
    assert result["sync_details"]["retries"] == 1
    assert_store_equals_truth(engine, "im-1", server)


# -------------------------------------------------------------- 9. truncated JSON


def test_truncated_json_is_retried_and_completes(wiring: Any, make_server: MakeServer, engine: Engine) -> None:
    server = make_server(messages=1_200)
    server.script = {500: ["truncate", "truncate"]}
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])

    result = run_ok(recs["im-1"])

    assert [(r.last_seq, "truncate" in r.faults) for r in sync_log(server)] == [
        (0, False),
        (500, True),
        (500, True),
        (500, False),
        (1_000, False),
    ]
    assert result["sync_details"]["retries"] == 2
    assert counts(record(engine, recs["im-1"]))["created"] == 1_200
    assert_store_equals_truth(engine, "im-1", server)


# ---------------------------------------------------------------- 10. invalid pages


@pytest.mark.parametrize(
    ("fault", "kind", "expected"),
    [
        ("invalid", "descending", "seqs not strictly ascending"),
        ("invalid", "duplicate_ids", "duplicate messageID"),
        ("invalid", "has_more_empty", "hasMore=true with no progress"),
        ("code_error", "descending", "code=10001"),
    ],
)
def test_an_invalid_page_fails_the_record_and_writes_nothing_of_it(
    wiring: Any, make_server: MakeServer, engine: Engine, fault: str, kind: str, expected: str
) -> None:
    server = make_server(messages=1_000)
    wiring.add("im-1", server, max_retries=3)
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])

    # run 2: the page after lastSeq=1000 is fine (committed), the one after 1500 is broken
    server.append(1_000)
    server.set_faults(invalid_kind=kind)
    server.script = {1_500: [fault]}
    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    state, _ = run(recs["im-1"])

    assert state.is_failed()
    assert last_seqs(server) == [1_000, 1_500]  # a bad page is not retried
    rec = record(engine, recs["im-1"])
    assert rec.status == "failed"
    assert rec.error_message.startswith("im-1: ")
    assert "lastSeq=1500" in rec.error_message and expected in rec.error_message
    assert counts(rec)["created"] == 500 and rec.sync_details["batches"] == 1
    assert cursor(engine, "im-1") == 1_500  # where it was before the bad page
    assert stored_rows(engine, "im-1") == truth(server, upto=1_500)  # nothing of the bad page


# ------------------------------------------------------------ 11. single-flight lease


def test_a_dead_holders_lease_blocks_until_it_runs_out(
    wiring: Any, make_server: MakeServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCFLOW_LOCK_LEASE_SECONDS", "5")
    reset_settings()
    server = make_server(messages=600)
    wiring.add("im-1", server)
    iid = instance_id(engine, "im-1")
    dead = "run:killed-9-hard"
    with session_scope(engine) as s:  # a sync that was killed holds the lease
        acquire_lock(s, instance_id=iid, category="messages", owner=dead, lease_seconds=60)

    _, recs = wiring.open(["im-1"])
    state, result = run(recs["im-1"])

    assert state.is_completed() and result["status"] == "skipped"
    assert "'run:killed-9-hard'" not in result["error_message"]  # a run is named as a flow run
    assert "flow run killed-9-hard" in result["error_message"] and "of im-1" in result["error_message"]
    rec = record(engine, recs["im-1"])
    assert rec.status == "skipped" and "flow run killed-9-hard" in rec.error_message
    assert sync_log(server) == []
    assert state_item(engine, "im-1").lock_owner == dead  # a skipped sync leaves the lease alone

    # The dead holder's last renewal gave it 1.5 s more; once that runs out a new sync runs.
    with session_scope(engine) as s:
        acquire_lock(s, instance_id=iid, category="messages", owner=dead, lease_seconds=1.5)
    expires = state_item(engine, "im-1").lock_expires_at
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)

    # The new sync holds the lease for at most the configured 5 s ahead while it works.
    server.gate.clear()
    _, recs = wiring.open(["im-1"])
    seen: dict[str, Any] = {}

    async def look_at_the_lease_while_blocked() -> None:
        await asyncio.to_thread(server.arrived.wait, 90)
        item = await asyncio.to_thread(state_item, engine, "im-1")
        seen.update(owner=item.lock_owner, ahead=(item.lock_expires_at - dt.datetime.now(dt.UTC)))
        server.gate.set()

    async def go() -> Any:
        state, _ = await asyncio.gather(
            sync_instance(record_id=recs["im-1"], return_state=True), look_at_the_lease_while_blocked()
        )
        return await state.aresult(raise_on_failure=False)

    result = asyncio.run(go())

    assert result["status"] == "completed"
    rec = record(engine, recs["im-1"])
    assert seen["owner"] == f"run:{rec.flow_run_id}"
    assert dt.timedelta(0) < seen["ahead"] <= dt.timedelta(seconds=5)
    assert_store_equals_truth(engine, "im-1", server)
    item = state_item(engine, "im-1")
    assert item.lock_owner is None and item.status == "completed"


def test_a_sync_that_lost_its_lease_commits_nothing_of_its_batch(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    server = make_server(messages=1_000)
    wiring.add("im-1", server)
    iid = instance_id(engine, "im-1")
    _, recs = wiring.open(["im-1"])
    thief = "run:took-over-after-expiry"
    server.gate.clear()

    def steal() -> None:
        # The holder stalled past its lease (as if frozen) and another sync took over.
        with session_scope(engine) as s:
            s.execute(
                update(SyncConfigItem)
                .where(SyncConfigItem.instance_id == iid, SyncConfigItem.category == "messages")
                .values(lock_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
            )
        with session_scope(engine) as s:
            acquire_lock(s, instance_id=iid, category="messages", owner=thief, lease_seconds=60)

    async def steal_while_the_first_fetch_waits() -> None:
        await asyncio.to_thread(server.arrived.wait, 90)
        await asyncio.to_thread(steal)
        server.gate.set()

    async def go() -> Any:
        state, _ = await asyncio.gather(
            sync_instance(record_id=recs["im-1"], return_state=True), steal_while_the_first_fetch_waits()
        )
        return state

    state = asyncio.run(go())

    assert state.is_failed()
    assert last_seqs(server)[0] == 0
    rec = record(engine, recs["im-1"])
    assert rec.status == "failed" and "lost the single-flight lease" in rec.error_message
    assert "im-1" in rec.error_message
    # the page's rows were written inside the batch's transaction, which then rolled back
    assert row_count(engine, "im-1") == 0
    assert counts(rec) == {"synced": 0, "created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    item = state_item(engine, "im-1")
    assert item.last_seq is None
    assert item.lock_owner == thief  # the loser did not release the new holder's lease


# ------------------------------------------------------------- 12. metadata


def test_metadata_snapshot_diff_created_updated_deleted(wiring: Any, seq_server: SeqServer, engine: Engine) -> None:
    wiring.add("im-1", seq_server)
    _, recs = wiring.open(["im-1"], category="metadata")
    run_ok(recs["im-1"])

    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 3, "created": 3, "updated": 0, "unchanged": 0, "deleted": 0}
    assert state_item(engine, "im-1", "metadata").metadata_version == 1

    def conversations() -> dict[str, tuple[Any, ...]]:
        with session_scope(engine) as s:
            return {
                c.conversation_id: (c.title, c.type, c.avatar_url, c.deleted, c.version)
                for c in s.scalars(select(Conversation))
            }

    assert conversations() == {
        c["conversationID"]: (c["title"], str(c["type"]), c["avatarUrl"], False, 1) for c in seq_server.conversations
    }

    seq_server.rename_conversation("conv-0", "Renamed")
    seq_server.remove_conversation("conv-1")
    seq_server.add_conversation("conv-new", "Brand new", type=2)
    _, recs = wiring.open(["im-1"], category="metadata")
    run_ok(recs["im-1"])

    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 3, "created": 1, "updated": 1, "unchanged": 1, "deleted": 1}
    assert state_item(engine, "im-1", "metadata").metadata_version == 2
    assert rec.sync_details["metadata_version"] == 2
    convs = conversations()
    assert convs["conv-0"][0] == "Renamed" and convs["conv-0"][4] == 2
    assert convs["conv-1"][3] is True  # kept, marked deleted
    assert convs["conv-2"] == (
        seq_server.conversations[1]["title"],
        str(seq_server.conversations[1]["type"]),
        seq_server.conversations[1]["avatarUrl"],
        False,
        1,
    )
    assert convs["conv-new"] == ("Brand new", "2", None, False, 1)
    assert rec.sync_details["changes"] == [  # in words, in identity order, deletions last
        "conv-0: title: 'Conversation 0' -> 'Renamed'",
        "+conv-new (Brand new)",
        "-conv-1 (Conversation 1)",
    ]
    assert sync_log(seq_server) == []  # metadata never touches the messages endpoint

    # nothing changed: all unchanged, version stays
    _, recs = wiring.open(["im-1"], category="metadata")
    run_ok(recs["im-1"])
    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 3, "created": 0, "updated": 0, "unchanged": 3, "deleted": 0}
    assert state_item(engine, "im-1", "metadata").metadata_version == 2


def test_metadata_fetch_is_retried_on_transient_errors_and_429(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    server = make_server(conversations=4)
    server.set_faults(retry_after="0.5")
    server.conversations_script = ["error", "drop", "rate_limit"]
    wiring.add("im-1", server, max_retries=3, max_delay=5.0)
    _, recs = wiring.open(["im-1"], category="metadata")

    result = run_ok(recs["im-1"])

    log = [r for r in server.requests if r.path == CONVERSATIONS_PATH]
    assert [r.status for r in log] == [503, None, 429, 200]
    t429, t_retry = (s[0] for s in server.stamps[2:4])
    assert t_retry - t429 >= 0.5
    assert len(result["sync_details"]["created"]) == 4
    assert counts(record(engine, recs["im-1"]))["created"] == 4


def test_metadata_auth_error_is_not_retried(wiring: Any, make_server: MakeServer, engine: Engine) -> None:
    server = make_server()
    wiring.add("im-1", server, token="wrong", max_retries=3)
    _, recs = wiring.open(["im-1"], category="metadata")

    state, _ = run(recs["im-1"])

    assert state.is_failed()
    assert [r.status for r in server.requests if r.path == CONVERSATIONS_PATH] == [401]
    rec = record(engine, recs["im-1"])
    assert rec.status == "failed" and "im-1" in rec.error_message and "401" in rec.error_message


# --------------------------------------------------------------------- 13. options


def test_full_option_refetches_from_zero_with_everything_unchanged(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    server = make_server(messages=1_000)
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])
    server.reset_requests()

    _, recs = wiring.open(["im-1"], options={"im-1": {"full": True}})
    run_ok(recs["im-1"])

    assert last_seqs(server) == [0, 500]
    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 1_000, "created": 0, "updated": 0, "unchanged": 1_000, "deleted": 0}
    assert_store_equals_truth(engine, "im-1", server)


def test_seq_range_option_backfills_only_that_range_and_keeps_the_cursor(
    wiring: Any, make_server: MakeServer, engine: Engine
) -> None:
    server = make_server(messages=1_000)
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])
    iid = instance_id(engine, "im-1")
    with session_scope(engine) as s:  # lose 201..400 and 601..700 from the store
        for lo, hi in ((201, 400), (601, 700)):
            s.query(Message).filter(Message.instance_id == iid, Message.seq.between(lo, hi)).delete()
    server.append(500)  # new messages past the cursor: a backfill must not take them
    server.reset_requests()

    _, recs = wiring.open(["im-1"], options={"im-1": {"from_seq": 201, "to_seq": 400}})
    run_ok(recs["im-1"])

    # one page (201..700) covers the range: rows above 400 are dropped, nothing past it fetched
    assert last_seqs(server) == [200]
    rec = record(engine, recs["im-1"])
    assert counts(rec)["created"] == 200 and counts(rec)["updated"] == 0
    assert cursor(engine, "im-1") == 1_000  # the main cursor did not move
    stored = {r[2] for r in stored_rows(engine, "im-1")}
    assert stored == set(range(1, 601)) | set(range(701, 1_001))

    # a range above the cursor: stored, cursor still unmoved; the next incremental run
    # starts at the cursor and counts the backfilled rows unchanged
    server.reset_requests()
    _, recs = wiring.open(["im-1"], options={"im-1": {"from_seq": 1_101, "to_seq": 1_200}})
    run_ok(recs["im-1"])
    assert last_seqs(server) == [1_100]
    assert counts(record(engine, recs["im-1"]))["created"] == 100
    assert cursor(engine, "im-1") == 1_000
    assert max(r[2] for r in stored_rows(engine, "im-1")) == 1_200
    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])
    assert last_seqs(server) == [1_000]
    rec = record(engine, recs["im-1"])
    assert counts(rec) == {"synced": 500, "created": 400, "updated": 0, "unchanged": 100, "deleted": 0}
    assert cursor(engine, "im-1") == 1_500
    stored = {r[2] for r in stored_rows(engine, "im-1")}
    assert stored == set(range(1, 601)) | set(range(701, 1_501))


# ------------------------------------------------------------ 14. crash test


def main_reads(server: SeqServer, cursor_at_start: int) -> list[int | None]:
    """The sync requests after the gap repair's range reads (those ask below the cursor)."""
    return [s for s in last_seqs(server) if s is not None and s >= cursor_at_start]


CRASH_CHILD = Path(__file__).with_name("crash_sync_child.py")


def total_created(engine: Engine, name: str) -> int:
    """items_created summed over every record of the instance, killed runs included."""
    iid = instance_id(engine, name)
    with session_scope(engine) as s:
        return s.scalar(
            select(func.coalesce(func.sum(SyncInstanceRecord.items_created), 0)).where(
                SyncInstanceRecord.instance_id == iid
            )
        )


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_store_equals_server_truth(
    wiring: Any, make_server: MakeServer, engine: Engine, store_url: str, tmp_path: Path
) -> None:
    """Real syncs in child processes, SIGKILLed at seeded random points, resumed each time.

    After every kill the store holds exactly the server's messages up to the stored cursor
    (each batch committed whole with its cursor, never a part of one), and the counters of
    every record add up to the rows stored (counters commit with their rows). After a final
    run to completion the store equals the server's truth.
    """
    from prefect.settings import PREFECT_API_URL

    rng = random.Random(20261122)
    lease = 5
    # 20,000 messages with seq holes; every answer takes >= 0.25 s, so a run can fetch at most
    # delay/0.25 + 1 pages before its kill: a killed run never gets to the end.
    server = make_server(messages=20_000, hole_rate=0.02, seed=5)
    server.set_faults(latency=0.25)
    wiring.add("im-crash", server)
    env = {
        **os.environ,
        "SYNCFLOW_DATABASE_URL": store_url,
        "SYNCFLOW_LOCK_LEASE_SECONDS": str(lease),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }

    def spawn(rid: int, n: int) -> tuple[subprocess.Popen[bytes], Path, Path]:
        out, err = tmp_path / f"run{n}.out", tmp_path / f"run{n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen([sys.executable, str(CRASH_CHILD), str(rid)], env=env, stdout=fo, stderr=fe)
        return proc, out, err

    def tail(path: Path) -> str:
        return path.read_text(errors="replace")[-3000:]

    partial_kills = 0
    for n in range(4):
        before = cursor(engine, "im-crash") or 0
        server.reset_requests()
        server.arrived.clear()
        # One gap-repair read per run (0.25 s): the kills land in the main read, after it.
        _, recs = wiring.open(["im-crash"], options={"im-crash": {"gap_max_reads": 1}})
        proc, _, err = spawn(recs["im-crash"], n)
        try:
            deadline = time.monotonic() + 120
            while not server.arrived.wait(0.1):  # the child has begun and sent its first fetch
                assert proc.poll() is None, f"child exited early:\n{tail(err)}"
                assert time.monotonic() < deadline, f"child never fetched:\n{tail(err)}"
            time.sleep(rng.uniform(0.5, 2.0))  # the random kill point
            assert proc.poll() is None, f"child ended before its kill:\n{tail(err)}"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

        rec = record(engine, recs["im-crash"])
        assert rec.status == "running", "the kill did not interrupt the run"
        # (reads below the cursor are the gap ledger's repair of the seq holes: range reads)
        assert main_reads(server, before)[0] == before, "a run must resume at the stored cursor"
        now_cursor = cursor(engine, "im-crash") or 0
        assert now_cursor >= before
        assert stored_rows(engine, "im-crash") == truth(server, upto=now_cursor)
        assert total_created(engine, "im-crash") == row_count(engine, "im-crash")
        if 0 < row_count(engine, "im-crash") < server.message_count:
            partial_kills += 1

        # The killed run's lease runs out by itself within `lease` seconds of its last renewal.
        item = state_item(engine, "im-crash")
        assert item.lock_owner == f"run:{rec.flow_run_id}"
        ahead = (item.lock_expires_at - dt.datetime.now(dt.UTC)).total_seconds()
        assert ahead <= lease
        time.sleep(max(0.0, ahead) + 0.1)

        server.append(rng.randint(300, 1_500))  # the source keeps receiving messages meanwhile

    assert partial_kills >= 3, "the kills should land in the middle of the sync"

    before = cursor(engine, "im-crash") or 0
    server.reset_requests()
    _, recs = wiring.open(["im-crash"])
    proc, out, err = spawn(recs["im-crash"], 99)
    assert proc.wait(timeout=300) == 0, tail(err)
    result = json.loads(out.read_text().strip().splitlines()[-1])
    assert result["status"] == "completed", result

    assert main_reads(server, before)[0] == before
    rec = record(engine, recs["im-crash"])
    assert rec.status == "completed"
    assert counts(rec)["created"] == counts(rec)["synced"] == len(truth(server)) - len(truth(server, upto=before))
    assert_store_equals_truth(engine, "im-crash", server)
    assert total_created(engine, "im-crash") == server.message_count
    item = state_item(engine, "im-crash")
    assert item.lock_owner is None and item.status == "completed"
