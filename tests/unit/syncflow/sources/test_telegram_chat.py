"""One Telegram chat as a syncflow source, against the fake Telethon client: the rows the store
gets, per-run options, metadata as one conversation, the flood-wait cool-down, the gate, and
the small parsers (chat ids, types, names, the client factory setting, the seed's options)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from telethon import errors as tg_errors  # type: ignore[import-untyped]

from syncflow.engine.options import SyncOptions
from syncflow.errors import ConfigError, PermanentSyncError, TransientSyncError
from syncflow.settings import reset_settings
from syncflow.sources.base import ConversationRow, PageLike, page_reader
from syncflow.sources.telegram import ChatInfo, TelegramAccount, close_all_connections
from syncflow.sources.telegram_chat import (
    TelegramChatSource,
    chat_code,
    chat_instance_name,
    client_factory_from_settings,
    parse_chat_id,
    parse_types,
    reset_cooldowns,
)
from syncflow.store.messages import EXTENDED_COLUMNS
from syncflow.testing.telegram_fake import FakeAccount, FakeTelegram, env_client_factory, file_media

SESSION = "1Bunit-test-session-" + "z" * 30
API_HASH = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    close_all_connections()
    reset_cooldowns()


@pytest.fixture
def world() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
def acct(world: FakeTelegram) -> FakeAccount:
    return world.add_account(SESSION)


class RecordingGate:
    def __init__(self) -> None:
        self.events: list[str] = []

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.events.append("in")
        try:
            yield
        finally:
            self.events.append("out")


def source(world: FakeTelegram, chat: int, gate: RecordingGate | None = None, **kw: float) -> TelegramChatSource:
    account = TelegramAccount(api_id=1, api_hash=API_HASH, session=SESSION, **kw)  # type: ignore[arg-type]
    return TelegramChatSource("acc", account, chat, instance="acc-chat", client_factory=world.client_factory, gate=gate)


def test_pages_are_page_like_with_the_store_row_shape(world: FakeTelegram, acct: FakeAccount) -> None:
    chat = acct.add_channel(9, "C", megagroup=True)
    acct.add_message(chat, "first", from_id=5)
    acct.add_message(chat, "a file", from_id=6, media=file_media("a.pdf"), reply_to=1)
    gate = RecordingGate()
    page = source(world, chat, gate).read_page(0, 10)
    assert isinstance(page, PageLike)
    assert gate.events == ["in", "out"]
    assert [len(r) for r in page.rows] == [len(EXTENDED_COLUMNS)] * 2
    second = dict(zip(EXTENDED_COLUMNS, page.rows[1], strict=True))
    assert (second["seq"], second["kind"], second["reply_to"]) == (2, "document", "1")
    assert second["extra"]["media"]["file_name"] == "a.pdf"
    assert (page.has_more, page.total_count, page.nbytes, page.cursor_after(0)) == (False, None, 0, 2)
    assert page.rows is page.rows  # mapped once


def test_a_run_reader_binds_the_range_end_and_skip_media(world: FakeTelegram, acct: FakeAccount) -> None:
    chat = acct.add_channel(9, "C")
    for i in range(10):
        acct.add_message(chat, f"m{i}")
    src = source(world, chat)
    fetch = page_reader(src, SyncOptions.parse({"fromMessageId": 3, "toMessageId": 6, "skipMedia": False}))
    page = fetch(2, 100)
    assert [r[2] for r in page.rows] == [3, 4, 5, 6]
    assert world.calls[-1] == (
        "iter_messages",
        {"entity": chat, "min_id": 2, "max_id": 7, "reverse": True, "limit": 100},
    )
    plain = page_reader(src, SyncOptions.parse({}))
    assert [r[2] for r in plain(8, 100).rows] == [9, 10]


def test_metadata_is_one_conversation_and_none_once_left(world: FakeTelegram, acct: FakeAccount) -> None:
    chat = acct.add_channel(9, "News", username="news", members=42, photo_id=7)
    src = source(world, chat)
    assert src.read_snapshot("metadata") == [
        ConversationRow(str(chat), title="News", type="channel", username="news", members_count=42, avatar_id="7")
    ]
    acct.chat(chat).entity.left = True
    assert src.read_snapshot("metadata") == []
    with pytest.raises(ConfigError, match="no 'account' snapshot"):
        src.read_snapshot("account")


def test_a_flood_wait_over_the_maximum_cools_the_whole_account_down(world: FakeTelegram, acct: FakeAccount) -> None:
    a, b = acct.add_channel(1, "A"), acct.add_channel(2, "B")
    acct.add_message(a, "x")
    world.flood_wait(600)
    with pytest.raises(TransientSyncError, match="wait 600s"):
        source(world, a, flood_wait_max=10).read_page(0, 10)
    asked = len(world.calls)
    for chat in (a, b):  # every chat of the account: refused without asking Telegram
        with pytest.raises(TransientSyncError, match=r"wait 600s .*not asking again"):
            source(world, chat, flood_wait_max=10).read_page(0, 10)
    assert len(world.calls) == asked
    reset_cooldowns()
    assert len(source(world, a).read_page(0, 10).rows) == 1


def test_errors_pass_through_the_gate(world: FakeTelegram, acct: FakeAccount) -> None:
    chat = acct.add_channel(3, "Private")
    acct.restrict(chat, tg_errors.ChannelPrivateError)
    gate = RecordingGate()
    with pytest.raises(PermanentSyncError, match="ChannelPrivateError"):
        source(world, chat, gate).read_page(0, 10)
    assert gate.events == ["in", "out"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [({"chat_id": -1000000000009}, -1000000000009), ({"chat_id": "42"}, 42), ({"chat_id": " -7 "}, -7)],
)
def test_parse_chat_id(config: dict[str, object], expected: int) -> None:
    assert parse_chat_id(config, instance="x") == expected


@pytest.mark.parametrize("config", [None, {}, {"chat_id": 0}, {"chat_id": True}, {"chat_id": "abc"}, {"chat_id": 1.5}])
def test_a_chat_instance_without_a_chat_id_says_to_discover(config: dict[str, object] | None) -> None:
    with pytest.raises(ConfigError, match="syncflow telegram discover"):
        parse_chat_id(config, instance="x")


def test_types_codes_and_names() -> None:
    assert parse_types(None) is None and parse_types(["", " "]) is None
    assert parse_types(["user,group", "channel"]) == {"user", "group", "supergroup", "channel"}
    with pytest.raises(ConfigError, match="unknown chat type 'dm'"):
        parse_types(["dm"])
    assert [chat_code(c) for c in (42, -42, -1000000000042)] == ["u42", "g42", "c42"]
    info = ChatInfo(chat_id=-1000000000042, type="supergroup", title="Ünïcode & Co — Team!")
    assert chat_instance_name("main", info) == "main-unicode-co-team-c42"
    assert chat_instance_name("main", ChatInfo(chat_id=5, type="user", title="张三")) == "main-user-u5"


def test_the_client_factory_setting(monkeypatch: pytest.MonkeyPatch, world: FakeTelegram) -> None:
    monkeypatch.delenv("SYNCFLOW_TELEGRAM_CLIENT_FACTORY", raising=False)
    reset_settings()
    assert client_factory_from_settings() is None
    monkeypatch.setenv("SYNCFLOW_TELEGRAM_CLIENT_FACTORY", "syncflow.testing.telegram_fake:env_client_factory")
    reset_settings()
    assert client_factory_from_settings() is env_client_factory
    for bad, needle in (("nocolon", "module:callable"), ("no.such.module:f", "No module"), ("os:sep", "not callable")):
        monkeypatch.setenv("SYNCFLOW_TELEGRAM_CLIENT_FACTORY", bad)
        reset_settings()
        with pytest.raises(ConfigError, match=needle):
            client_factory_from_settings()
    reset_settings()


def test_the_fake_world_survives_a_round_trip_through_a_file(
    world: FakeTelegram, acct: FakeAccount, tmp_path: Path
) -> None:
    chat = acct.add_channel(9, "C")
    acct.add_message(chat, "hello")
    world.flood_wait(1)
    world.latency = 0.01
    path = tmp_path / "world.pkl"
    world.save(path)
    copy = FakeTelegram.load(path)
    assert copy.accounts[SESSION].chat(chat).messages[1].message == "hello"
    assert (copy.pending_faults(), copy.latency, copy.calls) == (1, 0.01, [])
    copy.accounts[SESSION].add_user(77, "New")  # ids keep counting
    assert 77 in copy.accounts[SESSION].chats


def test_the_seeds_option_names() -> None:
    opts = SyncOptions.parse({"incremental": False, "skipMedia": False, "batchSize": 50})
    assert (opts.full, opts.skip_media, opts.batch_size) == (True, False, 50)
    ranged = SyncOptions.parse({"fromMessageId": 5, "toMessageId": 9})
    assert (ranged.from_seq, ranged.to_seq, ranged.is_range, ranged.skip_media) == (5, 9, True, True)
    with pytest.raises(ConfigError, match="fromMessageId and from_seq disagree"):
        SyncOptions.parse({"fromMessageId": 5, "from_seq": 6})
    with pytest.raises(ConfigError, match="skip_media must be true or false"):
        SyncOptions.parse({"skipMedia": "yes"})
