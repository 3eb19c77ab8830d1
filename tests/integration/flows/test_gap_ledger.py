"""The gap ledger end to end: holes recorded with their page, late arrivals repaired by the next
plain incremental sync, holes confirmed empty after the window, per-run reconciliation.

Real ``sync-instance`` subflows (Prefect test harness) against the reference seq server in late
mode (seqs allocated first, messages visible later), on SQLite and on PostgreSQL.
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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from flows.instance_sync import sync_instance
from syncflow import engine as sync_engine
from syncflow.sources.http_seq import SeqHttpClient
from syncflow.store import gaps as ledger
from syncflow.store.db import session_scope
from syncflow.store.models import Instance, Message, SeqGap, SyncConfigItem, SyncInstanceRecord
from syncflow.testing.seqserver import SYNC_PATH, SeqServer

TOKEN = "test-token-not-a-secret"  # what conftest's Wiring.add puts into the blocks
SEQ_MAX = 2**63 - 1
_WIRE = ("messageID", "serverMsgID", "seq", "conversationID", "senderID", "messageType", "content")
_FIELDS = ("message_id", "server_msg_id", "seq", "conversation_id", "sender_id", "message_type", "content")


@pytest.fixture
def servers() -> Iterator[list[SeqServer]]:
    made: list[SeqServer] = []
    yield made
    for server in made:
        server.stop()


def start(servers: list[SeqServer], **kw: Any) -> SeqServer:
    kw.setdefault("seed", 3)
    server = SeqServer(token=TOKEN, **kw)
    server.start()
    servers.append(server)
    return server


def run_ok(record_id: int) -> dict[str, Any]:
    async def go() -> tuple[Any, Any]:
        state = await sync_instance(record_id=record_id, return_state=True)
        return state, await state.aresult(raise_on_failure=False)

    state, result = asyncio.run(go())
    assert state.is_completed(), f"sync failed: {result!r}"
    assert result["status"] == "completed", result
    return result  # type: ignore[no-any-return]


def iid(engine: Engine, name: str) -> int:
    with session_scope(engine) as s:
        v = s.scalar(select(Instance.id).where(Instance.name == name))
        assert v is not None
        return v


def holes(engine: Engine, name: str) -> list[tuple[int, int, str, int, int]]:
    """(from, to, status, found, checks) of every ledger row, by seq."""
    with session_scope(engine) as s:
        rows = s.execute(
            select(SeqGap.from_seq, SeqGap.to_seq, SeqGap.status, SeqGap.found, SeqGap.checks)
            .where(SeqGap.instance_id == iid(engine, name))
            .order_by(SeqGap.from_seq)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def cursor(engine: Engine, name: str) -> int | None:
    with session_scope(engine) as s:
        return s.scalar(
            select(SyncConfigItem.last_seq).where(
                SyncConfigItem.instance_id == iid(engine, name), SyncConfigItem.category == "messages"
            )
        )


def record(engine: Engine, rid: int) -> SyncInstanceRecord:
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        s.expunge(rec)
        return rec


def stored(engine: Engine, name: str) -> list[tuple[Any, ...]]:
    with session_scope(engine) as s:
        cols = [getattr(Message, f) for f in _FIELDS]
        q = select(*cols).where(Message.instance_id == iid(engine, name)).order_by(Message.seq)
        return [tuple(r) for r in s.execute(q)]


def truth(server: SeqServer) -> list[tuple[Any, ...]]:
    return [tuple(m[k] for k in _WIRE) for m in server.messages_after(-1)]


def assert_store_equals_truth(engine: Engine, name: str, server: SeqServer) -> None:
    rows = stored(engine, name)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate message ids in the store"
    assert rows == truth(server)


def sync_seqs(server: SeqServer) -> list[int | None]:
    return [r.last_seq for r in server.requests if r.path == SYNC_PATH]


# --------------------------------------------------------------- 1. record, then repair


def test_first_sync_records_holes_and_the_next_plain_sync_stores_the_late_messages(
    wiring: Any, servers: list[SeqServer], engine: Engine
) -> None:
    server = start(servers, messages=1_000)
    assert server.hide_messages([100, 101, 102, 500, 777]) == 5  # allocated, not visible yet
    server.remove_messages([300])  # deleted: a hole that stays empty
    wiring.add("im-1", server, batch_size=200)
    _, recs = wiring.open(["im-1"])

    first = run_ok(recs["im-1"])

    assert holes(engine, "im-1") == [
        (100, 102, "open", 0, 0),
        (300, 300, "open", 0, 0),
        (500, 500, "open", 0, 0),
        (777, 777, "open", 0, 0),
    ]
    details = first["sync_details"]
    assert details["holes_recorded"] == 4
    assert details["late_arrivals"] == 0
    assert details["reconciliation"]["expected"] == 994
    assert details["reconciliation"]["stored"] == 994
    assert details["reconciliation"]["unexplained"] == 0
    assert record(engine, recs["im-1"]).warning is None
    assert cursor(engine, "im-1") == 1_000

    # The late messages become visible; the next plain incremental sync finds them.
    assert server.release_late() == [100, 101, 102, 500, 777]
    server.append(20)
    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    second = run_ok(recs["im-1"])

    # One read per hole group (lastSeq = hole start - 1), then the main read at the cursor.
    assert sync_seqs(server) == [99, 299, 499, 776, 1_000]
    rec = record(engine, recs["im-1"])
    assert second["sync_details"]["late_arrivals"] == 5
    assert rec.sync_details["late_arrivals"] == 5
    assert rec.items_created == 5 + 20
    assert second["sync_details"]["created"] == 25
    assert holes(engine, "im-1") == [
        (100, 102, "filled", 3, 1),
        (300, 300, "open", 0, 1),
        (500, 500, "filled", 1, 1),
        (777, 777, "filled", 1, 1),
    ]
    assert_store_equals_truth(engine, "im-1", server)
    assert cursor(engine, "im-1") == 1_020  # the repair never moved it back
    assert rec.warning is None

    # Filled holes are not read again; the empty one is, until it is closed.
    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    third = run_ok(recs["im-1"])
    assert sync_seqs(server) == [299, 1_020]
    assert third["sync_details"]["late_arrivals"] == 0
    assert record(engine, recs["im-1"]).items_created == 0
    assert holes(engine, "im-1")[1] == (300, 300, "open", 0, 2)


# ------------------------------------------------------- 2. confirmed empty (clock injected)


def test_holes_that_stay_empty_become_confirmed_empty_after_the_window(
    wiring: Any, servers: list[SeqServer], engine: Engine
) -> None:
    server = start(servers, messages=300)
    server.remove_messages([50, 51])
    server.hide_messages([200])
    wiring.add("im-1", server)
    _, recs = wiring.open(["im-1"])
    run_ok(recs["im-1"])
    with session_scope(engine) as s:
        seen = s.scalar(select(func.min(SeqGap.first_seen)))
    assert seen is not None
    client = SeqHttpClient(server.url, TOKEN)

    def repair_at(hours: float, **kw: Any) -> sync_engine.RepairResult:
        _, r = wiring.open(["im-1"])
        run = sync_engine.begin_instance_sync(record_id=r["im-1"], owner="test-clock", lease_seconds=60)
        assert isinstance(run, sync_engine.InstanceRun)
        try:
            return sync_engine.repair_gaps(
                run, client.fetch_page, count=100, now=lambda: seen + dt.timedelta(hours=hours), **kw
            )
        finally:
            sync_engine.finish_instance_sync(run, outcome="completed")

    for n, hours in enumerate((1, 2, 3), start=1):  # three reads, but all inside the 24 h window
        assert repair_at(hours).reads == 2
        assert holes(engine, "im-1") == [(50, 51, "open", 0, n), (200, 200, "open", 0, n)]

    result = repair_at(25)  # past the window, read at least 3 times, nothing came: closed
    assert (result.reads, result.closed_empty) == (2, 2)
    assert holes(engine, "im-1") == [(50, 51, "confirmed_empty", 0, 4), (200, 200, "confirmed_empty", 0, 4)]
    assert repair_at(26).reads == 0  # closed holes cost nothing any more

    # A message that shows up after its hole was closed: `syncflow gaps repair` re-reads it.
    server.release_late()
    result = repair_at(30, record_id=None, every_hole=True)
    assert (result.reads, result.late_arrivals) == (2, 1)
    assert holes(engine, "im-1") == [(50, 51, "confirmed_empty", 0, 5), (200, 200, "filled", 1, 5)]
    assert_store_equals_truth(engine, "im-1", server)
    assert cursor(engine, "im-1") == 300


def test_a_message_found_in_a_hole_keeps_it_open_then_it_closes_partly_filled(
    wiring: Any, servers: list[SeqServer], engine: Engine
) -> None:
    server = start(servers, messages=100)
    server.hide_messages([40])
    server.remove_messages([41])
    wiring.add("im-1", server)
    run_ok(wiring.open(["im-1"])[1]["im-1"])
    assert holes(engine, "im-1") == [(40, 41, "open", 0, 0)]
    client = SeqHttpClient(server.url, TOKEN)
    with session_scope(engine) as s:
        seen = s.scalar(select(func.min(SeqGap.first_seen)))
    assert seen is not None
    server.release_late()
    policy = sync_engine.GapPolicy(window_hours=1, checks=2)
    for hours, expected in ((5, (40, 41, "open", 1, 1)), (6, (40, 41, "partly_filled", 1, 2))):
        _, r = wiring.open(["im-1"])
        run = sync_engine.begin_instance_sync(record_id=r["im-1"], owner="t", lease_seconds=60)
        assert isinstance(run, sync_engine.InstanceRun)
        sync_engine.repair_gaps(
            run, client.fetch_page, count=500, policy=policy, now=lambda h=hours: seen + dt.timedelta(hours=h)
        )
        sync_engine.finish_instance_sync(run, outcome="completed")
        assert holes(engine, "im-1") == [expected]
    assert_store_equals_truth(engine, "im-1", server)


# ----------------------------------------------------------------- 3. seqs near 2^63-1


def test_holes_and_late_arrivals_near_2_63_minus_1(wiring: Any, servers: list[SeqServer], engine: Engine) -> None:
    first = SEQ_MAX - 300
    server = start(servers, messages=301, start_seq=first)
    late = [SEQ_MAX - 150, SEQ_MAX - 149, SEQ_MAX - 1]
    server.hide_messages(late)
    wiring.add("im-1", server, batch_size=100)
    run_ok(wiring.open(["im-1"])[1]["im-1"])
    assert holes(engine, "im-1") == [
        (SEQ_MAX - 150, SEQ_MAX - 149, "open", 0, 0),
        (SEQ_MAX - 1, SEQ_MAX - 1, "open", 0, 0),
    ]
    assert cursor(engine, "im-1") == SEQ_MAX

    server.release_late()
    server.reset_requests()
    _, recs = wiring.open(["im-1"])
    result = run_ok(recs["im-1"])
    assert result["sync_details"]["late_arrivals"] == 3
    assert sync_seqs(server) == [SEQ_MAX - 151, SEQ_MAX - 2, SEQ_MAX]
    assert [h[2] for h in holes(engine, "im-1")] == ["filled", "filled"]
    assert_store_equals_truth(engine, "im-1", server)
    assert cursor(engine, "im-1") == SEQ_MAX
    with session_scope(engine) as s:
        assert ledger.gap_counts(s, instance_id=iid(engine, "im-1"))["filled"] == 2


# ------------------------------------------------------------------ 4. reconciliation


def test_a_difference_the_ledger_cannot_explain_warns_the_record(
    wiring: Any, servers: list[SeqServer], engine: Engine
) -> None:
    server = start(servers, messages=200)
    # The server re-uses one message id for two seqs: the store keeps one row, no hole explains it.
    dup = server.messages_after(59, limit=1)[0]["messageID"]
    server.add_messages([{"seq": 150, "messageID": dup}])  # another page: seq 60's row moves to 150
    server.hide_messages([120])  # a late one: explained by its open hole, not a warning
    wiring.add("im-1", server, batch_size=50)
    sid, recs = wiring.open(["im-1"])
    result = run_ok(recs["im-1"])

    rec = record(engine, recs["im-1"])
    recon = result["sync_details"]["reconciliation"]
    assert (recon["expected"], recon["stored"], recon["unexplained"]) == (199, 198, 1)
    assert rec.warning is not None and "1 missing without a recorded hole" in rec.warning

    from syncflow.reports.sessions import summary_markdown
    from syncflow.schemas import session_detail_view
    from syncflow.store import sessions as book

    with session_scope(engine) as s:
        view = session_detail_view(book.get_session(s, session_id=sid, with_records=True))
    assert view.records[0].warning == rec.warning
    assert view.warnings == [rec.warning]
    assert f"- **warning**: {rec.warning}" in summary_markdown(view)

    from typer.testing import CliRunner

    from syncflow import cli

    shown = CliRunner().invoke(cli.app, ["--json", "sessions", "show", sid])
    assert shown.exit_code == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["warnings"] == [rec.warning] and doc["records"][0]["warning"] == rec.warning
    text = CliRunner().invoke(cli.app, ["sessions", "show", sid], env={"COLUMNS": "400"}).stdout
    assert "warning" in text and "1 missing without a recorded hole" in text


# ------------------------------------------------------ 5. SIGKILL during a repair

CRASH_CHILD = Path(__file__).with_name("crash_sync_child.py")


@pytest.mark.slow
def test_sigkill_during_a_repair_loses_and_duplicates_nothing(
    wiring: Any, servers: list[SeqServer], engine: Engine, store_url: str, tmp_path: Path
) -> None:
    """A child process repairing 40 far-apart holes (one read each, >= 0.2 s per answer) is
    SIGKILLed mid-repair, twice; then a run to the end. The reads commit their rows with their
    holes' status 8 reads at a time, so after every kill the store holds each late message at most once, every
    filled hole holds exactly its messages, and the counters add up to the rows."""
    from prefect.settings import PREFECT_API_URL

    rng = random.Random(1313)
    server = start(servers, messages=14_000)
    late = [100 + 300 * i for i in range(40)]  # too far apart to share a read
    server.hide_messages(late)
    wiring.add("im-crash", server)
    run_ok(wiring.open(["im-crash"])[1]["im-crash"])
    assert len(holes(engine, "im-crash")) == 40
    server.release_late()
    server.set_faults(latency=0.2)
    env = {
        **os.environ,
        "SYNCFLOW_DATABASE_URL": store_url,
        "SYNCFLOW_LOCK_LEASE_SECONDS": "5",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }

    def total_created() -> int:
        with session_scope(engine) as s:
            return int(
                s.scalar(
                    select(func.coalesce(func.sum(SyncInstanceRecord.items_created), 0)).where(
                        SyncInstanceRecord.instance_id == iid(engine, "im-crash")
                    )
                )
            )

    def spawn(rid: int, n: int) -> tuple[subprocess.Popen[bytes], Path, Path]:
        out, err = tmp_path / f"run{n}.out", tmp_path / f"run{n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen([sys.executable, str(CRASH_CHILD), str(rid)], env=env, stdout=fo, stderr=fe)
        return proc, out, err

    base = total_created()
    kills_mid_repair = 0
    for n in range(2):
        server.reset_requests()
        _, recs = wiring.open(["im-crash"], options={"im-crash": {"gap_max_reads": 100}})  # all 40 in one run
        proc, _, err = spawn(recs["im-crash"], n)
        try:
            deadline = time.monotonic() + 120
            while not any(r.path == SYNC_PATH for r in server.requests):
                assert proc.poll() is None, f"child exited early:\n{err.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "child never fetched"
                time.sleep(0.05)
            # the open holes take >= 0.2 s a read, their reads commit 8 at a time: kill in the middle
            still_open = [h for h in holes(engine, "im-crash") if h[2] == "open"]
            time.sleep(rng.uniform(0.3, 0.7) * 0.2 * len(still_open))
            assert proc.poll() is None, "the child ended before its kill"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert record(engine, recs["im-crash"]).status == "running", "the kill did not interrupt the run"
        rows = stored(engine, "im-crash")
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids))
        have = {r[2] for r in rows}
        truth_rows = {r[2]: r for r in truth(server)}
        assert all(truth_rows[r[2]] == r for r in rows)
        for a, b, status, found, _ in holes(engine, "im-crash"):
            assert found == len([s for s in have if a <= s <= b])
            assert status == ("filled" if found == b - a + 1 else "open")
        assert total_created() - base == len([s for s in late if s in have])
        if 0 < len([s for s in late if s in have]) < len(late):
            kills_mid_repair += 1
        assert cursor(engine, "im-crash") == 14_000
        with session_scope(engine) as s:
            expires = s.scalar(
                select(SyncConfigItem.lock_expires_at).where(
                    SyncConfigItem.instance_id == iid(engine, "im-crash"), SyncConfigItem.category == "messages"
                )
            )
        assert expires is not None
        time.sleep(
            max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1
        )  # the killed run's lease runs out
    assert kills_mid_repair >= 1, "a kill should land in the middle of the repair"

    server.clear_faults()
    _, recs = wiring.open(["im-crash"])
    proc, out, err = spawn(recs["im-crash"], 99)
    assert proc.wait(timeout=300) == 0, err.read_text()[-3000:]
    assert json.loads(out.read_text().strip().splitlines()[-1])["status"] == "completed"
    assert_store_equals_truth(engine, "im-crash", server)
    assert [h[2] for h in holes(engine, "im-crash")] == ["filled"] * 40
    assert total_created() - base == 40
    with session_scope(engine) as s:
        lates = s.scalars(
            select(SyncInstanceRecord.sync_details).where(SyncInstanceRecord.instance_id == iid(engine, "im-crash"))
        ).all()
    assert sum(int((d or {}).get("late_arrivals") or 0) for d in lates) == 40


# ---------------------------------------------------------------- 6. CLI and API


def test_gaps_cli_and_api_list_repair_and_count(wiring: Any, servers: list[SeqServer], engine: Engine) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from syncflow import cli
    from syncflow.api import ApiSettings, create_app

    server = start(servers, messages=500)
    server.hide_messages([10, 11])
    server.remove_messages([200])
    wiring.add("im-1", server)
    run_ok(wiring.open(["im-1"])[1]["im-1"])
    runner = CliRunner()

    def sf(*args: str) -> Any:
        result = runner.invoke(cli.app, list(args))
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    listed = json.loads(sf("gaps", "list", "im-1", "--json").stdout)
    assert [(g["instance"], g["from_seq"], g["to_seq"], g["status"]) for g in listed] == [
        ("im-1", 10, 11, "open"),
        ("im-1", 200, 200, "open"),
    ]
    assert json.loads(sf("gaps", "list", "--status", "filled", "--json").stdout) == []
    assert "10..11" in sf("gaps", "list").stdout
    shown = json.loads(sf("instances", "show", "im-1", "--json").stdout)
    assert shown["gaps"] == {"open": 2, "filled": 0, "partly_filled": 0, "confirmed_empty": 0}
    assert "seq holes: 2 open" in sf("instances", "show", "im-1").stdout

    server.release_late()
    server.reset_requests()
    with session_scope(engine) as s:
        synced_at = s.scalar(
            select(SyncConfigItem.last_sync_time).where(
                SyncConfigItem.instance_id == iid(engine, "im-1"), SyncConfigItem.category == "messages"
            )
        )
    repaired = json.loads(sf("gaps", "repair", "im-1", "--json").stdout)
    assert [(r["instance"], r["holes"], r["late_arrivals"], r["filled"]) for r in repaired] == [("im-1", 2, 2, 1)]
    assert all(s is not None and s < 500 for s in sync_seqs(server))  # range reads only
    assert_store_equals_truth(engine, "im-1", server)
    assert cursor(engine, "im-1") == 500
    with session_scope(engine) as s:
        item = s.scalar(
            select(SyncConfigItem).where(
                SyncConfigItem.instance_id == iid(engine, "im-1"), SyncConfigItem.category == "messages"
            )
        )
        assert item is not None and item.lock_owner is None and item.status == "completed"
        assert item.last_sync_time == synced_at  # a repair is not a sync
    assert json.loads(sf("gaps", "repair", "--all", "--json").stdout)[0]["late_arrivals"] == 0

    for args, fragment in (
        (("gaps", "repair"), "give an instance NAME or --all"),
        (("gaps", "repair", "nope"), "unknown instance 'nope'"),
        (("gaps", "list", "--status", "bogus"), "unknown gap status 'bogus'"),
    ):
        bad = runner.invoke(cli.app, list(args))
        assert bad.exit_code == 1, bad.stdout
        assert bad.stderr.strip().startswith("error: ") and fragment in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1

    with TestClient(create_app(ApiSettings(), engine=engine)) as api:
        body = api.get("/sync_sessions/api/instances/im-1/gaps").json()
        assert body["counts"] == {"open": 1, "filled": 1, "partly_filled": 0, "confirmed_empty": 0}
        assert [(g["from_seq"], g["status"], g["found"]) for g in body["gaps"]] == [(10, "filled", 2), (200, "open", 0)]
        only = api.get("/sync_sessions/api/instances/im-1/gaps", params={"status": "open"}).json()
        assert [g["from_seq"] for g in only["gaps"]] == [200]
        assert api.get("/sync_sessions/api/instances/nope/gaps").status_code == 404
        assert api.get("/sync_sessions/api/instances/im-1/gaps", params={"status": "x"}).status_code == 422
