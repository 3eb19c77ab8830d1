"""Issue 9 defect 3: a store that goes away for a moment (a PostgreSQL restart mid-sync) does not
fail the sync; a store that stays away fails it with one line.

The store is a PRIVATE PostgreSQL cluster started by the test (initdb into a temporary
directory, its own port): restarting the shared server would break every other test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from blocks.connections import forget_sources
from syncflow.settings import reset_settings
from syncflow.store.db import dispose_engines, make_engine
from syncflow.store.migrations import upgrade
from syncflow.store.outage import StoreUnavailable, is_transient, retrying
from tests.integration.flows.conftest import Wiring
from tests.integration.flows.test_seq_engine import (
    MakeServer,
    assert_store_equals_truth,
    counts,
    cursor,
    make_server,  # noqa: F401  (fixture)
    record,
    run_ok,
)
from tests.support import private_pg

pytestmark = pytest.mark.skipif(not private_pg.available(), reason="PostgreSQL server binaries (initdb) not installed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[private_pg.PrivatePg]:
    pg = private_pg.PrivatePg()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def outage_store(cluster: private_pg.PrivatePg, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Engine]]:
    """A migrated store on the private cluster, configured as SYNCFLOW_DATABASE_URL."""
    url = cluster.create_db(f"outage_{uuid.uuid4().hex[:8]}")
    eng = make_engine(url)
    upgrade(eng)
    monkeypatch.setenv("SYNCFLOW_DATABASE_URL", url)
    reset_settings()
    forget_sources()
    yield url, eng
    forget_sources()
    eng.dispose()
    dispose_engines()
    reset_settings()


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_a_store_restart_mid_sync_loses_and_duplicates_nothing(
    prefect_harness: None,
    cluster: private_pg.PrivatePg,
    outage_store: tuple[str, Engine],
    make_server: MakeServer,  # noqa: F811
) -> None:
    url, eng = outage_store
    server = make_server(messages=30_000)
    wiring = Wiring(eng)
    wiring.add("im-1", server, batch_size=100)
    _, recs = wiring.open(["im-1"])
    restarted = threading.Event()
    seen_before: list[int] = []

    def restart_mid_sync() -> None:
        """When ~1/4 of the messages are stored, restart the cluster (fast: sessions killed)."""
        with psycopg.connect(_conninfo(url), autocommit=True) as conn:
            while True:
                n = conn.execute("SELECT count(*) FROM messages").fetchone()[0]  # type: ignore[index]
                if n >= 7_500:
                    seen_before.append(n)
                    break
                time.sleep(0.02)
        cluster.restart()
        restarted.set()

    watcher = threading.Thread(target=restart_mid_sync, daemon=True)
    watcher.start()
    result = run_ok(recs["im-1"])
    watcher.join(timeout=120)

    assert restarted.is_set(), "the cluster was never restarted"
    assert seen_before[0] < 30_000, "the sync ended before the restart: nothing was tested"
    rec = record(eng, recs["im-1"])
    assert rec.status == "completed" and result["status"] == "completed"
    assert counts(rec) == {"synced": 30_000, "created": 30_000, "updated": 0, "unchanged": 0, "deleted": 0}
    assert_store_equals_truth(eng, "im-1", server)
    assert cursor(eng, "im-1") == server.max_seq
    # the restart really cut the engine's connections (the server log says it was shut down)
    assert "database system is shut down" in cluster.log.read_text()


def test_a_store_that_stays_away_fails_with_one_line(
    cluster: private_pg.PrivatePg, outage_store: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, eng = outage_store
    with eng.connect() as conn:
        conn.execute(text("SELECT 1"))
    monkeypatch.setenv("SYNCFLOW_STORE_RETRY_SECONDS", "2")
    reset_settings()
    dead = url.rsplit(":", 1)[0] + f":{private_pg._free_port()}/nowhere"  # nothing listens there

    # a unit of work retries, then gives up with the URL (no password) and the reason
    attempts = 0

    def unit() -> None:
        nonlocal attempts
        attempts += 1
        with make_engine(dead).connect() as c:
            c.execute(text("SELECT 1"))

    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        retrying(unit, what="test", url=dead)
    assert time.monotonic() - started >= 2
    assert str(err.value).startswith(f"store unreachable at {dead} for ")
    assert "refused" in str(err.value).lower() and "\n" not in str(err.value)

    # the CLI against a store that is down says so in one line, no traceback
    env = {**os.environ, "SYNCFLOW_DATABASE_URL": dead.replace("postgres@", "postgres:s3cret-pw@")}
    res = subprocess.run(
        [sys.executable, "-m", "syncflow", "sessions", "list"], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode != 0
    output = res.stdout + res.stderr
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert "store unreachable at postgresql+psycopg://postgres:***@127.0.0.1:" in lines[0], output
    assert "s3cret-pw" not in output and "Traceback" not in output


def test_what_counts_as_transient(cluster: private_pg.PrivatePg, tmp_path: Any) -> None:
    """Refused connections, restarts and a locked SQLite file are transient; a wrong database
    or role is not (retrying it would only delay the real error)."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    def error_of(url: str) -> BaseException:
        eng = make_engine(url)
        try:
            with eng.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception as exc:
            return exc
        finally:
            eng.dispose()
        raise AssertionError(f"{url} connected")

    base = cluster.url().rsplit("/", 1)[0]
    os.environ["SYNCFLOW_STORE_RETRY_SECONDS"] = "0"
    reset_settings()
    try:
        assert not is_transient(error_of(base + "/no_such_db"))
        assert not is_transient(error_of(base.replace("postgres@", "no_such_role@") + "/postgres"))
    finally:
        del os.environ["SYNCFLOW_STORE_RETRY_SECONDS"]
        reset_settings()

    # a connection the server terminated (what a restart does to a pooled connection in use)
    eng = make_engine(cluster.url())
    with eng.connect() as victim, psycopg.connect(_conninfo(cluster.url()), autocommit=True) as admin:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar()
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(OperationalError) as err:
            victim.execute(text("SELECT 1"))
        assert is_transient(err.value)
    eng.dispose()

    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x int)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(db, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    assert is_transient(locked.value)
    holder.rollback()
    holder.close()
    other.close()
