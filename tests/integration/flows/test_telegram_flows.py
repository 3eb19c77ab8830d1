"""Telegram chats through the real flows, the Prefect test harness and a real store (SQLite and
PostgreSQL), against the fake Telethon client (Telethon's own types and errors).

The fake is injected the way a deployment would name a client factory:
``SYNCFLOW_TELEGRAM_CLIENT_FACTORY=syncflow.testing.telegram_fake:env_client_factory``, which
builds clients on the world installed in this process, or, in a child process, on the world
pickled at ``SYNCFLOW_TELEGRAM_FAKE_WORLD``. Every Telethon call the adapter makes lands in
the fake's call log (and, for child processes, in a JSON-lines file with pid and time), so
the tests assert what was asked of Telegram, not only what was stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from blocks.connections import forget_sources
from blocks.telegram import TelegramAccountBlock
from flows.instance_sync import sync_instance
from flows.session_sync import sync_session
from syncflow.cli.app import app
from syncflow.engine.account_lease import close_all_gates
from syncflow.settings import reset_settings
from syncflow.sources.telegram import close_all_connections, map_message
from syncflow.sources.telegram_chat import reset_cooldowns, store_row
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.messages import EXTENDED_COLUMNS
from syncflow.store.models import Conversation, Instance, Message, SyncConfigItem, SyncInstanceRecord
from syncflow.store.sessions import max_overlap
from syncflow.testing.telegram_fake import FakeAccount, FakeTelegram, photo_media, voice_media

SESSION = "1BQANOTAREALSESSION" + "x" * 40
API_HASH = "0123456789abcdef0123456789abcdef"
FACTORY = "syncflow.testing.telegram_fake:env_client_factory"
CRASH_CHILD = Path(__file__).with_name("crash_sync_child.py")


# --------------------------------------------------------------------------- fixtures


class TG:
    """One fake Telegram account wired to syncflow: its block, the world, helpers."""

    def __init__(self, engine: Engine, world: FakeTelegram, account: FakeAccount, name: str) -> None:
        self.engine = engine
        self.world = world
        self.acct = account
        self.name = name

    def block(self, **fields: Any) -> None:
        defaults = {
            "max_retries": 2,
            "base_delay": 0.05,
            "max_delay": 5.0,
            "jitter": 0.0,
            "flood_wait_max": 5.0,
            "idle_release": 0.5,
            "account_wait": 60.0,
            "batch_size": 25,
        }
        TelegramAccountBlock(api_id=12345, api_hash=API_HASH, session=SESSION, **{**defaults, **fields}).save(
            self.name, overwrite=True
        )
        forget_sources()

    def discover(self, *args: str) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["telegram", "discover", self.name, "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def instance(self, chat_id: int) -> str:
        with session_scope(self.engine) as s:
            for inst in s.scalars(select(Instance).where(Instance.kind == "telegram")):
                if (inst.config or {}).get("chat_id") == chat_id:
                    return inst.name
        raise AssertionError(f"chat {chat_id} is not registered")

    def open(self, names: list[str], category: str = "messages", **kw: Any) -> dict[str, int]:
        with session_scope(self.engine) as s:
            row = book.open_session(s, sync_category=category, instances=names, **kw)
            return {r.instance_name: r.id for r in book.records_in_order(s, session_id=row.session_id)}

    def calls(self, name: str, chat: int | None = None) -> list[dict[str, Any]]:
        return [k for n, k in self.world.calls if n == name and (chat is None or k.get("entity") == chat)]


@pytest.fixture
def tg(prefect_harness: None, store_env: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[TG]:
    monkeypatch.setenv("SYNCFLOW_TELEGRAM_CLIENT_FACTORY", FACTORY)
    reset_settings()
    world = FakeTelegram().install()
    wiring = TG(engine, world, world.add_account(SESSION, first_name="Me"), f"acc-{uuid.uuid4().hex[:8]}")
    wiring.block()
    yield wiring
    forget_sources()
    close_all_connections()
    close_all_gates()
    reset_cooldowns()
    FakeTelegram.uninstall()
    reset_settings()


def run(record_id: int, **kw: Any) -> tuple[Any, Any]:
    async def go() -> tuple[Any, Any]:
        state = await sync_instance(record_id=record_id, return_state=True, **kw)
        return state, await state.aresult(raise_on_failure=False)

    return asyncio.run(go())


def run_session(**kw: Any) -> tuple[Any, Any]:
    async def go() -> tuple[Any, Any]:
        state = await sync_session(return_state=True, **kw)
        return state, await state.aresult(raise_on_failure=False)

    return asyncio.run(go())


async def _set_limit(category: str, limit: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    name = f"tag:sync:{category}"
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active_slots=0))


def set_limit(category: str, limit: int) -> None:
    asyncio.run(_set_limit(category, limit))


def record(engine: Engine, rid: int) -> SyncInstanceRecord:
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        s.expunge(rec)
        return rec


def counts(rec: SyncInstanceRecord) -> tuple[int, int, int, int]:
    return rec.items_synced, rec.items_created, rec.items_updated, rec.items_unchanged


def state_item(engine: Engine, name: str, category: str = "messages") -> SyncConfigItem | None:
    with session_scope(engine) as s:
        item = s.scalar(
            select(SyncConfigItem)
            .join(Instance, Instance.id == SyncConfigItem.instance_id)
            .where(Instance.name == name, SyncConfigItem.category == category)
        )
        if item is not None:
            s.expunge(item)
        return item


def cursor(engine: Engine, name: str) -> int | None:
    item = state_item(engine, name)
    return None if item is None else item.last_seq


def stored(engine: Engine, name: str) -> list[tuple[Any, ...]]:
    """The instance's stored messages (EXTENDED_COLUMNS order), by message id."""
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == name))
        cols = [getattr(Message, c) for c in EXTENDED_COLUMNS]
        return [tuple(r) for r in s.execute(select(*cols).where(Message.instance_id == iid).order_by(Message.seq))]


