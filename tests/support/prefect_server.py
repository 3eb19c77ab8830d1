"""A real local Prefect server (``prefect server start`` on 127.0.0.1) and workers for tests.

The server keeps its database in a throwaway PostgreSQL database (a SQLite-backed server
answers 503 "database is locked" under parallel run creation) and its concurrency leases on
the filesystem (what the README recommends for a single-node server). Everything started
here is stopped by :meth:`LocalPrefect.stop`: the server, its workers and any other process
started through :meth:`LocalPrefect.spawn`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        out.append(pid)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPrefect:
    def __init__(self, home: Path, database_url: str, store_url: str) -> None:
        self.home = home
        self.database_url = database_url  # the Prefect server's own database
        self.store_url = store_url  # syncflow's store, for the processes started here
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    # ------------------------------------------------------------------ environment

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a client process (CLI, worker, flow) of this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYNCFLOW_"))}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="5",
            PREFECT_RUNNER_POLL_FREQUENCY="1",
            PREFECT_LOGGING_LEVEL="INFO",
            PREFECT_CLI_PROMPT="false",
            SYNCFLOW_DATABASE_URL=self.store_url,
            SYNCFLOW_HOME=str(self.home / "syncflow"),
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def server_env(self) -> dict[str, str]:
        return self.env(
            PREFECT_API_DATABASE_CONNECTION_URL=self.database_url,
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_LOGGING_LEVEL=os.environ.get("SYNCFLOW_TEST_PREFECT_SERVER_LOG", "WARNING"),
            # faster cancellation/cleanup bookkeeping than the defaults, so tests finish sooner
            PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS="5",
            PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="5",
            # The deployments' cron schedules (messages every 15 minutes, the sweep every 5, ...)
            # exist but start nothing: a scheduled session firing mid-test syncs the instances a
            # test registered before the test's own session does (a manual batch then found
            # nothing new: "completed, 0 synced" in the console test). Tests start scheduled
            # deployments themselves (`deployment_run`).
            PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        )

    # ------------------------------------------------------------------ processes

    def spawn(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` (cwd: the repo) with this server's environment, output to a log file."""
        log = self.home / f"{name}.log"
        out = log.open("ab")
        proc = subprocess.Popen(
            list(argv), cwd=REPO, env=env or self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self.procs.append((proc, log))
        return proc

    def run(
        self, argv: Sequence[str], *, timeout: float = 180, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a command against this server (extra environment ``env``) and wait for it."""
        done = subprocess.run(
            list(argv), cwd=REPO, env=self.env(**env), capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def start(self, timeout: float = 120) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.spawn(
            "server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"],
            env=self.server_env(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc, log = self.procs[0]
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout} s:\n{self.log('server')[-4000:]}")

    def start_worker(self, name: str, pool: str = "syncflow", *, limit: int | None = None) -> subprocess.Popen[bytes]:
        argv = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name, "--type", "process"]
        if limit is not None:
            argv += ["--limit", str(limit)]
        return self.spawn(name, argv)

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_process(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)

    def stop(self) -> None:
        for proc, _ in reversed(self.procs):  # workers and runners first, the server last
            self.stop_process(proc)
        for pid in self.leftovers():  # flow-run processes workers started in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def quiesce(self) -> None:
        """Between tests: stop every process started after the server (workers, runners, the
        flow runs they started in sessions of their own), cancel every flow run not yet final
        (nothing one test queued may run during the next) and cancel the sessions still
        running in the store."""
        from sqlalchemy import select

        from syncflow.store import sessions as book
        from syncflow.store.db import make_engine, session_scope
        from syncflow.store.models import SessionStatus, SyncSession

        for proc, _ in list(self.procs[1:]):
            self.stop_process(proc)
        del self.procs[1:]
        server = self.procs[0][0].pid if self.procs else None
        for pid in self.leftovers():
            if pid != server and server not in _ancestors(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        async def cancel_runs() -> None:
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
            from prefect.client.schemas.objects import StateType
            from prefect.states import Cancelled

            open_types = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
            async with get_client() as client:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_types))
                    ),
                    limit=200,
                )
                for run in runs:
                    await client.set_flow_run_state(run.id, Cancelled(message="test teardown"), force=True)

        with self.client_settings():
            asyncio.run(cancel_runs())
        engine = make_engine(self.store_url)
        try:
            with session_scope(engine) as s:
                stmt = select(SyncSession.session_id).where(SyncSession.status == SessionStatus.RUNNING)
                for sid in list(s.scalars(stmt)):
                    book.cancel_session(s, session_id=sid, reason="test teardown")
        finally:
            engine.dispose()

    def leftovers(self) -> list[int]:
        """Processes still running with this server's environment (PREFECT_HOME)."""
        marker = f"PREFECT_HOME={self.home}".encode()
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        out.append(int(entry))
            except OSError:
                continue
        return out

    @contextmanager
    def client_settings(self) -> Iterator[None]:
        """Point this (test) process's Prefect client at the server."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield
