"""The embedded default under concurrency: SQLite store + Prefect's ephemeral mode (no
PREFECT_API_URL), every command a fresh ``syncflow`` process with its own temporary Prefect
server on one ``PREFECT_HOME`` SQLite database (issue 9, points 8 and 9; issue 11, point 5).

One module fixture: ten reference seq servers in this process, registered as instances
``im-0..9`` (tag ``a``: 0-3, tag ``b``: 4-7) in a fresh SYNCFLOW_HOME and PREFECT_HOME —
the first three by three ``syncflow instances add`` started at once on the new PREFECT_HOME,
the rest by one process — then two messages sessions (tags a and b) run at once by two
``syncflow sync run`` processes. No wall-clock bound anywhere: overlap is measured from the
records' started/completed times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from syncflow.store.db import make_engine
from syncflow.store.models import SyncInstanceRecord, SyncSession
from syncflow.store.sessions import max_overlap
from syncflow.testing.seqserver import SeqServer

BIN = Path(sys.executable).parent
TOKEN_ENV = "EMBEDDED_TEST_TOKEN"
TOKEN = "embedded-token"
N = 10
# What must never reach the terminal of a sync: the orchestrator's own trouble.
NOISE = ("Traceback", "database is locked", "OperationalError", "Service Unavailable", "prefect.", "uvicorn")


@dataclass
class Home:
    root: Path
    env: dict[str, str]
    servers: list[SeqServer]
    adds: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    sessions: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.root / 'home' / 'syncflow.db'}"

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "syncflow"), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_cli(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(BIN / "syncflow"), *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def python(self, code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _add_args(i: int, server: SeqServer) -> list[str]:
    tag = ["--tag", "a"] if i < 4 else ["--tag", "b"] if i < 8 else []
    return ["instances", "add", f"im-{i}", "--kind", "http-seq", "--url", server.url, "--token-env", TOKEN_ENV, *tag]


# The other instances, by the CLI's own code in one process (one temporary server, not seven).
REGISTER = """
import json, sys
from typer.testing import CliRunner
from syncflow import cli
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 0, (args, r.stdout, r.stderr, r.exception)
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    root = tmp_path_factory.mktemp("embedded")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYNCFLOW_"))}
    env.update(
        SYNCFLOW_HOME=str(root / "home"), PREFECT_HOME=str(root / "prefect"), COLUMNS="200", **{TOKEN_ENV: TOKEN}
    )
    servers = [SeqServer(messages=2000, conversations=3, token=TOKEN, seed=i + 1) for i in range(N)]
    for server in servers:
        server.set_faults(latency=0.05)
        server.start()
    h = Home(root, env, servers)
    try:
        assert h.cli("db", "upgrade").returncode == 0
        # three processes start Prefect at once on a PREFECT_HOME that has no database yet
        procs = [h.start_cli(*_add_args(i, servers[i])) for i in range(3)]
        h.adds = [_finish(p) for p in procs]
        if all(a.returncode == 0 for a in h.adds):
            h.python(REGISTER, json.dumps([_add_args(i, servers[i]) for i in range(3, N)]))
            # two sessions at once, each in its own process with its own temporary server
            runs = {tag: h.start_cli("sync", "run", "--category", "messages", "--tag", tag) for tag in ("a", "b")}
            h.sessions = {tag: _finish(p) for tag, p in runs.items()}
        yield h
    finally:
        for server in servers:
            server.stop()


def _sessions(h: Home, category: str) -> list[tuple[SyncSession, list[SyncInstanceRecord]]]:
    engine = make_engine(h.store_url)
    try:
        from sqlalchemy.orm import Session

        with Session(engine) as s:
            rows = list(s.scalars(select(SyncSession).where(SyncSession.sync_category == category)))
            out = []
            for row in sorted(rows, key=lambda r: r.started_at):
                recs = list(
                    s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.session_id == row.session_id))
                )
                s.expunge_all()
                out.append((row, recs))
            return out
    finally:
        engine.dispose()


def _spans(recs: list[SyncInstanceRecord]) -> list[tuple[Any, Any]]:
    return [(r.started_at, r.completed_at) for r in recs if r.started_at and r.completed_at]


def test_processes_started_at_once_on_a_new_prefect_home_all_succeed(home: Home) -> None:
    for add in home.adds:
        assert add.returncode == 0, add.stdout + add.stderr
        assert add.stderr == "", add.stderr
        assert "added instance" in add.stdout