def truth(acct: FakeAccount, chat: int, upto: int | None = None) -> list[tuple[Any, ...]]:
    """What the chat holds (ids <= upto), as the store must hold it."""
    msgs = acct.chat(chat).messages
    return [store_row(map_message(msgs[i])) for i in sorted(msgs) if upto is None or i <= upto]


def total_created(engine: Engine, name: str) -> int:
    with session_scope(engine) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == name))
        return s.scalar(
            select(func.coalesce(func.sum(SyncInstanceRecord.items_created), 0)).where(
                SyncInstanceRecord.instance_id == iid
            )
        )


def fill(acct: FakeAccount, chat: int, n: int, *, sender: int = 501) -> None:
    for i in range(n):
        if i % 10 == 3:
            acct.add_message(chat, f"photo {i}", from_id=sender, media=photo_media(i + 1))
        elif i % 10 == 7:
            acct.add_message(chat, "", from_id=sender, media=voice_media(3))
        else:
            acct.add_message(chat, f"message {i}", from_id=sender, reply_to=1 if i % 5 == 4 else None)


# ------------------------------------------- discover -> metadata -> messages (a session)


def test_discover_then_metadata_then_messages_over_several_chats_with_priorities_and_limits(
    tg: TG, engine: Engine
) -> None:
    acct = tg.acct
    chats = {
        "news": acct.add_channel(101, "Daily News", username="dailynews", members=1200, photo_id=77),
        "team": acct.add_channel(102, "Team Room", megagroup=True, members=40),
        "family": acct.add_group(103, "Family", members=5, photo_id=78),
        "ann": acct.add_user(104, "Ann", "Smith", username="ann"),
        "bot": acct.add_user(105, "Helper", bot=True),
        "old": acct.add_group(106, "Archived club", archived=True),
    }
    sizes = {"news": 120, "team": 90, "family": 70, "ann": 60, "bot": 10, "old": 5}
    for key, n in sizes.items():
        fill(acct, chats[key], n)
    tg.world.latency = 0.05  # every page takes a moment: syncs overlap, limits show

    found = tg.discover("--tag", "tg", "--type", "user,group,channel")
    assert len(found["added"]) == 4 and found["filtered_out"] == 2  # the bot and the archived group
    assert {c["chat_id"] for c in found["added"]} == {chats[k] for k in ("news", "team", "family", "ann")}
    names = {k: tg.instance(chats[k]) for k in ("news", "team", "family", "ann")}
    assert names["news"] == f"{tg.name}-daily-news-c101"
    assert tg.discover("--tag", "tg")["added"][0]["chat_id"] == chats["bot"]  # re-run: only the new chat

    set_limit("metadata", 5)
    set_limit("messages", 2)
    priorities = {names["family"]: 9, names["ann"]: 7, names["team"]: 5, names["news"]: 1}
    state, summary = run_session(category="messages", tags=["tg"], priorities=priorities, refresh_metadata=True)
    assert state.is_completed(), summary

    # metadata first, through the snapshot diff: one conversation per chat, as Telegram says it
    meta = summary["metadata_session_id"]
    with session_scope(engine) as s:
        meta_recs = list(s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.session_id == meta)))
        assert len(meta_recs) == 5 and {r.status for r in meta_recs} == {"completed"}
        assert all(r.items_created == 1 for r in meta_recs)
        convs = {
            c.conversation_id: c
            for c in s.scalars(select(Conversation).join(Instance, Instance.id == Conversation.instance_id))
        }
    news = convs[str(chats["news"])]
    assert (news.title, news.type, news.username, news.members_count, news.avatar_id) == (
        "Daily News",
        "channel",
        "dailynews",
        1200,
        "77",
    )
    assert (convs[str(chats["family"])].type, convs[str(chats["family"])].members_count) == ("group", 5)
    assert (convs[str(chats["ann"])].title, convs[str(chats["ann"])].type) == ("Ann Smith", "user")
    assert convs[str(chats["bot"])].type == "bot"

    # then messages: every chat exact, at most 2 at once, highest priorities first
    with session_scope(engine) as s:
        recs = list(s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.session_id == summary["session_id"])))
        for r in recs:
            s.expunge(r)
    assert len(recs) == 5 and {r.status for r in recs} == {"completed"}
    for key in ("news", "team", "family", "ann"):
        assert stored(engine, names[key]) == truth(acct, chats[key])
        assert cursor(engine, names[key]) == max(acct.chat(chats[key]).messages)
    assert max_overlap([(r.started_at, r.completed_at) for r in recs]) <= 2
    first_two = {r.instance_name for r in sorted(recs, key=lambda r: r.started_at)[:2]}
    assert first_two == {names["family"], names["ann"]}
    # the chats of the account shared one client in this process: never two connected at once
    open_clients = 0
    for _, _, call, _ in tg.world.timeline:
        open_clients += {"connect": 1, "disconnect": -1}.get(call, 0)
        assert 0 <= open_clients <= 1

    # `sessions show` names each chat by its title (from the conversations)
    shown = CliRunner().invoke(app, ["sessions", "show", summary["session_id"], "--json"])
    assert shown.exit_code == 0, shown.output
    titles = {r["instance_name"]: r["title"] for r in json.loads(shown.stdout)["records"]}
    assert titles[names["news"]] == "Daily News" and titles[names["ann"]] == "Ann Smith"
    human = CliRunner().invoke(app, ["sessions", "show", summary["session_id"]], env={"COLUMNS": "250"})
    assert f"{names['family']} (Family)" in human.stdout


