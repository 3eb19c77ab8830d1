"""The sessions API on a real store (SQLite and PostgreSQL): lists, filters, paging, details,
statistics, and the errors (401/403/404/409/422) it promises."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import Engine

from syncflow.api import ApiSettings, create_app
from syncflow.store.models import utcnow
from tests.integration.api.conftest import AUTH, TOKEN, Store

pytestmark = pytest.mark.asyncio(loop_scope="session")

API = "/sync_sessions/api"


async def test_list_newest_first_with_filters_and_paging(client: httpx.AsyncClient, store: Store) -> None:
    for n in ("a", "b", "c"):
        store.instance(n)
    store.instance("pg", kind="postgres")
    t0 = utcnow().replace(microsecond=0) - dt.timedelta(hours=5)
    ids = [
        store.session(["a"], outcome={"a": "completed"}, started=t0, items=5),
        store.session(["a", "b"], outcome={"a": "completed", "b": "failed"}, started=t0 + dt.timedelta(hours=1)),
        store.session(
            ["pg"],
            category="account",
            sync_type="scheduled",
            outcome={"pg": "completed"},
            started=t0 + dt.timedelta(hours=2),
        ),
        store.session(["c"], outcome={"c": "running"}, started=t0 + dt.timedelta(hours=3), items=7),
    ]
    r = await client.get(f"{API}/sessions")
    assert r.status_code == 200
    page = r.json()
    assert page["total"] == 4
    assert [s["session_id"] for s in page["items"]] == ids[::-1]
    running = page["items"][0]
    assert (
        running["status"] == "running" and running["record_counts"] == {"running": 1} and running["items_synced"] == 7
    )

    r = await client.get(f"{API}/sessions", params={"status": "failed"})
    assert [s["session_id"] for s in r.json()["items"]] == [ids[1]]
    assert r.json()["items"][0]["failed_instances"] == 1
    r = await client.get(f"{API}/sessions", params={"sync_category": "account", "sync_type": "scheduled"})
    assert [s["session_id"] for s in r.json()["items"]] == [ids[2]]
    r = await client.get(
        f"{API}/sessions",
        params={
            "since": (t0 + dt.timedelta(minutes=30)).isoformat(),
            "until": (t0 + dt.timedelta(hours=2, minutes=30)).isoformat(),
        },
    )
    assert [s["session_id"] for s in r.json()["items"]] == [ids[2], ids[1]]
    # naive times are UTC
    naive = (t0 + dt.timedelta(hours=2, minutes=30)).replace(tzinfo=None).isoformat()
    r = await client.get(f"{API}/sessions", params={"until": naive})
    assert r.json()["total"] == 3

    r = await client.get(f"{API}/sessions", params={"limit": 2, "offset": 1})
    body = r.json()
    assert (body["total"], body["limit"], body["offset"]) == (4, 2, 1)
    assert [s["session_id"] for s in body["items"]] == [ids[2], ids[1]]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"status": "paused"}, "status"),
        ({"sync_category": "bogus"}, "sync_category"),
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"offset": -1}, "offset"),
        ({"since": "yesterday"}, "since"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
    ],
)
async def test_list_rejects_bad_filters_with_422(client: httpx.AsyncClient, params: dict, needle: str) -> None:
    r = await client.get(f"{API}/sessions", params=params)
    assert r.status_code == 422, r.text
    assert needle in r.text


async def test_detail_has_records_with_counts_durations_errors_progress(
    client: httpx.AsyncClient, store: Store
) -> None:
    for n in ("a", "b", "c", "d"):
        store.instance(n, priority={"a": 5}.get(n, 0))
    sid = store.session(["a", "b", "c", "d"], outcome={"a": "completed", "b": "failed", "c": "running"}, items=40)
    r = await client.get(f"{API}/sessions/{sid}")
    assert r.status_code == 200
    s = r.json()
    assert s["session_id"] == sid and s["status"] == "running"
    assert s["record_counts"] == {"completed": 1, "failed": 1, "running": 1, "pending": 1}
    recs = {x["instance_name"]: x for x in s["records"]}
    assert s["records"][0]["instance_name"] == "a"  # highest priority first
    assert recs["a"]["items_synced"] == 40 and recs["a"]["items_created"] == 40
    assert recs["a"]["duration_seconds"] is not None and recs["a"]["progress"] is None
    assert recs["b"]["error_message"] == "b: boom"
    prog = recs["c"]["progress"]
    assert prog["batches"] == 2 and prog["cursor"] == 40 and prog["remaining"] == 40 and prog["percent"] == 50.0
    assert recs["d"]["status"] == "pending" and recs["d"]["started_at"] is None


async def test_swagger_ui_and_page_assets_are_served_locally(client: httpx.AsyncClient) -> None:
    """/docs works offline: Swagger UI's assets come from this server, never a CDN."""
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in docs.text and "cdn." not in docs.text
    assets = ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/sync_sessions/static/favicon.svg")
    for path in assets:
        assert (await client.get(path)).status_code == 200, path
    page = await client.get("/sync_sessions/")
    assert page.status_code == 200 and "http://" not in page.text.replace("http://www.w3.org", "")
    assert "https://" not in page.text


