"""The console API's views for the operator's day: short session ids, progress with ETA, what
changed, the Prefect UI link and the root redirect (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import re

import httpx
import pytest
from sqlalchemy import Engine

from syncflow.api import ApiSettings, create_app
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import utcnow
from syncflow.store.sessions import ItemCounts
from tests.integration.api.conftest import Store

API = "/sync_sessions/api"


async def test_sessions_carry_short_ids_and_a_prefix_opens_the_detail(client: httpx.AsyncClient, store: Store) -> None:
    store.instance("a")
    sid = store.session(["a"], outcome={"a": "completed"})
    page = (await client.get(f"{API}/sessions")).json()
    assert page["items"][0]["short_id"] == sid[:8]
    r = await client.get(f"{API}/sessions/{sid[:8]}")
    assert r.status_code == 200 and r.json()["session_id"] == sid and r.json()["short_id"] == sid[:8]
    assert (await client.get(f"{API}/sessions/{sid[:6]}")).json()["session_id"] == sid


async def test_an_ambiguous_prefix_is_422_naming_the_sessions(client: httpx.AsyncClient, engine: Engine) -> None:
    Store(engine).instance("a")
    ids = ["5eed0000-aaaa-4000-8000-000000000001", "5eed0000-bbbb-4000-8000-000000000002"]
    for sid in ids:
        with session_scope(engine) as s:
            book.open_session(s, sync_category="messages", instances=["a"], session_id=sid)
    page = (await client.get(f"{API}/sessions")).json()
    assert {i["session_id"]: i["short_id"] for i in page["items"]} == {
        ids[0]: "5eed0000-a",
        ids[1]: "5eed0000-b",
    }
    r = await client.get(f"{API}/sessions/5eed0000")
    assert r.status_code == 422 and "ambiguous" in r.json()["detail"] and ids[0] in r.json()["detail"]
    assert (await client.get(f"{API}/sessions/5eed0000-b")).json()["session_id"] == ids[1]


async def test_a_running_session_has_done_expected_rate_and_eta(client: httpx.AsyncClient, store: Store) -> None:
    for n in ("a", "b"):
        store.instance(n)
    sid = store.session(["a", "b"], outcome={"a": "completed", "b": "running"}, items=400)
    store.move(sid, utcnow() - dt.timedelta(seconds=40), 10)  # "b" has run 40 s: 10 items/s
    s = (await client.get(f"{API}/sessions/{sid}")).json()
    rec = {r["instance_name"]: r for r in s["records"]}
    p = rec["b"]["progress"]  # batches 2, 400 synced, 400 remaining
    assert p["expected"] == 800 and p["percent"] == 50.0
    assert 9 < p["rate_per_second"] <= 10 and p["eta_seconds"] is not None and 39 < p["eta_seconds"] <= 41
    assert rec["a"]["progress"] is None
    sp = s["progress"]
    assert (sp["instances_done"], sp["instances_total"], sp["items_synced"], sp["expected"]) == (1, 2, 800, 1200)
    assert sp["eta_seconds"] == p["eta_seconds"]
    done = store.session(["a"], outcome={"a": "completed"})
    assert (await client.get(f"{API}/sessions/{done}")).json()["progress"] is None


async def test_changes_newest_first_with_filters(client: httpx.AsyncClient, engine: Engine, store: Store) -> None:
    store.instance("pg-main", kind="postgres")
    store.instance("my-main", kind="mysql")
    sids = []
    for name, category, changes in (
        ("pg-main", "account", ["alice: +CREATEDB", "bob: created"]),
        ("my-main", "config", ["max_connections: 151 -> 300"]),
    ):
        with session_scope(engine) as s:
            row = book.open_session(s, sync_category=category, instances=[name])
            (rec,) = book.records_in_order(s, session_id=row.session_id)
            book.start_instance_sync(s, record_id=rec.id)
            book.add_record_progress(
                s,
                record_id=rec.id,
                counts=ItemCounts(synced=3, created=1, updated=len(changes) - 1),
                details={"changes": changes, "changes_total": len(changes)},
            )
            book.complete_instance_sync(s, record_id=rec.id)
            sids.append(row.session_id)
    page = (await client.get(f"{API}/changes")).json()
    assert [e["session_id"] for e in page["items"]] == [sids[1], sids[0]]
    first = page["items"][1]
    assert first["changes"] == ["alice: +CREATEDB", "bob: created"] and first["changes_total"] == 2
    assert first["short_id"] == sids[0][:8] and first["instance_name"] == "pg-main" and first["changed_at"]
    only = (await client.get(f"{API}/changes", params={"instance": "pg-main", "category": "account"})).json()
    assert [e["session_id"] for e in only["items"]] == [sids[0]]
    assert (await client.get(f"{API}/changes", params={"since": "2199-01-01T00:00:00Z"})).json()["items"] == []
    r = await client.get(f"{API}/changes", params={"instance": "nope"})
    assert r.status_code == 404 and "unknown instance 'nope'" in r.json()["detail"]
    r = await client.get(f"{API}/changes", params={"category": "messages"})
    assert r.status_code == 422 and "no change list" in r.json()["detail"]


async def test_root_redirects_to_the_console(client: httpx.AsyncClient) -> None:
    r = await client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/sync_sessions/"


def _config(html: str) -> dict[str, object]:
    m = re.search(r'<script id="console-config" type="application/json">(.*?)</script>', html, re.S)
    assert m is not None
    return json.loads(m.group(1))


async def test_the_page_links_flow_runs_to_the_prefect_ui_when_it_is_known(
    client: httpx.AsyncClient, store_env: str, engine: Engine, settings: ApiSettings
) -> None:
    assert _config((await client.get("/sync_sessions/")).text)["prefectUi"] is None
    app = create_app(settings.model_copy(update={"prefect_ui_url": "http://prefect.example:4200"}), engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as c:
        assert _config((await c.get("/sync_sessions/")).text)["prefectUi"] == "http://prefect.example:4200"


def test_prefect_ui_url_comes_from_prefects_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    mp.setenv("PREFECT_UI_URL", "http://127.0.0.1:4200/")
    assert ApiSettings().prefect_ui_url == "http://127.0.0.1:4200"
    mp.setenv("PREFECT_UI_URL", "")
    assert ApiSettings().prefect_ui_url is None
    mp.setenv("PREFECT_UI_URL", "prefect:4200")
    with pytest.raises(ValueError, match="http"):
        ApiSettings()


async def test_the_api_answers_the_views_field_names(client: httpx.AsyncClient, store: Store) -> None:
    from syncflow.schemas import RecordView, SessionDetailView, SessionView

    store.instance("a")
    sid = store.session(["a"], outcome={"a": "running"}, items=10)
    detail = (await client.get(f"{API}/sessions/{sid}")).json()
    assert set(detail) == set(SessionDetailView.model_fields)
    assert set(detail["records"][0]) == set(RecordView.model_fields)
    assert set(detail["records"][0]["progress"]) >= {"expected", "rate_per_second", "eta_seconds"}
    assert set((await client.get(f"{API}/sessions")).json()["items"][0]) == set(SessionView.model_fields)
