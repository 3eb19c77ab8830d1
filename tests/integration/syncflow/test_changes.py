"""What changed (``syncflow changes``, ``sessions show`` change lists) and short session ids
(unique prefixes), against real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, update
from typer.testing import CliRunner, Result

from syncflow import cli
from syncflow.errors import ConfigError, NotFoundError
from syncflow.settings import reset_settings
from syncflow.store import changes as change_store
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as svc
from syncflow.store.db import dispose_engines, session_scope
from syncflow.store.models import SyncInstanceRecord, SyncSession, utcnow
from syncflow.store.session_ids import resolve_session_id, short_ids
from syncflow.store.sessions import ItemCounts

T0 = utcnow().replace(microsecond=0) - dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _isolated_settings() -> Iterator[None]:
    saved = os.environ.get("SYNCFLOW_DATABASE_URL")
    yield
    if saved is None:
        os.environ.pop("SYNCFLOW_DATABASE_URL", None)
    else:
        os.environ["SYNCFLOW_DATABASE_URL"] = saved
    reset_settings()
    dispose_engines()


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(cli.app, ["--database-url", self.url, *args])

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def run(store_url: str, engine: Engine) -> Cli:
    return Cli(store_url)


def _instances(engine: Engine) -> None:
    with session_scope(engine) as s:
        inst_svc.add_instance(s, name="pg-main", kind="postgres")
        inst_svc.add_instance(s, name="my-main", kind="mysql")
        inst_svc.add_instance(s, name="im-1", kind="http-seq")


def _sync(
    engine: Engine,
    instance: str,
    category: str,
    changes: list[str],
    *,
    hours_ago: float,
    total: int | None = None,
    session_id: str | None = None,
    counts: tuple[int, int, int] = (1, 1, 0),
) -> str:
    """A finished session of one instance whose record changed ``changes`` (``hours_ago``)."""
    created, updated, deleted = counts
    with session_scope(engine) as s:
        row = svc.open_session(s, sync_category=category, instances=[instance], session_id=session_id)
        (rec,) = svc.records_in_order(s, session_id=row.session_id)
        svc.start_instance_sync(s, record_id=rec.id)
        details = {"changes": changes, "changes_total": len(changes) if total is None else total}
        svc.add_record_progress(
            s,
            record_id=rec.id,
            counts=ItemCounts(synced=10, created=created, updated=updated, deleted=deleted),
            details=details,
        )
        svc.complete_instance_sync(s, record_id=rec.id)
        sid = row.session_id
    when = T0 + dt.timedelta(days=1) - dt.timedelta(hours=hours_ago)
    with session_scope(engine) as s:
        s.execute(
            update(SyncInstanceRecord)
            .where(SyncInstanceRecord.session_id == sid)
            .values(started_at=when - dt.timedelta(seconds=5), completed_at=when)
        )
        s.execute(update(SyncSession).where(SyncSession.session_id == sid).values(created_at=when, started_at=when))
    return sid


# ------------------------------------------------------------------ short session ids


def test_short_ids_are_8_characters_and_longer_when_a_prefix_is_shared(engine: Engine) -> None:
    _instances(engine)
    twin_a = "abcdef12-3456-4000-8000-000000000001"
    twin_b = "abcdef12-3499-4000-8000-000000000002"
    lone = str(uuid.uuid4())
    for sid in (twin_a, twin_b, lone):
        with session_scope(engine) as s:
            svc.open_session(s, sync_category="messages", instances=["im-1"], session_id=sid)
    with session_scope(engine) as s:
        shorts = short_ids(s, [twin_a, twin_b, lone])
        assert shorts == {twin_a: "abcdef12-345", twin_b: "abcdef12-349", lone: lone[:8]}
        # every short id names exactly one session; a whole id and a long prefix too
        for sid, short in shorts.items():
            assert resolve_session_id(s, short) == sid
            assert resolve_session_id(s, sid) == sid
        assert resolve_session_id(s, "abcdef12-349") == twin_b
        with pytest.raises(ConfigError, match="ambiguous") as err:
            resolve_session_id(s, "abcdef12")
        assert twin_a in str(err.value) and twin_b in str(err.value)
        with pytest.raises(NotFoundError, match="unknown session"):
            resolve_session_id(s, "ffffffff-nope")
        with pytest.raises(NotFoundError):
            resolve_session_id(s, "%")  # LIKE wildcards are literal
        assert short_ids(s, []) == {}


def test_sessions_show_accepts_a_unique_prefix_and_refuses_an_ambiguous_one(run: Cli, engine: Engine) -> None:
    _instances(engine)
    a = _sync(
        engine, "pg-main", "account", ["x: created"], hours_ago=2, session_id="0123abcd-1111-4000-8000-00000000000a"
    )
    b = _sync(
        engine, "pg-main", "account", ["y: created"], hours_ago=1, session_id="0123abcd-2222-4000-8000-00000000000b"
    )
    shown = run.json("sessions", "show", "0123abcd-1")
    assert shown["session_id"] == a and shown["short_id"] == "0123abcd-1"
    assert {s["session_id"]: s["short_id"] for s in run.json("sessions", "list")["items"]} == {
        a: "0123abcd-1",
        b: "0123abcd-2",
    }
    bad = run("sessions", "show", "0123abcd")
    assert bad.exit_code == 1 and "ambiguous" in bad.stderr and a in bad.stderr and b in bad.stderr
    unknown = run("sessions", "show", "feedbeef")
    assert unknown.exit_code == 1 and "unknown session 'feedbeef'" in unknown.stderr


# ------------------------------------------------------------------------ what changed


def test_changes_newest_first_filtered_by_instance_category_and_time(engine: Engine) -> None:
    _instances(engine)
    old = _sync(engine, "pg-main", "account", ["alice: +CREATEDB"], hours_ago=30)
    cfg = _sync(engine, "pg-main", "config", ["work_mem: 4MB -> 8MB"], hours_ago=3)
    _sync(engine, "my-main", "account", [], hours_ago=2, counts=(0, 0, 0))  # nothing changed: not listed
    acc = _sync(engine, "my-main", "account", ["bob@%: created", "carol@%: deleted"], hours_ago=1)
    with session_scope(engine) as s:
        every = change_store.records_with_changes(s)
        assert [r.session_id for r in every] == [acc, cfg, old]
        assert [r.session_id for r in change_store.records_with_changes(s, instance="pg-main")] == [cfg, old]
        assert [r.session_id for r in change_store.records_with_changes(s, category="account")] == [acc, old]
        since = T0 + dt.timedelta(days=1) - dt.timedelta(hours=12)
        assert [r.session_id for r in change_store.records_with_changes(s, since=since)] == [acc, cfg]
        assert [r.session_id for r in change_store.records_with_changes(s, limit=1, offset=1)] == [cfg]
        with pytest.raises(NotFoundError, match="unknown instance 'nope'"):
            change_store.records_with_changes(s, instance="nope")
        with pytest.raises(ConfigError, match="messages syncs keep no change list"):
            change_store.records_with_changes(s, category="messages")


def test_syncflow_changes_names_session_and_time_and_counts_the_rest(run: Cli, engine: Engine) -> None:
    _instances(engine)
    many = [f"role{i}: +LOGIN" for i in range(100)]
    acc = _sync(engine, "pg-main", "account", many, hours_ago=3, total=130, counts=(130, 0, 0))
    cfg = _sync(engine, "my-main", "config", ["[mysqld] max_connections: 151 -> 300"], hours_ago=1)

    page = run.json("changes")
    assert [e["session_id"] for e in page["items"]] == [cfg, acc]
    first = page["items"][1]
    assert first["instance_name"] == "pg-main" and first["sync_category"] == "account"
    assert first["changes_total"] == 130 and len(first["changes"]) == 100 and first["short_id"] == acc[:8]
    assert first["changed_at"].startswith((T0 + dt.timedelta(hours=21)).strftime("%Y-%m-%dT%H"))

    text = run.ok("changes", "--instance", "pg-main", "--lines", "3").stdout
    assert f"session {acc[:8]}" in text and "account of pg-main" in text and "130 changes" in text
    assert "role0: +LOGIN" in text and "role2: +LOGIN" in text and "role3: +LOGIN" not in text
    assert "... and 127 more" in text and "my-main" not in text
    both = run.ok("changes", "--lines", "1").stdout.splitlines()
    heads = [line for line in both if " UTC  " in line]
    assert len(heads) == 2 and heads[0].split("  ")[1] == "config of my-main"  # one line each, newest first
    assert "  role0: +LOGIN" in both and "  ... and 129 more" in both
    # a change with [brackets] prints as it is (no console markup)
    assert "[mysqld] max_connections: 151 -> 300" in run.ok("changes", "--category", "config").stdout
    assert "no changes (instance im-1)" in run.ok("changes", "--instance", "im-1").stdout
    assert [e["session_id"] for e in run.json("changes", "--since", "2h")["items"]] == [cfg]
    bad = run("changes", "--category", "messages")
    assert bad.exit_code == 1 and "keep no change list" in bad.stderr
    assert run("changes", "--instance", "nope").exit_code == 1


def test_sessions_show_lists_each_records_changes(run: Cli, engine: Engine) -> None:
    _instances(engine)
    many = [f"role{i}: +LOGIN" for i in range(100)]
    sid = _sync(engine, "pg-main", "account", many, hours_ago=1, total=150, counts=(150, 0, 0))
    text = run.ok("sessions", "show", sid[:8]).stdout
    assert "pg-main: 150 changes (150 created, 0 updated, 0 deleted)" in text
    assert "  role9: +LOGIN" in text.splitlines() and "role10: +LOGIN" not in text
    assert "  ... and 140 more" in text.splitlines()
    text = run.ok("sessions", "show", sid, "--changes", "2").stdout
    assert "role1: +LOGIN" in text and "role2: +LOGIN" not in text and "... and 148 more" in text
    assert "role0" not in run.ok("sessions", "show", sid, "--changes", "0").stdout
    shown = run.json("sessions", "show", sid)  # --json: the stored list, as before
    assert shown["records"][0]["sync_details"]["changes"] == many
    assert shown["records"][0]["sync_details"]["changes_total"] == 150


def test_sessions_show_links_the_flow_run_when_the_prefect_ui_is_known(
    run: Cli, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _instances(engine)
    sid = _sync(engine, "pg-main", "account", ["x: created"], hours_ago=1)
    run_id = str(uuid.uuid4())
    with session_scope(engine) as s:
        s.execute(update(SyncSession).where(SyncSession.session_id == sid).values(flow_run_id=run_id))
    assert "/runs/flow-run/" not in run.ok("sessions", "show", sid).stdout
    monkeypatch.setenv("PREFECT_UI_URL", "http://prefect.example:4200/")
    assert f"http://prefect.example:4200/runs/flow-run/{run_id}" in run.ok("sessions", "show", sid).stdout


def test_cli_json_has_the_views_field_names(run: Cli, engine: Engine) -> None:
    """One shape: the CLI's --json answers the views of syncflow.schemas, as the API does."""
    from syncflow.schemas import ChangeEntry, ChangesPage, RecordView, SessionDetailView, SessionView

    _instances(engine)
    sid = _sync(engine, "pg-main", "account", ["x: created"], hours_ago=1)
    shown = run.json("sessions", "show", sid)
    assert set(shown) == set(SessionDetailView.model_fields)
    assert set(shown["records"][0]) == set(RecordView.model_fields)
    assert set(run.json("sessions", "list")["items"][0]) == set(SessionView.model_fields)
    page = run.json("changes")
    assert set(page) == set(ChangesPage.model_fields) and set(page["items"][0]) == set(ChangeEntry.model_fields)
