"""What the benchmark starts and owns: the seq server and Prefect server processes, and the
throwaway PostgreSQL databases. Each process runs in its own session (process group), so its
memory and CPU are never counted as the measured pipeline's, and it can be stopped by id.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServiceError(RuntimeError):
    """A process or database the benchmark needs did not come up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, *, proc: subprocess.Popen[bytes], timeout: float, headers: dict[str, str] | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServiceError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode} (see its log)")  # type: ignore[arg-type]
        try:
            if httpx.get(url, headers=headers, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ServiceError(f"{url} did not answer within {timeout:g}s")
        time.sleep(0.05)


# ------------------------------------------------------------------------ CPU accounting


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    head, _, tail = raw.rpartition(")")
    return [head.split("(", 1)[1], *tail.split()]


def _all_stats() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                out[int(entry.name)] = fields
    return out


def _cpu(fields: list[str]) -> float:
    # fields[0] is comm; /proc/PID/stat's utime/stime are fields 14/15 (1-based) -> 12/13 here.
    return (int(fields[12]) + int(fields[13])) / _CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and its live descendants (Linux /proc)."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[2]), []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += _cpu(stats[pid])
        todo.extend(children.get(pid, ()))
    return total


class CpuSampler:
    """CPU seconds used by groups of processes during a ``with`` block, sampled from /proc.

    A process seen at the start counts from there; one born later counts in full; one that
    exits counts up to its last sample (``interval`` bounds what is lost). Groups: every
    ``postgres`` process (server and backends), and the process trees of the given roots.
    """

    def __init__(self, roots: dict[str, int], interval: float = 0.2) -> None:
        self.roots = roots
        self.interval = interval
        self.used: dict[str, float] = {}
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _sample(self, initial: bool) -> None:
        stats = _all_stats()
        children: dict[int, list[int]] = {}
        for pid, fields in stats.items():
            children.setdefault(int(fields[2]), []).append(pid)
        group_of: dict[int, str] = {}
        for group, root in self.roots.items():
            todo = [root]
            while todo:
                pid = todo.pop()
                group_of[pid] = group
                todo.extend(children.get(pid, ()))
        for pid, fields in stats.items():
            group = group_of.get(pid) or ("postgres" if fields[0].startswith("postgres") else None)
            if group is None:
                continue
            cpu = _cpu(fields)
            if initial:
                self._first[pid] = cpu
            self._first.setdefault(pid, 0.0)
            self._last[pid] = (group, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(initial=False)

    def __enter__(self) -> Self:
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(initial=False)
        used: dict[str, float] = {}
        for pid, (group, cpu) in self._last.items():
            used[group] = used.get(group, 0.0) + cpu - self._first[pid]
        self.used = used


def settle(root: int, *, idle_cpu: float = 0.1, window: float = 1.0, timeout: float = 30.0) -> tuple[float, float]:
    """Wait until ``root``'s process tree is idle: under ``idle_cpu`` of a core over ``window`` s.

    The Prefect server works on after a run's last request (its services turn the run's events
    into rows and records): without this, one run's backlog is timed in the next run's window.
    Returns (seconds waited, CPU seconds the tree used meanwhile); gives up after ``timeout``.
    """
    start = time.perf_counter()
    first = before = tree_cpu_seconds(root)
    while True:
        time.sleep(window)
        now, cpu = time.perf_counter(), tree_cpu_seconds(root)
        if (cpu - before) / window < idle_cpu or now - start >= timeout:
            return now - start, cpu - first
        before = cpu


def cpu_probe(rounds: int = 3) -> float:
    """Milliseconds a fixed pure-Python workload takes here now (the fastest of ``rounds``).

    The 2-vCPU machine's speed drifts: the same deterministic session has used 4.7 and 8.3
    CPU-s of its process within one sitting. Taken before each timed run, this says how fast
    the machine was then, so a slow run can be told from a slow program."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(500_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - start)
    return best * 1000


# --------------------------------------------------------------------------- processes


class _Process:
    """A subprocess in its own session, logging to a file, stopped by SIGTERM to its group."""

    name = "process"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return self.proc

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SeqServerProcess(_Process):
    """A seq server in its own process; admin calls over HTTP.

    ``source="fast"`` (default): :mod:`bench.fastseq`, pages pre-serialised on the batch grid, not
    the bottleneck. ``source="reference"``: the project's reference server (see
    :data:`bench._product.REFERENCE_SEQSERVER`), which caps any client at ~40k msg/s.
    """

    name = "seqserver"

    def __init__(
        self,
        *,
        messages: int,
        token: str,
        seed: int,
        log_path: Path,
        source: str = "fast",
        page_size: int = 500,
        latency: float = 0.0,
    ) -> None:
        super().__init__(log_path)
        self.latency = latency
        self.messages = messages
        self.token = token
        self.seed = seed
        self.source = source
        self.page_size = page_size
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 60.0) -> str:
        self.port = free_port()
        if self.source == "fast":
            module, extra = "bench.fastseq", ["--page-size", str(self.page_size), "--latency", str(self.latency)]
        else:
            from bench._product import REFERENCE_SEQSERVER

            module, extra = REFERENCE_SEQSERVER, []
        args = [
            sys.executable, "-m", module,
            "--port", str(self.port), "--messages", str(self.messages),
            "--token", self.token, "--seed", str(self.seed), *extra,
        ]  # fmt: skip
        proc = self._spawn(args)
        wait_http(f"{self.url}/_admin/state", proc=proc, timeout=timeout, headers=self._headers)
        return self.url

    def state(self) -> dict[str, Any]:
        """``{"messages": n, "maxSeq": s, "conversations": c}``."""
        response = httpx.get(f"{self.url}/_admin/state", headers=self._headers, timeout=10.0)
        response.raise_for_status()
        return dict(response.json())

    def append(self, n: int) -> None:
        response = httpx.post(f"{self.url}/_admin/append", json={"n": n}, headers=self._headers, timeout=30.0)
        response.raise_for_status()

    def rate(self) -> dict[str, float]:
        """The server's own rate: a tight client reads every page, nothing stored."""
        from bench.fastseq import measure_rate

        return measure_rate(self.url, self.token, page_size=self.page_size)


class PrefectServerProcess(_Process):
    """``prefect server start`` on a free port with its own PREFECT_HOME (SQLite backend, or
    PostgreSQL with ``start(database_url=...)``). ``prefect`` is the one beside this Python."""

    name = "prefect-server"

    def __init__(self, *, home: Path, log_path: Path) -> None:
        super().__init__(log_path)
        self.home = home
        self.port = 0
        self.startup_s = 0.0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(
        self,
        timeout: float = 120.0,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        split_services: bool = False,
        embedded: bool = False,
    ) -> str:
        """Start it; ``database_url`` (``postgresql+asyncpg://...``): its own database there
        instead of SQLite in PREFECT_HOME; ``extra_env``: more server settings.

        ``embedded``: the server syncflow's embedded default runs (``syncflow.cli._prefect_server``:
        Prefect's app with its SQLite writes ``BEGIN IMMEDIATE``, as Prefect's ephemeral mode
        starts it) instead of ``prefect server start``, so a SQLite row measures what users get.

        ``split_services``: the API alone (``--no-services``) and ``prefect server services
        start`` in a second process once the API answers, the two talking through Redis
        (:func:`split_services_env`; needs ``prefect-redis``). The services process is a child
        of the server's pid, so the CPU sampler, :func:`settle` and :meth:`stop` cover both."""
        self.port = free_port()
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        if database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        env.update(extra_env or {})
        prefect = str(Path(sys.executable).with_name("prefect"))
        started = time.perf_counter()
        args = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        if embedded:
            if database_url is not None or split_services:
                raise ServiceError("the embedded default's server runs on SQLite, in one process")
            from syncflow.cli._runtime import SERVER_MARKERS

            env.update(SERVER_MARKERS)
            args = [sys.executable, "-m", "syncflow.cli._prefect_server", "--port", str(self.port)]
        if split_services:
            if database_url is None:
                raise ServiceError("split_services needs a PostgreSQL database (both processes use it)")
            env.update(split_services_env())
            health = f"{self.api_url}/health"
            script = (
                f"(until {shlex.quote(sys.executable)} -c {shlex.quote(_HEALTH_PROBE)} {shlex.quote(health)}; "
                f"do sleep 0.2; done; exec {shlex.quote(prefect)} server services start) & "
                f"exec {shlex.join([*args, '--no-services'])}"
            )
            args = ["/bin/sh", "-c", script]
        proc = self._spawn(args, env)
        wait_http(f"{self.api_url}/health", proc=proc, timeout=timeout)
        self.startup_s = time.perf_counter() - started
        return self.api_url


# ---------------------------------------------------------------------------- databases


def conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgDatabases:
    """Creates databases named ``<prefix>_<label>`` and drops them (all of them at the end)."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.prefix = prefix
        self.created: list[str] = []

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo(self.admin_url), autocommit=True, connect_timeout=5)

    def create(self, label: str) -> str:
        """Create a fresh database; returns its SQLAlchemy URL."""
        name = f"{self.prefix}_{label}"
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def checkpoint(self) -> None:
        """Flush dirty buffers now, so no checkpoint of an earlier run lands in the next one."""
        with self._admin() as conn:
            conn.execute("CHECKPOINT")

    def drop_all(self) -> None:
        with self._admin() as conn:
            for name in list(self.created):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                self.created.remove(name)


_HEALTH_PROBE = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"

REDIS_DB = int(os.environ.get("SYNCFLOW_BENCH_REDIS_DB", "13"))
"""The Redis database a split Prefect server's two processes talk through (flushed at start)."""


def split_services_env() -> dict[str, str]:
    """Prefect's settings for an API process and a services process that share events, caches,
    causal ordering and concurrency leases through Redis (127.0.0.1:6379, :data:`REDIS_DB`,
    which this empties first): Prefect's default broker and lease storage live in one process's
    memory."""
    try:
        import prefect_redis  # noqa: F401
        import redis
    except ImportError as exc:
        raise ServiceError("a split Prefect server needs prefect-redis: pip install prefect-redis") from exc
    try:
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_connect_timeout=5).flushdb()
    except redis.RedisError as exc:
        raise ServiceError(f"a split Prefect server needs Redis on 127.0.0.1:6379: {exc}") from exc
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": "6379",
        "PREFECT_REDIS_MESSAGING_DB": str(REDIS_DB),
    }