def test_two_sessions_at_once_complete_every_instance_with_a_clean_terminal(home: Home) -> None:
    assert set(home.sessions) == {"a", "b"}, "registration failed: see the other test"
    for tag, run in home.sessions.items():
        assert run.returncode == 0, f"session {tag}:\n{run.stdout}\n{run.stderr}"
        assert "(messages): completed — 4/4 succeeded, 0 failed" in run.stdout, run.stdout
        assert run.stderr == "", run.stderr
        for word in NOISE:
            assert word not in run.stdout, run.stdout
    messages = _sessions(home, "messages")
    assert len(messages) == 2
    for row, recs in messages:
        assert row.status == "completed"
        assert sorted(r.status for r in recs) == ["completed"] * 4
        assert all(r.items_synced == 2000 for r in recs)
    # each messages session ran its metadata session first, complete too
    metadata = _sessions(home, "metadata")
    assert len(metadata) == 2
    assert all(row.status == "completed" and len(recs) == 4 for row, recs in metadata)
    # the two processes shared one limit of 3 (one Prefect database)
    assert max_overlap([s for _, recs in messages for s in _spans(recs)]) <= 3


# Reads the run logs back from the Prefect API (another temporary server on the same PREFECT_HOME).
READ_LOGS = """
import asyncio, json, sys
from syncflow.cli import _runtime
_runtime.prepare()
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

async def main():
    async with get_client() as client:
        out = {}
        for run_id in json.loads(sys.argv[1]):
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            out[run_id] = [log.message for log in logs]
        print(json.dumps(out))

asyncio.run(main())
"""


def test_run_logs_reach_the_prefect_api(home: Home) -> None:
    assert home.sessions, "registration failed: see the other test"
    row, recs = _sessions(home, "messages")[0]
    runs = [row.flow_run_id] + [r.flow_run_id for r in recs]
    assert all(runs)
    logs = json.loads(home.python(READ_LOGS, json.dumps(runs)).stdout.strip().splitlines()[-1])
    parent = logs[row.flow_run_id]
    assert any(f"session {row.session_id}: 4 instance(s), limit tag:sync:messages" in m for m in parent), parent
    for rec in recs:
        assert any(m.startswith(f"{rec.instance_name}: completed") for m in logs[rec.flow_run_id]), logs[
            rec.flow_run_id
        ]
    # and nothing of it on the terminal (the console handler is quiet, not the loggers)
    assert "instance(s), limit" not in home.sessions["a"].stdout + home.sessions["a"].stderr


def test_a_ten_instance_session_overlaps_up_to_the_limit_metadata_included(home: Home) -> None:
    assert home.sessions, "registration failed: see the other test"
    for server in home.servers:  # something to fetch everywhere, slowly enough to overlap:
        server.append(2500)  # 6 pages of 1 s each; the metadata's one request takes 3 s
        server.set_faults(latency=1.0, scope="conversations", slow_rate=1.0, slow_seconds=2.0)
    run = home.cli("sync", "run", "--category", "messages", "--all", "--refresh-metadata")  # fresh since the fixture
    for server in home.servers:
        server.set_faults(latency=0.05)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(messages): completed — 10/10 succeeded, 0 failed" in run.stdout, run.stdout
    assert run.stderr == "", run.stderr
    recs = _sessions(home, "messages")[-1][1]
    meta_recs = _sessions(home, "metadata")[-1][1]
    assert len(recs) == N and len(meta_recs) == N
    assert all(r.status == "completed" for r in recs + meta_recs)
    # tag:sync:messages has 3 slots (the default): 3 at once, never more
    assert max_overlap(_spans(recs)) == 3, sorted(_spans(recs))
    # the metadata session (limit 5) ran its instances concurrently, not one after the other
    assert max_overlap(_spans(meta_recs)) >= 2, sorted(_spans(meta_recs))


# In a process of its own (the patch is process-wide): a write transaction of Prefect's SQLite
# configuration, before and after syncflow's patch, against a second connection.
WRITE_LOCK = """
import asyncio, sqlite3, sys
from sqlalchemy import text
from prefect.server.database.configurations import AioSqliteConfiguration
from syncflow.cli._prefect_server import patch_sqlite_write_transactions

path = sys.argv[1]

async def second_writer_blocked() -> bool:
    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{path}")
    engine = await config.engine()
    session = await config.session(engine)
    async with session:
        async with config.begin_transaction(session):
            await session.execute(text("SELECT 1"))  # a read first, as create_task_run does
            other = sqlite3.connect(path, timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.rollback()
                return False
            except sqlite3.OperationalError:
                return True
            finally:
                other.close()

before = asyncio.run(second_writer_blocked())
assert patch_sqlite_write_transactions()
after = asyncio.run(second_writer_blocked())
print(before, after)
"""


def test_the_embedded_server_takes_the_write_lock_when_a_transaction_begins(tmp_path: Path) -> None:
    """The root cause of the 503s: Prefect's DEFERRED transactions read, then fail at once
    (no busy wait) when they try to write after another writer; IMMEDIATE ones queue."""
    done = subprocess.run(
        [sys.executable, "-c", WRITE_LOCK, str(tmp_path / "prefect.db")],
        env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["False", "True"], done.stdout
