"""The ``syncflow`` command line, end to end against real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from typer.main import get_command
from typer.testing import CliRunner, Result

from syncflow import cli
from syncflow.cli._output import parse_age
from syncflow.settings import reset_settings
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as svc
from syncflow.store.db import dispose_engines, make_engine, session_scope
from syncflow.store.migrations import head_revision
from syncflow.store.models import SyncConfigItem, SyncInstanceRecord, SyncSession, utcnow
from syncflow.store.sessions import ItemCounts

ENV_URL = "SYNCFLOW_DATABASE_URL"


@pytest.fixture(autouse=True)
def _isolated_settings() -> Iterator[None]:
    """``--database-url`` writes the environment: restore it, and forget cached settings/engines."""
    saved = os.environ.get(ENV_URL)
    yield
    if saved is None:
        os.environ.pop(ENV_URL, None)
    else:
        os.environ[ENV_URL] = saved
    reset_settings()
    dispose_engines()


@pytest.fixture
def fresh_url(tmp_path: Path) -> str:
    """A SQLite store that does not exist yet."""
    return f"sqlite:///{tmp_path / 'store' / 'syncflow.db'}"


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(cli.app, ["--database-url", self.url, *args], input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


def _assert_one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def run(fresh_url: str) -> Cli:
    """The CLI on a fresh, migrated SQLite store."""
    c = Cli(fresh_url)
    c.ok("db", "upgrade")
    return c


@pytest.fixture
def run_on(store_url: str, engine: Engine) -> Cli:
    """The CLI on the conftest's migrated, emptied store (SQLite and PostgreSQL in turn)."""
    return Cli(store_url)


# ------------------------------------------------------------------------ helpers


def _session(
    engine: Engine,
    outcomes: dict[str, str | None],
    *,
    sync_type: str = "scheduled",
    category: str = "messages",
) -> str:
    """A session over the named instances; each record completed, failed or left pending (None)."""
    with session_scope(engine) as s:
        row = svc.create_session(s, sync_type=sync_type, sync_category=category, created_by="tester")
        insts = [inst_svc.get_instance(s, name=n) for n in outcomes]
        recs = svc.add_instance_records(s, session_id=row.session_id, instances=insts)
        for rec, outcome in zip(recs, outcomes.values(), strict=True):
            if outcome is None:
                continue
            svc.start_instance_sync(s, record_id=rec.id)
            if outcome == "completed":
                counts = ItemCounts(synced=10, created=6, updated=3, unchanged=1)
                svc.complete_instance_sync(s, record_id=rec.id, counts=counts)
            else:
                svc.fail_instance_sync(s, record_id=rec.id, error_message=f"HTTP 503 from {rec.instance_name}")
        return row.session_id


def _age(engine: Engine, session_id: str, days: float) -> None:
    """Move a session ``days`` into the past (started, created and, if finished, completed)."""
    when = utcnow() - dt.timedelta(days=days)
    with session_scope(engine) as s:
        row = svc.get_session(s, session_id=session_id)
        values: dict[str, Any] = {"created_at": when, "started_at": when - dt.timedelta(seconds=90)}
        if row.completed_at is not None:
            values["completed_at"] = when
        s.execute(update(SyncSession).where(SyncSession.session_id == session_id).values(**values))


def _add_instances(c: Cli, *specs: Sequence[str]) -> None:
    for spec in specs:
        c.ok("instances", "add", *spec)


# ------------------------------------------------------------------ db, instances


def test_db_upgrade_then_current(fresh_url: str) -> None:
    c = Cli(fresh_url)
    before = c.json("db", "current")
    assert before["current"] is None and before["up_to_date"] is False
    assert not Path(fresh_url.removeprefix("sqlite:///")).exists(), "db current must not create the store"
    out = c.ok("db", "upgrade").stdout
    assert f"to {head_revision()}" in out
    assert "already" in c.ok("db", "upgrade").stdout
    after = c.json("db", "current")
    assert after == {"url": fresh_url, "current": head_revision(), "head": head_revision(), "up_to_date": True}


def test_db_upgrade_to_unknown_revision_is_one_line_error(fresh_url: str) -> None:
    _assert_one_line_error(Cli(fresh_url)("db", "upgrade", "--revision", "bogus"), "'bogus'", "Can't locate revision")


def test_instances_add_list_show_enable_disable_remove(run: Cli) -> None:
    out = run.ok(
        "instances",
        "add",
        "im-1",
        "--kind",
        "http-seq",
        "--priority",
        "5",
        "--tag",
        "prod",
        "--tag",
        "eu",
        "--block",
        "im-1-conn",
        "--no-check",  # no such block on this Prefect server: only the registry is tested here
        "--description",
        "chat [main]",
    ).stdout
    assert "added instance 'im-1'" in out
    run.ok("instances", "add", "db-1", "--kind", "mysql", "--category", "account", "--disabled")

    listed = run.json("instances", "list")
    assert [i["name"] for i in listed] == ["db-1", "im-1"]
    im1 = listed[1]
    assert im1["kind"] == "http-seq" and im1["priority"] == 5 and im1["enabled"] is True
    assert im1["tags"] == ["prod", "eu"] and im1["categories"] == ["messages", "metadata"]
    assert im1["block_name"] == "im-1-conn" and im1["description"] == "chat [main]"
    assert listed[0]["categories"] == ["account"] and listed[0]["enabled"] is False

    assert [i["name"] for i in run.json("instances", "list", "--enabled")] == ["im-1"]
    assert [i["name"] for i in run.json("instances", "list", "--disabled")] == ["db-1"]
    assert [i["name"] for i in run.json("instances", "list", "--kind", "mysql")] == ["db-1"]
    assert [i["name"] for i in run.json("instances", "list", "--tag", "eu")] == ["im-1"]
    assert [i["name"] for i in run.json("instances", "list", "--category", "account")] == ["db-1"]
    table = run.ok("instances", "list").stdout
    assert "im-1" in table and "db-1" in table and "chat" not in table

    # enable / disable
    assert run.json("instances", "disable", "im-1")["enabled"] is False
    assert "instance 'im-1' is disabled" in run.ok("instances", "disable", "im-1").stdout
    assert run.json("instances", "enable", "db-1")["enabled"] is True
    assert {i["name"]: i["enabled"] for i in run.json("instances", "list")} == {"db-1": True, "im-1": False}

    # show: the instance and its sync state
    engine = make_engine(run.url)
    try:
        with session_scope(engine) as s:
            iid = inst_svc.get_instance(s, name="im-1").id
            s.add(
                SyncConfigItem(
                    instance_id=iid,
                    category="messages",
                    status="failed",
                    last_seq=2**63 - 1,
                    last_sync_time=utcnow(),
                    last_error="HTTP 401 from im-1",
                )
            )
            s.add(SyncConfigItem(instance_id=iid, category="metadata", status="completed", metadata_version=4))
    finally:
        engine.dispose()
    shown = run.json("instances", "show", "im-1")
    assert shown["name"] == "im-1" and shown["enabled"] is False
    states = {st["category"]: st for st in shown["sync_state"]}
    assert states["messages"]["last_seq"] == 2**63 - 1
    assert states["messages"]["status"] == "failed" and states["messages"]["last_error"] == "HTTP 401 from im-1"
    assert dt.datetime.fromisoformat(states["messages"]["last_sync_time"]).tzinfo is not None
    assert states["metadata"]["metadata_version"] == 4 and states["metadata"]["last_seq"] is None
    text = run.ok("instances", "show", "im-1").stdout
    assert "HTTP 401 from im-1" in text and "9223372036854775807" in text

    # remove: asks first, refusing keeps the instance
    refused = run("instances", "remove", "im-1", input="n\n")
    assert refused.exit_code == 1
    assert "Retire instance 'im-1'" in refused.output
    assert refused.stderr.endswith("error: instance 'im-1' not removed\n")
    assert [i["name"] for i in run.json("instances", "list")] == ["db-1", "im-1"]
    assert "retired instance 'im-1'" in run.ok("instances", "remove", "im-1", input="y\n").stdout
    assert run.json("instances", "remove", "db-1", "--yes") == {
        "name": "db-1",
        "removed": True,
        "retired": True,
        "purged": None,
    }
    assert run.json("instances", "list") == []
    retired = run.json("instances", "list", "--retired")
    assert [i["name"] for i in retired] == ["db-1", "im-1"] and all(i["retired_at"] for i in retired)
    assert [i["name"] for i in run.json("instances", "list", "--all")] == ["db-1", "im-1"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--kind", "http-seq", "--url", "http://", "--token-env", "T"], "--url: 'http://' has no host"),
        (["--kind", "http-seq", "--url", "ftp://h", "--token-env", "T"], "--url: 'ftp://h' must start with http"),
        (["--kind", "http-seq", "--url", "http://h:70000", "--token-env", "T"], "--url: 'http://h:70000' has a port"),
        (["--kind", "http-seq", "--url", "http://h:0", "--token-env", "T"], "out of range"),
        (["--kind", "postgres", "--host", "h", "--user", "u", "--port", "70000"], "--port: port 70000 is out of"),
        (["--kind", "mysql", "--host", "h", "--user", "u", "--port", "0"], "--port: port 0 is out of range"),
        (  # refused before any block is made (no Prefect is started for it)
            ["--kind", "http-seq", "--url", "http://h:8080", "--token-env", "T", "--category", "account"],
            "kind 'http-seq' cannot sync 'account'",
        ),
        (["--kind", "postgres", "--host", "h", "--user", "u", "--category", "messages"], "cannot sync 'messages'"),
    ],
)
def test_bad_connections_are_refused_up_front_naming_the_field(run: Cli, args: list[str], fragment: str) -> None:
    """Issue 9, point 11: each is one line naming the field, before a block is made."""
    _assert_one_line_error(run("instances", "add", "x", *args), fragment)
    assert run.json("instances", "list") == []