async def test_unknown_session_is_404_not_500(client: httpx.AsyncClient) -> None:
    for path in ("nope", "3f2b9c1e-0000-4000-8000-000000000000"):
        r = await client.get(f"{API}/sessions/{path}")
        assert r.status_code == 404
        assert "unknown session" in r.json()["detail"]


async def test_statistics_counts_rates_percentiles_throughput_timeline(client: httpx.AsyncClient, store: Store) -> None:
    for n in ("a", "b"):
        store.instance(n)
    store.instance("pg", kind="postgres")
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    h = dt.timedelta(hours=1)
    store.session(["a"], outcome={"a": "completed"}, started=now - 3 * h, seconds=10, items=100)
    store.session(
        ["a"], outcome={"a": "completed"}, started=now - 3 * h + dt.timedelta(minutes=5), seconds=30, items=300
    )
    store.session(["b"], outcome={"b": "failed"}, started=now - 2 * h, seconds=20)
    store.session(
        ["pg"], category="account", sync_type="scheduled", outcome={"pg": "completed"}, started=now - h, seconds=40
    )
    store.session(["a"], outcome={"a": "completed"}, started=now - 30 * 24 * h, seconds=1)  # outside the window

    r = await client.get(f"{API}/statistics", params={"since": (now - 4 * h).isoformat(), "bucket": "hour"})
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["total_sessions"] == 4
    assert st["by_status"] == {"completed": 3, "failed": 1}
    assert st["success_rate"] == 0.75
    assert {(b["sync_type"], b["sync_category"], b["status"], b["count"]) for b in st["breakdown"]} == {
        ("manual_batch", "messages", "completed", 2),
        ("manual_batch", "messages", "failed", 1),
        ("scheduled", "account", "completed", 1),
    }
    d = st["duration_seconds"]
    assert d["count"] == 4 and d["max"] == 40.0 and d["p50"] == 25.0 and d["avg"] == 25.0
    assert st["instances"] == {"completed": 3, "failed": 1}
    tp = st["throughput"]
    assert tp["items_synced"] == 400 and tp["record_seconds"] == 100.0 and tp["items_per_second"] == 4.0
    assert tp["by_category"]["messages"] == round(400 / 60, 1)
    by_start = {p["start"][:13]: p for p in st["timeline"]}
    assert len(st["timeline"]) >= 4
    three = by_start[(now - 3 * h).isoformat()[:13]]
    assert (three["completed"], three["failed"]) == (2, 0)
    assert by_start[(now - 2 * h).isoformat()[:13]]["failed"] == 1

    r = await client.get(f"{API}/statistics", params={"since": (now - 4 * h).isoformat(), "sync_category": "account"})
    assert r.json()["total_sessions"] == 1
    r = await client.get(f"{API}/statistics", params={"since": (now - 400 * 24 * h).isoformat(), "bucket": "hour"})
    assert r.status_code == 422 and "buckets" in r.json()["detail"]
    r = await client.get(f"{API}/statistics", params={"since": now.isoformat(), "until": (now - h).isoformat()})
    assert r.status_code == 422 and "before" in r.json()["detail"]


