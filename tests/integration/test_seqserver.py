"""The reference SeqServer over real loopback HTTP, driven through SeqHttpClient."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from syncflow.errors import (
    AuthError,
    PermanentSyncError,
    ProtocolError,
    RateLimitedError,
    SyncError,
    TransientSyncError,
)
from syncflow.sources.http_seq import SEQ_MAX, SeqHttpClient
from syncflow.testing.seqserver import CONVERSATIONS_PATH, SYNC_PATH, Faults, RequestRecord, SeqServer

TOKEN = "integration-token"


@pytest.fixture
def server() -> Iterator[SeqServer]:
    with SeqServer(messages=10_000, conversations=4, token=TOKEN, seed=7) as srv:
        yield srv


@pytest.fixture
def client(server: SeqServer) -> Iterator[SeqHttpClient]:
    with SeqHttpClient(server.url, TOKEN, timeout=5, instance="im-local") as c:
        yield c


def sync_all(client: SeqHttpClient, last_seq: int = 0, count: int = 500) -> tuple[list[tuple[Any, ...]], int, int]:
    """Page until hasMore=false: (rows, cursor, pages)."""
    rows: list[tuple[Any, ...]] = []
    pages = 0
    while True:
        page = client.fetch_page(last_seq, count)
        pages += 1
        rows.extend(page.rows)
        last_seq = page.cursor_after(last_seq)
        if not page.has_more:
            return rows, last_seq, pages


def sync_requests(server: SeqServer) -> list[RequestRecord]:
    return [r for r in server.requests if r.path == SYNC_PATH]


# ------------------------------------------------------------------ the protocol


def test_pages_through_10000_messages_in_20_pages_of_500(server: SeqServer, client: SeqHttpClient) -> None:
    rows, cursor, pages = sync_all(client)

    assert pages == 20
    assert [row[2] for row in rows] == list(range(1, 10_001))
    assert len({row[0] for row in rows}) == 10_000
    assert cursor == 10_000
    log = sync_requests(server)
    assert [(r.last_seq, r.count, r.status) for r in log] == [(i * 500, 500, 200) for i in range(20)]
    assert all(r.method == "POST" and r.faults == () for r in log)


def test_page_fields_match_the_store(server: SeqServer, client: SeqHttpClient) -> None:
    page = client.fetch_page(9_000, 500)
    assert page.max_seq == 10_000
    assert page.total_count == 1_000
    assert page.has_more is True
    assert [m.model_dump(by_alias=True) for m in page.messages] == server.messages_after(9_000, 500)
    last = client.fetch_page(9_500, 500)
    assert (len(last), last.has_more, last.total_count) == (500, False, 500)


def test_generated_content_is_deterministic_from_the_seed() -> None:
    with SeqServer(messages=50, seed=3) as a, SeqServer(messages=50, seed=3) as b, SeqServer(messages=50, seed=4) as c:
        assert a.messages_after(0) == b.messages_after(0)
        assert a.messages_after(0) != c.messages_after(0)


def test_append_while_running_then_fetch_only_the_new_ones(server: SeqServer, client: SeqHttpClient) -> None:
    _, cursor, _ = sync_all(client)
    new = server.append(750)
    assert new == list(range(10_001, 10_751))
    server.reset_requests()

    rows, cursor2, pages = sync_all(client, cursor)

    assert [row[2] for row in rows] == new
    assert cursor2 == 10_750
    assert pages == 2
    assert [r.last_seq for r in sync_requests(server)] == [10_000, 10_500]


def test_no_new_messages_answers_an_empty_last_page(server: SeqServer, client: SeqHttpClient) -> None:
    page = client.fetch_page(10_000, 500)
    assert (len(page), page.has_more, page.max_seq, page.total_count) == (0, False, 10_000, 0)


def test_add_messages_replaces_and_appends(server: SeqServer, client: SeqHttpClient) -> None:
    server.add_messages([{"seq": 5, "content": "edited"}, {"content": "brand new"}])
    assert server.max_seq == 10_001
    server.set_faults(overlap=2)
    page = client.fetch_page(6, 3)
    assert [(row[2], row[6]) for row in page.rows][:1] == [(5, "edited")]
    tail = client.fetch_page(10_000, 10)
    assert [(row[2], row[6]) for row in tail.rows][-1] == (10_001, "brand new")


def test_max_page_size_caps_the_page() -> None:
    with SeqServer(messages=1_000, max_page_size=100, token=TOKEN) as srv, SeqHttpClient(srv.url, TOKEN) as c:
        page = c.fetch_page(0, 500)
        assert (len(page), page.has_more) == (100, True)
        rows, _, pages = sync_all(c, count=500)
        assert (len(rows), pages) == (1_000, 10)


def test_seq_holes_are_served_as_stored() -> None:
    with SeqServer(messages=3_000, hole_rate=0.2, seed=11, token=TOKEN) as srv, SeqHttpClient(srv.url, TOKEN) as c:
        stored = srv.seqs()
        assert len(stored) == 3_000
        assert stored[-1] - stored[0] + 1 > 3_000  # there are holes
        rows, cursor, _ = sync_all(c)
        assert [row[2] for row in rows] == stored
        assert cursor == stored[-1]


def test_holes_made_at_run_time_and_filled_late(server: SeqServer, client: SeqHttpClient) -> None:
    appended = server.append(200, hole_rate=0.5)
    assert len(appended) == 200
    assert appended[-1] > 10_200
    assert server.remove_messages([10, 11, 999_999]) == 2
    rows, cursor, _ = sync_all(client)
    got = [row[2] for row in rows]
    assert got == server.seqs()
    assert 10 not in got and 11 not in got
    assert cursor == appended[-1]
    # a message arriving late inside a hole is below the cursor: only overlap shows it
    missing = next(s for s in range(10_001, appended[-1]) if s not in set(appended))
    server.add_messages([{"seq": missing, "content": "late"}])
    assert len(client.fetch_page(cursor, 500)) == 0
    assert missing in client.fetch_page(missing - 1, 1).seqs


def test_seqs_near_int64_max() -> None:
    start = 2**63 - 1 - 100
    with SeqServer(messages=101, start_seq=start, token=TOKEN) as srv, SeqHttpClient(srv.url, TOKEN) as c:
        rows, cursor, pages = sync_all(c, start - 1, count=50)
        assert [row[2] for row in rows] == list(range(start, SEQ_MAX + 1))
        assert cursor == SEQ_MAX
        assert pages == 3
        end = c.fetch_page(SEQ_MAX, 50)
        assert (len(end), end.has_more, end.max_seq) == (0, False, SEQ_MAX)
        with pytest.raises(ValueError):
            srv.append(1)


def test_conversations_can_change_while_running(server: SeqServer, client: SeqHttpClient) -> None:
    assert [c.conversation_id for c in client.fetch_conversations()] == ["conv-0", "conv-1", "conv-2", "conv-3"]
    server.rename_conversation("conv-1", "Renamed")
    server.remove_conversation("conv-2")
    server.add_conversation("conv-9", title=None, type=3, avatar_url=None)
    conversations = {c.conversation_id: c for c in client.fetch_conversations()}
    assert set(conversations) == {"conv-0", "conv-1", "conv-3", "conv-9"}
    assert conversations["conv-1"].title == "Renamed"
    assert (conversations["conv-9"].title, conversations["conv-9"].type) == (None, "3")  # descriptive: kept as text
    assert server.requests[-1] == RequestRecord("GET", CONVERSATIONS_PATH, None, None, 200)


def test_wrong_token_is_an_auth_error(server: SeqServer) -> None:
    with SeqHttpClient(server.url, "wrong", instance="im-local") as bad, pytest.raises(AuthError) as info:
        bad.fetch_page(0, 500)
    assert "im-local" in str(info.value)
    assert "401" in str(info.value)
    assert server.requests[-1] == RequestRecord("POST", SYNC_PATH, 0, 500, 401)


def test_bad_request_body_is_400_and_logged(server: SeqServer) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.post(server.url + SYNC_PATH, json={"lastSeq": "x", "count": 5}, headers=headers)
    assert response.status_code == 400
    assert "lastSeq" in response.json()["message"]
    assert server.requests[-1] == RequestRecord("POST", SYNC_PATH, None, 5, 400)
    assert httpx.get(server.url + SYNC_PATH, headers=headers).status_code == 405
    assert httpx.get(server.url + "/nope", headers=headers).status_code == 404


def test_request_log_is_resettable(server: SeqServer, client: SeqHttpClient) -> None:
    client.fetch_page(0, 10)
    client.fetch_conversations()
    assert [r.path for r in server.requests] == [SYNC_PATH, CONVERSATIONS_PATH]
    server.reset_requests()
    assert server.requests == []
    client.fetch_page(10, 10)
    assert server.requests == [RequestRecord("POST", SYNC_PATH, 10, 10, 200)]


def test_keep_alive_connections_serve_many_requests(server: SeqServer) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for last in (0, 10, 20):
            response = http.post(SYNC_PATH, json={"lastSeq": last, "count": 10, "timestamp": 0})
            assert response.json()["data"]["messages"][0]["seq"] == last + 1
            assert response.http_version == "HTTP/1.1"


# ----------------------------------------------------------------------- faults


FAULT_CASES: list[tuple[dict[str, Any], type[SyncError], str]] = [
    ({"error_next": 1}, TransientSyncError, "HTTP 503"),
    ({"error_next": 1, "error_status": 500}, TransientSyncError, "HTTP 500"),
    ({"rate_limit_next": 1, "retry_after": "7"}, RateLimitedError, "retry after 7s"),
    ({"drop_next": 1, "drop_mode": "mid"}, TransientSyncError, "complete message body"),
    ({"drop_next": 1, "drop_mode": "before"}, TransientSyncError, "disconnected without sending"),
    ({"truncate_next": 1}, TransientSyncError, "truncated JSON"),
    ({"slow_next": 1, "slow_seconds": 60.0}, TransientSyncError, "timed out"),
    ({"code_error_next": 1, "code_error_code": 42, "code_error_message": "busy"}, ProtocolError, "code=42: busy"),
    ({"invalid_next": 1, "invalid_kind": "descending"}, ProtocolError, "not strictly ascending"),
    ({"invalid_next": 1, "invalid_kind": "duplicate_ids"}, ProtocolError, "duplicate messageID"),
    ({"invalid_next": 1, "invalid_kind": "has_more_empty"}, ProtocolError, "empty page"),
    ({"invalid_next": 1, "invalid_kind": "seq_above_max"}, ProtocolError, "above maxSeq"),
    ({"invalid_next": 1, "invalid_kind": "too_many"}, ProtocolError, "more than the 500"),
    ({"invalid_next": 1, "invalid_kind": "bad_shape"}, ProtocolError, "not a sync answer"),
]


@pytest.mark.parametrize(("faults", "error", "text"), FAULT_CASES, ids=lambda v: str(v))
def test_each_fault_reaches_the_client_as_its_error_class(
    server: SeqServer, faults: dict[str, Any], error: type[SyncError], text: str
) -> None:
    server.set_faults(**faults)
    # the timeout only has to be shorter than the slow case's answer (60 s): generous, so the
    # healthy request after the fault never times out on a slow machine
    with SeqHttpClient(server.url, TOKEN, timeout=5, instance="im-local") as c:
        with pytest.raises(error) as info:
            c.fetch_page(100, 500)
        assert type(info.value) is error
        assert text in str(info.value)
        assert "im-local" in str(info.value)
        assert "lastSeq=100" in str(info.value)
        # the fault was for one request only: the next one is fine
        assert c.fetch_page(100, 500).seqs == list(range(101, 601))
    fired, healthy = sync_requests(server)
    assert fired.faults and fired.faults[0] == next(iter(faults)).rsplit("_", 1)[0]
    assert healthy.faults == ()
    assert healthy.status == 200


def test_a_dropped_connection_is_logged_without_status(server: SeqServer, client: SeqHttpClient) -> None:
    server.set_faults(drop_next=1)
    with pytest.raises(TransientSyncError):
        client.fetch_page(0, 500)
    assert server.requests[-1] == RequestRecord("POST", SYNC_PATH, 0, 500, None, ("drop",))


def test_rate_limit_with_an_http_date(server: SeqServer, client: SeqHttpClient) -> None:
    when = datetime.now(UTC) + timedelta(seconds=60)
    server.set_faults(rate_limit_next=1, retry_after=format_datetime(when, usegmt=True))
    with pytest.raises(RateLimitedError) as info:
        client.fetch_page(0, 500)
    assert info.value.retry_after is not None
    assert 50 <= info.value.retry_after <= 61


def test_rate_limit_without_retry_after(server: SeqServer, client: SeqHttpClient) -> None:
    server.set_faults(rate_limit_next=1, retry_after=None)
    with pytest.raises(RateLimitedError) as info:
        client.fetch_page(0, 500)
    assert info.value.retry_after is None


def test_faults_before_auth_and_auth_before_page_faults(server: SeqServer) -> None:
    with SeqHttpClient(server.url, "wrong") as bad:
        server.set_faults(error_next=1)
        with pytest.raises(TransientSyncError):
            bad.fetch_page(0, 10)
        server.set_faults(code_error_next=1)
        with pytest.raises(AuthError):
            bad.fetch_page(0, 10)


def test_fault_on_next_n_requests(server: SeqServer, client: SeqHttpClient) -> None:
    server.set_faults(error_next=3)
    for _ in range(3):
        with pytest.raises(TransientSyncError):
            client.fetch_page(0, 10)
    assert len(client.fetch_page(0, 10)) == 10
    assert server.faults.error_next == 0
    assert [r.status for r in sync_requests(server)] == [503, 503, 503, 200]


def test_fault_scope_limits_the_endpoints(server: SeqServer, client: SeqHttpClient) -> None:
    server.set_faults(error_next=1, scope="conversations")
    assert len(client.fetch_page(0, 10)) == 10
    with pytest.raises(TransientSyncError):
        client.fetch_conversations()


def test_fault_rates_are_deterministic_with_a_seed() -> None:
    def pattern() -> list[int | None]:
        with SeqServer(messages=100, token=TOKEN) as srv, SeqHttpClient(srv.url, TOKEN) as c:
            srv.set_faults(seed=123, error_rate=0.5)
            for _ in range(40):
                try:
                    c.fetch_page(0, 10)
                except TransientSyncError:
                    pass
            return [r.status for r in srv.requests]

    first, second = pattern(), pattern()
    assert first == second
    assert 5 < first.count(503) < 35
    assert first.count(200) == 40 - first.count(503)


def test_overlap_resends_old_messages_and_the_sync_still_completes(server: SeqServer, client: SeqHttpClient) -> None:
    server.set_faults(overlap=3)
    page = client.fetch_page(500, 500)
    assert page.seqs[:4] == [498, 499, 500, 501]
    assert len(page) == 500
    rows, cursor, _ = sync_all(client)
    seqs = [row[2] for row in rows]
    assert sorted(set(seqs)) == list(range(1, 10_001))
    assert len(seqs) > 10_000  # re-sent ones came twice
    assert cursor == 10_000
    assert all("overlap" in r.faults for r in sync_requests(server))


def test_latency_delays_every_answer(server: SeqServer) -> None:
    server.set_faults(latency=0.3)
    with SeqHttpClient(server.url, TOKEN, timeout=0.1) as fast, pytest.raises(TransientSyncError, match="timed out"):
        fast.fetch_page(0, 10)
    with SeqHttpClient(server.url, TOKEN, timeout=30) as patient:
        assert len(patient.fetch_page(0, 10)) == 10


def test_set_faults_validates() -> None:
    with pytest.raises(ValueError):
        Faults(error_rate=2.0)
    with pytest.raises(ValueError):
        Faults(no_such_fault=1)  # type: ignore[call-arg]


# ------------------------------------------------------------------ admin endpoint


def test_admin_faults_endpoint(server: SeqServer, client: SeqHttpClient) -> None:
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"})
    with admin:
        response = admin.post("/_admin/faults", json={"error_next": 1, "error_status": 502})
        assert response.status_code == 200
        assert response.json()["error_status"] == 502
        assert admin.get("/_admin/faults").json()["error_next"] == 1
        with pytest.raises(TransientSyncError, match="HTTP 502"):
            client.fetch_page(0, 10)

        admin.post("/_admin/faults", json={"rate_limit_next": 5})
        admin.patch("/_admin/faults", json={"retry_after": "3"})
        with pytest.raises(RateLimitedError) as info:
            client.fetch_page(0, 10)
        assert info.value.retry_after == 3.0
        assert admin.delete("/_admin/faults").json() == Faults().model_dump()
        assert len(client.fetch_page(0, 10)) == 10

        assert admin.post("/_admin/faults", json={"error_rate": 7}).status_code == 422
        assert admin.post("/_admin/faults", json={"bogus": 1}).status_code == 422

        assert admin.post("/_admin/append", json={"n": 5}).json() == {"appended": 5, "maxSeq": 10_005}
        assert admin.get("/_admin/state").json() == {"messages": 10_005, "maxSeq": 10_005, "conversations": 4}
        logged = admin.get("/_admin/requests").json()["requests"]
        assert {
            "method": "POST",
            "path": SYNC_PATH,
            "lastSeq": 0,
            "count": 10,
            "status": 502,
            "faults": ["error"],
        } in logged
        admin.delete("/_admin/requests")
        assert [r.path for r in server.requests] == ["/_admin/requests"]


def test_admin_endpoint_needs_the_token(server: SeqServer) -> None:
    response = httpx.post(server.url + "/_admin/faults", json={"error_next": 100})
    assert response.status_code == 401
    assert server.faults == Faults()


# ---------------------------------------------------------------- life cycle, CLI


def test_start_binds_loopback_on_a_free_port_and_restarts_on_it() -> None:
    srv = SeqServer(messages=10, token=TOKEN)
    with pytest.raises(RuntimeError):
        _ = srv.url
    url = srv.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert srv.port != 0
        with pytest.raises(RuntimeError):
            srv.start()
    finally:
        srv.stop()
    with SeqHttpClient(url, TOKEN, timeout=10) as c:
        with pytest.raises(TransientSyncError, match="connection failed"):
            c.fetch_page(0, 5)
        assert srv.start() == url  # same port: a "network cut" the client recovers from
        try:
            assert c.fetch_page(0, 5).seqs == [1, 2, 3, 4, 5]
        finally:
            srv.stop()
    srv.stop()  # idempotent


def test_stop_closes_open_connections(server: SeqServer) -> None:
    server.set_faults(slow_next=1, slow_seconds=30)
    with SeqHttpClient(server.url, TOKEN, timeout=10) as c:
        errors: list[BaseException] = []

        def pull() -> None:
            try:
                c.fetch_page(0, 10)
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

        thread = threading.Thread(target=pull)
        thread.start()
        while not server.requests:
            threading.Event().wait(0.01)
        server.stop()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], TransientSyncError)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError):
        SeqServer(token="")
    with pytest.raises(ValueError):
        SeqServer(messages=10, start_seq=SEQ_MAX - 5)
    with pytest.raises(ValueError):
        SeqServer(hole_rate=1.0)


def test_main_runs_in_the_foreground_until_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncflow.testing.seqserver",
            "--port",
            "0",
            "--messages",
            "1200",
            "--token",
            "demo",
            "--conversations",
            "2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        url = None
        for _ in range(20):
            line = proc.stderr.readline()
            match = re.search(r"at (http://127\.0\.0\.1:\d+) ", line)
            if match:
                url = match.group(1)
                break
        assert url is not None
        with SeqHttpClient(url, "demo") as c:
            rows, cursor, pages = sync_all(c)
            assert (len(rows), cursor, pages) == (1_200, 1_200, 3)
            assert len(c.fetch_conversations()) == 2
            with SeqHttpClient(url, "other") as bad, pytest.raises(PermanentSyncError):
                bad.fetch_page(0, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
