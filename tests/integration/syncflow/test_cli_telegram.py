"""``syncflow telegram login`` and ``discover`` against the fake Telethon client (injected with
``SYNCFLOW_TELEGRAM_CLIENT_FACTORY``), a real store and the Prefect test harness (the blocks)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from blocks.telegram import TelegramAccountBlock
from syncflow.cli.app import app
from syncflow.engine.account_lease import close_all_gates
from syncflow.settings import reset_settings
from syncflow.sources.telegram import close_all_connections
from syncflow.store import instances as inst_svc
from syncflow.store.db import session_scope
from syncflow.testing.telegram_fake import FakeAccount, FakeTelegram

SESSION = "1BQAfake-session-of-the-cli-tests-" + "s" * 30
API_HASH = "fedcba9876543210fedcba9876543210"
PHONE = "+4915100000001"


@pytest.fixture
def world(
    prefect_harness: None, store_env: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeTelegram]:
    monkeypatch.setenv("SYNCFLOW_TELEGRAM_CLIENT_FACTORY", "syncflow.testing.telegram_fake:env_client_factory")
    monkeypatch.setenv("TG_API_ID", "12345")
    monkeypatch.setenv("TG_API_HASH", API_HASH)
    reset_settings()
    w = FakeTelegram().install()
    yield w
    close_all_connections()
    close_all_gates()
    FakeTelegram.uninstall()
    reset_settings()


@pytest.fixture
def acct(world: FakeTelegram) -> FakeAccount:
    return world.add_account(SESSION, phone=PHONE, code="24680", password="correct horse")


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def account_name() -> str:
    return f"me-{uuid.uuid4().hex[:8]}"


def test_login_asks_phone_code_password_and_saves_the_session_never_printing_it(
    world: FakeTelegram, acct: FakeAccount
) -> None:
    name = account_name()
    args = ["telegram", "login", name, "--api-id-env", "TG_API_ID", "--api-hash-env", "TG_API_HASH", "--json"]
    result = cli(*args, input=f"{PHONE}\n11111\n24680\ncorrect horse\n")  # a wrong code first
    assert result.exit_code == 0, result.output
    assert SESSION not in result.output and API_HASH not in result.output
    assert SESSION not in result.stderr
    payload = json.loads(result.stdout[result.stdout.index("{") :])  # CliRunner echoes the typed input first
    assert payload == {
        "account": name,
        "block": name,
        "block_type": "syncflow-telegram",
        "api_id": 12345,
        "replaced": False,
    }
    assert "Phone number" in result.stderr and "Two-step verification password" in result.stderr
    block = TelegramAccountBlock.load(name)
    assert block.session.get_secret_value() == SESSION
    assert (block.api_id, block.api_hash.get_secret_value()) == (12345, API_HASH)
    sent = [k for n, k in world.calls if n in ("send_code_request", "sign_in")]
    assert sent[0] == {"phone": PHONE} and len(sent) == 4  # code request, wrong code, code, password

    # again, after a revocation: the block keeps the app credentials and its other settings
    TelegramAccountBlock(api_id=12345, api_hash=API_HASH, session="revoked", flood_wait_max=42, max_retries=7).save(
        name, overwrite=True
    )
    again = cli("telegram", "login", name, "--phone", PHONE, input="24680\ncorrect horse\n")
    assert again.exit_code == 0, again.output
    assert f"saved in block {name!r}" in again.stdout and SESSION not in again.output
    block = TelegramAccountBlock.load(name)
    assert (block.session.get_secret_value(), block.flood_wait_max, block.max_retries) == (SESSION, 42, 7)


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (
            ["--api-id-env", "TG_API_ID", "--api-hash-env", "TG_API_HASH"],
            "+4915100000001\n1\n1\n1\n",
            "PhoneCodeInvalid",
        ),
        (["--api-id-env", "TG_API_ID", "--api-hash-env", "NOPE"], "", "NOPE (--api-hash-env) is not set"),
        (["--api-id-env", "TG_API_HASH", "--api-hash-env", "TG_API_ID"], "", "must hold a positive number"),
        ([], "", "a new account needs --api-id-env VAR and --api-hash-env VAR"),
    ],
)
def test_login_failures_say_what_is_wrong_and_save_nothing(
    acct: FakeAccount, args: list[str], stdin: str, needle: str
) -> None:
    name = account_name()
    result = cli("telegram", "login", name, *args, input=stdin)
    assert result.exit_code == 1
    assert needle in result.stderr and "error: " in result.stderr
    with pytest.raises(ValueError):
        TelegramAccountBlock.load(name)


def test_account_names_are_block_names(acct: FakeAccount) -> None:
    result = cli("telegram", "login", "Main Account", "--api-id-env", "TG_API_ID", "--api-hash-env", "TG_API_HASH")
    assert result.exit_code == 1 and "lowercase letters, digits and dashes" in result.stderr


def test_discover_registers_each_chat_once_and_reports_the_ones_that_went_away(
    world: FakeTelegram, acct: FakeAccount, engine: Engine
) -> None:
    name = account_name()
    missing = cli("telegram", "discover", name)
    assert missing.exit_code == 1 and f"run `syncflow telegram login {name}" in missing.stderr
    TelegramAccountBlock(api_id=12345, api_hash=API_HASH, session=SESSION).save(name, overwrite=True)
    news = acct.add_channel(11, "News", username="news")
    fam = acct.add_group(12, "Family")
    ann = acct.add_user(13, "Ann")
    acct.add_channel(14, "Old stuff", archived=True)

    first = cli("telegram", "discover", name, "--tag", "tg", "--tag", "home", "--priority", "3", "--json")
    assert first.exit_code == 0, first.output
    found: dict[str, Any] = json.loads(first.stdout)
    assert {c["chat_id"] for c in found["added"]} == {news, fam, ann}
    assert found["filtered_out"] == 1 and found["listed"] == 4
    with session_scope(engine) as s:
        inst = inst_svc.get_instance(s, name=f"{name}-news-c11")
        assert (inst.kind, inst.block_name, inst.tags, inst.priority) == ("telegram", name, ["tg", "home"], 3)
        assert inst.config["chat_id"] == news and inst.config["account"] == name

    acct.remove(fam)  # the account left the group
    acct.add_channel(15, "Brand new")
    second = cli("telegram", "discover", name, "--type", "channel", "--archived")
    assert second.exit_code == 0, second.output
    assert "2 added, 2 already registered" in second.stdout
    assert f"{name}-family-g12" in second.stdout and "registered but gone" in second.stdout
    with session_scope(engine) as s:
        assert inst_svc.get_instance(s, name=f"{name}-family-g12").enabled  # reported, never removed
        assert inst_svc.get_instance(s, name=f"{name}-old-stuff-c14").kind == "telegram"

    bad = cli("telegram", "discover", name, "--type", "planet")
    assert bad.exit_code == 1 and "unknown chat type 'planet'" in bad.stderr
