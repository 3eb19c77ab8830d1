"""Telegram in the store, on SQLite and PostgreSQL: the extended message rows, the account
lease (and its gate, as two processes would use it), chat registration, titles and search.

Rows come from the real source adapter over the fake Telethon client, so the store is fed
exactly what a sync feeds it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from syncflow.engine.account_lease import AccountGate
from syncflow.errors import ProtocolError, TransientSyncError
from syncflow.sources.base import ConversationRow
from syncflow.sources.telegram import ChatInfo, TelegramAccount, close_all_connections
from syncflow.sources.telegram_chat import TelegramChatSource, chat_instance_name, parse_types
from syncflow.store import account_leases as leases
from syncflow.store import instances as inst_svc
from syncflow.store.chats import chat_titles, instance_choices, register_chats
from syncflow.store.conversations import apply_conversations
from syncflow.store.db import session_scope
from syncflow.store.messages import EXTENDED_COLUMNS, apply_message_batch
from syncflow.store.models import AccountLease, Instance, Message
from syncflow.testing.telegram_fake import FakeTelegram, photo_media

SESSION = "1Bfake-session-string-for-the-store-tests"
API_HASH = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    close_all_connections()


@pytest.fixture
def world() -> FakeTelegram:
    return FakeTelegram()


def _instance(engine: Engine, name: str, kind: str = "telegram", config: dict[str, Any] | None = None) -> int:
    with session_scope(engine) as s:
        inst = inst_svc.add_instance(s, name=name, kind=kind, block_name="acc" if kind == "telegram" else None)
        inst.config = config
        s.flush()
        return inst.id


def _source(world: FakeTelegram, chat: int) -> TelegramChatSource:
    account = TelegramAccount(api_id=1, api_hash=API_HASH, session=SESSION)
    return TelegramChatSource("acc", account, chat, client_factory=world.client_factory)


def _stored(engine: Engine, iid: int) -> dict[str, tuple[Any, ...]]:
    with session_scope(engine) as s:
        cols = [getattr(Message, c) for c in EXTENDED_COLUMNS]
        return {r[0]: tuple(r) for r in s.execute(select(*cols).where(Message.instance_id == iid))}


# --------------------------------------------------------------------------- messages


def test_telegram_rows_store_the_extra_columns_and_count_edits_as_updated(engine: Engine, world: FakeTelegram) -> None:
    acct = world.add_account(SESSION)
    chat = acct.add_channel(77, "News", megagroup=True)
    acct.add_message(chat, "hello", from_id=5)
    acct.add_message(chat, "look", from_id=6, media=photo_media(9), reply_to=1)
    acct.add_message(chat, "third", from_id=5)
    source = _source(world, chat)
    iid = _instance(engine, "tg-news", config={"chat_id": chat, "account": "acc"})

    page = source.read_page(0, 10)
    assert len(page.rows[0]) == len(EXTENDED_COLUMNS)
    with engine.begin() as conn:
        counts = apply_message_batch(conn, instance_id=iid, rows=page.rows)
    assert (counts.created, counts.updated, counts.unchanged) == (3, 0, 0)
    rows = _stored(engine, iid)
    photo = rows["2"]
    assert photo[EXTENDED_COLUMNS.index("kind")] == "photo"
    assert photo[EXTENDED_COLUMNS.index("reply_to")] == "1"
    assert photo[EXTENDED_COLUMNS.index("extra")]["media"]["photo_id"] == 9
    assert photo[EXTENDED_COLUMNS.index("edit_time")] is None
    assert rows == {r[0]: tuple(r) for r in page.rows}  # exactly what the source mapped

    with engine.begin() as conn:  # the same page again: nothing changes
        counts = apply_message_batch(conn, instance_id=iid, rows=source.read_page(0, 10).rows)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 0, 3)

    acct.edit_message(chat, 3, "third, edited")
    again = source.read_page(0, 10)
    with engine.begin() as conn:
        counts = apply_message_batch(conn, instance_id=iid, rows=again.rows)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 1, 2)
    edited = _stored(engine, iid)["3"]
    assert edited[EXTENDED_COLUMNS.index("content")] == "third, edited"
    assert edited[EXTENDED_COLUMNS.index("edit_time")] is not None
    assert edited[EXTENDED_COLUMNS.index("server_time")] == edited[EXTENDED_COLUMNS.index("edit_time")]


def test_a_seq_batch_still_writes_nine_columns_and_shapes_do_not_mix(engine: Engine) -> None:
    iid = _instance(engine, "im-1", kind="http-seq")
    row = ("m1", "s1", 1, "c1", "u1", 1, "hi", 1000, 1001)
    with engine.begin() as conn:
        counts = apply_message_batch(conn, instance_id=iid, rows=[row])
        assert counts.created == 1
    stored = _stored(engine, iid)["m1"]
    assert stored[:9] == row and stored[9:] == (None, None, None, None)
    with engine.begin() as conn, pytest.raises(ProtocolError, match="mixes row shapes"):
        apply_message_batch(conn, instance_id=iid, rows=[row, (*row, None, "text", None, {})])
    with engine.begin() as conn, pytest.raises(ProtocolError, match="has 3 fields"):
        apply_message_batch(conn, instance_id=iid, rows=[("a", "b", 1)])


def test_two_shapes_in_one_transaction_on_one_connection(engine: Engine, world: FakeTelegram) -> None:
    """A seq page and a Telegram page, one after the other on one connection (each shape has
    its own PostgreSQL stage)."""
    acct = world.add_account(SESSION)
    chat = acct.add_group(5, "Family")
    for i in range(3):
        acct.add_message(chat, f"m{i}", from_id=1)
    seq_id = _instance(engine, "im-2", kind="http-seq")
    tg_id = _instance(engine, "tg-fam", config={"chat_id": chat})
    with engine.connect() as conn:
        for n in range(2):
            with conn.begin():
                a = apply_message_batch(conn, instance_id=seq_id, rows=[(f"x{n}", None, n + 1, "c", "u", 1, "t", 1, 1)])
                b = apply_message_batch(conn, instance_id=tg_id, rows=_source(world, chat).read_page(0, 10).rows)
            assert a.created == 1
            assert (b.created, b.unchanged) == ((3, 0) if n == 0 else (0, 3))
    assert len(_stored(engine, tg_id)) == 3 and len(_stored(engine, seq_id)) == 2


# ----------------------------------------------------------------------- account lease


def test_account_lease_slots_expire_and_renew(engine: Engine) -> None:
    with session_scope(engine) as s:
        assert leases.try_acquire(s, account="a", owner="p1", limit=1, lease_seconds=30) == 0
    with session_scope(engine) as s:
        assert leases.try_acquire(s, account="a", owner="p2", limit=1, lease_seconds=30) is None
        assert [h.owner for h in leases.holders(s, account="a")] == ["p1"]
        assert leases.try_acquire(s, account="a", owner="p1", limit=1, lease_seconds=30) == 0  # re-entrant
    with session_scope(engine) as s:  # a second slot lets a second process in
        assert leases.try_acquire(s, account="a", owner="p2", limit=2, lease_seconds=30) == 1
        assert leases.try_acquire(s, account="a", owner="p3", limit=2, lease_seconds=30) is None
    with session_scope(engine) as s:  # p1 died: its lease runs out
        s.execute(
            update(AccountLease)
            .where(AccountLease.owner == "p1")
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    with session_scope(engine) as s:
        assert leases.try_acquire(s, account="a", owner="p3", limit=2, lease_seconds=30) == 0
        assert leases.renew(s, account="a", owner="p1", slot=0, lease_seconds=30) is False
        assert leases.release(s, account="a", owner="p1", slot=0) is False
        assert leases.release(s, account="a", owner="p3", slot=0) is True
        assert [h.owner for h in leases.holders(s, account="a")] == ["p2"]


def _gate(engine: Engine, owner: str, **kw: Any) -> AccountGate:
    kw = {"lease_seconds": 5.0, "wait_max": 10.0, "idle_seconds": 0.3, "poll": 0.05, **kw}
    return AccountGate("telegram:acc", label="telegram account 'acc'", engine=engine, owner=owner, **kw)


def test_gate_lets_a_second_process_in_only_after_the_first_disconnected(engine: Engine) -> None:
    a, b = _gate(engine, "proc-a"), _gate(engine, "proc-b")
    events: list[tuple[str, float]] = []
    a.on_release("conn", lambda: events.append(("a-disconnected", time.monotonic())))
    try:
        with a.hold():
            assert a.held
            with pytest.raises(TransientSyncError, match=r"in use by proc-a; waited 0.2s"):
                with _gate(engine, "proc-c", wait_max=0.2).hold():
                    pass

            def use_b() -> None:
                with b.hold():
                    events.append(("b-in", time.monotonic()))

            t = threading.Thread(target=use_b)
            t.start()
            time.sleep(0.5)
            assert not events  # b waits while a holds (in use, not idle)
        t.join(10)
        assert [e[0] for e in events] == ["a-disconnected", "b-in"]
        assert not a.held and a.acquisitions == 1
        with session_scope(engine) as s:
            assert [h.owner for h in leases.holders(s, account="telegram:acc")] == ["proc-b"]
    finally:
        a.close()
        b.close()


def test_gate_disconnects_when_its_lease_was_taken_over(engine: Engine) -> None:
    a = _gate(engine, "proc-a", lease_seconds=0.6, idle_seconds=30)
    lost = threading.Event()
    a.on_release("conn", lost.set)
    try:
        with a.hold():
            with session_scope(engine) as s:  # as if a were frozen past its lease and b took over
                s.execute(update(AccountLease).values(owner="proc-b"))
            assert lost.wait(5)
            assert not a.held
    finally:
        a.close()


# --------------------------------------------------------------------- registration


def _chat(chat_id: int, title: str, type_: str = "group", **kw: Any) -> ChatInfo:
    return ChatInfo(chat_id=chat_id, type=type_, title=title, archived=kw.pop("archived", False), **kw)  # type: ignore[arg-type]


def test_discovery_adds_new_chats_keeps_names_and_reports_left_ones(engine: Engine) -> None:
    first = [
        _chat(-1000000001234, "Family Chat", "supergroup"),
        _chat(42, "Ann Smith", "user", username="ann"),
        _chat(-55, "Old group", "group", archived=True),
        _chat(-1000000009999, "News", "channel"),
    ]
    with session_scope(engine) as s:
        found = register_chats(s, account="main", chats=first, types=parse_types(["user,group"]), tags=["tg"])
    assert [c["name"] for c in found.added] == ["main-family-chat-c1234", "main-ann-smith-u42"]
    assert found.filtered_out == 2  # the archived group, the channel
    with session_scope(engine) as s:
        inst = inst_svc.get_instance(s, name="main-family-chat-c1234")
        assert (inst.kind, inst.block_name, inst.tags) == ("telegram", "main", ["tg"])
        assert inst.config == {
            "chat_id": -1000000001234,
            "account": "main",
            "type": "supergroup",
            "title": "Family Chat",
            "username": None,
            "archived": False,
        }

    second = [
        _chat(-1000000001234, "Family (renamed)", "supergroup"),  # known: keeps its name
        _chat(-55, "Old group", "group", archived=True),
        _chat(7, "新朋友", "user"),  # no ASCII in the title: the type names it
        _chat(-1000000009999, "News", "channel"),
    ]
    with session_scope(engine) as s:
        found = register_chats(s, account="main", chats=second, archived=True)
    assert [c["name"] for c in found.added] == ["main-old-group-g55", "main-user-u7", "main-news-c9999"]
    assert [c["name"] for c in found.known] == ["main-family-chat-c1234"]
    assert [(c["name"], c["why"][:15]) for c in found.left] == [("main-ann-smith-u42", "no longer among")]
    with session_scope(engine) as s:
        assert inst_svc.get_instance(s, name="main-family-chat-c1234").config["title"] == "Family (renamed)"

    gone = [_chat(-1000000001234, "Family (renamed)", "supergroup", left=True)]
    with session_scope(engine) as s:
        found = register_chats(s, account="main", chats=gone)
    assert {c["name"] for c in found.left} >= {"main-family-chat-c1234"}
    assert not found.added and not found.known


def test_names_stay_unique_across_accounts_and_kinds(engine: Engine) -> None:
    _instance(engine, "main-news-c9999", kind="http-seq")  # taken by something else
    with session_scope(engine) as s:
        found = register_chats(s, account="main", chats=[_chat(-1000000009999, "News", "channel")])
    assert [c["name"] for c in found.added] == ["main-news-c9999-2"]
    assert chat_instance_name("work", _chat(-1000000009999, "News", "channel")) == "work-news-c9999"


def test_titles_come_from_the_metadata_and_the_picker_filters(engine: Engine) -> None:
    chats = [
        _chat(-1000000000001, "Family", "supergroup"),
        _chat(42, "Ann", "user", username="ann_s"),
        _chat(-1000000000002, "Daily News", "channel"),
    ]
    with session_scope(engine) as s:
        register_chats(s, account="main", chats=chats)
        register_chats(s, account="work", chats=[_chat(-1003, "Team", "group")])
    seq = _instance(engine, "im-1", kind="http-seq")
    with session_scope(engine) as s:
        fam = inst_svc.get_instance(s, name="main-family-c1")
        apply_conversations(
            s, instance_id=fam.id, snapshot=[ConversationRow("-1000000000001", title="Family 2026", type="supergroup")]
        )
        ids = [i.id for i in s.scalars(select(Instance))]
        titles = chat_titles(s, ids)
    assert titles[fam.id] == "Family 2026"  # the conversation, not discovery's title
    assert seq not in titles
    with session_scope(engine) as s:
        names = lambda **kw: [i["name"] for i in instance_choices(s, **kw)]  # noqa: E731
        assert names(kind="telegram", account="main") == ["main-ann-u42", "main-daily-news-c2", "main-family-c1"]
        assert names(chat_type="group") == ["main-family-c1", "work-team-g1003"]
        assert names(q="2026") == ["main-family-c1"]
        assert names(q="ANN_S") == ["main-ann-u42"]
        assert names(kind="http-seq") == ["im-1"]
        fam_item = next(i for i in instance_choices(s, q="family"))
    assert fam_item["chat_id"] == -1000000000001 and fam_item["title"] == "Family 2026"
    assert fam_item["account"] == "main" and fam_item["chat_type"] == "supergroup"
