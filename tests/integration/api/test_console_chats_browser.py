"""The manual-batch form's chat picker in headless Chromium (Debian's /usr/bin/chromium through
Playwright) against the console app served by uvicorn on a real store: filter Telegram chats by
account, chat type and title, select what is shown, and see chat titles in a session's detail.
(No Prefect run is started: the form's submit is covered by test_console_browser.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from syncflow.api import ApiSettings, create_app
from syncflow.sources.base import ConversationRow
from syncflow.sources.telegram import ChatInfo
from syncflow.store import instances as inst_svc
from syncflow.store.chats import register_chats
from syncflow.store.conversations import apply_conversations
from syncflow.store.db import session_scope
from tests.integration.api.conftest import Store
from tests.support.prefect_server import free_port

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def base(store_env: str, engine: Engine) -> Iterator[str]:
    app = create_app(ApiSettings(prefect_timeout=2), engine=engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(10)


def test_the_form_picks_chats_by_account_type_and_title(base: str, engine: Engine, store: Store) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install -y chromium", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    with session_scope(engine) as s:
        register_chats(
            s,
            account="main",
            chats=[
                ChatInfo(chat_id=-1000000000001, type="supergroup", title="Family", archived=False),
                ChatInfo(chat_id=42, type="user", title="Ann Smith", archived=False),
                ChatInfo(chat_id=-1000000000002, type="channel", title="Daily News", archived=False),
            ],
        )
        register_chats(s, account="work", chats=[ChatInfo(chat_id=-77, type="group", title="Team", archived=False)])
        fam = inst_svc.get_instance(s, name="main-family-c1")
        apply_conversations(s, instance_id=fam.id, snapshot=[ConversationRow("-1000000000001", title="Family 2026")])
    store.instance("im-1")
    sid = store.session(["main-family-c1", "im-1"], outcome={"main-family-c1": "completed", "im-1": "completed"})

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/sync_sessions/?session={sid}")
        boxes = page.locator("#batch-instances input[type=checkbox]")
        expect(boxes).to_have_count(5, timeout=15_000)
        expect(page.locator("#batch-account")).to_be_visible()

        page.fill("#batch-search", "2026")  # the title from the metadata, not the name
        expect(boxes).to_have_count(1)
        expect(page.locator("#batch-instances")).to_contain_text("Family 2026")
        page.fill("#batch-search", "")
        expect(boxes).to_have_count(5)

        page.select_option("#batch-account", "main")
        expect(boxes).to_have_count(3)
        page.select_option("#batch-chat-type", "group")  # supergroups are groups too
        expect(boxes).to_have_count(1)
        page.click("#batch-select-shown")
        page.select_option("#batch-chat-type", "")
        expect(boxes).to_have_count(3)
        page.check("#batch-instances input[value='main-ann-smith-u42']")
        expect(page.locator("#batch-count")).to_have_text("3 shown · 2 selected")
        page.select_option("#batch-kind", "http-seq")  # other kinds: the chat filters go away
        expect(page.locator("#batch-account")).to_be_hidden()
        expect(boxes).to_have_count(1)
        expect(page.locator("#batch-count")).to_have_text("1 shown · 2 selected")  # the selection stays

        rows = page.locator("#detail-records tr")
        expect(rows).to_have_count(2, timeout=15_000)
        expect(page.locator("#detail-records tr[data-instance='main-family-c1'] .chat-title")).to_have_text(
            "Family 2026"
        )
        browser.close()
    assert not errors, errors
