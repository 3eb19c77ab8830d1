"""Issue 9 through the CLI, against real local seq servers and a real store (SQLite and
PostgreSQL), the flows running in this process on Prefect's test harness:

* point 1: ``instances add coll`` then ``instances add COLL`` (another server, another token)
  get a block each, each syncs its own server's rows; a sync whose block is not the one its
  instance was registered with is refused before any row is written;
* point 4: a sync skipped because another run holds the instance says ``skipped``, names the
  instance and the holder's flow run and when its lease ends, and exits 3;
* point 5: ``instances remove`` retires: past sessions and statistics stay exactly as they were,
  the data stays until ``--purge-data``, which deletes it and never the history;
* point 2 (second half): a metadata session that fails for an instance before a messages
  session shows in the output, in ``--json`` and in the summary, and the exit status is 4.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner, Result

from blocks.connections import forget_sources
from blocks.seq_http import SeqHttpInstance
from syncflow import cli
from syncflow.reports.sessions import summary_markdown
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import Conversation, Instance, Message, SyncConfigItem
from syncflow.store.sync_state import acquire_lock, release_lock
from syncflow.testing.seqserver import SeqServer

TOKENS = {"TRUST_TOKEN_A": "token-of-server-a", "TRUST_TOKEN_B": "token-of-server-b"}
B_FIRST_SEQ = 1_000_000  # server B's seqs start here: a row's seq says which server it came from


@pytest.fixture
def servers() -> Iterator[dict[str, SeqServer]]:
    a = SeqServer(messages=300, conversations=3, token=TOKENS["TRUST_TOKEN_A"], seed=1)
    b = SeqServer(messages=200, conversations=2, token=TOKENS["TRUST_TOKEN_B"], seed=2, start_seq=B_FIRST_SEQ)
    for s in (a, b):
        s.start()
    yield {"a": a, "b": b}
    for s in (a, b):
        s.stop()


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(cli.app, list(args))

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout)


@pytest.fixture
def run(
    prefect_harness: None, store_env: str, monkeypatch: pytest.MonkeyPatch, servers: dict[str, SeqServer]
) -> Iterator[Cli]:
    for key, value in TOKENS.items():
        monkeypatch.setenv(key, value)
    forget_sources()
    c = Cli()
    c.ok("instances", "add", "coll", "--kind", "http-seq", "--url", servers["a"].url, "--token-env", "TRUST_TOKEN_A")
    c.ok("instances", "add", "COLL", "--kind", "http-seq", "--url", servers["b"].url, "--token-env", "TRUST_TOKEN_B")
    yield c
    forget_sources()
    for name in set(blocks_of(c)):
        SeqHttpInstance.delete(name)


def blocks_of(c: Cli) -> list[str]:
    return [i["block_name"] for i in c.json("instances", "list", "--all") if i["block_name"]]


def seqs(engine: Engine, name: str) -> list[int]:
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == name))
        return list(s.scalars(select(Message.seq).where(Message.instance_id == iid).order_by(Message.seq)))


def count(engine: Engine, model: Any, name: str) -> int:
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == name))
        return s.scalar(select(func.count()).select_from(model).where(model.instance_id == iid)) or 0


# ---------------------------------------------------------------------------- point 1


def test_colliding_names_get_a_block_each_and_a_foreign_block_is_refused(
    run: Cli, engine: Engine, servers: dict[str, SeqServer]
) -> None:
    listed = {i["name"]: i for i in run.json("instances", "list")}
    assert listed["coll"]["block_name"] != listed["COLL"]["block_name"]
    assert SeqHttpInstance.load(listed["coll"]["block_name"]).base_url == servers["a"].url
    assert SeqHttpInstance.load(listed["COLL"]["block_name"]).base_url == servers["b"].url

    assert run.json("sync", "instance", "coll", "--full")["status"] == "completed"
    assert run.json("sync", "instance", "COLL", "--full")["status"] == "completed"
    assert seqs(engine, "coll") == servers["a"].seqs()  # server A's rows, and only them
    assert seqs(engine, "COLL") == servers["b"].seqs()

    # a second instance on the same block is refused up front
    result = run("instances", "add", "coll-2", "--kind", "http-seq", "--block", listed["coll"]["block_name"])
    assert result.exit_code == 1 and "is already the connection of instance 'coll'" in result.stderr

    # coll's row now names COLL's block (what the old shared block name did): refused, no row written
    servers["b"].append(300)  # B now has seqs above coll's cursor
    with session_scope(engine) as s:
        s.execute(update(Instance).where(Instance.name == "coll").values(block_name=listed["COLL"]["block_name"]))
    forget_sources()
    result = run("sync", "instance", "coll")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "is not the one it was registered with" in result.stdout
    assert seqs(engine, "coll") == servers["a"].seqs()


# ---------------------------------------------------------------------------- point 4


def test_a_sync_skipped_because_another_run_holds_the_instance_says_so_and_exits_3(run: Cli, engine: Engine) -> None:
    holder_run = str(uuid.uuid4())
    with session_scope(engine) as s:
        row = book.open_session(s, sync_category="messages", instances=["coll"])
        (rec,) = book.records_in_order(s, session_id=row.session_id)
        book.start_instance_sync(s, record_id=rec.id, flow_run_id=holder_run)
        iid = rec.instance_id
        holder_session = row.session_id
    with session_scope(engine) as s:
        acquire_lock(s, instance_id=iid, category="messages", owner=f"run:{holder_run}", lease_seconds=600)
    try:
        result = run("sync", "instance", "coll")
        assert result.exit_code == 3, (result.stdout, result.stderr)
        out = result.stdout
        assert ": skipped —" in out and "1 skipped" in out and "completed —" not in out
        assert "skipped: messages of coll is already being synced by flow run " + holder_run in out
        assert holder_session in out and "its lease ends at" in out
        assert "instance 1" not in out and f"run:{holder_run}" not in out

        payload = run.json("sync", "instance", "coll", code=3)
        assert payload["skipped_instances"] == 1 and payload["record_counts"] == {"skipped": 1}
        (skipped,) = payload["records"]
        assert skipped["status"] == "skipped" and holder_run in skipped["error_message"]
        assert seqs(engine, "coll") == []
    finally:
        with session_scope(engine) as s:
            release_lock(s, instance_id=iid, category="messages", owner=f"run:{holder_run}", status="completed")


# ---------------------------------------------------------------------------- point 5


def test_remove_retires_keeping_history_and_purge_deletes_only_the_data(run: Cli, engine: Engine) -> None:
    first = run.json("sync", "run", "--category", "messages", "--instance", "coll", "--instance", "COLL")
    assert (first["status"], first["successful_instances"]) == ("completed", 2)
    sid = first["session_id"]
    meta_sid = first["metadata_session"]["session_id"]
    before = {x: run.json("sessions", "show", x) for x in (sid, meta_sid)}
    stats_before = run.json("stats")
    kept = {m: count(engine, m, "coll") for m in (Message, Conversation, SyncConfigItem)}
    assert kept[Message] == 300 and kept[Conversation] == 3

    out = run.ok("instances", "remove", "coll", "--yes").stdout
    assert "retired instance 'coll'" in out and "its synced data stays" in out
    assert [i["name"] for i in run.json("instances", "list")] == ["COLL"]
    assert [i["name"] for i in run.json("instances", "list", "--retired")] == ["coll"]
    for x, view in before.items():  # the history is exactly as it was, still naming it
        after = run.json("sessions", "show", x)
        assert after == view
        assert "coll" in [r["instance_name"] for r in after["records"]]
    assert run.json("stats") == stats_before
    assert {m: count(engine, m, "coll") for m in kept} == kept  # the data stays until purged

    # never synced again; its name stays taken
    result = run("sync", "instance", "coll")
    assert result.exit_code == 1 and "instance 'coll' is retired" in result.stderr
    result = run("sync", "run", "--category", "messages", "--all", "--json")
    assert result.exit_code == 0 and [r["instance_name"] for r in json.loads(result.stdout)["records"]] == ["COLL"]
    result = run("instances", "add", "coll", "--kind", "http-seq", "--block", "x")
    assert result.exit_code == 1 and "was retired on" in result.stderr

    purged = run.json("instances", "remove", "coll", "--purge-data", "--yes")
    assert purged["purged"]["messages"] == 300 and purged["purged"]["conversations"] == 3
    assert {m: count(engine, m, "coll") for m in kept} == {Message: 0, Conversation: 0, SyncConfigItem: 0}
    assert count(engine, Message, "COLL") == 200  # the other instance's data is untouched
    for x, view in before.items():
        assert run.json("sessions", "show", x) == view


# ------------------------------------------------------------------- point 2, second half


def test_a_failed_metadata_session_shows_in_the_messages_session_and_exits_4(
    run: Cli, servers: dict[str, SeqServer]
) -> None:
    servers["a"].set_faults(scope="conversations", error_rate=1.0, error_status=400)
    result = run("sync", "run", "--category", "messages", "--instance", "coll", "--instance", "COLL")
    assert result.exit_code == 4, (result.stdout, result.stderr)
    assert "completed — 2/2 succeeded" in result.stdout
    warning = [line for line in result.stdout.splitlines() if line.startswith("warning: metadata session")]
    assert warning and "1 of 2 instance(s) failed (coll)" in warning[0]
    assert any(
        line.startswith("warning: metadata of coll: ") and "HTTP 400" in line for line in result.stdout.splitlines()
    )

    payload = run.json("sync", "run", "--category", "messages", "--instance", "coll", "--instance", "COLL", code=4)
    meta = payload["metadata_session"]
    assert (meta["status"], meta["failed_instances"], meta["failed"]) == ("failed", 1, ["coll"])
    assert payload["warnings"] and "coll" in payload["warnings"][0]
    shown = run.json("sessions", "show", payload["session_id"])
    assert shown["metadata_session"] == meta and shown["warnings"] == payload["warnings"]

    from syncflow.schemas import SessionDetailView

    text = summary_markdown(SessionDetailView.model_validate(payload))
    assert "metadata session run first" in text and "**warning**" in text and "coll" in text

    servers["a"].clear_faults()
    clean = run.json("sync", "run", "--category", "messages", "--instance", "coll", "--instance", "COLL")
    assert clean["metadata_session"]["status"] == "completed" and clean["warnings"] == []