async def test_writes_need_the_token(client: httpx.AsyncClient, store: Store) -> None:
    store.instance("a")
    sid = store.session(["a"])
    for method, path in (
        ("POST", f"{API}/sessions/{sid}/cancel"),
        ("POST", f"{API}/sessions/{sid}/retry-failed"),
        ("POST", "/api/admin/sync-queue/messages/pause"),
        ("POST", "/api/admin/sync-queue/messages/resume"),
        ("DELETE", "/api/admin/sync-queue/messages/clear"),
        ("POST", "/api/admin/sync-queue/messages/retry-failed"),
    ):
        r = await client.request(method, path)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.request(method, path, headers={"Authorization": "Bearer wrong-" + TOKEN})
        assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
    r = await client.post(f"{API}/sessions", json={"category": "messages", "all": True})
    assert r.status_code == 401
    # nothing changed
    r = await client.get(f"{API}/sessions/{sid}")
    assert r.json()["status"] == "running"


async def test_no_configured_token_refuses_writes_with_403(store_env: str, engine: Engine, store: Store) -> None:
    store.instance("a")
    sid = store.session(["a"])
    app = create_app(ApiSettings(), engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post(f"{API}/sessions/{sid}/cancel", headers=AUTH)
        assert r.status_code == 403 and "SYNCFLOW_API_TOKEN_HASH" in r.json()["detail"]
        assert (await c.get(f"{API}/sessions")).status_code == 200  # reads stay open by default


async def test_read_auth_protects_reads_and_the_page_stays_public(store_env: str, engine: Engine) -> None:
    settings = ApiSettings(token=TOKEN, read_auth=True)
    app = create_app(settings, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path in (
            f"{API}/sessions",
            f"{API}/statistics",
            f"{API}/instances",
            f"{API}/sessions/x",
            "/api/admin/sync-queue/stats/messages",
        ):
            assert (await c.get(path)).status_code == 401, path
        assert (await c.get(f"{API}/sessions", headers=AUTH)).status_code == 200
        page = await c.get("/sync_sessions/")
        assert page.status_code == 200 and '"readAuth": true' in page.text
        assert TOKEN not in page.text


async def test_cancel_running_session_in_store_and_conflict_when_finished(
    client: httpx.AsyncClient, store: Store
) -> None:
    for n in ("a", "b"):
        store.instance(n)
    sid = store.session(["a", "b"], outcome={"a": "running"})
    r = await client.post(f"{API}/sessions/{sid}/cancel", headers=AUTH, json={"reason": "operator said so"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "cancelled" and body["records"] == {"a": "cancelled", "b": "cancelled"}
    assert body["flow_run_id"] is None and body["prefect"] is None
    detail = (await client.get(f"{API}/sessions/{sid}")).json()
    assert detail["status"] == "cancelled" and detail["error_message"] == "operator said so"
    r = await client.post(f"{API}/sessions/{sid}/cancel", headers=AUTH)
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    r = await client.post(f"{API}/sessions/{sid}/cancel", headers=AUTH, json={"reason": 5, "extra": 1})
    assert r.status_code == 422
    r = await client.post(f"{API}/sessions/not-a-session/cancel", headers=AUTH)
    assert r.status_code == 404


async def test_retry_failed_conflicts_without_prefect(client: httpx.AsyncClient, store: Store) -> None:
    store.instance("a")
    running = store.session(["a"], outcome={"a": "running"})
    ok = store.session(["a"], outcome={"a": "completed"})
    r = await client.post(f"{API}/sessions/{running}/retry-failed", headers=AUTH)
    assert r.status_code == 409 and "still running" in r.json()["detail"]
    r = await client.post(f"{API}/sessions/{ok}/retry-failed", headers=AUTH)
    assert r.status_code == 409 and "no failed instance" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"category": "messages"}, "exactly one of"),
        ({"category": "messages", "instances": ["a"], "all": True}, "exactly one of"),
        ({"category": "nope", "all": True}, "category"),
        ({"category": "messages", "instances": ["ghost"]}, "unknown instance(s): 'ghost'"),
        ({"category": "account", "instances": ["a"]}, "does not support category 'account'"),
        ({"category": "messages", "instances": ["off"]}, "disabled"),
        ({"category": "messages", "tags": ["none-such"]}, "no enabled instance"),
        ({"category": "messages", "instances": ["a"], "priorities": {"b": 1}}, "not in this batch: b"),
        ({"category": "messages", "instances": ["a"], "options": {"a": {"bogus": 1}}}, "unknown sync option"),
        ({"category": "messages", "instances": ["a"], "options": {"a": {"from_seq": 9, "to_seq": 1}}}, "above to_seq"),
        (  # issue 9, point 11: beyond the signed 64-bit range
            {"category": "messages", "instances": ["a"], "options": {"a": {"from_seq": 99999999999999999999}}},
            "from_seq 99999999999999999999 is beyond the signed 64-bit range",
        ),
        (
            {"category": "messages", "instances": ["a"], "options": {"a": {"from_seq": 1, "to_seq": 2**63}}},
            "to_seq 9223372036854775808 is beyond the signed 64-bit range",
        ),
        ({"category": "messages", "all": True, "concurrency": 0}, "concurrency"),
        ({"category": "messages", "all": True, "surprise": 1}, "surprise"),
    ],
)
async def test_manual_batch_bad_input_is_422_before_prefect(
    client: httpx.AsyncClient, store: Store, body: dict, needle: str
) -> None:
    store.instance("a", tags=["t1"])
    store.instance("off", enabled=False)
    r = await client.post(f"{API}/sessions", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert needle in r.text


async def test_page_renders_offline_with_its_own_assets(client: httpx.AsyncClient) -> None:
    r = await client.get("/sync_sessions/")
    assert r.status_code == 200
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    for asset in ("static/console.js", "static/console.css"):
        assert f'"{asset}"' in html
        a = await client.get("/sync_sessions/" + asset)
        assert a.status_code == 200 and len(a.text) > 1000
        assert "https://" not in a.text
    assert (await client.get("/sync_sessions", follow_redirects=False)).status_code == 307


async def test_healthz_reports_store_and_prefect(client: httpx.AsyncClient, prefect_env: str) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["store"] == "ok" and body["prefect"] == "ok" and body["status"] == "ok"


async def test_healthz_is_503_when_the_store_is_down() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from syncflow.store.db import make_engine

    eng = make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")
    app = create_app(ApiSettings(prefect_timeout=2), engine=eng)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded" and body["store"] != "ok" and body["prefect"] != "ok"


async def test_prefect_down_is_502_for_writes_and_a_partial_answer_for_queue_stats(
    client: httpx.AsyncClient, store: Store
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    store.instance("a")
    store.session(["a"], outcome={"a": "skipped"})
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        r = await client.post(f"{API}/sessions", json={"category": "messages", "instances": ["a"]}, headers=AUTH)
        assert r.status_code == 502 and r.json()["detail"].startswith("Prefect API:")
        r = await client.delete("/api/admin/sync-queue/messages/clear", headers=AUTH)
        assert r.status_code == 502
        r = await client.get("/api/admin/sync-queue/stats/messages")
        assert r.status_code == 200
        body = r.json()
        assert body["runs"] is None and body["prefect_error"].startswith("Prefect API:")
        assert body["store"]["skipped"] == 1
        # the pause flag is set (new syncs wait) even when Prefect is down; the answer says so
        r = await client.post("/api/admin/sync-queue/messages/pause", headers=AUTH)
        assert r.status_code == 502 and "paused in the store" in r.json()["detail"]
    r = await client.get("/api/admin/sync-queue/stats/messages")
    assert r.json()["pause"]["paused"] is True
