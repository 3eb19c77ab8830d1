"""The Telegram source against the fake Telethon client: mapping, paging, errors, sharing, secrets.

Everything runs offline: the fake returns Telethon's own types and raises Telethon's own
errors, so the mapping is checked against the real shapes. FloodWaits are "slept" by an
injected function that only records the seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from telethon import errors as tg_errors  # type: ignore[import-untyped]
from telethon.tl import types as tg  # type: ignore[import-untyped]

from syncflow.errors import (
    AuthError,
    ConfigError,
    PermanentSyncError,
    ProtocolError,
    RateLimitedError,
    SyncflowError,
    TransientSyncError,
)
from syncflow.sources.telegram import (
    EXTRA_COLUMNS,
    GENERIC_COLUMNS,
    TELEGRAM_COLUMNS,
    TYPE_CODES,
    ChatInfo,
    TelegramAccount,
    TelegramConnection,
    chat_info,
    classify,
    close_all_connections,
    default_client_factory,
    epoch_ms,
    login,
    map_message,
)
from syncflow.testing.telegram_fake import (
    BASE_DATE,
    FakeAccount,
    FakeTelegram,
    FakeTelegramClient,
    animation_media,
    audio_media,
    file_media,
    photo_media,
    sticker_media,
    video_media,
    video_note_media,
    voice_media,
)

SESSION = "1BVtsOKABu" + "Qx7-secret-session-string-" * 4
API_HASH = "0123456789abcdef0123456789abcdef"
KEY = "main-acc"
CHANNEL_ID = 1_234_567
CHANNEL = -1_000_001_234_567  # marked id of PeerChannel(CHANNEL_ID)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _no_shared_connections() -> Iterator[None]:
    yield
    close_all_connections()


@pytest.fixture
def world() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
def acct(world: FakeTelegram) -> FakeAccount:
    return world.add_account(SESSION, phone="+15550001", code="24680")


@pytest.fixture
def creds() -> TelegramAccount:
    return TelegramAccount(api_id=12345, api_hash=API_HASH, session=SESSION)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def conn(world: FakeTelegram, creds: TelegramAccount, sleeps: list[float]) -> Iterator[TelegramConnection]:
    connection = TelegramConnection(KEY, creds, client_factory=world.client_factory, sleep=sleeps.append)
    yield connection
    connection.close()


@pytest.fixture
def channel(acct: FakeAccount) -> int:
    chat_id = acct.add_channel(CHANNEL_ID, "News", username="news", members=1500, photo_id=777)
    assert chat_id == CHANNEL
    for i in range(1, 11):
        acct.add_message(chat_id, f"post {i}")
    return chat_id


def names(calls: list[tuple[str, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    """The kwargs of every logged call named ``name``, in order."""
    return [kwargs for n, kwargs in calls if n == name]


def message(**kw: Any) -> Any:
    """A Telethon Message in a basic group (peer -42), sent by user 7, at BASE_DATE."""
    fields: dict[str, Any] = {
        "id": 100,
        "peer_id": tg.PeerChat(42),
        "date": BASE_DATE,
        "message": "",
        "from_id": tg.PeerUser(7),
    }
    fields.update(kw)
    return tg.Message(**fields)


BASE_MS = 1_704_067_200_000  # BASE_DATE in epoch ms


# ------------------------------------------------------------------------------- mapping


def test_text_message_maps_to_generic_row_and_extras() -> None:
    m = map_message(message(message="hello 你好", reply_to=tg.MessageReplyHeader(reply_to_msg_id=98)))
    assert m.to_row() == ("100", None, 100, "-42", "7", TYPE_CODES["text"], "hello 你好", BASE_MS, None)
    assert m.extras() == {"edit_time": None, "kind": "text", "reply_to": 98, "extra": {}}
    assert m.to_full_row() == (*m.to_row(), None, "text", 98, {})


def test_column_orders_are_documented() -> None:
    assert GENERIC_COLUMNS == (
        "message_id",
        "server_msg_id",
        "seq",
        "conversation_id",
        "sender_id",
        "message_type",
        "content",
        "create_time",
        "server_time",
    )
    assert TELEGRAM_COLUMNS == (*GENERIC_COLUMNS, "edit_time", "kind", "reply_to", "extra")
    assert set(map_message(message()).extras()) == set(EXTRA_COLUMNS)


def test_generic_columns_match_the_seq_protocol_store() -> None:
    from syncflow.sources.http_seq import MESSAGE_COLUMNS
    from syncflow.store.messages import COLUMNS

    assert MESSAGE_COLUMNS == GENERIC_COLUMNS == COLUMNS


def test_type_codes_are_stable() -> None:
    # Stored rows depend on these numbers: a renumbering must fail here.
    assert dict(TYPE_CODES) == {
        "other": 0,
        "text": 1,
        "photo": 2,
        "video": 3,
        "document": 4,
        "sticker": 5,
        "voice": 6,
        "audio": 7,
        "animation": 8,
        "video_note": 9,
        "contact": 10,
        "geo": 11,
        "poll": 12,
        "webpage": 13,
        "service": 14,
    }


DOCUMENT_CASES = [
    (photo_media(5, width=1280, height=720, size=99_000), "photo", {"photo_id": 5, "width": 1280, "size": 99_000}),
    (
        video_media(12.5, 1920, 1080),
        "video",
        {"mime_type": "video/mp4", "duration": 12.5, "width": 1920, "height": 1080, "file_name": "clip.mp4"},
    ),
    (file_media("report.pdf", size=4_096), "document", {"mime_type": "application/pdf", "file_name": "report.pdf"}),
    (
        sticker_media("\U0001f600", set_id=77),
        "sticker",
        {"mime_type": "image/webp", "sticker_alt": "\U0001f600", "sticker_set_id": 77, "width": 512},
    ),
    (voice_media(7), "voice", {"mime_type": "audio/ogg", "duration": 7}),
    (audio_media(215, "Song", "Band"), "audio", {"duration": 215, "title": "Song", "performer": "Band"}),
    (animation_media(), "animation", {"mime_type": "video/mp4", "file_name": "funny.gif.mp4"}),
    (video_note_media(8.0, 384), "video_note", {"duration": 8.0, "width": 384, "height": 384}),
]


@pytest.mark.parametrize(("media", "kind", "expected"), DOCUMENT_CASES, ids=[c[1] for c in DOCUMENT_CASES])
def test_media_messages_map_kind_and_metadata_without_bytes(media: Any, kind: str, expected: dict[str, Any]) -> None:
    m = map_message(message(message="the caption", media=media))
    assert m.kind == kind
    assert m.to_row()[5] == TYPE_CODES[kind]
    assert m.to_row()[6] == "the caption"
    assert expected.items() <= m.media.items()  # type: ignore[union-attr]
    doc = json.dumps(m.extras())  # JSON-able, and no bytes slipped in (waveform, stripped thumb, file_reference)
    assert json.loads(doc)["extra"]["media"] == m.media
    assert "waveform" not in doc and "file_reference" not in doc


def _poll(question: str, *answers: str) -> Any:
    def text(value: str) -> Any:
        return tg.TextWithEntities(text=value, entities=[])

    poll = tg.Poll(
        id=3, question=text(question), hash=0, answers=[tg.PollAnswer(text=text(a), option=a.encode()) for a in answers]
    )
    return tg.MessageMediaPoll(poll=poll, results=tg.PollResults(total_voters=4))


OTHER_CASES = [
    (
        tg.MessageMediaContact(phone_number="+1555", first_name="Ann", last_name="B", vcard="", user_id=9),
        "contact",
        {"user_id": 9, "first_name": "Ann"},
    ),
    (tg.MessageMediaGeo(geo=tg.GeoPoint(long=2.35, lat=48.85, access_hash=1)), "geo", {"lat": 48.85, "long": 2.35}),
    (
        tg.MessageMediaVenue(
            geo=tg.GeoPoint(long=2.0, lat=1.0, access_hash=1),
            title="Cafe",
            address="Main St",
            provider="",
            venue_id="",
            venue_type="",
        ),
        "geo",
        {"title": "Cafe", "address": "Main St"},
    ),
    (_poll("Lunch?", "yes", "no"), "poll", {"question": "Lunch?", "answers": ["yes", "no"], "total_voters": 4}),
    (
        tg.MessageMediaWebPage(
            webpage=tg.WebPage(id=8, url="https://x.test/a", display_url="x.test/a", hash=0, site_name="X", title="A")
        ),
        "webpage",
        {"url": "https://x.test/a", "site_name": "X"},
    ),
    (tg.MessageMediaDice(value=6, emoticon="\U0001f3b2"), "other", {"media_class": "MessageMediaDice"}),
]


@pytest.mark.parametrize(("media", "kind", "expected"), OTHER_CASES, ids=[type(c[0]).__name__ for c in OTHER_CASES])
def test_other_media_kinds(media: Any, kind: str, expected: dict[str, Any]) -> None:
    m = map_message(message(message="see", media=media))
    assert (m.kind, m.to_row()[5]) == (kind, TYPE_CODES[kind])
    assert expected.items() <= m.media.items()  # type: ignore[union-attr]
    json.dumps(m.extras())


def test_service_message_names_its_action() -> None:
    msg = tg.MessageService(
        id=5, peer_id=tg.PeerChat(42), date=BASE_DATE, action=tg.MessageActionChatEditTitle(title="New name")
    )
    m = map_message(msg)
    assert (m.kind, m.action, m.action_data) == ("service", "MessageActionChatEditTitle", {"title": "New name"})
    assert m.to_row() == ("5", None, 5, "-42", None, TYPE_CODES["service"], "", BASE_MS, None)
    assert m.extras()["extra"] == {"action": "MessageActionChatEditTitle", "action_data": {"title": "New name"}}
    added = map_message(
        tg.MessageService(
            id=6, peer_id=tg.PeerChat(42), date=BASE_DATE, action=tg.MessageActionChatAddUser(users=[7, 8])
        )
    )
    assert (added.action, added.action_data) == ("MessageActionChatAddUser", {"users": [7, 8]})


def test_forward_origin_is_a_json_dict() -> None:
    fwd = tg.MessageFwdHeader(
        date=BASE_DATE - timedelta(days=1), from_id=tg.PeerChannel(99), channel_post=12, post_author="Ed"
    )
    m = map_message(message(message="fw", fwd_from=fwd))
    assert m.extras()["extra"]["forward"] == {
        "from_id": -1_000_000_000_099,
        "channel_post": 12,
        "post_author": "Ed",
        "date": BASE_MS - 86_400_000,
    }
    hidden = map_message(message(fwd_from=tg.MessageFwdHeader(date=BASE_DATE, from_name="Hidden User")))
    assert hidden.forward == {"from_name": "Hidden User", "date": BASE_MS}


def test_edit_date_is_the_server_time() -> None:
    edited = BASE_DATE + timedelta(minutes=5, microseconds=250_000)
    m = map_message(message(message="fixed", edit_date=edited))
    assert m.to_row()[8] == m.extras()["edit_time"] == BASE_MS + 300_250


@pytest.mark.parametrize(
    ("fields", "sender"),
    [
        ({"peer_id": tg.PeerChat(42), "from_id": tg.PeerUser(7)}, 7),
        ({"peer_id": tg.PeerUser(55), "from_id": None, "out": False}, 55),  # incoming private: the peer
        ({"peer_id": tg.PeerUser(55), "from_id": None, "out": True}, None),  # outgoing private: not said
        ({"peer_id": tg.PeerChannel(9), "from_id": None, "post": True}, -1_000_000_000_009),  # channel post
        ({"peer_id": tg.PeerChannel(9), "from_id": tg.PeerChannel(9)}, -1_000_000_000_009),  # anonymous admin
    ],
)
def test_sender_follows_telethons_rule(fields: dict[str, Any], sender: int | None) -> None:
    m = map_message(message(**fields))
    assert m.sender_id == sender
    assert m.to_row()[4] == (None if sender is None else str(sender))


def test_epoch_ms_is_exact() -> None:
    assert epoch_ms(datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)) == BASE_MS + 999
    assert epoch_ms(datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))) == BASE_MS
    assert epoch_ms(datetime(2024, 1, 1)) == BASE_MS  # naive: UTC
    assert epoch_ms(None) is None


# ------------------------------------------------------------------------------ read_page


def test_read_page_incremental_requests_only_above_the_cursor(
    conn: TelegramConnection, world: FakeTelegram, channel: int
) -> None:
    page = conn.read_page(channel, 4, 100)
    assert page.ids == [5, 6, 7, 8, 9, 10]
    assert [r[6] for r in page.rows] == [f"post {i}" for i in range(5, 11)]
    assert not page.has_more
    assert page.cursor_after(4) == 10
    assert names(world.calls, "iter_messages") == [
        {"entity": channel, "min_id": 4, "max_id": 0, "reverse": True, "limit": 100}
    ]


def test_read_page_pages_until_exhausted(conn: TelegramConnection, world: FakeTelegram, channel: int) -> None:
    cursor, pages = 0, []
    while True:
        page = conn.read_page(channel, cursor, 3)
        pages.append(page.ids)
        cursor = page.cursor_after(cursor)
        if not page.has_more:
            break
    assert pages == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert cursor == 10
    assert [c["min_id"] for c in names(world.calls, "iter_messages")] == [0, 3, 6, 9]


def test_full_last_page_is_followed_by_an_empty_one(conn: TelegramConnection, acct: FakeAccount, channel: int) -> None:
    acct.delete_message(channel, 10)
    assert conn.read_page(channel, 6, 3).has_more  # 7, 8, 9: as many as asked for
    empty = conn.read_page(channel, 9, 3)
    assert (empty.ids, empty.has_more, empty.cursor_after(9)) == ([], False, 9)


def test_new_messages_and_holes(conn: TelegramConnection, acct: FakeAccount, channel: int) -> None:
    assert conn.read_page(channel, 10, 50).ids == []  # nothing new
    acct.add_message(channel, "post 11")
    acct.add_message(channel, "post 12")
    acct.delete_message(channel, 11)
    page = conn.read_page(channel, 10, 50)
    assert page.ids == [12]
    assert page.cursor_after(10) == 12


def test_read_page_range_is_inclusive_and_pages(conn: TelegramConnection, world: FakeTelegram, channel: int) -> None:
    page = conn.read_page(channel, 3, 100, to_id=7)  # from 4 to 7
    assert (page.ids, page.has_more) == ([4, 5, 6, 7], False)
    assert names(world.calls, "iter_messages")[-1]["max_id"] == 8
    first = conn.read_page(channel, 3, 2, to_id=7)
    second = conn.read_page(channel, first.cursor_after(3), 2, to_id=7)
    assert (first.ids, first.has_more, second.ids, second.has_more) == ([4, 5], True, [6, 7], False)


def test_empty_range_asks_nothing(conn: TelegramConnection, world: FakeTelegram, channel: int) -> None:
    page = conn.read_page(channel, 7, 10, to_id=7)
    assert (page.ids, page.has_more) == ([], False)
    assert names(world.calls, "iter_messages") == []


class _UnorderedClient(FakeTelegramClient):
    """Yields the requested messages in reverse order and twice (a misbehaving server)."""

    async def _messages(
        self, chat_id: int, min_id: int, max_id: int, reverse: bool, limit: int | None
    ) -> AsyncIterator[Any]:
        got = [m async for m in super()._messages(chat_id, min_id, max_id, reverse, limit)]
        for m in [*reversed(got), got[0]]:
            yield m


def test_page_is_ascending_and_unique_whatever_the_order(
    world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount
) -> None:
    chat = acct.add_group(42, "Friends")
    for mid in (9, 2, 5):
        acct.add_message(chat, f"m{mid}", msg_id=mid)
    conn = TelegramConnection(KEY, creds, client_factory=lambda a: _UnorderedClient(world, a.session))
    try:
        page = conn.read_page(chat, 0, 10)
    finally:
        conn.close()
    assert page.ids == [2, 5, 9]
    assert [r[6] for r in page.rows] == ["m2", "m5", "m9"]


def test_edit_is_seen_on_refetch(conn: TelegramConnection, acct: FakeAccount, channel: int) -> None:
    acct.edit_message(channel, 3, "post 3 (fixed)", date=BASE_DATE + timedelta(hours=2))
    (row,) = conn.read_page(channel, 2, 1).rows
    assert row[6] == "post 3 (fixed)"
    assert row[7] == BASE_MS + 3_000  # the date stays
    assert row[8] == BASE_MS + 7_200_000


def test_every_kind_goes_through_read_page(conn: TelegramConnection, acct: FakeAccount) -> None:
    chat = acct.add_group(42, "Media")
    for media in (photo_media(), video_media(), file_media(), sticker_media(), voice_media(), audio_media()):
        acct.add_message(chat, "", media=media, from_id=7)
    acct.add_service(chat, tg.MessageActionChatEditTitle(title="Media!"), from_id=7)
    acct.add_message(chat, "re", from_id=7, reply_to=1)
    kinds = [(m.kind, m.reply_to) for m in conn.read_page(chat, 0, 100).messages]
    assert kinds == [
        ("photo", None),
        ("video", None),
        ("document", None),
        ("sticker", None),
        ("voice", None),
        ("audio", None),
        ("service", None),
        ("text", 1),
    ]


def test_skip_media_false_still_downloads_nothing(
    conn: TelegramConnection, acct: FakeAccount, world: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    chat = acct.add_group(42, "Media")
    acct.add_message(chat, "pic", media=photo_media())
    with caplog.at_level(logging.WARNING, logger="syncflow.sources.telegram"):
        with_media = conn.read_page(chat, 0, 10, skip_media=False)
        conn.read_page(chat, 0, 10, skip_media=False)
    assert with_media.messages == conn.read_page(chat, 0, 10).messages
    assert [r.getMessage() for r in caplog.records].count(
        f"{KEY}: media download is not implemented; storing media metadata only"
    ) == 1
    assert {name for name, _ in world.calls} <= {"connect", "is_user_authorized", "get_entity", "iter_messages"}


@pytest.mark.parametrize(("after_id", "count", "to_id"), [(-1, 10, None), (0, 0, None), (0, 10, -5), (True, 10, None)])
def test_read_page_rejects_bad_arguments(
    conn: TelegramConnection, channel: int, after_id: Any, count: Any, to_id: Any
) -> None:
    with pytest.raises(ConfigError, match=str(channel)):
        conn.read_page(channel, after_id, count, to_id=to_id)


# ------------------------------------------------------------------------------ read_chat


def test_read_chat_of_each_type(conn: TelegramConnection, acct: FakeAccount, world: FakeTelegram) -> None:
    user = acct.add_user(55, "Bob", "Builder", username="bob", photo_id=501)
    bot = acct.add_user(56, "Helper", username="help_bot", bot=True)
    group = acct.add_group(42, "Friends", members=4, photo_id=502)
    supergroup = acct.add_channel(77, "Big group", megagroup=True, username="biggroup", members=9000)
    channel = acct.add_channel(88, "Announcements", photo_id=503)  # no participants_count sent
    assert conn.read_chat(user) == ChatInfo(user, "user", "Bob Builder", username="bob", avatar_id=501)
    assert conn.read_chat(bot) == ChatInfo(bot, "bot", "Helper", username="help_bot")
    assert conn.read_chat(group) == ChatInfo(group, "group", "Friends", members_count=4, avatar_id=502)
    assert conn.read_chat(supergroup) == ChatInfo(
        -1_000_000_000_077, "supergroup", "Big group", username="biggroup", members_count=9000
    )
    assert conn.read_chat(channel) == ChatInfo(-1_000_000_000_088, "channel", "Announcements", avatar_id=503)
    # metadata is cheap: one get_entity per chat, nothing else (no get_participants)
    assert [n for n, _ in world.calls] == ["connect", "is_user_authorized"] + ["get_entity"] * 5


def test_read_chat_is_fresh(conn: TelegramConnection, acct: FakeAccount, world: FakeTelegram) -> None:
    group = acct.add_group(42, "Friends")
    assert conn.read_chat(group).title == "Friends"
    acct.chat(group).entity.title = "Best friends"
    assert conn.read_chat(group).title == "Best friends"
    assert len(names(world.calls, "get_entity")) == 2


def test_chat_info_of_forbidden_and_deleted_forms() -> None:
    assert chat_info(tg.ChatForbidden(id=42, title="Old")) == ChatInfo(-42, "group", "Old", left=True)
    gone = chat_info(tg.ChannelForbidden(id=9, access_hash=1, title="Closed", megagroup=True))
    assert (gone.type, gone.left) == ("supergroup", True)
    deleted = chat_info(tg.User(id=5, deleted=True))
    assert (deleted.title, deleted.left) == ("Deleted Account", True)
    migrated = chat_info(
        tg.Chat(
            id=42,
            title="Was small",
            photo=tg.ChatPhotoEmpty(),
            participants_count=2,
            date=BASE_DATE,
            version=3,
            deactivated=True,
            migrated_to=tg.InputChannel(channel_id=77, access_hash=1),
        )
    )
    assert (migrated.left, migrated.migrated_to) == (True, -1_000_000_000_077)
    with pytest.raises(ProtocolError, match="PeerUser"):
        chat_info(tg.PeerUser(5))


# ---------------------------------------------------------------------------- list_dialogs


@pytest.fixture
def dialogs(acct: FakeAccount) -> dict[str, int]:
    chats = {
        "user": acct.add_user(55, "Bob"),
        "bot": acct.add_user(56, "Helper", bot=True),
        "group": acct.add_group(42, "Friends"),
        "supergroup": acct.add_channel(77, "Big group", megagroup=True),
        "channel": acct.add_channel(88, "News"),
        "archived": acct.add_channel(99, "Old news", archived=True),
        "gone": acct.add_group(43, "Left long ago"),
    }
    acct.remove(chats["gone"])
    for n, chat_id in enumerate(chats.values()):
        acct.add_message(chat_id, "hi", date=BASE_DATE + timedelta(minutes=n))
    return chats


def test_list_dialogs_filters_types_and_archive(
    conn: TelegramConnection, world: FakeTelegram, dialogs: dict[str, int]
) -> None:
    everything = conn.list_dialogs(archived=True)
    assert {i.chat_id for i in everything} == set(dialogs.values()) - {dialogs["gone"]}
    assert {i.chat_id for i in everything if i.archived} == {dialogs["archived"]}
    main = conn.list_dialogs()
    assert {i.chat_id for i in main} == set(dialogs.values()) - {dialogs["gone"], dialogs["archived"]}
    assert all(i.archived is False for i in main)
    assert [i.chat_id for i in conn.list_dialogs({"user"})] == [dialogs["user"]]
    assert {i.type for i in conn.list_dialogs({"group", "supergroup"})} == {"group", "supergroup"}
    assert {i.chat_id for i in conn.list_dialogs({"channel"}, archived=True)} == {
        dialogs["channel"],
        dialogs["archived"],
    }
    assert [c["archived"] for c in names(world.calls, "iter_dialogs")] == [None, False, False, False, None]


def test_list_dialogs_is_in_telegram_order_with_marked_ids(conn: TelegramConnection, dialogs: dict[str, int]) -> None:
    ids = [i.chat_id for i in conn.list_dialogs()]
    assert ids == [dialogs[k] for k in ("channel", "supergroup", "group", "bot", "user")]  # latest message first
    assert dialogs["channel"] == -1_000_000_000_088 and dialogs["group"] == -42


def test_list_dialogs_rejects_unknown_types(conn: TelegramConnection, world: FakeTelegram) -> None:
    with pytest.raises(ConfigError, match="megachannel"):
        conn.list_dialogs({"user", "megachannel"})
    assert world.calls == []


def test_cold_session_finds_chats_through_one_dialog_listing(world: FakeTelegram, creds: TelegramAccount) -> None:
    acct = world.add_account(SESSION, cold_cache=True)  # a fresh StringSession: no entity cache
    a, b = acct.add_group(42, "A"), acct.add_group(43, "B")
    acct.add_message(a, "in a")
    acct.add_message(b, "in b")
    conn = TelegramConnection(KEY, creds, client_factory=world.client_factory)
    try:
        assert conn.read_page(a, 0, 10).ids == [1]
        assert conn.read_page(b, 0, 10).ids == [2]
        assert conn.read_chat(b).title == "B"
        with pytest.raises(PermanentSyncError, match=r"chat 12345.*unknown to this account"):
            conn.read_page(12345, 0, 10)
    finally:
        conn.close()
    assert names(world.calls, "iter_dialogs") == [{"archived": None}]  # listed once, archived included


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "error", [tg_errors.FloodWaitError, tg_errors.FloodPremiumWaitError, tg_errors.SlowModeWaitError]
)
def test_short_flood_wait_is_slept_once_then_succeeds(
    conn: TelegramConnection, world: FakeTelegram, channel: int, sleeps: list[float], error: Any
) -> None:
    world.flood_wait(30, error=error)
    assert conn.read_page(channel, 0, 5).ids == [1, 2, 3, 4, 5]
    assert sleeps == [30.0]
    assert len(names(world.calls, "iter_messages")) == 2


def test_flood_wait_equal_to_the_maximum_is_slept(
    world: FakeTelegram, acct: FakeAccount, channel: int, sleeps: list[float]
) -> None:
    creds = TelegramAccount(api_id=1, api_hash=API_HASH, session=SESSION, flood_wait_max=60)
    conn = TelegramConnection(KEY, creds, client_factory=world.client_factory, sleep=sleeps.append)
    try:
        world.flood_wait(60)
        assert len(conn.read_page(channel, 0, 5)) == 5
    finally:
        conn.close()
    assert sleeps == [60.0]


def test_second_flood_wait_is_rate_limited_with_retry_after(
    conn: TelegramConnection, world: FakeTelegram, channel: int, sleeps: list[float]
) -> None:
    world.flood_wait(45, times=2)
    with pytest.raises(RateLimitedError) as info:
        conn.read_page(channel, 0, 5)
    assert info.value.retry_after == 45.0
    assert "45s" in str(info.value) and KEY in str(info.value) and str(channel) in str(info.value)
    assert sleeps == [45.0]


def test_long_flood_wait_fails_as_transient_naming_the_wait(
    conn: TelegramConnection, world: FakeTelegram, channel: int, sleeps: list[float]
) -> None:
    world.flood_wait(3600, calls=["get_entity"])
    with pytest.raises(TransientSyncError) as info:
        conn.read_page(channel, 0, 5)
    assert not isinstance(info.value, RateLimitedError)  # the engine must not wait an hour either
    assert "3600s" in str(info.value) and "flood_wait_max=300s" in str(info.value)
    assert str(channel) in str(info.value) and KEY in str(info.value)
    assert sleeps == []
    assert conn.read_page(channel, 0, 5).ids == [1, 2, 3, 4, 5]  # next time it works


AUTH_ERRORS = [
    tg_errors.AuthKeyUnregisteredError,
    tg_errors.SessionRevokedError,
    tg_errors.SessionExpiredError,
    tg_errors.UserDeactivatedError,
    tg_errors.UserDeactivatedBanError,
    tg_errors.AuthKeyDuplicatedError,
    tg_errors.AuthKeyInvalidError,
]


@pytest.mark.parametrize("error", AUTH_ERRORS)
def test_revoked_session_is_an_auth_error_not_retried(
    conn: TelegramConnection, world: FakeTelegram, acct: FakeAccount, channel: int, sleeps: list[float], error: Any
) -> None:
    assert len(conn.read_page(channel, 0, 1)) == 1
    acct.revoke(error)
    before = len(world.calls)
    with pytest.raises(AuthError) as info:
        conn.read_page(channel, 1, 5)
    assert f"syncflow telegram login {KEY}" in str(info.value)
    assert error.__name__ in str(info.value)
    assert not info.value.retryable
    assert [n for n, _ in world.calls[before:]] == ["iter_messages"]  # once, no retry
    assert sleeps == []


def test_unauthorised_session_at_connect_is_an_auth_error(world: FakeTelegram, channel: int) -> None:
    stranger = TelegramAccount(api_id=1, api_hash=API_HASH, session="1" + "A" * 40)  # not a known session
    conn = TelegramConnection(KEY, stranger, client_factory=world.client_factory)
    try:
        with pytest.raises(AuthError, match=rf"not authorised.*syncflow telegram login {KEY}"):
            conn.read_page(channel, 0, 5)
    finally:
        conn.close()
    assert [n for n, _ in world.calls] == ["connect", "is_user_authorized", "disconnect"]  # nothing read


CHAT_ERRORS = [
    tg_errors.ChannelPrivateError,
    tg_errors.ChatForbiddenError,
    tg_errors.ChatAdminRequiredError,
    tg_errors.ChannelInvalidError,
    tg_errors.PeerIdInvalidError,
    tg_errors.UserBannedInChannelError,
]


@pytest.mark.parametrize("error", CHAT_ERRORS)
def test_private_chat_fails_that_chat_only(
    conn: TelegramConnection, acct: FakeAccount, channel: int, error: Any
) -> None:
    other = acct.add_group(42, "Friends")
    acct.add_message(other, "still here")
    acct.restrict(channel, error)
    with pytest.raises(PermanentSyncError) as info:
        conn.read_page(channel, 0, 5)
    assert not isinstance(info.value, AuthError)
    assert f"chat {channel}" in str(info.value) and error.__name__ in str(info.value)
    assert conn.read_page(other, 0, 5).ids == [1]  # same connection, other chat: fine
    with pytest.raises(PermanentSyncError):
        conn.read_chat(channel)


def test_removed_chat_is_permanent(conn: TelegramConnection, acct: FakeAccount, channel: int) -> None:
    acct.remove(channel)
    with pytest.raises(PermanentSyncError, match="unknown to this account"):
        conn.read_chat(channel)


@pytest.mark.parametrize(
    "error",
    [
        lambda: ConnectionError("Connection reset by peer"),
        lambda: OSError(113, "No route to host"),
        lambda: TimeoutError(),
        lambda: asyncio.IncompleteReadError(partial=b"HTTP/1.1 400", expected=1_347_703_872),  # seen offline here
        lambda: tg_errors.ServerError(request=None, message="INTERNAL", code=500),
        lambda: tg_errors.RpcCallFailError(request=None),
        lambda: tg_errors.TimedOutError(request=None, message="Timeout", code=-503),
    ],
    ids=["ConnectionError", "OSError", "TimeoutError", "IncompleteRead", "ServerError", "RpcCallFail", "TimedOut"],
)
def test_network_and_server_errors_are_transient_and_reconnect(
    conn: TelegramConnection, world: FakeTelegram, channel: int, sleeps: list[float], error: Any
) -> None:
    assert len(conn.read_page(channel, 0, 1)) == 1
    world.fail_next(error, calls=["iter_messages"])
    with pytest.raises(TransientSyncError) as info:
        conn.read_page(channel, 1, 5)
    assert not isinstance(info.value, RateLimitedError)
    assert info.value.retryable and str(channel) in str(info.value)
    assert conn.read_page(channel, 1, 5).ids == [2, 3, 4, 5, 6]
    assert sleeps == []


def test_connection_error_makes_the_next_call_connect_again(
    conn: TelegramConnection, world: FakeTelegram, channel: int
) -> None:
    world.fail_next(ConnectionError("refused"), calls=["connect"])
    with pytest.raises(TransientSyncError, match=f"account '{KEY}'.*ConnectionError"):
        conn.read_page(channel, 0, 5)
    assert conn.read_page(channel, 0, 5).ids == [1, 2, 3, 4, 5]
    world.network_error(calls=["iter_messages"])
    with pytest.raises(TransientSyncError):
        conn.read_page(channel, 5, 5)
    conn.read_page(channel, 5, 5)
    assert len(names(world.calls, "connect")) == 3
    assert world.factory_calls == 1  # the same client reconnects


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (tg_errors.FloodWaitError(request=None, capture=17), RateLimitedError),
        (tg_errors.SessionRevokedError(request=None), AuthError),
        (tg_errors.SessionPasswordNeededError(request=None), AuthError),
        (tg_errors.ChannelPrivateError(request=None), PermanentSyncError),
        (ValueError("Could not find the input entity for PeerUser(user_id=5)"), PermanentSyncError),
        (tg_errors.BadRequestError(request=None, message="SOMETHING_NEW"), PermanentSyncError),
        (tg_errors.RPCError(request=None, message="WORKER_BUSY", code=-500), TransientSyncError),
        (ConnectionResetError(), TransientSyncError),
        (tg_errors.InvalidBufferError(b"\x6c\xfe\xff\xff"), TransientSyncError),
        (RuntimeError("bug"), PermanentSyncError),
    ],
    ids=lambda v: type(v).__name__,
)
def test_classify_table(error: BaseException, expected: type[SyncflowError]) -> None:
    result = classify(error, chat=-42, account="acc-1")
    assert type(result) is expected
    assert "telegram account 'acc-1', chat -42" in str(result)
    if isinstance(result, RateLimitedError):
        assert result.retry_after == 17.0 and "17s" in str(result)
    if isinstance(result, AuthError):
        assert "syncflow telegram login acc-1" in str(result)


def test_classify_leaves_syncflow_errors_alone() -> None:
    original = ConfigError("x")
    assert classify(original, chat=None, account="a") is original


# ---------------------------------------------------------------------- one client per account


def test_chats_of_one_account_share_one_client(
    world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount, channel: int
) -> None:
    group = acct.add_group(42, "Friends")
    acct.add_message(group, "hi")
    first = TelegramConnection.shared(KEY, creds, client_factory=world.client_factory)
    second = TelegramConnection.shared(KEY, creds, client_factory=world.client_factory)
    assert first is second
    assert first.read_page(channel, 0, 3).ids == [1, 2, 3]
    assert second.read_page(group, 0, 3).ids == [1]
    assert world.factory_calls == 1
    assert len(names(world.calls, "connect")) == 1


def test_shared_connection_is_thread_safe(
    world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount, channel: int
) -> None:
    group = acct.add_group(42, "Friends")
    for i in range(20):
        acct.add_message(group, f"g{i}")

    def work(n: int) -> list[int]:
        conn = TelegramConnection.shared(KEY, creds, client_factory=world.client_factory)
        chat = channel if n % 2 else group
        return conn.read_page(chat, n % 5, 100).ids

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(32)))
    for n, ids in enumerate(results):
        last = 10 if n % 2 else 20
        assert ids == list(range(n % 5 + 1, last + 1))
    assert world.factory_calls == 1
    assert len(names(world.calls, "connect")) == 1


class _GatedClient(FakeTelegramClient):
    """``connect`` is held until the test opens the gate (a slow network handshake)."""

    def __init__(self, world: FakeTelegram, session: str) -> None:
        super().__init__(world, session)
        self.entries = 0
        self.entered = threading.Event()
        self.gate: asyncio.Event | None = None

    async def connect(self) -> None:
        self.entries += 1
        self.gate = self.gate or asyncio.Event()
        self.entered.set()
        await self.gate.wait()
        await super().connect()


def test_concurrent_first_calls_connect_once(world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount) -> None:
    # White-box: drives the connection's loop directly to make the interleaving deterministic.
    clients: list[_GatedClient] = []

    def factory(account: TelegramAccount) -> _GatedClient:
        clients.append(_GatedClient(world, account.session))
        return clients[-1]

    conn = TelegramConnection(KEY, creds, client_factory=factory)
    try:
        first = conn._loop.submit(conn._ensure_ready())
        while not clients:  # the factory runs on the loop thread
            conn._loop.submit(asyncio.sleep(0)).result()
        (client,) = clients
        client.entered.wait()  # the first caller is inside connect()
        second = conn._loop.submit(conn._ensure_ready())

        async def let_others_run() -> None:
            for _ in range(5):
                await asyncio.sleep(0)

        conn._loop.submit(let_others_run()).result()  # the second caller has run as far as it can
        assert client.entries == 1  # it waits for the first connect instead of starting its own
        assert client.gate is not None
        conn._loop.loop.call_soon_threadsafe(client.gate.set)
        assert first.result() is second.result() is client
    finally:
        if clients and clients[0].gate is not None:
            conn._loop.loop.call_soon_threadsafe(clients[0].gate.set)
        conn.close()
    assert len(clients) == 1 and clients[0].entries == 1
    assert [n for n, _ in world.calls] == ["connect", "is_user_authorized", "disconnect"]


def test_close_during_a_call_fails_it_as_transient(
    world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount, channel: int
) -> None:
    clients: list[_GatedClient] = []

    def factory(account: TelegramAccount) -> _GatedClient:
        clients.append(_GatedClient(world, account.session))
        return clients[-1]

    conn = TelegramConnection(KEY, creds, client_factory=factory)
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(conn.read_page, channel, 0, 5)
        while not clients:
            conn._loop.submit(asyncio.sleep(0)).result()
        clients[0].entered.wait()  # the call is stuck in connect()
        conn.close()
        with pytest.raises(TransientSyncError, match="closed while the call ran"):
            call.result()


def test_accounts_get_their_own_clients(world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount) -> None:
    other_session = "1" + "B" * 60
    world.add_account(other_session).add_group(5, "Theirs")
    mine = TelegramConnection.shared(KEY, creds, client_factory=world.client_factory)
    theirs = TelegramConnection.shared(
        "other",
        TelegramAccount(api_id=1, api_hash=API_HASH, session=other_session),
        client_factory=world.client_factory,
    )
    assert mine is not theirs
    assert theirs.read_chat(-5).title == "Theirs"
    with pytest.raises(PermanentSyncError):
        mine.read_chat(-5)
    assert world.factory_calls == 2


def test_new_session_replaces_the_shared_connection(
    world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount, channel: int
) -> None:
    old = TelegramConnection.shared(KEY, creds, client_factory=world.client_factory)
    old.read_chat(channel)
    acct2 = world.add_account("1" + "C" * 60)
    acct2.add_group(5, "After re-login")
    relogged = TelegramAccount(api_id=creds.api_id, api_hash=API_HASH, session=acct2.session)
    new = TelegramConnection.shared(KEY, relogged, client_factory=world.client_factory)
    assert new is not old
    assert names(world.clients[0].calls, "disconnect") == [{}]
    assert new.read_chat(-5).title == "After re-login"
    with pytest.raises(ConfigError, match="closed"):
        old.read_chat(channel)


def test_close_disconnects_and_leaves_the_registry(
    world: FakeTelegram, creds: TelegramAccount, acct: FakeAccount, channel: int
) -> None:
    conn = TelegramConnection.shared(KEY, creds, client_factory=world.client_factory)
    conn.read_chat(channel)
    conn.close()
    conn.close()  # idempotent
    assert [n for n, _ in world.calls][-1] == "disconnect"
    assert len(names(world.calls, "disconnect")) == 1
    assert TelegramConnection.shared(KEY, creds, client_factory=world.client_factory) is not conn


def test_close_without_use_builds_no_client(world: FakeTelegram, creds: TelegramAccount) -> None:
    TelegramConnection(KEY, creds, client_factory=world.client_factory).close()
    assert world.factory_calls == 0


# ---------------------------------------------------------------------------------- secrets


def test_secrets_never_in_repr_or_str(conn: TelegramConnection, creds: TelegramAccount, channel: int) -> None:
    conn.read_chat(channel)
    for text in (repr(creds), str(creds), repr(conn), str(conn)):
        assert SESSION not in text and API_HASH not in text
    assert "12345" in repr(creds)


def test_secrets_never_in_error_messages(
    conn: TelegramConnection, world: FakeTelegram, acct: FakeAccount, channel: int, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        world.fail_next(OSError(f"proxy said: bad auth {SESSION} / {API_HASH}"), calls=["get_entity"])
        with pytest.raises(TransientSyncError) as info:
            conn.read_page(channel, 0, 5)
        seen.append(str(info.value))
        world.flood_wait(10_000)
        with pytest.raises(TransientSyncError) as info:
            conn.read_page(channel, 0, 5)
        seen.append(str(info.value))
        acct.revoke()
        with pytest.raises(AuthError) as auth:
            conn.read_page(channel, 0, 5)
        seen.append(str(auth.value))
    seen.extend(r.getMessage() for r in caplog.records)
    assert "***" in seen[0]
    for text in seen:
        assert SESSION not in text and API_HASH not in text


def test_account_validation_never_echoes_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        TelegramAccount(api_id="12345", api_hash=API_HASH, session=SESSION)  # type: ignore[arg-type]
    assert API_HASH not in str(info.value) and SESSION not in str(info.value)
    with pytest.raises(ConfigError):
        TelegramAccount(api_id=1, api_hash="", session=SESSION)
    with pytest.raises(ConfigError):
        TelegramAccount(api_id=1, api_hash=API_HASH, session=SESSION, flood_wait_max=-1)


def test_default_factory_builds_a_telethon_client_that_never_sleeps_silently() -> None:
    client = default_client_factory(TelegramAccount(api_id=1, api_hash=API_HASH, session=""))
    assert type(client).__name__ == "TelegramClient"
    assert client.flood_sleep_threshold == 0  # every FloodWait reaches the connection's flood_wait_max


def test_default_factory_rejects_a_bad_session_without_echoing_it() -> None:
    bad = "9not-a-session-" + "z" * 30
    with pytest.raises(ConfigError) as info:
        default_client_factory(TelegramAccount(api_id=1, api_hash=API_HASH, session=bad))
    assert bad not in str(info.value)


# ------------------------------------------------------------------------------------ login


def _answers(*values: str) -> tuple[Any, list[str]]:
    asked: list[str] = []
    it = iter(values)

    def prompt() -> str:
        value = next(it)
        asked.append(value)
        return value

    return prompt, asked


def test_login_returns_the_session_string(world: FakeTelegram, caplog: pytest.LogCaptureFixture) -> None:
    acct = world.add_account("1" + "L" * 60, phone="+15550002", code="11111")
    code, codes = _answers("11111")
    password, passwords = _answers()
    with caplog.at_level(logging.DEBUG):
        session = login(1, API_HASH, "+15550002", code, password, account="acc", client_factory=world.client_factory)
    assert session == acct.session
    assert (codes, passwords) == (["11111"], [])
    assert [n for n, _ in world.calls] == ["connect", "send_code_request", "sign_in", "disconnect"]
    assert all(acct.session not in r.getMessage() for r in caplog.records)


def test_login_with_two_step_password_and_a_wrong_code(world: FakeTelegram) -> None:
    acct = world.add_account("1" + "P" * 60, phone="+15550003", code="22222", password="hunter2")
    code, codes = _answers("00000", "22222")
    password, passwords = _answers("wrong", "hunter2")
    assert login(1, API_HASH, "+15550003", code, password, client_factory=world.client_factory) == acct.session
    assert (codes, passwords) == (["00000", "22222"], ["wrong", "hunter2"])
    assert names(world.calls, "sign_in")[-1] == {"phone": None, "code": None, "password": "<password>"}


def test_login_gives_up_after_the_attempts(world: FakeTelegram) -> None:
    world.add_account("1" + "Q" * 60, phone="+15550004", code="33333")
    code, codes = _answers("1", "2", "3")
    with pytest.raises(AuthError, match="PhoneCodeInvalidError"):
        login(1, API_HASH, "+15550004", code, lambda: "", account="acc", client_factory=world.client_factory)
    assert codes == ["1", "2", "3"]
    assert [n for n, _ in world.calls][-1] == "disconnect"


def test_login_flood_wait_is_rate_limited(world: FakeTelegram) -> None:
    world.add_account("1" + "R" * 60, phone="+15550005")
    world.flood_wait(120, calls=["send_code_request"])
    with pytest.raises(RateLimitedError) as info:
        login(1, API_HASH, "+15550005", lambda: "x", lambda: "y", account="acc", client_factory=world.client_factory)
    assert info.value.retry_after == 120.0
