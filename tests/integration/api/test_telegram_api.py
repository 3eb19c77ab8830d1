"""The console API for Telegram chats (SQLite and PostgreSQL): the manual-batch form picks chats
by account, chat type and title, and a session's records carry their chat's title."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine

from syncflow.sources.base import ConversationRow
from syncflow.sources.telegram import ChatInfo
from syncflow.store import instances as inst_svc
from syncflow.store.chats import register_chats
from syncflow.store.conversations import apply_conversations
from syncflow.store.db import session_scope
from tests.integration.api.conftest import Store

API = "/sync_sessions/api"


def _chats(engine: Engine) -> None:
    main = [
        ChatInfo(chat_id=-1000000000001, type="supergroup", title="Family", archived=False),
        ChatInfo(chat_id=42, type="user", title="Ann Smith", username="ann_s", archived=False),
        ChatInfo(chat_id=-1000000000002, type="channel", title="Daily News", archived=False),
    ]
    with session_scope(engine) as s:
        register_chats(s, account="main", chats=main, tags=["tg"])
        register_chats(s, account="work", chats=[ChatInfo(chat_id=-77, type="group", title="Team", archived=False)])
        fam = inst_svc.get_instance(s, name="main-family-c1")
        apply_conversations(
            s,
            instance_id=fam.id,
            snapshot=[ConversationRow("-1000000000001", title="Family 2026", type="supergroup")],
        )


async def test_instances_filter_chats_by_account_type_and_title(
    client: httpx.AsyncClient, store: Store, engine: Engine
) -> None:
    _chats(engine)
    store.instance("im-1")

    async def names(**params: str) -> list[str]:
        r = await client.get(f"{API}/instances", params=params)
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()]

    assert await names() == ["im-1", "main-ann-smith-u42", "main-daily-news-c2", "main-family-c1", "work-team-g77"]
    main = ["main-ann-smith-u42", "main-daily-news-c2", "main-family-c1"]
    assert await names(kind="telegram", account="main") == main
    assert await names(kind="telegram", type="group") == ["main-family-c1", "work-team-g77"]
    assert await names(q="2026") == ["main-family-c1"]  # the title from the metadata sync
    assert await names(q="ann_s", category="messages") == ["main-ann-smith-u42"]
    r = await client.get(f"{API}/instances", params={"q": "family"})
    (fam,) = r.json()
    assert fam | {"categories": None, "tags": None} == {
        "name": "main-family-c1",
        "kind": "telegram",
        "categories": None,
        "tags": None,
        "enabled": True,
        "priority": 0,
        "account": "main",
        "chat_id": -1000000000001,
        "chat_type": "supergroup",
        "title": "Family 2026",
        "username": None,
    }
    seq = (await client.get(f"{API}/instances", params={"kind": "http-seq"})).json()[0]
    assert (seq["account"], seq["chat_id"], seq["title"]) == (None, None, None)
    assert (await client.get(f"{API}/instances", params={"type": "planet"})).status_code == 422
    assert (await client.get(f"{API}/instances", params={"kind": "irc"})).status_code == 422


async def test_session_records_carry_the_chat_title(client: httpx.AsyncClient, store: Store, engine: Engine) -> None:
    _chats(engine)
    store.instance("im-1")
    sid = store.session(
        ["main-family-c1", "main-ann-smith-u42", "im-1"], outcome={"main-family-c1": "completed"}, items=3
    )
    r = await client.get(f"{API}/sessions/{sid}")
    assert r.status_code == 200, r.text
    titles = {rec["instance_name"]: rec["title"] for rec in r.json()["records"]}
    assert titles == {"main-family-c1": "Family 2026", "main-ann-smith-u42": "Ann Smith", "im-1": None}