# --------------------------------------------------- incremental, range, full, edits


def test_incremental_asks_only_above_the_cursor_and_a_range_backfill_keeps_it(tg: TG, engine: Engine) -> None:
    acct = tg.acct
    chat = acct.add_channel(201, "Updates")
    fill(acct, chat, 60)
    tg.discover()
    name = tg.instance(chat)

    assert run(tg.open([name])[name])[0].is_completed()
    assert cursor(engine, name) == 60
    assert [c["min_id"] for c in tg.calls("iter_messages", chat)] == [0, 25, 50]  # pages of 25

    fill(acct, chat, 15)
    before = len(tg.calls("iter_messages", chat))
    rid = tg.open([name])[name]
    assert run(rid)[0].is_completed()
    second = tg.calls("iter_messages", chat)[before:]
    assert second[0]["min_id"] == 60  # only messages above the cursor were asked for
    assert all(c["min_id"] >= 60 and c["reverse"] is True for c in second)
    assert counts(record(engine, rid)) == (15, 15, 0, 0)
    assert stored(engine, name) == truth(acct, chat) and cursor(engine, name) == 75

    acct.edit_message(chat, 12, "an edit, found by the backfill")
    before = len(tg.calls("iter_messages", chat))
    rid = tg.open([name], options={name: {"fromMessageId": 10, "toMessageId": 30}})[name]
    assert run(rid)[0].is_completed()
    ranged = tg.calls("iter_messages", chat)[before:]
    assert ranged[0]["min_id"] == 9 and all(c["max_id"] == 31 for c in ranged)  # 10..30, inclusive
    assert counts(record(engine, rid)) == (21, 0, 1, 20)  # the edit is an update
    assert cursor(engine, name) == 75  # a backfill never moves the cursor
    assert stored(engine, name) == truth(acct, chat)