def test_a_name_longer_than_the_column_is_refused_on_every_store(run_on: Cli) -> None:
    line = _assert_one_line_error(run_on("instances", "add", "n" * 300, "--kind", "http-seq"), "instance name")
    assert "300 characters is too long (at most 255)" in line
    run_on.ok("instances", "add", "n" * 255, "--kind", "http-seq")  # the column's length fits
    assert [len(i["name"]) for i in run_on.json("instances", "list")] == [255]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--from-seq", "99999999999999999999", "--to-seq", "99999999999999999999"], "from_seq 99999999999999999999"),
        (["--from-seq", "1", "--to-seq", str(2**63)], f"to_seq {2**63} is beyond the signed 64-bit range"),
        (["--from-seq", "-1"], "from_seq must be a non-negative integer"),
    ],
)
def test_seq_bounds_beyond_64_bits_are_refused_up_front(run: Cli, args: list[str], fragment: str) -> None:
    run.ok("instances", "add", "im-1", "--kind", "http-seq", "--block", "b", "--no-check")
    _assert_one_line_error(run("sync", "instance", "im-1", *args), fragment)


def test_a_kind_without_a_source_is_refused_up_front(run: Cli) -> None:
    result = run("instances", "add", "tbl", "--kind", "sql-table")
    assert result.exit_code == 1
    assert "kind 'sql-table' is not available yet" in result.stderr
    assert run.json("instances", "list") == []


def test_a_category_the_kind_cannot_sync_is_refused(run: Cli) -> None:
    result = run("instances", "add", "im-x", "--kind", "http-seq", "--block", "b", "--category", "account")
    assert result.exit_code == 1
    assert "kind 'http-seq' cannot sync 'account'" in result.stderr


def test_global_and_per_command_json_agree(run: Cli) -> None:
    run.ok("instances", "add", "im-1", "--kind", "http-seq", "--block", "some-block", "--no-check")
    global_flag = json.loads(
        CliRunner().invoke(cli.app, ["--database-url", run.url, "--json", "instances", "list"]).stdout
    )
    assert global_flag == run.json("instances", "list")
    created = dt.datetime.fromisoformat(global_flag[0]["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((utcnow() - created).total_seconds()) < 60


# ------------------------------------------------------------------------- errors


def test_duplicate_name_is_one_line_error(run: Cli) -> None:
    run.ok("instances", "add", "im-1", "--kind", "http-seq")
    result = run("instances", "add", "im-1", "--kind", "postgres")
    _assert_one_line_error(result, "'im-1'", "exists already")
    assert len(run.json("instances", "list")) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["instances", "show", "ghost"],
        ["instances", "enable", "ghost"],
        ["instances", "disable", "ghost"],
        ["instances", "remove", "ghost", "--yes"],
        ["instances", "remove", "ghost"],  # refused before asking
    ],
)
def test_unknown_instance(run: Cli, args: list[str]) -> None:
    _assert_one_line_error(run(*args), "unknown instance 'ghost'")


