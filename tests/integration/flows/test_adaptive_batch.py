"""Adaptive batch size (issue 11 point 6), end to end: the ``sync-instance`` subflow against the
real reference seq server, on SQLite and on PostgreSQL.

The page size moves within the block's bounds towards a target page time. The tests pick
targets no page on any machine can miss (60 s: every page is faster, so the size grows to the
maximum; 0.1 ms: every page is slower, so it shrinks to the minimum), and check the requests
the server received, the store against the server's truth, the record's ``sync_details`` and
the size remembered in the sync state for the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import Engine, select

from flows.instance_sync import sync_instance
from syncflow.store.db import session_scope
from syncflow.store.models import Instance, Message, SyncConfigItem, SyncInstanceRecord
from syncflow.testing.seqserver import SYNC_PATH, SeqServer

TOKEN = "test-token-not-a-secret"  # the token conftest's Wiring.add puts into the blocks


@pytest.fixture
def server() -> Iterator[SeqServer]:
    srv = SeqServer(messages=0, token=TOKEN, seed=5)
    srv.start()
    yield srv
    srv.stop()


def _run_ok(record_id: int) -> dict[str, Any]:
    async def go() -> tuple[Any, Any]:
        state = await sync_instance(record_id=record_id, return_state=True)
        return state, await state.aresult(raise_on_failure=False)

    state, result = asyncio.run(go())
    assert state.is_completed(), result
    assert result["status"] == "completed", result
    return result  # type: ignore[no-any-return]


def _counts_asked(server: SeqServer) -> list[int]:
    return [r.count for r in server.requests if r.path == SYNC_PATH and r.count is not None]


def _remembered(engine: Engine, name: str) -> Any:
    with session_scope(engine) as s:
        item = s.scalar(
            select(SyncConfigItem)
            .join(Instance, Instance.id == SyncConfigItem.instance_id)
            .where(Instance.name == name, SyncConfigItem.category == "messages")
        )
        assert item is not None
        return (item.options or {}).get("adaptive_batch_size")


def _stored(engine: Engine, name: str) -> list[tuple[str, int]]:
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == name))
        return [tuple(r) for r in s.execute(select(Message.message_id, Message.seq).where(Message.instance_id == iid))]  # type: ignore[misc]


def _assert_truth(engine: Engine, name: str, server: SeqServer) -> None:
    rows = _stored(engine, name)
    assert len(rows) == len({r[0] for r in rows}), "duplicate message ids"
    assert sorted(r[1] for r in rows) == [m["seq"] for m in server.messages_after(-1)]


def _details(engine: Engine, rid: int) -> dict[str, Any]:
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        return dict(rec.sync_details or {})


def test_a_fast_source_grows_the_page_to_the_blocks_maximum_and_the_next_run_starts_there(
    wiring: Any, server: SeqServer, engine: Engine
) -> None:
    server.append(20_000)
    wiring.add(
        "ad-1",
        server,
        batch_size=500,
        adaptive_batch=True,
        min_batch_size=100,
        max_batch_size=4000,
        target_page_seconds=60,
    )
    _, recs = wiring.open(["ad-1"])
    result = _run_ok(recs["ad-1"])

    asked = _counts_asked(server)
    assert asked[0] == 500  # the block's size to start with
    assert all(b >= a for a, b in pairwise(asked)), asked  # never shrinks: every page beats 60 s
    assert all(b <= 2 * a for a, b in pairwise(asked)), asked  # at most x2 a step
    assert max(asked) == 4000  # the block's maximum, never more
    assert len(asked) < 20_000 // 500  # fewer requests than at the fixed 500
    _assert_truth(engine, "ad-1", server)
    details = _details(engine, recs["ad-1"])
    assert details["batch_size"] == result["sync_details"]["batch_size"] == 4000
    assert details["batch_size_range"] == [500, 4000]
    assert details["adaptive_batch"] == {"min": 100, "max": 4000, "target_page_s": 60.0}
    assert _remembered(engine, "ad-1") == 4000

    server.append(1_000)  # the next run starts at the remembered size
    server.reset_requests()
    _, recs = wiring.open(["ad-1"])
    _run_ok(recs["ad-1"])
    assert _counts_asked(server) == [4000]
    _assert_truth(engine, "ad-1", server)


def test_a_slow_page_shrinks_the_size_to_the_blocks_minimum(wiring: Any, server: SeqServer, engine: Engine) -> None:
    server.append(6_000)
    wiring.add(
        "ad-2",
        server,
        batch_size=800,
        adaptive_batch=True,
        min_batch_size=150,
        max_batch_size=5000,
        target_page_seconds=0.0001,
    )
    _, recs = wiring.open(["ad-2"])
    _run_ok(recs["ad-2"])

    asked = _counts_asked(server)
    assert asked[0] == 800
    assert all(b <= a for a, b in pairwise(asked)), asked  # never grows: no page holds 0.1 ms
    assert all(2 * b >= a for a, b in pairwise(asked)), asked  # at most /2 a step
    assert min(asked) == 150  # the block's minimum, never less
    _assert_truth(engine, "ad-2", server)
    assert _details(engine, recs["ad-2"])["batch_size"] == 150
    assert _remembered(engine, "ad-2") == 150


def test_without_adaptive_the_size_is_fixed_and_nothing_is_remembered(
    wiring: Any, server: SeqServer, engine: Engine
) -> None:
    server.append(2_100)
    wiring.add("ad-3", server, batch_size=500)
    _, recs = wiring.open(["ad-3"])
    result = _run_ok(recs["ad-3"])
    assert _counts_asked(server) == [500] * 5
    assert result["sync_details"]["batch_size"] == 500
    assert "batch_size_range" not in result["sync_details"]
    assert _remembered(engine, "ad-3") is None
    _assert_truth(engine, "ad-3", server)


def test_an_explicit_batch_size_option_keeps_the_size_fixed(wiring: Any, server: SeqServer, engine: Engine) -> None:
    server.append(1_000)
    wiring.add("ad-4", server, adaptive_batch=True, min_batch_size=100, max_batch_size=4000, target_page_seconds=60)
    _, recs = wiring.open(["ad-4"], options={"ad-4": {"batch_size": 250}})
    _run_ok(recs["ad-4"])
    assert _counts_asked(server) == [250] * 4
    assert _remembered(engine, "ad-4") is None


def test_the_block_refuses_min_above_max() -> None:
    from blocks.seq_http import SeqHttpInstance

    with pytest.raises(ValueError, match="min_batch_size 600 is above max_batch_size 500"):
        SeqHttpInstance(base_url="http://127.0.0.1:1", token="t", min_batch_size=600, max_batch_size=500)