def start_prefect(
    server: PrefectServerProcess,
    dbs: PgDatabases,
    db: str = "postgres",
    extra_env: dict[str, str] | None = None,
    split_services: bool = False,
) -> str:
    """Start ``server``; with ``db="postgres"`` on a fresh database of ``dbs`` (driver asyncpg),
    else the embedded default's server on SQLite; ``split_services``: its services in a second
    process (see :meth:`PrefectServerProcess.start`)."""
    if db != "postgres":
        if split_services:
            raise ServiceError("a split Prefect server needs --prefect-db postgres")
        return server.start(extra_env=extra_env, embedded=True)
    url = make_url(dbs.create("prefect")).set(drivername="postgresql+asyncpg")
    return server.start(
        timeout=180.0,
        database_url=url.render_as_string(hide_password=False),
        extra_env=extra_env,
        split_services=split_services,
    )


class BenchEnv:
    """What a benchmark run owns: a work directory, a Prefect server (PostgreSQL-backed by
    default, own PREFECT_HOME) and the environment its children get. ``with BenchEnv(...) as env``
    stops the server and drops its database at the end, also on errors. ``server_env``: more
    settings for the server (e.g. its lease storage)."""

    def __init__(
        self,
        *,
        admin_url: str,
        logs: Path | None,
        prefect_db: str = "postgres",
        progress: Any = None,
        server_env: dict[str, str] | None = None,
        split_services: bool = False,
    ) -> None:
        import tempfile
        import uuid

        self.admin_url = admin_url
        self.prefect_db = prefect_db
        self.server_env = dict(server_env or {})
        self.split_services = split_services
        self.workdir = Path(tempfile.mkdtemp(prefix="syncflow-bench-"))
        self.logs = logs or self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dbs = PgDatabases(admin_url, prefix=f"syncflow_bench_{uuid.uuid4().hex[:8]}")
        self.server = PrefectServerProcess(
            home=self.workdir / "prefect-home", log_path=self.logs / "prefect-server.log"
        )
        self.prefect: dict[str, Any] = {}
        self.child_env: dict[str, str] = {}
        self.progress = progress or (lambda message: print(message, file=sys.stderr, flush=True))

    def __enter__(self) -> Self:
        repo = Path(__file__).resolve().parent.parent
        pythonpath = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)
        # what the children import, byte-compiled as an installed package is (see _product)
        code = "from bench import _product; print(' '.join(_product.compile_bytecode()))"
        compiled = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": pythonpath},
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout.split()
        self.progress(f"byte-compiled the product where the children import it: {' '.join(compiled)}")
        self.server.home.mkdir(parents=True, exist_ok=True)
        services = ", services in a second process" if self.split_services else ""
        self.progress(f"starting a local Prefect server ({self.prefect_db}{services}) ...")
        try:
            api_url = start_prefect(self.server, self.dbs, self.prefect_db, self.server_env, self.split_services)
        except BaseException:
            self.server.stop()
            self.dbs.drop_all()
            raise
        self.progress(f"Prefect server up at {api_url} in {self.server.startup_s:.1f}s")
        self.prefect = {
            "api_url": api_url,
            "pid": self.server.pid,
            "db": self.prefect_db,
            "startup_s": self.server.startup_s,
            "services": "split" if self.split_services else "one process",
        }
        env = {**os.environ}
        env.update(
            PREFECT_API_URL=api_url,
            PREFECT_HOME=str(self.server.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PYTHONPATH=pythonpath,
        )
        self.child_env = env
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import shutil

        try:
            self.server.stop()
        finally:
            self.dbs.drop_all()
            if exc_type is None:
                shutil.rmtree(self.workdir / "prefect-home", ignore_errors=True)
