"""The web page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

1. Against ``syncflow serve`` on a real Prefect server with a process worker (the
   ``local_prefect`` fixture): start a manual batch from the form, watch it complete, open its
   detail, cancel a slow one while it runs, and save a screenshot.
2. Against the console on a store filled with chosen sessions (no Prefect needed): the record
   detail's change list, the ETA of a running record and of its session, short session ids,
   flow-run links to the Prefect UI, the detail opening under its row, the chart's scale, and
   the instances' check button; screenshots of each."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from blocks.seq_http import SeqHttpInstance
from syncflow.api.auth import hash_token
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import make_engine, session_scope
from syncflow.store.migrations import upgrade
from syncflow.store.models import Instance, Message, SyncInstanceRecord, SyncSession, utcnow
from syncflow.testing.seqserver import SeqServer
from tests.support.prefect_server import BIN, REPO, LocalPrefect, free_port

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
            expect(page.locator("#detail-id")).to_have_attribute("data-session-id", sid)
            expect(page.locator("#detail-id")).to_have_text(sid[:8])  # the short id (a unique prefix)
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


# ------------------------------------------------ 2. changes, ETA, check (a chosen store)

UI = "http://prefect.example:4200"
CHANGES = [f"role_{i:02d}: +LOGIN, +SELECT on public.orders" for i in range(40)]


def _fill(engine: Engine) -> dict[str, Any]:
    """Instances and sessions chosen for the page: 30 finished messages sessions (more than a
    page), two sharing their first 8 characters, an account sync that changed 40 roles and a
    running messages sync with a measured batch (its ETA)."""
    now = utcnow()
    out: dict[str, Any] = {}
    with session_scope(engine) as s:
        inst_svc.add_instance(s, name="pg-main", kind="postgres")
        inst_svc.add_instance(s, name="pg-bad", kind="postgres", block_name="syncflow-pg-bad")
        inst_svc.add_instance(s, name="im-1", kind="http-seq")
        inst_svc.add_instance(s, name="im-2", kind="http-seq")
    ids = [str(uuid.uuid4()) for _ in range(28)] + [
        "c0ffee00-aaaa-4000-8000-000000000001",
        "c0ffee00-bbbb-4000-8000-000000000002",
    ]
    for i, sid in enumerate(ids):
        with session_scope(engine) as s:
            row = book.open_session(s, sync_category="messages", instances=["im-2"], session_id=sid)
            (rec,) = book.records_in_order(s, session_id=sid)
            book.start_instance_sync(s, record_id=rec.id)
            book.complete_instance_sync(s, record_id=rec.id, counts=book.ItemCounts(synced=100, created=100))
            when = now - dt.timedelta(hours=3, minutes=5 * (len(ids) - i))
            row.created_at = row.started_at = when
            row.completed_at = when + dt.timedelta(seconds=20)
    out["twins"] = ids[-2:]
    out["old"] = ids[0]  # the oldest: row 30, on the second page... and row 25 on the first
    with session_scope(engine) as s:
        row = book.open_session(s, sync_category="account", instances=["pg-main"], created_by="ops")
        (rec,) = book.records_in_order(s, session_id=row.session_id)
        book.start_instance_sync(s, record_id=rec.id)
        book.add_record_progress(
            s,
            record_id=rec.id,
            counts=book.ItemCounts(synced=52, created=40, unchanged=12),
            details={"changes": CHANGES, "changes_total": len(CHANGES), "created": [], "updated": [], "deleted": []},
        )
        book.complete_instance_sync(s, record_id=rec.id, details={"duration_s": 0.8})
        row.flow_run_id = str(uuid.uuid4())
        out["account"] = row.session_id
        out["account_run"] = row.flow_run_id
    with session_scope(engine) as s:
        row = book.open_session(s, sync_category="messages", instances=["im-1"], created_by="ops")
        (rec,) = book.records_in_order(s, session_id=row.session_id)
        book.start_instance_sync(s, record_id=rec.id, flow_run_id=str(uuid.uuid4()))
        book.add_record_progress(
            s,
            record_id=rec.id,
            counts=book.ItemCounts(synced=3000, created=3000),
            details={"batches": 6, "cursor": 3000, "remaining": 9000},
        )
        rec.started_at = now - dt.timedelta(seconds=20)  # 150 msgs/s: about a minute to go
        out["running"] = row.session_id
    return out


def _serve_console(engine_url: str, tmp_path: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYNCFLOW_"))}
    env.update(
        SYNCFLOW_DATABASE_URL=engine_url,
        SYNCFLOW_API_TOKEN_HASH=hash_token(API_TOKEN),
        SYNCFLOW_API_PREFECT_TIMEOUT="2",
        PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",  # nobody there: the queue panel says so
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_UI_URL=UI,
    )
    log = (tmp_path / "console.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.console_app", str(port)], cwd=REPO, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (tmp_path / "console.log").read_text()
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"the console did not start:\n{(tmp_path / 'console.log').read_text()[-3000:]}")


def test_console_shows_changes_eta_short_ids_and_checks_instances(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install -y chromium", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    url = f"sqlite:///{tmp_path / 'console.db'}"
    engine = make_engine(url)
    upgrade(engine)
    data = _fill(engine)
    base, proc = _serve_console(url, tmp_path)
    real_check = "/sync_sessions/api/instances/{name}/check" in httpx.get(f"{base}/openapi.json").text
    shots: list[Path] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # / is the console
            page.goto(f"{base}/")
            assert page.url == f"{base}/sync_sessions/"
            expect(page.locator("h1")).to_have_text("syncflow sessions")
            page.fill("#token", API_TOKEN)
            page.click("#token-save")

            # short ids: 8 characters, longer for the two that share their first 8
            twin_a, twin_b = data["twins"]
            expect(page.locator(f"tr[data-session-id='{twin_a}'] code.sid")).to_have_text("c0ffee00-a")
            expect(page.locator(f"tr[data-session-id='{twin_b}'] code.sid")).to_have_text("c0ffee00-b")
            acc = data["account"]
            expect(page.locator(f"tr[data-session-id='{acc}'] code.sid")).to_have_text(acc[:8])

            # the chart scales to its data: a few hours of a 7-day window, a small integer y axis
            chart = page.locator("#chart")
            expect(chart).to_have_attribute("data-completed", "31", timeout=15_000)
            assert int(chart.get_attribute("data-points") or 0) >= 168  # hourly buckets of 7 days
            assert int(chart.get_attribute("data-shown") or 0) == 12  # the last 12 hours hold every session
            assert 0 < int(chart.get_attribute("data-ymax") or 0) <= 20

            # the record detail opens under its row (row 25 of 25: no scrolling past the list to find it)
            last = page.locator("#sessions-body tr.session-row").nth(24)
            last_id = last.get_attribute("data-session-id")
            last.locator("td").first.click()
            expect(page.locator("#detail")).to_have_attribute("data-session-id", last_id or "", timeout=15_000)
            follows = page.evaluate(
                "(id) => document.querySelector(`tr[data-session-id='${id}']`).nextElementSibling.classList"
                ".contains('detail-row')",
                last_id,
            )
            assert follows, "the detail is not right under its row"
            expect(page.locator("#detail")).to_be_in_viewport()

            # a late answer never takes the detail back: a session whose answer comes 3 s late is
            # clicked, then the account sync; when the late answer lands the account sync stays
            ids = [r.get_attribute("data-session-id") for r in page.locator("#sessions-body tr.session-row").all()]
            late = next(i for i in ids if i not in (acc, last_id))
            page.evaluate(
                """(id) => { const f = window.fetch; window.fetch = (u, o) => String(u).includes(id)
                   ? new Promise((ok) => setTimeout(ok, 3000)).then(() => f(u, o)) : f(u, o); }""",
                late,
            )
            page.locator(f"tr[data-session-id='{late}'] td").first.click()

            # 1. the change list of the account sync, in its record detail
            page.locator(f"tr[data-session-id='{acc}'] button.details").click()
            expect(page.locator("#detail")).to_have_attribute("data-session-id", acc, timeout=15_000)
            page.wait_for_timeout(4_000)  # the late answer has landed by now
            expect(page.locator("#detail")).to_have_attribute("data-session-id", acc)
            expect(page.locator("#detail-id")).to_have_text(acc[:8])
            rec = page.locator("#detail-records tr.record-row[data-instance='pg-main']")
            expect(rec).to_have_attribute("data-changes", "40")
            rec.locator("button.record-toggle").click()
            detail = page.locator("#detail-records tr.record-detail[data-instance='pg-main']")
            expect(detail).to_be_visible(timeout=10_000)
            expect(detail.locator("h3")).to_contain_text("40 changes: 40 created, 0 updated, 0 deleted")
            expect(detail.locator("ul.changes li")).to_have_count(26)  # 25 lines and "... and 15 more"
            expect(detail.locator("ul.changes li").first).to_have_text(CHANGES[0])
            expect(detail.locator("ul.changes li.more")).to_have_text("… and 15 more")
            link = page.locator("#detail-meta a.flow-run")
            expect(link).to_have_attribute("href", f"{UI}/runs/flow-run/{data['account_run']}")
            time.sleep(2.5)  # a refresh keeps the record detail open
            expect(detail).to_be_visible()
            shots.append(tmp_path / "console-changes.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # "what changed" lists it too, and opens its session
            entry = page.locator(f"#changes-list .change-entry[data-session-id='{acc}']")
            expect(entry).to_contain_text("40 changes")
            expect(entry.locator("ul.changes li").first).to_have_text(CHANGES[0])

            # 2. the running sync: done / expected, rate and ETA (record and session)
            run_id = data["running"]
            page.goto(f"{base}/sync_sessions/?session={run_id[:8]}")  # a short id in the URL opens it too
            expect(page.locator("#detail")).to_have_attribute("data-session-id", run_id, timeout=15_000)
            prog = page.locator("#detail-records tr.record-row[data-instance='im-1'] td.prog")
            expect(prog).to_have_attribute("data-expected", "12000")
            expect(prog).not_to_have_attribute("data-eta", "")
            expect(prog).to_contain_text("3,000 / 12,000 (25 %)")
            expect(prog).to_contain_text("ETA")
            eta = float(prog.get_attribute("data-eta") or "nan")
            assert 10 < eta < 600, eta  # ~150 msgs/s with 9,000 to go
            session_prog = page.locator("#detail-progress")
            expect(session_prog).to_contain_text("0/1 instances done · 3,000 / 12,000 items (25 %)")
            expect(session_prog).to_contain_text("ETA")
            assert "null" not in session_prog.inner_text() and "undefined" not in prog.inner_text()
            shots.append(tmp_path / "console-eta.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # 3. the check button of each instance, its result right under its row
            ok_row = page.locator("#instances-body tr[data-instance='pg-main']")
            ok_row.locator("button.check").click()
            result = page.locator("#instances-body tr.check-result[data-instance='pg-main']")
            expect(result).to_be_visible(timeout=30_000)
            expect(result.locator(".check-table tbody tr").first).to_be_visible()
            assert result.locator(".check-table tbody tr").count() >= 1
            outcome = result.get_attribute("data-ok")
            summary = result.locator(".check-summary").inner_text()
            assert "pg-main" in summary and (("all" in summary) == (outcome == "true")), summary
            if not real_check:  # the stand-in's answers are known
                assert outcome == "true"
                page.locator("#instances-body tr[data-instance='pg-bad'] button.check").click()
                bad = page.locator("#instances-body tr.check-result[data-instance='pg-bad']")
                expect(bad).to_have_attribute("data-ok", "false", timeout=30_000)
                expect(bad.locator("tr[data-check='credentials']")).to_contain_text("password authentication failed")
                expect(bad.locator(".check-summary")).to_have_text("✗ pg-bad: 1 of 4 checks failed")
            else:  # the product's route: pg-main has no block; pg-bad's is on a Prefect API nobody serves
                assert outcome == "false"
                expect(result.locator("tr[data-check='block']")).to_contain_text("no connection block registered")
                expect(result.locator("tr[data-check='connection']")).to_contain_text("not tried")
                page.locator("#instances-body tr[data-instance='pg-bad'] button.check").click()
                bad = page.locator("#instances-body tr.check-result[data-instance='pg-bad']")
                expect(bad).to_have_attribute("data-ok", "false", timeout=30_000)
                expect(bad.locator("tr[data-check='block']")).to_contain_text("Prefect API")
                expect(bad.locator(".check-summary")).to_contain_text("✗ pg-bad:")
            page.locator("#instances-body").scroll_into_view_if_needed()
            shots.append(tmp_path / "console-check.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            browser.close()
        assert not errors, errors
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        engine.dispose()
    for shot in shots:
        assert shot.stat().st_size > 20_000
        print(f"screenshot: {shot}")
    print("check route:", "the product's" if real_check else "the test-only stand-in (tests/support/console_app.py)")
