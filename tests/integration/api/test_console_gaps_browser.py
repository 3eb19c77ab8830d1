"""The console's gaps panel and reconciliation warnings in headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright), on a store with chosen ledger rows (no Prefect)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import update

from syncflow.store import gaps as ledger
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import make_engine, session_scope
from syncflow.store.migrations import upgrade
from syncflow.store.models import SyncInstanceRecord
from tests.integration.api.test_console_browser import API_TOKEN, CHROMIUM, _serve_console

WARNING = (
    "im-1: reconciliation: 1 missing without a recorded hole (1 seq(s) of 1..200 neither stored nor in a recorded hole)"
)


def test_console_gaps_panel_and_record_warning(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: apt-get install -y chromium", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    url = f"sqlite:///{tmp_path / 'console.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as s:
        iid = inst_svc.add_instance(s, name="im-1", kind="http-seq").id
        ledger.record_holes(s, instance_id=iid, category="messages", holes=[(10, 11), (50, 50), (2**63 - 2, 2**63 - 2)])
    with session_scope(engine) as s:
        gaps = ledger.holes_to_read(s, instance_id=iid, category="messages")
        ledger.settle_holes(
            s,
            gaps=gaps[:1],
            now=dt.datetime.now(dt.UTC),
            window=dt.timedelta(hours=24),
            checks=3,
            found={gaps[0].id: 2},
        )
    with session_scope(engine) as s:
        row = book.open_session(s, sync_category="messages", instances=["im-1"])
        (rec,) = book.records_in_order(s, session_id=row.session_id)
        book.start_instance_sync(s, record_id=rec.id)
        book.complete_instance_sync(s, record_id=rec.id)
        s.execute(update(SyncInstanceRecord).where(SyncInstanceRecord.id == rec.id).values(warning=WARNING))
        sid = row.session_id
    base, proc = _serve_console(url, tmp_path)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/sync_sessions/")
            page.fill("#token", API_TOKEN)
            page.click("#token-save")

            row = page.locator("#instances-body tr[data-instance='im-1']")
            row.locator("button.gaps-toggle").click()
            panel = page.locator("#instances-body tr.gaps-result[data-instance='im-1']")
            expect(panel.locator(".gaps-summary")).to_have_text(
                "seq holes of im-1: 2 open, 1 filled, 0 partly filled, 0 confirmed empty", timeout=30_000
            )
            expect(panel.locator("tr.gap")).to_have_count(3)
            expect(panel.locator("tr.gap[data-status='filled']")).to_contain_text("10..11")
            expect(panel.locator("tr.gap").last).to_contain_text(str(2**63 - 2))
            page.screenshot(path=str(tmp_path / "console-gaps.png"), full_page=True)
            panel.locator("button.gaps-close").click()
            expect(panel).to_have_count(0)

            page.locator(f"tr[data-session-id='{sid}'] button.details").click()
            expect(page.locator("#detail-records")).to_contain_text("warning: " + WARNING, timeout=30_000)
            expect(page.locator("#detail-meta")).to_contain_text(WARNING)
            browser.close()
        assert not errors, errors
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        engine.dispose()
