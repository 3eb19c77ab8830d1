"""Schemathesis against the OpenAPI schema of a real ``syncflow serve`` (uvicorn on
127.0.0.1, the test store, the Prefect test harness): whatever it sends, no 5xx other than
the documented 502/503, and every answer matches the schema."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, delete

from syncflow.api.auth import hash_token
from syncflow.store.db import make_engine
from syncflow.store.models import Base
from tests.integration.api.conftest import AUTH, TOKEN, Deployments, Store
from tests.support.prefect_server import REPO, free_port

BIN = Path(sys.executable).parent


def _wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture
def served(sqlite_url: str, harness_api_url: str, deployments: Deployments, tmp_path: Path) -> Iterator[str]:
    """``syncflow serve`` on a free port of 127.0.0.1, on the SQLite test store (one backend
    is enough here: the SQL is covered on both by the other tests), with registered
    instances and a failed session; stopped (and its queued runs cleared) at the end."""
    engine = make_engine(sqlite_url)
    _wipe(engine)
    store = Store(engine)
    store.instance("fz-1", tags=["fuzz"])
    store.instance("fz-pg", kind="postgres")
    store.session(["fz-1"], outcome={"fz-1": "failed"})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYNCFLOW_"))}
    env.update(
        PREFECT_API_URL=harness_api_url,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        SYNCFLOW_DATABASE_URL=sqlite_url,
        SYNCFLOW_API_TOKEN_HASH=hash_token(TOKEN),
        SYNCFLOW_API_MANUAL_BATCH_DEPLOYMENT=deployments.manual,
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "syncflow"), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"syncflow serve exited {proc.returncode}:\n{(tmp_path / 'serve.log').read_text()}"
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("syncflow serve did not answer /healthz within 60 s")
            time.sleep(0.3)
        yield base
    finally:
        try:
            for cat in ("account", "capacity", "config", "metadata", "messages", "other"):
                httpx.post(f"{base}/api/admin/sync-queue/{cat}/resume", headers=AUTH, timeout=30)
                httpx.delete(f"{base}/api/admin/sync-queue/{cat}/clear", headers=AUTH, timeout=30)
        except httpx.HTTPError:
            pass
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        _wipe(engine)
        engine.dispose()
        server_log = (tmp_path / "serve.log").read_text(errors="replace")
        assert "Traceback" not in server_log, server_log[-4000:]


OPERATIONS = [
    ("GET", "/sync_sessions/api/sessions"),
    ("GET", "/sync_sessions/api/sessions/{session_id}"),
    ("POST", "/sync_sessions/api/sessions"),
    ("POST", "/sync_sessions/api/sessions/{session_id}/cancel"),
    ("POST", "/sync_sessions/api/sessions/{session_id}/retry-failed"),
    ("GET", "/sync_sessions/api/statistics"),
    ("GET", "/sync_sessions/api/instances"),
    ("GET", "/api/admin/sync-queue/stats/{category}"),
    ("POST", "/api/admin/sync-queue/{category}/retry-failed"),
    ("POST", "/api/admin/sync-queue/{category}/pause"),
    ("POST", "/api/admin/sync-queue/{category}/resume"),
    ("DELETE", "/api/admin/sync-queue/{category}/clear"),
    ("GET", "/healthz"),
]


def _check(case: schemathesis.Case, response: object, seen: dict[str, int]) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    seen[str(status)] = seen.get(str(status), 0) + 1
    text = response.text  # type: ignore[attr-defined]
    # 502/503 are documented answers about Prefect, not crashes; anything else >= 500 is a bug.
    assert status < 500 or (status in (502, 503) and ("Prefect" in text or "deploy" in text)), (
        f"{case.method} {case.formatted_path}: {status} {text[:500]}"
    )
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors_and_answers_match_the_schema(served: str, mode: str) -> None:
    """Every operation, valid (positive) and invalid (negative) input, with the token."""
    from hypothesis import given
    from schemathesis.generation.modes import GenerationMode

    api = schemathesis.openapi.from_url(f"{served}/openapi.json")
    ops = {(op.method.upper(), op.path): op for op in (r.ok() for r in api.get_all_operations())}
    assert set(OPERATIONS) <= set(ops), sorted(set(OPERATIONS) - set(ops))
    seen: dict[str, int] = {}
    for key in OPERATIONS:
        op = ops[key]
        if mode == "negative" and key == ("GET", "/healthz"):
            continue  # no input to break

        @given(case=op.as_strategy(GenerationMode(mode)))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            _check(case, case.call(headers=AUTH, timeout=60), seen)

        run()
    if mode == "negative":
        assert seen.get("422", 0) > 50, seen  # the fuzzer's bad input was refused as such
    else:
        assert seen.get("200", 0) + seen.get("202", 0) > 20, seen