def test_full_resync_refetches_and_counts_edits_as_updated(tg: TG, engine: Engine) -> None:
    acct = tg.acct
    chat = acct.add_group(301, "Family")
    fill(acct, chat, 40)
    tg.discover()
    name = tg.instance(chat)
    assert run(tg.open([name])[name])[0].is_completed()

    acct.edit_message(chat, 5, "edited text")
    acct.edit_message(chat, 33, "edited again")
    acct.delete_message(chat, 20)  # a deletion is not seen by an incremental read (kept in the store)
    before = len(tg.calls("iter_messages", chat))
    rid = tg.open([name], options={name: {"full": True}})[name]
    assert run(rid)[0].is_completed()
    assert tg.calls("iter_messages", chat)[before]["min_id"] == 0  # from the start
    assert counts(record(engine, rid)) == (39, 0, 2, 37)
    rows = {r[0]: r for r in stored(engine, name)}
    assert rows["5"][EXTENDED_COLUMNS.index("content")] == "edited text"
    assert rows["5"][EXTENDED_COLUMNS.index("edit_time")] is not None
    assert "20" in rows and len(rows) == 40
    assert cursor(engine, name) == 40


# -------------------------------------------------------------------------- errors


def test_flood_wait_is_honoured_like_retry_after_then_the_sync_completes(tg: TG, engine: Engine) -> None:
    acct = tg.acct
    chat = acct.add_channel(401, "Busy")
    fill(acct, chat, 30)
    tg.discover()
    name = tg.instance(chat)
    tg.world.flood_wait(1, times=2)  # the connection waits out the first; the second goes to the engine
    rid = tg.open([name])[name]
    state, result = run(rid)
    assert state.is_completed(), result
    stamps = [t for t, _, n, _ in tg.world.timeline if n == "iter_messages"]
    assert len(stamps) >= 4  # 2 refused, then the 2 pages
    assert stamps[1] - stamps[0] >= 1.0  # slept in the connection
    assert stamps[2] - stamps[1] >= 1.0  # slept by the task (Retry-After), then retried
    assert record(engine, rid).sync_details["retries"] == 1
    assert stored(engine, name) == truth(acct, chat)


def test_a_flood_wait_over_the_maximum_fails_the_chat_as_transient_and_is_not_hammered(tg: TG, engine: Engine) -> None:
    acct = tg.acct
    chat = acct.add_channel(402, "Flooded")
    fill(acct, chat, 10)
    tg.discover()
    name = tg.instance(chat)
    tg.world.flood_wait(3600, times=5)
    rid = tg.open([name])[name]
    state, _ = run(rid)
    assert state.is_failed()
    rec = record(engine, rid)
    assert rec.status == "failed"
    assert "3600s" in rec.error_message and name in rec.error_message
    assert len(tg.calls("iter_messages", chat)) == 1  # the retries did not ask Telegram again
    assert tg.world.pending_faults() == 4


def test_a_revoked_session_fails_every_chat_once_saying_to_log_in_again(tg: TG, engine: Engine) -> None:
    acct = tg.acct
    a, b = acct.add_channel(501, "A"), acct.add_channel(502, "B")
    fill(acct, a, 5)
    fill(acct, b, 5)
    tg.discover()
    acct.revoke()
    authorised = len(tg.calls("is_user_authorized"))
    set_limit("messages", 3)
    names = [tg.instance(a), tg.instance(b)]
    state, _ = run_session(category="messages", instances=names, refresh_metadata=False)
    assert state.is_failed()
    with session_scope(engine) as s:
        recs = list(s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.instance_name.in_(names))))
    assert {r.status for r in recs} == {"failed"}
    for r in recs:
        assert f"run `syncflow telegram login {tg.name}` again" in r.error_message
    assert len(tg.calls("is_user_authorized")) - authorised == 2  # one per chat: never retried
    assert not tg.calls("iter_messages")


