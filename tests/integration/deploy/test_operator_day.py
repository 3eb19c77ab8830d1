"""The operator's day on a real Prefect server (``local_prefect``: ``prefect server start`` on
127.0.0.1, set up and deployed): alerts delivered to a webhook receiver on 127.0.0.1,
``syncflow doctor``, and ``sync run --deployment`` with no live worker (a warning at once;
the session is ``queued`` for ``sessions show`` before any worker opens it).

The alert automations run in the server's own services (triggers, actions): the receiver
gets what Prefect sends, nothing is faked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine

from syncflow.store import instances as inst_svc
from syncflow.store import retirement
from syncflow.store.db import make_engine, session_scope
from syncflow.testing.seqserver import SeqServer
from tests.support.prefect_server import BIN, LocalPrefect

SYNCFLOW = str(BIN / "syncflow")
TOKEN = "operator-day-token"
HOOK_BLOCK = "sf-test-alerts"
POOL = "sf-doctor-pool"


class Receiver:
    """A webhook receiver on 127.0.0.1 keeping every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    received.append(json.loads(body))
                except ValueError:
                    received.append({"raw": body.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, match: Callable[[dict[str, Any]], bool], *, what: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in list(self.received):
                if match(item):
                    return item
            time.sleep(0.5)
        raise AssertionError(f"no webhook for {what} after {timeout:.0f} s; received: {self.received}")


@pytest.fixture
def lp(local_prefect: LocalPrefect) -> Iterator[LocalPrefect]:
    yield local_prefect
    local_prefect.quiesce()


@pytest.fixture
def store(local_prefect: LocalPrefect) -> Iterator[Engine]:
    eng = make_engine(local_prefect.store_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def hook(local_prefect: LocalPrefect) -> Iterator[Receiver]:
    """The receiver, a custom-webhook block pointing at it, and the alerts set up through it."""
    receiver = Receiver()
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    with local_prefect.client_settings():
        CustomWebhookNotificationBlock(
            name="syncflow test alerts",
            url=receiver.url,
            method="POST",
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
            allow_private_urls=True,  # 127.0.0.1: Prefect refuses private addresses otherwise
        ).save(HOOK_BLOCK, overwrite=True)
    try:
        yield receiver
    finally:
        receiver.stop()


def _setup_alerts(lp: LocalPrefect, *extra: str) -> dict[str, Any]:
    out = lp.run([SYNCFLOW, "setup", "--alerts", HOOK_BLOCK, *extra, "--json"]).stdout
    return json.loads(out)["alerts"]  # type: ignore[no-any-return]


def test_alerts_are_idempotent_and_a_failed_session_reaches_the_webhook(
    lp: LocalPrefect, store: Engine, hook: Receiver
) -> None:
    first = _setup_alerts(lp, "--alert-failures", "2", "--alert-not-started", "10s")
    assert set(first["automations"]) == {
        "syncflow: session failed",
        "syncflow: instance failing in a row",
        "syncflow: session did not start",
    }
    assert set(first["automations"].values()) <= {"created", "kept"}
    again = _setup_alerts(lp, "--alert-failures", "2", "--alert-not-started", "10s")
    assert set(again["automations"].values()) == {"kept"}  # idempotent
    bad = lp.run([SYNCFLOW, "setup", "--alerts", "no-such-block"], check=False)
    assert bad.returncode == 1 and "no block named 'no-such-block'" in bad.stderr
    assert f"custom-webhook/{HOOK_BLOCK}" in bad.stderr  # it names the notification blocks there

    server = SeqServer(messages=20, conversations=2, token=TOKEN, seed=9)
    server.start()
    try:
        lp.run(
            [SYNCFLOW, "instances", "add", "alert-im", "--kind", "http-seq", "--url", server.url,
             "--token-env", "ALERT_BAD_TOKEN", "--no-check"],
            ALERT_BAD_TOKEN="not-the-token",
        )  # fmt: skip
        sids = []
        for _ in range(2):  # two failures in a row: the streak alert (N=2) fires once
            done = lp.run(
                [SYNCFLOW, "sync", "run", "--category", "messages", "--instance", "alert-im", "--no-metadata",
                 "--json", "--quiet"],
                check=False,
            )  # fmt: skip
            assert done.returncode == 1, done.stderr
            sids.append(json.loads(done.stdout)["session_id"])
    finally:
        server.stop()

    failed = hook.wait(
        lambda b: "session failed" in b.get("subject", "") and sids[0] in b.get("body", ""),
        what="the failed session",
    )
    assert "ended Failed" in failed["body"] and "(messages)" in failed["body"]
    assert "not-the-token" not in json.dumps(hook.received)
    streak = hook.wait(
        lambda b: "failed 2 syncs in a row" in b.get("subject", "") and "alert-im" in b.get("body", ""),
        what="the instance failing twice in a row",
    )
    assert "HTTP 401" in streak["body"] and sids[1] in streak["body"]
    print(f"webhooks received: {len(hook.received)}")
    with session_scope(store) as s:
        retirement.retire_instance(s, name="alert-im")  # no later session of this server picks it up


def test_doctor_and_a_deployment_run_without_a_worker(lp: LocalPrefect, store: Engine, hook: Receiver) -> None:
    with session_scope(store) as s:  # added before PREFECT_API_URL was set: its block is elsewhere
        inst_svc.add_instance(s, name="doc-gone", kind="postgres", block_name="syncflow-doc-gone-elsewhere")
        inst_svc.add_instance(s, name="doc-im", kind="http-seq", block_name="syncflow-doc-im-elsewhere")
    lp.run([SYNCFLOW, "setup", "--work-pool", POOL])
    try:
        report = lp.run([SYNCFLOW, "doctor", "--work-pool", POOL, "--json"], check=False)
        assert report.returncode == 1, report.stderr
        checks = {c["check"]: c for c in json.loads(report.stdout)["checks"]}
        assert checks["store"]["status"] == "ok" and checks["store schema"]["status"] == "ok"
        assert checks["prefect server"]["status"] == "ok" and lp.api_url in checks["prefect server"]["detail"]
        assert checks["work pool"]["status"] == "fail" and "no live worker" in checks["work pool"]["detail"]
        assert checks["work pool"]["fix"] == f"prefect worker start --pool {POOL}"
        assert checks["concurrency limits"]["status"] == "ok"
        assert checks["deployments"]["status"] == "ok"
        gone = checks["instance doc-gone"]
        assert gone["status"] == "fail" and "not on this Prefect server" in gone["detail"]
        assert gone["fix"].startswith("syncflow instances update doc-gone --host")
        human = lp.run([SYNCFLOW, "doctor", "--work-pool", POOL], check=False, COLUMNS="250")
        assert human.returncode == 1 and "problem(s)" in human.stdout

        # a deployment of the session flow on that pool, which has no worker
        from flows.session_sync import sync_session

        with lp.client_settings():
            sync_session.to_deployment(name="doctor-batch", work_pool_name=POOL).apply()
        started = lp.run(
            [SYNCFLOW, "sync", "run", "--category", "messages", "--instance", "doc-im", "--deployment",
             "--deployment-name", "sync-session/doctor-batch", "--no-wait", "--json"],
        )  # fmt: skip
        assert f"no live worker in work pool {POOL!r}" in started.stderr
        assert f"prefect worker start --pool {POOL}" in started.stderr
        fired = json.loads(started.stdout)
        shown = json.loads(lp.run([SYNCFLOW, "sessions", "show", fired["session_id"], "--json"]).stdout)
        assert shown["status"] == "queued" and shown["flow_run_id"] == fired["flow_run_id"]
        text = lp.run([SYNCFLOW, "sessions", "show", fired["session_id"]], COLUMNS="200").stdout
        assert "queued" in text and fired["flow_run_id"] in text

        # nobody starts it: it goes Late, then the "did not start" alert (10 s after Late) arrives
        late = hook.wait(
            lambda b: "did not start" in b.get("subject", "") and fired["flow_run_id"] in b.get("body", ""),
            what="the session that did not start",
        )
        assert "prefect worker start --pool" in late["body"]
    finally:
        with session_scope(store) as s:
            for name in ("doc-gone", "doc-im"):
                retirement.retire_instance(s, name=name)
