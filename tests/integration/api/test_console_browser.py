"""The web page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against
``syncflow serve`` on a real Prefect server with a process worker (the ``local_prefect``
fixture): start a manual batch from the form, watch it complete, open its detail, cancel a
slow one while it runs, and save a screenshot."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from blocks.seq_http import SeqHttpInstance
from syncflow.api.auth import hash_token
from syncflow.store import instances as inst_svc
from syncflow.store.db import make_engine, session_scope
from syncflow.store.models import Instance, Message, SyncInstanceRecord, SyncSession
from syncflow.testing.seqserver import SeqServer
from tests.support.prefect_server import BIN, LocalPrefect, free_port

CHROMIUM = Path("/usr/bin/chromium")
SEQ_TOKEN = "browser-seq-token"
API_TOKEN = "browser-console-token-" + uuid.uuid4().hex
FAST_MESSAGES = 1500
SLOW_MESSAGES = 50_000


@pytest.fixture
def lp(local_prefect: LocalPrefect) -> Iterator[LocalPrefect]:
    yield local_prefect
    local_prefect.quiesce()  # this test's workers and runs stop; nothing it queued runs later


@pytest.fixture
def lp_store(local_prefect: LocalPrefect) -> Iterator[Engine]:
    eng = make_engine(local_prefect.store_url)
    yield eng
    eng.dispose()


def _register(lp: LocalPrefect, store: Engine, name: str, server: SeqServer, batch_size: int) -> None:
    block = f"b-{uuid.uuid4().hex[:12]}"
    with lp.client_settings():
        SeqHttpInstance(
            base_url=server.url, token=SEQ_TOKEN, batch_size=batch_size, max_retries=2, base_delay=0.1, jitter=0.0
        ).save(block, overwrite=True)
    with session_scope(store) as s:
        inst_svc.add_instance(s, name=name, kind="http-seq", block_name=block)


def _serve(lp: LocalPrefect) -> str:
    port = free_port()
    lp.spawn(
        "console",
        [str(BIN / "syncflow"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=lp.env(SYNCFLOW_API_TOKEN_HASH=hash_token(API_TOKEN)),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).json().get("status") == "ok":
                return base
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"syncflow serve not healthy within 60 s:\n{lp.log('console')[-3000:]}")


def _stored(store: Engine, instance: str) -> int:
    with session_scope(store) as s:
        iid = s.scalar(select(Instance.id).where(Instance.name == instance))
        return s.scalar(select(func.count()).select_from(Message).where(Message.instance_id == iid)) or 0


def test_console_page_drives_sessions_in_chromium(lp: LocalPrefect, lp_store: Engine, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install -y chromium", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    suffix = uuid.uuid4().hex[:6]
    fast_name, slow_name = f"web-fast-{suffix}", f"web-slow-{suffix}"
    fast = SeqServer(messages=FAST_MESSAGES, token=SEQ_TOKEN, seed=11)
    slow = SeqServer(messages=SLOW_MESSAGES, token=SEQ_TOKEN, seed=12)
    fast.start()
    slow.start()
    slow.set_faults(latency=0.4)  # 100 messages per 0.4 s: minutes for all of them
    try:
        _register(lp, lp_store, fast_name, fast, batch_size=500)
        _register(lp, lp_store, slow_name, slow, batch_size=100)
        lp.start_worker(f"console-w-{suffix}")
        base = _serve(lp)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("dialog", lambda d: d.accept())
            page.goto(f"{base}/sync_sessions/")
            expect(page.locator("h1")).to_have_text("syncflow sessions")

            # the token: kept in sessionStorage, never in the page
            page.fill("#token", API_TOKEN)
            page.click("#token-save")
            expect(page.locator("#token-state")).to_have_text("token set for this tab")

            # 1. a manual batch from the form, watched until it completes
            page.select_option("#batch-category", "messages")
            page.check(f"#batch-instances input[value='{fast_name}']", timeout=15_000)
            page.fill("#batch-created-by", "playwright")
            page.click("#batch-submit")
            result = page.locator("#batch-result")
            expect(result).to_be_visible(timeout=30_000)
            sid = result.get_attribute("data-session-id")
            assert sid and fast_name in result.inner_text()
            row = page.locator(f"tr[data-session-id='{sid}']")
            expect(row).to_have_attribute("data-status", "completed", timeout=180_000)

            # 2. its detail: the record with its counts
            row.locator("button.details").click()
            detail = page.locator("#detail")
            expect(detail).to_have_attribute("data-status", "completed", timeout=15_000)
            expect(page.locator("#detail-id")).to_have_text(sid)
            rec = page.locator(f"#detail-records tr[data-instance='{fast_name}']")
            expect(rec).to_have_attribute("data-status", "completed")
            expect(rec.locator("td.synced")).to_have_text(f"{FAST_MESSAGES:,}")
            assert "playwright" in page.locator("#detail-meta").inner_text()

            # 3. a slow batch, cancelled from its row while it syncs
            page.uncheck(f"#batch-instances input[value='{fast_name}']")
            page.check(f"#batch-instances input[value='{slow_name}']")
            page.click("#batch-submit")
            expect(result).not_to_have_attribute("data-session-id", sid, timeout=30_000)
            sid2 = result.get_attribute("data-session-id")
            assert sid2 and sid2 != sid
            slow_rec = page.locator(f"#detail-records tr[data-instance='{slow_name}']")
            expect(slow_rec).to_have_attribute("data-status", "running", timeout=180_000)
            deadline = time.monotonic() + 60
            while _stored(lp_store, slow_name) == 0:  # some batches committed before the cancel
                assert time.monotonic() < deadline, "the slow sync committed nothing in 60 s"
                time.sleep(0.5)
            row2 = page.locator(f"tr[data-session-id='{sid2}']")
            expect(row2).to_have_attribute("data-status", "running", timeout=15_000)
            row2.locator("button.cancel").click()
            expect(row2).to_have_attribute("data-status", "cancelled", timeout=30_000)
            expect(page.locator("#flash")).to_contain_text("cancelled")

            # the chart and the cards saw the completed session
            page.select_option("#window", "24h")
            expect(page.locator("#chart")).not_to_have_attribute("data-completed", "0", timeout=20_000)
            assert int(page.locator("#stat-completed").inner_text().replace(",", "")) >= 1
            page.locator(f"tr[data-session-id='{sid2}'] button.details").click()
            expect(page.locator("#detail")).to_have_attribute("data-status", "cancelled", timeout=15_000)
            shot = tmp_path / "console.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            assert API_TOKEN not in page.content()
            browser.close()
        assert not errors, errors

        # the store agrees, and the cancelled sync stopped early, keeping what it committed
        with session_scope(lp_store) as s:
            one = s.scalar(select(SyncSession).where(SyncSession.session_id == sid))
            two = s.scalar(select(SyncSession).where(SyncSession.session_id == sid2))
            assert one is not None and one.status == "completed" and one.created_by == "playwright"
            assert two is not None and two.status == "cancelled" and two.flow_run_id
            recs = list(s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.session_id == sid2)))
            assert [r.status for r in recs] == ["cancelled"]
        assert _stored(lp_store, fast_name) == FAST_MESSAGES
        deadline = time.monotonic() + 60
        last = -1
        while True:  # the sync stops at a batch boundary: the count settles below the total
            now = _stored(lp_store, slow_name)
            if now == last:
                break
            assert time.monotonic() < deadline, "the cancelled sync kept syncing"
            last = now
            time.sleep(3)
        assert 0 < last < SLOW_MESSAGES
        # and its Prefect flow run was stopped
        assert _flow_run_state(lp, two.flow_run_id) in ("CANCELLING", "CANCELLED")
        print(f"screenshot: {shot}")
    finally:
        fast.stop()
        slow.stop()


def _flow_run_state(lp: LocalPrefect, flow_run_id: str) -> str:
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            return run.state.type.value if run.state else "NONE"

    with lp.client_settings():
        return asyncio.run(read())