def test_unknown_session(run: Cli) -> None:
    _assert_one_line_error(run("sessions", "show", "no-such-id"), "unknown session 'no-such-id'")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["instances", "add", "x", "--kind", "ftp"], "unknown instance kind 'ftp'"),
        (["instances", "list", "--kind", "ftp"], "unknown instance kind 'ftp'"),
        (["instances", "add", "x", "--kind", "mysql", "--category", "gossip"], "unknown category 'gossip'"),
        (["instances", "list", "--category", "gossip"], "unknown category 'gossip'"),
        (["sessions", "list", "--category", "gossip"], "unknown category 'gossip'"),
        (["sessions", "list", "--type", "nightly"], "unknown sync type 'nightly'"),
        (["sessions", "list", "--status", "paused"], "unknown session status 'paused'"),
        (["sessions", "list", "--limit", "0"], "limit must be between 1 and 1000"),
    ],
)
def test_bad_values_are_one_line_errors(run: Cli, args: list[str], fragment: str) -> None:
    line = _assert_one_line_error(run(*args), fragment)
    assert "expected one of" in line or "limit" in line
    assert run.json("instances", "list") == []


@pytest.mark.parametrize("value", ["12x", "1.5d", "-3d", "0", "0d", "d", "30 days", "", "99999999999w"])
def test_bad_older_than_is_a_usage_error(run: Cli, value: str) -> None:
    result = run("cleanup", "--older-than", value)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "--older-than" in result.stderr and "Traceback" not in result.output
    assert "deleted" not in result.stdout


def test_bad_since_is_a_usage_error(run: Cli) -> None:
    result = run("sessions", "list", "--since", "last tuesday")
    assert result.exit_code == 2 and "--since" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", dt.timedelta(days=30)),
        ("12h", dt.timedelta(hours=12)),
        ("2w", dt.timedelta(weeks=2)),
        ("7", dt.timedelta(days=7)),
        (" 3D ", dt.timedelta(days=3)),
    ],
)
def test_ages_accepted(text: str, expected: dt.timedelta) -> None:
    assert parse_age(text) == expected


def test_store_not_initialised(fresh_url: str) -> None:
    c = Cli(fresh_url)
    for args in (["instances", "list"], ["sessions", "list"], ["stats"], ["cleanup"], ["instances", "show", "x"]):
        _assert_one_line_error(c(*args), f"the store at {fresh_url} is not initialised: run `syncflow db upgrade`")
    assert not Path(fresh_url.removeprefix("sqlite:///")).exists(), "a failed command must not create the store"


@pytest.mark.postgres
def test_store_not_initialised_on_postgres(pg_databases: Any) -> None:
    url = pg_databases.create("cli_empty")
    _assert_one_line_error(Cli(url)("instances", "list"), "is not initialised: run `syncflow db upgrade`")


def test_unreachable_store_hides_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCFLOW_STORE_RETRY_SECONDS", "1")  # waited for that long, then one line
    reset_settings()
    c = Cli("postgresql+psycopg://syncflow:s3cret-pw@127.0.0.1:1/nowhere")
    result = c("instances", "list")
    line = _assert_one_line_error(result, "store unreachable at postgresql+psycopg://syncflow:***@127.0.0.1:1/nowhere")
    assert "s3cret-pw" not in result.output and "s3cret-pw" not in line


def test_unparsable_url_is_one_line_error() -> None:
    _assert_one_line_error(Cli("not a url")("instances", "list"), "invalid store URL")


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """``cli.main()`` freezes the process's objects for its exit; a test calling it in pytest's
    process thaws them afterwards."""
    yield
    gc.unfreeze()


