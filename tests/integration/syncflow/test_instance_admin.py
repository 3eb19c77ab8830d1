"""``syncflow instances update`` / ``check``, ``instances add``'s login check and the API's
``POST /sync_sessions/api/instances/{name}/check``, against real servers: the local
PostgreSQL and MariaDB, the reference seq server, and the Prefect test harness for blocks.

The trial-to-production case: an instance whose block lives in another (temporary) Prefect
server is registered with a block name this server does not have; ``check`` says so with the
fix, ``update`` re-creates the block here and keeps the instance's history.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from syncflow import cli
from syncflow.api import ApiSettings, create_app
from syncflow.api.auth import hash_token
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import make_engine, session_scope
from syncflow.store.migrations import upgrade
from syncflow.store.models import SyncSession
from syncflow.testing.seqserver import SeqServer

TOKEN = "check-test-token"
API_TOKEN = "instance-check-api-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Any:
        return self.runner.invoke(cli.app, list(args))

    def ok(self, *args: str) -> Any:
        result = self(*args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout)


@pytest.fixture
def env(prefect_harness: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, Cli]]:
    from syncflow.settings import reset_settings
    from syncflow.store.db import dispose_engines

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    upgrade(engine)
    monkeypatch.setenv("SYNCFLOW_DATABASE_URL", url)
    monkeypatch.setenv("SYNCFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHECK_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("CHECK_TEST_BAD", "not-the-token")
    reset_settings()
    yield engine, Cli()
    dispose_engines()
    engine.dispose()
    reset_settings()


@pytest.fixture
def seq() -> Iterator[SeqServer]:
    server = SeqServer(messages=30, conversations=2, token=TOKEN, seed=5)
    server.start()
    yield server
    server.stop()


def _checks(payload: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    (inst,) = [i for i in payload["instances"] if i["instance"] == name]
    return {c["check"]: c for c in inst["checks"]}


def test_trial_instance_block_recreated_on_this_server_keeps_history(env: tuple[Engine, Cli]) -> None:
    engine, run = env
    with session_scope(engine) as s:  # added on a temporary server: its block is not on this one
        inst_svc.add_instance(s, name="trial-pg", kind="postgres", block_name="syncflow-trial-pg-gone")
        row = book.open_session(s, sync_category="account", instances=["trial-pg"])
        (rec,) = book.records_in_order(s, session_id=row.session_id)
        book.start_instance_sync(s, record_id=rec.id)
        book.fail_instance_sync(s, record_id=rec.id, error_message="cannot load database block")

    report = run.json("instances", "check", "trial-pg", code=1)
    assert report["ok"] is False
    checks = _checks(report, "trial-pg")
    assert checks["block"]["ok"] is False
    assert "not on this Prefect server" in checks["block"]["detail"]
    assert "syncflow instances update trial-pg --host" in checks["block"]["detail"]
    assert checks["connection"]["detail"] == "not tried: no connection block"
    human = run("instances", "check", "trial-pg")
    assert human.exit_code == 1 and "1 with a problem (trial-pg)" in human.stdout

    # the whole connection is needed when the block is not here
    partial = run("instances", "update", "trial-pg", "--port", "5432")
    assert partial.exit_code == 1
    assert "give --host HOST --user USER" in partial.stderr and "not on this Prefect server" in partial.stderr

    # a closed port: the connection check refuses the update, nothing is saved
    closed = run(
        "instances", "update", "trial-pg", "--host", "127.0.0.1", "--port", str(free_port()),
        "--user", "postgres", "--connect-timeout", "3",
    )  # fmt: skip
    assert closed.exit_code == 1
    assert "not updated: connection:" in closed.stderr and "--no-check" in closed.stderr
    assert run.json("instances", "check", "trial-pg", code=1)["ok"] is False

    done = run.json(
        "instances", "update", "trial-pg", "--host", "127.0.0.1", "--port", "5432", "--user", "postgres",
        "--database", "postgres", "--tls-mode", "disable", "--priority", "7", "--tag", "prod",
    )  # fmt: skip
    assert done["block"].startswith("re-created 'syncflow-trial-pg-gone' on ")
    assert set(done["changed"]) == {"priority", "tags"}
    assert done["check"]["ok"] is True

    from blocks.database import DatabaseInstance

    block = DatabaseInstance.load("syncflow-trial-pg-gone")
    assert (block.host, block.port, block.user, block.tls_mode) == ("127.0.0.1", 5432, "postgres", "disable")

    report = run.json("instances", "check", "trial-pg")
    assert report["ok"] is True
    checks = _checks(report, "trial-pg")
    assert set(checks) == {
        "block", "connection", "credentials", "privileges: account", "privileges: capacity", "privileges: config",
    }  # fmt: skip
    assert "logged in as 'postgres'" in checks["credentials"]["detail"]
    assert "can read account" in checks["privileges: account"]["detail"]

    with session_scope(engine) as s:  # the history stays
        assert s.scalar(select(func.count()).select_from(SyncSession)) == 1
        inst = inst_svc.get_instance(s, name="trial-pg")
        assert (inst.priority, inst.tags) == (7, ["prod"])


def test_mysql_bad_password_is_refused_and_the_good_block_stays(
    env: tuple[Engine, Cli], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run = env
    run.ok("instances", "add", "chk-my", "--kind", "mysql", "--host", "127.0.0.1", "--port", "3306", "--user", "root")
    monkeypatch.setenv("CHK_MY_BAD_PW", "definitely-wrong")
    bad = run("instances", "update", "chk-my", "--password-env", "CHK_MY_BAD_PW")
    assert bad.exit_code == 1
    assert "not updated: credentials:" in bad.stderr and "refused the login" in bad.stderr
    assert "definitely-wrong" not in bad.stderr + bad.stdout
    report = run.json("instances", "check", "chk-my")  # the block that works is still there
    assert report["ok"] is True
    assert "privileges: config" in _checks(report, "chk-my")

    # --no-check saves it anyway; check then shows the credentials line with the fix, exit 1
    run.ok("instances", "update", "chk-my", "--password-env", "CHK_MY_BAD_PW", "--no-check")
    report = run.json("instances", "check", "--all", code=1)
    checks = _checks(report, "chk-my")
    assert checks["connection"]["ok"] is True and checks["credentials"]["ok"] is False
    assert "syncflow instances update chk-my --user USER --password-env VAR" in checks["credentials"]["detail"]
    assert checks["privileges: account"]["detail"] == "not tried: no login"
    assert "definitely-wrong" not in json.dumps(report)


def test_http_seq_add_checks_the_token_and_update_keeps_what_is_not_given(
    env: tuple[Engine, Cli], seq: SeqServer
) -> None:
    _, run = env
    refused = run("instances", "add", "chk-im", "--kind", "http-seq", "--url", seq.url, "--token-env", "CHECK_TEST_BAD")
    assert refused.exit_code == 1
    assert "instance chk-im not added: credentials:" in refused.stderr and "HTTP 401" in refused.stderr
    assert "--no-check" in refused.stderr
    assert run.json("instances", "list") == []

    run.ok("instances", "add", "chk-im", "--kind", "http-seq", "--url", seq.url, "--token-env", "CHECK_TEST_TOKEN")
    report = run.json("instances", "check", "chk-im")
    checks = _checks(report, "chk-im")
    assert report["ok"] is True
    assert "30 on the server" in checks["privileges: messages"]["detail"]
    assert checks["privileges: metadata"]["ok"] is True

    done = run.json("instances", "update", "chk-im", "--batch-size", "77", "--disable")
    assert done["enabled"] is False and done["changed"] == ["enabled"]
    from blocks.seq_http import SeqHttpInstance

    assert done["block_name"].startswith("syncflow-chk-im-")  # the instance's own block (named with its key)
    block = SeqHttpInstance.load(done["block_name"])
    assert block.binding is not None and done["block_name"].endswith(block.binding[:12])
    assert block.batch_size == 77 and block.base_url == seq.url
    assert block.token.get_secret_value() == TOKEN  # kept: not given again

    # a server that went away: connection fails, exit 1
    seq.stop()
    report = run.json("instances", "check", "chk-im", code=1)
    assert _checks(report, "chk-im")["connection"]["ok"] is False
    assert "syncflow instances update chk-im --url URL" in _checks(report, "chk-im")["connection"]["detail"]

    bad = run("instances", "update", "chk-im", "--host", "x")
    assert bad.exit_code == 1 and "--host are for postgres and mysql instances, not http-seq" in bad.stderr
    assert run("instances", "check").exit_code == 1  # neither NAME nor --all
    assert "NAME (one or more) or --all" in run("instances", "check").stderr


def test_api_check_route_answers_the_same_checks(env: tuple[Engine, Cli], seq: SeqServer) -> None:
    engine, run = env
    run.ok("instances", "add", "api-im", "--kind", "http-seq", "--url", seq.url, "--token-env", "CHECK_TEST_TOKEN")
    with session_scope(engine) as s:
        inst_svc.add_instance(s, name="api-gone", kind="postgres", block_name="syncflow-api-gone")
    app = create_app(ApiSettings(token_hash=hash_token(API_TOKEN), prefect_timeout=30), engine=engine)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    asyncio.run(_api_checks(app, auth))


async def _api_checks(app: Any, auth: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test", timeout=60) as c:
        ok = await c.post("/sync_sessions/api/instances/api-im/check", headers=auth)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["instance"] == "api-im" and body["ok"] is True
        assert [x["check"] for x in body["checks"]] == [
            "block", "connection", "credentials", "privileges: messages", "privileges: metadata",
        ]  # fmt: skip
        gone = (await c.post("/sync_sessions/api/instances/api-gone/check", headers=auth)).json()
        assert gone["ok"] is False and gone["checks"][0]["check"] == "block"
        assert "not on this Prefect server" in gone["checks"][0]["detail"]
        assert (await c.post("/sync_sessions/api/instances/nope/check", headers=auth)).status_code == 404
        assert (await c.post("/sync_sessions/api/instances/api-im/check")).status_code == 401
        schema = (await c.get("/openapi.json")).json()
        assert "/sync_sessions/api/instances/{name}/check" in schema["paths"]


def test_telegram_chat_check_goes_through_the_adapter(env: tuple[Engine, Cli], monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.telegram import TelegramAccountBlock
    from syncflow.engine.account_lease import close_all_gates
    from syncflow.settings import reset_settings
    from syncflow.sources.telegram import close_all_connections
    from syncflow.testing.telegram_fake import FakeTelegram

    _, run = env
    monkeypatch.setenv("SYNCFLOW_TELEGRAM_CLIENT_FACTORY", "syncflow.testing.telegram_fake:env_client_factory")
    reset_settings()
    world = FakeTelegram().install()
    try:
        session = "1BQAfake-session-of-the-check-tests-" + "s" * 30
        acct = world.add_account(session, phone="+4915100000009", code="1", password="p")
        news = acct.add_channel(21, "News", username="news")
        for i in range(3):
            acct.add_message(news, f"m{i}")
        TelegramAccountBlock(api_id=12345, api_hash="f" * 32, session=session).save("tg-chk", overwrite=True)
        run.ok("telegram", "discover", "tg-chk")
        (name,) = [i["name"] for i in run.json("instances", "list", "--kind", "telegram")]
        report = run.json("instances", "check", name)
        checks = _checks(report, name)
        assert report["ok"] is True, report
        assert checks["block"]["detail"].startswith("'tg-chk' on ")
        assert set(checks) >= {"connection", "credentials", "privileges: messages", "privileges: metadata"}
        assert checks["privileges: messages"]["detail"].startswith("can read messages")

        acct.revoke()  # the session was revoked (logged out elsewhere): the adapter says so
        close_all_connections()
        report = run.json("instances", "check", name, code=1)
        checks = _checks(report, name)
        assert checks["credentials"]["ok"] is False and checks["connection"]["ok"] is True
        assert "login" in checks["credentials"]["detail"]
        assert session not in json.dumps(report)
    finally:
        close_all_connections()
        close_all_gates()
        FakeTelegram.uninstall()


def test_doctor_names_each_problem_with_its_fix(env: tuple[Engine, Cli], tmp_path: Any) -> None:
    engine, run = env
    with session_scope(engine) as s:
        inst_svc.add_instance(s, name="doc-pg", kind="postgres", block_name="syncflow-doc-pg-gone")
        inst_svc.add_instance(s, name="doc-off", kind="postgres", block_name="x", enabled=False)  # not looked at
    report = run.json("doctor", "--work-pool", "sf-doctor-nowhere", code=1)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert checks["store"]["status"] == "ok" and checks["store schema"]["status"] == "ok"
    assert checks["prefect server"]["status"] == "ok"  # the harness's server, in PREFECT_API_URL
    assert checks["work pool"] == {
        "check": "work pool",
        "status": "fail",
        "detail": "'sf-doctor-nowhere' does not exist",
        "fix": "syncflow setup",
    }
    assert checks["deployments"]["status"] == "warn" and checks["deployments"]["fix"] == "prefect deploy --all"
    assert checks["instance doc-pg"]["status"] == "fail"
    fix = "syncflow instances update doc-pg --host HOST --user USER --password-env VAR"
    assert checks["instance doc-pg"]["fix"] == fix
    assert "instance doc-off" not in checks

    # a store that was never migrated: said first, with its fix
    unmigrated = f"sqlite:///{tmp_path / 'empty.db'}"
    make_engine(unmigrated).dispose()
    (tmp_path / "empty.db").touch()
    result = run("--database-url", unmigrated, "doctor", "--json")
    assert result.exit_code == 1
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["store schema"] == {
        "check": "store schema",
        "status": "fail",
        "detail": "never migrated (no tables)",
        "fix": "syncflow db upgrade",
    }