def test_a_forbidden_chat_fails_alone(tg: TG, engine: Engine) -> None:
    acct = tg.acct
    ok1, bad, ok2 = acct.add_channel(601, "Open"), acct.add_channel(602, "Private"), acct.add_group(603, "Also open")
    for chat in (ok1, bad, ok2):
        fill(acct, chat, 8)
    tg.discover()
    acct.restrict(bad)
    set_limit("messages", 3)
    names = {c: tg.instance(c) for c in (ok1, bad, ok2)}
    state, _ = run_session(category="messages", instances=list(names.values()), refresh_metadata=False)
    assert state.is_failed()  # the session fails because one chat did
    with session_scope(engine) as s:
        recs = {
            r.instance_name: r
            for r in s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.instance_name.in_(names.values())))
        }
    assert recs[names[bad]].status == "failed"
    assert "cannot be read (ChannelPrivateError" in recs[names[bad]].error_message
    assert len(tg.calls("get_entity", bad)) == 1  # permanent: not retried
    assert not tg.calls("iter_messages", bad)
    for chat in (ok1, ok2):
        assert recs[names[chat]].status == "completed"
        assert stored(engine, names[chat]) == truth(acct, chat)


# ------------------------------------------------------------------ child processes


def _child_env(tmp_path: Path, world_file: Path, lease: int) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "SYNCFLOW_LOCK_LEASE_SECONDS": str(lease),
        "SYNCFLOW_TELEGRAM_CLIENT_FACTORY": FACTORY,
        "SYNCFLOW_TELEGRAM_FAKE_WORLD": str(world_file),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def _events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _spawn(env: dict[str, str], rid: int, tmp_path: Path, tag: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, err = tmp_path / f"{tag}.out", tmp_path / f"{tag}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, str(CRASH_CHILD), str(rid)], env=env, stdout=fo, stderr=fe)
    return proc, out, err


@pytest.mark.slow
def test_sigkill_mid_sync_then_resume_store_exact(tg: TG, engine: Engine, tmp_path: Path) -> None:
    """Real chat syncs in child processes, SIGKILLed at seeded random points, resumed each time:
    after every kill the store holds exactly the chat's messages up to the stored cursor (all
    13 columns), the records' counters add up to the rows, and the next run resumes at the
    cursor (the fake's call log). The killed process's account lease runs out by itself."""
    rng = random.Random(20261202)
    lease = 5
    acct = tg.acct
    chat = acct.add_channel(701, "Crash test")
    fill(acct, chat, 1500)
    tg.discover()
    name = tg.instance(chat)
    tg.world.latency = 0.25  # a killed run gets through a few pages only
    tg.block(batch_size=50, account_wait=60.0)
    world_file, log = tmp_path / "world.pkl", tmp_path / "calls.jsonl"
    tg.world.log_path = str(log)
    env = _child_env(tmp_path, world_file, lease)

    def iter_calls(pid: int) -> list[dict[str, Any]]:
        return [e for e in _events(log) if e["pid"] == pid and e["call"] == "iter_messages"]

    partial = 0
    for n in range(3):
        tg.world.save(world_file)
        before = cursor(engine, name) or 0
        rid = tg.open([name])[name]
        proc, _, err = _spawn(env, rid, tmp_path, f"run{n}")
        try:
            deadline = time.monotonic() + 120
            while not iter_calls(proc.pid):  # the child began fetching
                assert proc.poll() is None, err.read_text()[-3000:]
                assert time.monotonic() < deadline, err.read_text()[-3000:]
                time.sleep(0.1)
            time.sleep(rng.uniform(0.5, 2.0))
            assert proc.poll() is None, "the child ended before its kill"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

        assert record(engine, rid).status == "running", "the kill did not interrupt the run"
        assert iter_calls(proc.pid)[0]["kwargs"]["min_id"] == before  # resumed at the stored cursor
        now = cursor(engine, name) or 0
        assert now >= before
        assert stored(engine, name) == truth(acct, chat, upto=now)
        assert total_created(engine, name) == len(stored(engine, name))
        if 0 < now < 1500 + 100 * n:
            partial += 1
        item = state_item(engine, name)
        assert item is not None and item.lock_expires_at is not None
        time.sleep(max(0.0, (item.lock_expires_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
        fill(acct, chat, 100)  # the chat keeps receiving messages meanwhile
    assert partial >= 2, "the kills should land in the middle of the sync"
    for msg_id in (2, 3, 4):  # edits of messages already stored
        assert msg_id <= (cursor(engine, name) or 0)
        acct.edit_message(chat, msg_id, f"edited while down {msg_id}")

    tg.world.save(world_file)
    before = cursor(engine, name) or 0
    rid = tg.open([name])[name]
    proc, out, err = _spawn(env, rid, tmp_path, "final")
    assert proc.wait(300) == 0, err.read_text()[-3000:]
    assert json.loads(out.read_text().strip().splitlines()[-1])["status"] == "completed"
    assert iter_calls(proc.pid)[0]["kwargs"]["min_id"] == before
    # edits of messages already stored are not re-read by an incremental sync; a full one finds them
    want = {r[0]: r for r in truth(acct, chat)}
    assert {r[0] for r in stored(engine, name) if r != want[r[0]]} == {"2", "3", "4"}
    rid = tg.open([name], options={name: {"full": True}})[name]
    proc, out, err = _spawn(env, rid, tmp_path, "full")
    assert proc.wait(300) == 0, err.read_text()[-3000:]
    rec = record(engine, rid)
    assert rec.status == "completed" and rec.items_created == 0 and rec.items_updated == 3
    assert stored(engine, name) == truth(acct, chat)
    assert total_created(engine, name) == len(acct.chat(chat).messages) == 1800
    assert cursor(engine, name) == 1800


@pytest.mark.slow
def test_two_processes_on_one_account_never_connect_at_once(tg: TG, engine: Engine, tmp_path: Path) -> None:
    """Two real processes sync two chats of one account at the same time: the account lease
    lets one connect, the other waits until the first has disconnected; both complete."""
    acct = tg.acct
    a, b = acct.add_channel(801, "First"), acct.add_channel(802, "Second")
    fill(acct, a, 800)
    fill(acct, b, 800)
    tg.discover()
    names = {a: tg.instance(a), b: tg.instance(b)}
    tg.world.latency = 0.1  # 40 pages each: a sync holds the account for seconds
    tg.block(batch_size=20, idle_release=0.5, account_wait=120.0)
    world_file, log = tmp_path / "world.pkl", tmp_path / "calls.jsonl"
    tg.world.log_path = str(log)
    tg.world.save(world_file)
    env = _child_env(tmp_path, world_file, 10)
    recs = tg.open(list(names.values()))

    procs = [_spawn(env, recs[names[c]], tmp_path, f"p{c}") for c in (a, b)]
    for proc, _, err in procs:
        assert proc.wait(300) == 0, err.read_text()[-3000:]
    for _, out, _ in procs:
        assert json.loads(out.read_text().strip().splitlines()[-1])["status"] == "completed"
    for chat, name in names.items():
        assert stored(engine, name) == truth(acct, chat)

    # connection intervals per process, from the fake's log: [connect, disconnect]
    spans: dict[int, list[list[float]]] = {}
    for e in _events(log):
        if e["call"] == "connect":
            spans.setdefault(e["pid"], []).append([e["t"], float("inf")])
        elif e["call"] == "disconnect" and spans.get(e["pid"]) and spans[e["pid"]][-1][1] == float("inf"):
            spans[e["pid"]][-1][1] = e["t"]
    assert set(spans) == {p.pid for p, _, _ in procs}  # both processes talked to Telegram
    pa, pb = (spans[p.pid] for p, _, _ in procs)
    assert all(s[1] != float("inf") for s in pa + pb), "every connection was closed"
    for x in pa:
        for y in pb:
            assert x[1] <= y[0] or y[1] <= x[0], f"connected at once: {x} and {y}"
    # and they did contend: the second to connect was already syncing (its record running)
    # while the first was still connected, i.e. it waited for the account
    first, second = sorted(zip((a, b), (pa, pb), strict=True), key=lambda x: x[1][0][0])
    started = record(engine, recs[names[second[0]]]).started_at
    assert started is not None and started.timestamp() < first[1][-1][1]
    with session_scope(engine) as s:  # the account is free again
        from syncflow.store.account_leases import holders

        assert holders(s, account=f"telegram:{tg.name}") == []