def test_unexpected_error_is_one_line_from_main(
    run: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unfrozen: None
) -> None:
    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr("syncflow.store.instances.list_instances", boom)
    monkeypatch.setattr(sys, "argv", ["syncflow", "--database-url", run.url, "instances", "list"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: unexpected RuntimeError: kaboom (a bug: rerun with `syncflow --traceback ...` and report it)"
    ]
    monkeypatch.setattr(sys, "argv", ["syncflow", "--traceback", "--database-url", run.url, "instances", "list"])
    with pytest.raises(RuntimeError, match="kaboom"):
        cli.main()


# ---------------------------------------------------------------- sessions, stats


def test_sessions_list_show_and_stats(run_on: Cli, engine: Engine) -> None:
    run = run_on
    _add_instances(run, ["im-1", "--kind", "http-seq"], ["im-2", "--kind", "http-seq"], ["pg-1", "--kind", "postgres"])
    ok = _session(engine, {"im-1": "completed", "im-2": "completed"})
    bad = _session(engine, {"im-1": "completed", "im-2": "failed"}, sync_type="manual_batch")
    acc = _session(engine, {"pg-1": None}, category="account")  # still running
    _age(engine, ok, days=3)
    _age(engine, bad, days=1)

    page = run.json("sessions", "list")
    assert page["total"] == 3 and page["limit"] == 50 and page["offset"] == 0
    assert [s["session_id"] for s in page["items"]] == [acc, bad, ok]  # newest first
    by_id = {s["session_id"]: s for s in page["items"]}
    assert by_id[bad]["status"] == "failed" and by_id[bad]["failed_instances"] == 1
    assert by_id[ok]["status"] == "completed" and by_id[ok]["successful_instances"] == 2
    assert by_id[acc]["status"] == "running" and by_id[acc]["completed_at"] is None
    assert by_id[ok]["duration_seconds"] == pytest.approx(90, abs=1)

    assert [s["session_id"] for s in run.json("sessions", "list", "--status", "failed")["items"]] == [bad]
    assert [s["session_id"] for s in run.json("sessions", "list", "--type", "manual_batch")["items"]] == [bad]
    assert [s["session_id"] for s in run.json("sessions", "list", "--category", "account")["items"]] == [acc]
    assert {s["session_id"] for s in run.json("sessions", "list", "--since", "2d")["items"]} == {acc, bad}
    since_date = (utcnow() - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    assert {s["session_id"] for s in run.json("sessions", "list", "--since", since_date)["items"]} == {acc, bad}
    second = run.json("sessions", "list", "--limit", "1", "--offset", "1")
    assert [s["session_id"] for s in second["items"]] == [bad] and second["total"] == 3

    table = run.ok("sessions", "list", "--limit", "2").stdout
    assert "2 of 3 session(s)" in table and "--offset 2" in table

    shown = run.json("sessions", "show", bad)
    assert shown["session_id"] == bad and shown["status"] == "failed" and shown["sync_type"] == "manual_batch"
    recs = {r["instance_name"]: r for r in shown["records"]}
    assert recs["im-1"]["status"] == "completed"
    assert (
        recs["im-1"]["items_synced"],
        recs["im-1"]["items_created"],
        recs["im-1"]["items_updated"],
        recs["im-1"]["items_unchanged"],
        recs["im-1"]["items_deleted"],
    ) == (10, 6, 3, 1, 0)
    assert recs["im-2"]["status"] == "failed" and recs["im-2"]["error_message"] == "HTTP 503 from im-2"
    text = run.ok("sessions", "show", bad).stdout
    assert "im-2" in text and "HTTP 503 from im-2" in text and "failed" in text

    stats = run.json("stats")
    assert stats["total_sessions"] == 3
    assert stats["by_status"] == {"completed": 1, "failed": 1, "running": 1}
    assert stats["success_rate"] == 0.5
    assert stats["instances"] == {"completed": 3, "failed": 1, "pending": 1}
    assert stats["duration_seconds"]["max"] == pytest.approx(90, abs=1)
    assert {(b["sync_type"], b["sync_category"], b["status"], b["count"]) for b in stats["breakdown"]} == {
        ("scheduled", "messages", "completed", 1),
        ("manual_batch", "messages", "failed", 1),
        ("scheduled", "account", "running", 1),
    }
    recent = run.json("stats", "--since", "2d")
    assert recent["total_sessions"] == 2 and recent["success_rate"] == 0.0
    assert "50.0%" in run.ok("stats").stdout


def test_cleanup_deletes_only_old_finished_sessions(run_on: Cli, engine: Engine) -> None:
    run = run_on
    _add_instances(run, ["im-1", "--kind", "http-seq"], ["im-2", "--kind", "http-seq"])
    old_done = _session(engine, {"im-1": "completed", "im-2": "completed"})
    old_failed = _session(engine, {"im-1": "failed"})
    old_running = _session(engine, {"im-1": None})
    recent = _session(engine, {"im-2": "completed"})
    half_day = _session(engine, {"im-2": "completed"})
    for sid, days in ((old_done, 40), (old_failed, 31), (old_running, 90), (recent, 10), (half_day, 0.75)):
        _age(engine, sid, days)

    out = run.ok("cleanup").stdout  # default: 30 days from settings
    assert "deleted 2 finished session(s)" in out
    remaining = {s["session_id"] for s in run.json("sessions", "list")["items"]}
    assert remaining == {old_running, recent, half_day}
    with session_scope(engine) as s:
        orphan = s.scalar(
            select(func.count())
            .select_from(SyncInstanceRecord)
            .where(SyncInstanceRecord.session_id.in_([old_done, old_failed]))
        )
        assert orphan == 0
        assert s.scalar(select(func.count()).select_from(SyncInstanceRecord)) == 3

    assert run.json("cleanup", "--older-than", "2w")["deleted"] == 0
    assert run.json("cleanup", "--older-than", "12h")["deleted"] == 2
    assert {s["session_id"] for s in run.json("sessions", "list")["items"]} == {old_running}


def test_cleanup_default_follows_settings(run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    run.ok("instances", "add", "im-1", "--kind", "http-seq")
    engine = make_engine(run.url)
    try:
        sid = _session(engine, {"im-1": "completed"})
        _age(engine, sid, days=5)
        monkeypatch.setenv("SYNCFLOW_RETENTION_DAYS", "7")
        assert run.json("cleanup")["deleted"] == 0
        monkeypatch.setenv("SYNCFLOW_RETENTION_DAYS", "4")
        result = run.json("cleanup")
        assert result["deleted"] == 1 and result["older_than_seconds"] == 4 * 86400
    finally:
        engine.dispose()


# --------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_full_round_on_fresh_postgres(pg_databases: Any) -> None:
    c = Cli(pg_databases.create("cli_round"))
    assert "upgraded" in c.ok("db", "upgrade").stdout
    assert c.json("db", "current")["up_to_date"] is True
    c.ok("instances", "add", "pg-1", "--kind", "postgres", "--tag", "prod")
    _assert_one_line_error(c("instances", "add", "pg-1", "--kind", "postgres"), "'pg-1'")
    engine = make_engine(c.url)
    try:
        sid = _session(engine, {"pg-1": "failed"}, category="capacity")
        _age(engine, sid, days=45)
    finally:
        engine.dispose()
    assert c.json("sessions", "show", sid)["records"][0]["error_message"] == "HTTP 503 from pg-1"
    assert c.json("stats")["by_status"] == {"failed": 1}
    assert c.json("cleanup", "--older-than", "30")["deleted"] == 1
    c.ok("instances", "remove", "pg-1", "--yes")
    assert c.json("instances", "list") == []


# ------------------------------------------------------------------ help, entry point


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def test_help_documents_every_command_and_option() -> None:
    root = get_command(cli.app)
    paths = {p for p, _ in _walk(root)}
    for expected in [
        ("db", "upgrade"),
        ("db", "current"),
        ("instances", "add"),
        ("instances", "list"),
        ("instances", "show"),
        ("instances", "remove"),
        ("instances", "enable"),
        ("instances", "disable"),
        ("sessions", "list"),
        ("sessions", "show"),
        ("stats",),
        ("cleanup",),
    ]:
        assert expected in paths
    runner = CliRunner()
    for path, command in _walk(root):
        assert (command.help or "").strip(), f"{path} has no help"
        for param in command.params:
            assert (getattr(param, "help", None) or "").strip(), f"{path} {param.name} has no help"
        result = runner.invoke(cli.app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
    assert "--database-url" in runner.invoke(cli.app, ["--help"]).stdout


@pytest.mark.slow
def test_console_script_and_python_m(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "syncflow"
    assert script.exists(), "the project is not installed: pip install -e ."
    env = {**os.environ, ENV_URL: f"sqlite:///{tmp_path / 'cli.db'}"}
    env.pop("SYNCFLOW_RETENTION_DAYS", None)
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert helped.returncode == 0 and "instances" in helped.stdout and "cleanup" in helped.stdout
    upgraded = subprocess.run(
        [str(script), "db", "upgrade"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"to {head_revision()}" in upgraded.stdout
    assert (tmp_path / "cli.db").exists()
    current = subprocess.run(
        [sys.executable, "-m", "syncflow", "db", "current", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert current.returncode == 0, current.stderr
    assert json.loads(current.stdout)["up_to_date"] is True
    failed = subprocess.run(
        [str(script), "instances", "show", "ghost"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert failed.returncode == 1 and failed.stderr == "error: unknown instance 'ghost'\n"
