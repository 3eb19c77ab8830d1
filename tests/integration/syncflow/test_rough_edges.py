"""Rough edges an operator met (issue 14, point 7): flags in --help take no value, validation
messages carry no pydantic "Value error," prefix (CLI and API), and store URLs that cannot work
(``postgres://``, ``mysql://``) get one line saying what to write instead."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from syncflow import cli
from syncflow.api import ApiSettings, create_app
from syncflow.api.auth import hash_token
from syncflow.settings import reset_settings
from syncflow.store.db import make_engine
from syncflow.store.migrations import upgrade

API_TOKEN = "rough-edges-token-0123456789abcdef"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("SYNCFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SYNCFLOW_DATABASE_URL", raising=False)
    reset_settings()
    return CliRunner()


@pytest.mark.parametrize(
    "args",
    [[], ["instances"], ["instances", "check"], ["instances", "update"], ["doctor"], ["setup"], ["sync", "run"]],
)
def test_flags_show_no_type_in_help(runner: CliRunner, args: list[str]) -> None:
    text = runner.invoke(cli.app, [*args, "--help"]).stdout
    assert "--help" in text and ("--json" in text or args == ["instances"])
    assert "<bool>" not in text, text
    for line in text.splitlines():  # a flag's row: the option, then straight its help text
        if re.search(r"--json\s", line):
            assert re.search(r"--json\s+(Print|same)", line), line


def test_validation_messages_have_no_pydantic_prefix(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    monkeypatch.setenv("ROUGH_TOKEN", "t")
    bad_url = runner.invoke(
        cli.app,
        ["--database-url", url, "instances", "add", "x", "--kind", "http-seq", "--url", "ftp://x", "--token-env",
         "ROUGH_TOKEN"],
    )  # fmt: skip
    assert bad_url.exit_code == 1
    assert bad_url.stderr.strip() == "error: --url: 'ftp://x' must start with http:// or https://"
    blank = runner.invoke(
        cli.app, ["--database-url", url, "instances", "add", "y", "--kind", "postgres", "--host", " ", "--user", "u"]
    )
    assert blank.exit_code == 1 and blank.stderr.strip() == "error: instance y: host: must not be empty"

    app = create_app(ApiSettings(token_hash=hash_token(API_TOKEN)), engine=make_engine(url))

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as c:
            return await c.post(
                "/sync_sessions/api/sessions",
                json={"category": "messages", "all": True, "tags": ["a"]},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            )

    answer = asyncio.run(post())
    assert answer.status_code == 422
    (problem,) = answer.json()["detail"]
    assert problem["msg"].startswith("say which instances: exactly one of"), problem
    assert "Value error" not in answer.text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgres://syncflow:s3cret@db.example/syncflow",
            "error: store URL postgres://syncflow:***@db.example/syncflow: write it as "
            "postgresql+psycopg://syncflow:***@db.example/syncflow (syncflow talks to PostgreSQL with psycopg 3)",
        ),
        (
            "postgresql://db.example/syncflow",
            "error: store URL postgresql://db.example/syncflow: write it as postgresql+psycopg://db.example/syncflow",
        ),
        ("mysql://root@127.0.0.1/test", "MySQL/MariaDB is not a supported store (use sqlite:///"),
        ("mariadb+pymysql://root@127.0.0.1/test", "a MySQL server can be a source instead"),
    ],
)
def test_store_urls_that_cannot_work_say_what_to_write(runner: CliRunner, url: str, expected: str) -> None:
    for args in (["--database-url", url, "instances", "list"], ["--database-url", url, "db", "upgrade"]):
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 1, result.stdout
        assert expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("value", "needle"),
    [("5s", "at least 10s"), ("soon", "is not a delay like 30s, 15m or 1h")],
)
def test_setup_alert_delay_is_checked_before_anything(runner: CliRunner, value: str, needle: str) -> None:
    result = runner.invoke(cli.app, ["setup", "--alerts", "hook", "--alert-not-started", value])
    assert result.exit_code == 2 and needle in result.output


def test_alert_specs_are_valid_prefect_triggers() -> None:
    import datetime as dt

    from prefect.events.schemas.automations import EventTrigger

    from deployments.alerts import alert_specs

    specs = alert_specs(failures_in_a_row=4, not_started_within=dt.timedelta(minutes=20))
    triggers = {s.name: EventTrigger(**s.trigger) for s in specs}
    failing = triggers["syncflow: instance failing in a row"]
    assert failing.expect == {"syncflow.instance.failed"}
    assert failing.match.root["syncflow.consecutive-failures"] == "4"
    late = triggers["syncflow: session did not start"]
    assert late.posture == "Proactive" and late.within == dt.timedelta(minutes=20)
    assert late.after == {"prefect.flow-run.Late"} and late.expect == {"prefect.flow-run.Running"}
    assert "20 min" in next(s.body for s in specs if s.name == "syncflow: session did not start")


def test_an_automation_whose_sets_came_back_in_another_order_is_kept() -> None:
    """``syncflow setup --alerts`` run twice keeps its automations: a trigger's ``expect`` /
    ``after`` / ``for_each`` are sets, dumped in an order that differs between processes; only a
    real change (here the streak length) updates one."""
    import datetime as dt
    import uuid

    from deployments.alerts import alert_specs
    from tasks.prefect_api import automation_for, same_automation

    keys = {"description", "enabled", "trigger", "actions"}
    block = uuid.uuid4()

    def dumped(failures: int) -> list[dict[str, object]]:
        specs = alert_specs(failures_in_a_row=failures, not_started_within=dt.timedelta(seconds=10))
        return [automation_for(s, block).model_dump(mode="json", include=keys) for s in specs]

    def reordered(doc: dict[str, object]) -> dict[str, object]:
        trigger = dict(doc["trigger"])  # type: ignore[call-overload]
        for field in ("expect", "after", "for_each"):
            trigger[field] = list(reversed(trigger[field]))
        return {**doc, "trigger": trigger}

    wanted = dumped(2)
    stored = [reordered(d) for d in wanted]
    assert stored[0]["trigger"] != wanted[0]["trigger"]  # "Failed, Crashed" came back reversed
    assert all(same_automation(have, want) for have, want in zip(stored, wanted, strict=True))
    changed = dumped(3)
    assert [same_automation(have, want) for have, want in zip(stored, changed, strict=True)] == [True, False, True]
