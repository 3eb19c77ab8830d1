"""The per-instance subflow against the real reference seq server, through Prefect."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, func, select

from flows.instance_sync import sync_instance
from syncflow.store.db import session_scope
from syncflow.store.models import Message, SyncConfigItem, SyncInstanceRecord
from syncflow.testing.seqserver import SeqServer


def _run(record_id: int, **kw):  # type: ignore[no-untyped-def]
    return asyncio.run(sync_instance(record_id=record_id, **kw))


def _record(engine: Engine, rid: int) -> SyncInstanceRecord:
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        s.expunge(rec)
        return rec


def _stored(engine: Engine) -> tuple[int, int | None]:
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(Message)) or 0, s.scalar(select(SyncConfigItem.last_seq))


def test_first_then_incremental_sync(wiring, seq_server: SeqServer, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    seq_server.append(1200)
    wiring.add("im-1", seq_server)
    _, recs = wiring.open(["im-1"])
    out = _run(recs["im-1"])
    assert out["status"] == "completed"
    rec = _record(engine, recs["im-1"])
    assert (rec.status, rec.items_synced, rec.items_created) == ("completed", 1200, 1200)
    assert rec.sync_details["batches"] == 3
    assert _stored(engine) == (1200, seq_server.max_seq)

    seq_server.reset_requests()
    seq_server.append(100)
    _, recs = wiring.open(["im-1"])
    _run(recs["im-1"])
    rec = _record(engine, recs["im-1"])
    assert (rec.items_synced, rec.items_created) == (100, 100)
    sync_reqs = [r for r in seq_server.requests if r.path.endswith("/messages/sync")]
    assert [r.last_seq for r in sync_reqs] == [1200]
