"""``python -m bench.sessions``: one messages session over many http-seq instances, timed at
several values of the ``tag:sync:messages`` global concurrency limit.

    python -m bench.sessions                                   # 50 instances x 2,000 messages, limits 1 and 3
    python -m bench.sessions --instances 10 --limits 1,2,4 --out bench/results/s10.json

What it does: start a local ``prefect server start`` (own PREFECT_HOME; SQLite, or PostgreSQL
with ``--prefect-db postgres``) and one shared seq server process with ``--messages`` messages
(each instance has its own cursor, so every instance fetches all of them).
For each limit, in a fresh PostgreSQL database: a setup child
migrates the store, saves one ``SeqHttpInstance`` block per instance, registers the
instances and sets the limit; then a run child calls
``sync_session(category="messages", instances=[...], refresh_metadata=False)`` in-process
(its subflows run in that process too) and times the call. The store is checked afterwards
and the records' started_at/completed_at give how many instances ran at once.

Exit status: 0 when every run's check passed, 1 when a run stored something wrong, 2 when
the benchmark could not run (PostgreSQL or Prefect not available, a child crashed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import psycopg

from bench.services import CpuSampler, PgDatabases, PrefectServerProcess, SeqServerProcess, ServiceError, conninfo
from syncflow.store.sessions import max_overlap

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-not-a-secret"
CATEGORY = "messages"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_OUT = Path("bench/results/sessions.json")


@dataclass(frozen=True)
class SessionConfig:
    instances: int = 50
    messages: int = 2000
    limits: tuple[int, ...] = (1, 3)
    admin_url: str = DEFAULT_ADMIN_URL
    batch_size: int = 500
    seed: int = 11
    child_timeout: float = 3600.0
    keep_logs: Path | None = None
    prefect_db: str = "sqlite"
    """The Prefect server's own database: ``sqlite`` (its default) or ``postgres`` (a throwaway
    database on the admin URL's server, driver asyncpg)."""


@dataclass
class SessionCheck:
    records: int
    completed: int
    wrong_counts: int
    stored_rows: int
    expected_rows: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class SessionRun:
    limit: int
    instances: int
    messages: int
    wall_s: float
    child: dict[str, Any]
    timeline: dict[str, Any]
    cpu: dict[str, float]
    check: SessionCheck
    load_before: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["check"]["ok"] = self.check.ok
        return out


@dataclass
class SessionBenchRun:
    config: SessionConfig
    runs: list[SessionRun]
    prefect: dict[str, Any]
    started_at: str
    seconds: float


Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# ------------------------------------------------------------------------------ parent


class SessionBench:
    """Owns every process and database of the run; :meth:`run` stops and drops them all."""

    def __init__(self, config: SessionConfig, *, progress: Progress = _stderr) -> None:
        self.config = config
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.dbs = PgDatabases(config.admin_url, prefix=f"syncflow_bench_sess_{self.run_id}")
        self.workdir = Path(tempfile.mkdtemp(prefix="syncflow-bench-sessions-"))
        self.logs = config.keep_logs or self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.names = [f"bench-s{i:03d}" for i in range(config.instances)]
        self.blocks = [f"bench-sess-{self.run_id}-{i:03d}" for i in range(config.instances)]

    def run(self) -> SessionBenchRun:
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        t0 = time.perf_counter()
        runs: list[SessionRun] = []
        ok = False
        api_url = ""
        home = self.workdir / "prefect-home"
        home.mkdir()
        prefect = PrefectServerProcess(home=home, log_path=self.logs / "prefect-server.log")
        seq = SeqServerProcess(
            messages=self.config.messages, token=TOKEN, seed=self.config.seed, log_path=self.logs / "seqserver.log"
        )
        try:
            self.progress(f"session bench: starting a local Prefect server ({self.config.prefect_db}) ...")
            api_url = self._start_prefect(prefect)
            self.progress(f"session bench: Prefect server up at {api_url} in {prefect.startup_s:.1f}s")
            seq.start()
            env = {
                **os.environ,
                "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            }
            for limit in self.config.limits:
                runs.append(self._one(limit, env, prefect, seq))
            ok = True
        finally:
            try:
                seq.stop()
                prefect.stop()
            finally:
                try:
                    self.dbs.drop_all()
                finally:
                    if ok or self.config.keep_logs is not None:
                        shutil.rmtree(self.workdir, ignore_errors=True)
                    else:
                        self.progress(f"session bench: logs kept in {self.logs}")
        info = {"mode": "server", "db": self.config.prefect_db, "api_url": api_url, "startup_s": prefect.startup_s}
        return SessionBenchRun(self.config, runs, info, started_at, time.perf_counter() - t0)

    def _start_prefect(self, prefect: PrefectServerProcess) -> str:
        """Start the server; with ``prefect_db="postgres"`` on a fresh database of its own."""
        if self.config.prefect_db != "postgres":
            return prefect.start()
        from sqlalchemy.engine import make_url

        url = make_url(self.dbs.create("prefect")).set(drivername="postgresql+asyncpg")
        key = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
        saved = os.environ.get(key)
        os.environ[key] = url.render_as_string(hide_password=False)  # read by PrefectServerProcess
        try:
            return prefect.start(timeout=180.0)
        finally:
            if saved is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = saved

    def _child(self, label: str, spec: dict[str, Any], env: dict[str, str]) -> None:
        """Run ``python -m bench.sessions --child SPEC`` to its end; stop it on any interruption."""
        log_path = self.logs / f"{label}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sessions", "--child", json.dumps(spec)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=self.config.child_timeout)
            finally:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=5)
                    except ProcessLookupError:
                        pass
        if rc != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{label}: child exited with {rc}; log tail:\n{tail}")

    def _one(self, limit: int, env: dict[str, str], prefect: PrefectServerProcess, seq: SeqServerProcess) -> SessionRun:
        cfg = self.config
        label = f"limit{limit}"
        url = self.dbs.create(label)
        child_env = {**env, "SYNCFLOW_DATABASE_URL": url}
        out = self.workdir / f"{label}.json"
        base = {"names": self.names, "out": str(out)}
        self.progress(f"  limit {limit}: setting up {cfg.instances} instances (fresh database, limit set) ...")
        self._child(
            f"{label}-setup",
            {
                **base,
                "phase": "setup",
                "blocks": self.blocks,
                "seq_url": seq.url,
                "token": TOKEN,
                "batch_size": cfg.batch_size,
                "limit": limit,
            },
            child_env,
        )
        self.dbs.checkpoint()
        load_before = os.getloadavg()[0]
        self.progress(f"  limit {limit}: session over {cfg.instances} x {cfg.messages:,} messages ...")
        with CpuSampler({"prefect-server": prefect.pid, "seqserver": seq.pid}) as cpu:
            self._child(f"{label}-run", {**base, "phase": "run"}, child_env)
        child = json.loads(out.read_bytes())
        timeline, check = self._check(url, child)
        self.dbs.drop(url)
        run = SessionRun(
            limit, cfg.instances, cfg.messages, child["wall_s"], child, timeline, cpu.used, check, load_before
        )
        status = "ok" if check.ok else "FAIL: " + "; ".join(check.problems)
        self.progress(
            f"  limit {limit}: {run.wall_s:.1f}s wall, {cfg.instances * cfg.messages / run.wall_s:,.0f} msgs/s, "
            f"max {timeline['max_running']} running at once, load {load_before:.1f}, check {status}"
        )
        return run

    def _check(self, url: str, child: dict[str, Any]) -> tuple[dict[str, Any], SessionCheck]:
        cfg = self.config
        expected = cfg.instances * cfg.messages
        with psycopg.connect(conninfo(url)) as conn:
            recs = conn.execute(
                "SELECT instance_name, status, items_synced, items_created, started_at, completed_at, error_message "
                "FROM sync_instance_records WHERE session_id = %s ORDER BY id",
                (child.get("session_id"),),
            ).fetchall()
            stored, distinct, per_instance_bad = conn.execute(
                "SELECT count(*), count(DISTINCT (instance_id, seq)), "
                "(SELECT count(*) FROM (SELECT instance_id FROM messages GROUP BY instance_id "
                " HAVING count(*) <> %s) x) FROM messages",
                (cfg.messages,),
            ).fetchone()  # type: ignore[misc]
        intervals = [(_utc(r[4]), _utc(r[5])) for r in recs if r[4] is not None and r[5] is not None]
        completed = sum(1 for r in recs if r[1] == "completed")
        wrong = sum(1 for r in recs if r[2] != cfg.messages)
        check = SessionCheck(len(recs), completed, wrong, stored, expected)
        p = check.problems
        if child.get("state") != "COMPLETED":
            p.append(f"session run ended {child.get('state')}: {child.get('message') or ''}"[:300])
        if len(recs) != cfg.instances:
            p.append(f"{len(recs)} records, expected {cfg.instances}")
        if completed != len(recs):
            bad = next((r for r in recs if r[1] != "completed"), None)
            p.append(f"{len(recs) - completed} record(s) not completed (e.g. {bad[0]}: {bad[1]} {bad[6] or ''})"[:300])
        if wrong:
            p.append(f"{wrong} record(s) with items_synced != {cfg.messages}")
        if stored != expected:
            p.append(f"{stored:,} rows stored, expected {expected:,}")
        if distinct != stored:
            p.append(f"{stored - distinct} duplicate (instance, seq) rows")
        if per_instance_bad:
            p.append(f"{per_instance_bad} instance(s) without exactly {cfg.messages} rows")

        timeline: dict[str, Any] = {"max_running": max_overlap(intervals) if intervals else 0}
        if intervals:
            durations = [(b - a).total_seconds() for a, b in intervals]
            first = min(a for a, _ in intervals)
            last = max(b for _, b in intervals)
            span = (last - first).total_seconds()
            called = dt.datetime.fromtimestamp(child["called_at"], dt.UTC)
            returned = dt.datetime.fromtimestamp(child["returned_at"], dt.UTC)
            limit_used = max(1, timeline["max_running"])
            timeline.update(
                instance_sync_mean_s=statistics.fmean(durations),
                instance_sync_median_s=statistics.median(durations),
                instance_sync_sum_s=sum(durations),
                call_to_first_start_s=(first - called).total_seconds(),
                records_span_s=span,
                last_complete_to_return_s=(returned - last).total_seconds(),
                # time between records in a slot: hand-over of the slot + the next subflow's start-up
                gap_per_instance_s=(span * limit_used - sum(durations)) / max(1, len(durations) - limit_used),
                slot_busy=sum(durations) / (span * limit_used) if span > 0 else None,
            )
        return timeline, check


# ------------------------------------------------------------------------------ report


def markdown(run: SessionBenchRun) -> str:
    cfg = run.config
    base = next((r.wall_s for r in run.runs if r.limit == 1), None)
    head = (
        f"Session benchmark: one messages session (`sync_session`, in-process subflows) over "
        f"{cfg.instances} http-seq instances x {cfg.messages:,} messages; one shared seq server process "
        f"(each instance has its own cursor and fetches all {cfg.messages:,}), batches of {cfg.batch_size}; "
        f"PostgreSQL store, a fresh database per limit; local Prefect server (`prefect server start`, "
        f"{'PostgreSQL' if cfg.prefect_db == 'postgres' else 'SQLite'} backend, "
        f"started in {run.prefect.get('startup_s', 0):.1f}s, not counted); {os.cpu_count()} CPUs.\n"
    )
    lines = [
        head,
        "| limit | instances | messages | wall s | msgs/s | speed-up vs limit 1 | max running at once | check |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in run.runs:
        rows = r.instances * r.messages
        speed = f"{base / r.wall_s:.2f}x" if base else "-"
        check = (
            f"ok ({r.check.completed}/{r.check.records} completed, {r.check.stored_rows:,} rows)"
            if r.check.ok
            else "FAIL: " + "; ".join(r.check.problems)
        )
        lines.append(
            f"| {r.limit} | {r.instances} | {rows:,} | {r.wall_s:.2f} | {rows / r.wall_s:,.0f} | {speed} "
            f"| {r.timeline.get('max_running', 0)} | {check} |"
        )
    lines += [
        "",
        "Where the time goes (seconds; from the records' started_at/completed_at and the child's clock; "
        "CPU columns are CPU seconds during the timed call):",
        "",
        "| limit | call→1st record | instance sync mean | gap per instance | last record→return "
        "| slot busy | Prefect API calls | CPU flow process | CPU prefect srv | CPU postgres | CPU seqserver "
        "| load before |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.runs:
        t = r.timeline
        busy = t.get("slot_busy")
        calls = sum(r.child.get("prefect_api_calls", {}).values())
        lines.append(
            f"| {r.limit} | {_f(t.get('call_to_first_start_s'))} | {_f(t.get('instance_sync_mean_s'))} "
            f"| {_f(t.get('gap_per_instance_s'))} | {_f(t.get('last_complete_to_return_s'))} "
            f"| {'-' if busy is None else f'{busy:.0%}'} | {calls:,} "
            f"| {_f(r.child.get('cpu_s'))} | {_f(r.cpu.get('prefect-server'))} | {_f(r.cpu.get('postgres'))} "
            f"| {_f(r.cpu.get('seqserver'))} | {r.load_before:.1f} |"
        )
    lines += [
        "",
        "instance sync = a record's started_at to completed_at (inside the subflow, after its slot was "
        "taken); gap per instance = slot time not covered by a record (slot hand-over, ~1 s polling, plus "
        "the next subflow run's creation and start-up); slot busy = record time / (limit x records span).",
    ]
    return "\n".join(lines)


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def write_json(run: SessionBenchRun, path: Path, postgres_version: str | None) -> None:
    from bench.report import environment

    cfg = asdict(run.config)
    cfg["keep_logs"] = str(cfg["keep_logs"]) if cfg["keep_logs"] else None
    doc = {
        "benchmark": "sessions",
        "started_at": run.started_at,
        "seconds": run.seconds,
        "config": cfg,
        "environment": {**environment(), "postgres": postgres_version},
        "prefect": run.prefect,
        "runs": [r.to_json() for r in run.runs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))


# ------------------------------------------------------------------------------- child


async def _set_limit(limit: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    name = f"tag:sync:{CATEGORY}"
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit, active_slots=0, active=True)
        )
        gcl = await client.read_global_concurrency_limit_by_name(name)
        if gcl.limit != limit:
            raise RuntimeError(f"{name}: limit is {gcl.limit} after setting it to {limit}")


def _child_setup(spec: dict[str, Any]) -> None:
    """Migrate the fresh store, save one block per instance, register the instances, set the limit."""
    from blocks.seq_http import SeqHttpInstance
    from syncflow.store import instances
    from syncflow.store.db import get_engine, session_scope
    from syncflow.store.migrations import upgrade

    engine = get_engine()
    upgrade(engine)
    for block in spec["blocks"]:
        SeqHttpInstance(base_url=spec["seq_url"], token=spec["token"], batch_size=spec["batch_size"]).save(
            block, overwrite=True
        )
    with session_scope(engine) as s:
        for name, block in zip(spec["names"], spec["blocks"], strict=True):
            instances.add_instance(s, name=name, kind="http-seq", block_name=block)
    asyncio.run(_set_limit(int(spec["limit"])))


def _record_slow_prefect_calls(threshold_s: float = 2.0) -> list[dict[str, Any]]:
    """Every Prefect REST call (async and sync clients, retries included) slower than
    ``threshold_s``: endpoint, start (``perf_counter``), duration, status or exception."""
    import re

    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

    ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    slow: list[dict[str, Any]] = []

    def note(request: Any, start: float, outcome: str) -> None:
        took = time.perf_counter() - start
        if took >= threshold_s:
            endpoint = f"{request.method} {ids.sub('{id}', request.url.path)}"
            slow.append({"endpoint": endpoint, "at": start, "took_s": took, "outcome": outcome})

    async_send = PrefectHttpxAsyncClient.send
    sync_send = PrefectHttpxSyncClient.send

    async def timed_async(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        start, outcome = time.perf_counter(), "?"
        try:
            response = await async_send(self, request, *args, **kwargs)
            outcome = str(response.status_code)
            return response
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            note(request, start, outcome)

    def timed_sync(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        start, outcome = time.perf_counter(), "?"
        try:
            response = sync_send(self, request, *args, **kwargs)
            outcome = str(response.status_code)
            return response
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            note(request, start, outcome)

    PrefectHttpxAsyncClient.send = timed_async  # type: ignore[method-assign]
    PrefectHttpxSyncClient.send = timed_sync  # type: ignore[method-assign]
    return slow


def _child_run(spec: dict[str, Any]) -> None:
    """Time one ``sync_session`` call in this process; write what happened to ``spec["out"]``."""
    from bench import probe
    from bench.subflow import instrument_prefect_api

    imports = time.perf_counter()
    from flows.session_sync import sync_session

    import_s = time.perf_counter() - imports
    spans = probe.Spans()
    calls: Counter[str] = Counter()
    instrument_prefect_api(spans, calls)
    slow = _record_slow_prefect_calls()

    async def go() -> tuple[Any, Any]:
        state = await sync_session(
            category=CATEGORY, instances=spec["names"], refresh_metadata=False, created_by="bench", return_state=True
        )
        return state, await state.aresult(raise_on_failure=False)

    cpu0 = sum(probe.cpu_seconds())
    called_at = time.time()
    call = time.perf_counter()
    state, result = asyncio.run(go())
    wall = time.perf_counter() - call
    returned_at = time.time()
    cpu = sum(probe.cpu_seconds()) - cpu0
    summary = result if isinstance(result, dict) else {}
    report = {
        "wall_s": wall,
        "called_at": called_at,
        "returned_at": returned_at,
        "import_s": import_s,
        "state": state.type.value if hasattr(state.type, "value") else str(state.type),
        "message": state.message,
        "error": None if isinstance(result, dict) else repr(result)[:2000],
        "session_id": summary.get("session_id"),
        "cpu_s": cpu,
        "peak_rss_mb": probe.peak_rss_mb(),
        "prefect_api_calls": dict(calls.most_common()),
        "prefect_api_s": probe.length(spans.get("prefect-api")) if spans.get("prefect-api") else 0.0,
        "prefect_api_slow_calls": [{**c, "at_s": c["at"] - call} for c in slow],
    }
    Path(spec["out"]).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str))


def child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    if spec["phase"] == "setup":
        _child_setup(spec)
    else:
        _child_run(spec)
    return 0


# -------------------------------------------------------------------------------- CLI


def _limits(text: str) -> tuple[int, ...]:
    try:
        limits = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limits takes integers separated by commas, not {text!r}") from None
    if not limits or min(limits) < 1:
        raise argparse.ArgumentTypeError("--limits needs at least one limit >= 1")
    return limits


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000, help="messages per instance (all served by one server)")
    parser.add_argument("--limits", type=_limits, default=(1, 3), help="GCL limits to run at (default 1,3)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="server on which the run's databases are created and dropped",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--logs", type=Path, default=None, help="keep the children's and servers' logs here")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per session run")
    parser.add_argument(
        "--prefect-db",
        choices=("sqlite", "postgres"),
        default="postgres",
        help="the Prefect server's own database (default postgres: a throwaway database, asyncpg, "
        "what production should run; sqlite: Prefect's out-of-the-box default)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.instances < 1 or args.messages < 1 or not 1 <= args.batch_size <= 10_000:
        parser.error("--instances >= 1, --messages >= 1, --batch-size 1..10000")
    return args


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_cli(
    *,
    instances: int,
    messages: int,
    limits: tuple[int, ...],
    admin_url: str,
    out: Path,
    batch_size: int = 500,
    logs: Path | None = None,
    timeout: float = 3600.0,
    prefect_db: str = "sqlite",
) -> int:
    """Run the session benchmark, print its table; the exit status (0 ok, 1 a check failed, 2 could not run)."""
    try:
        with psycopg.connect(conninfo(admin_url), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else None
    except psycopg.OperationalError as exc:
        print(f"bench.sessions: PostgreSQL is not reachable at {admin_url}: {exc}", file=sys.stderr)
        return 2
    config = SessionConfig(
        instances=instances,
        messages=messages,
        limits=limits,
        admin_url=admin_url,
        batch_size=batch_size,
        child_timeout=timeout,
        keep_logs=logs,
        prefect_db=prefect_db,
    )
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)  # stop what we started on SIGTERM too
    try:
        run = SessionBench(config).run()
    except (ServiceError, RuntimeError, psycopg.Error, subprocess.TimeoutExpired) as exc:
        print(f"bench.sessions: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.sessions: interrupted (everything it started is stopped, its databases dropped)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    write_json(run, out, pg_version)
    print(markdown(run))
    print(f"\n(results: {out}; total {run.seconds:.0f}s)")
    return 0 if all(r.check.ok for r in run.runs) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    return run_cli(
        instances=args.instances,
        messages=args.messages,
        limits=args.limits,
        admin_url=args.pg_admin_url,
        out=args.out,
        batch_size=args.batch_size,
        logs=args.logs,
        timeout=args.timeout,
        prefect_db=args.prefect_db,
    )


if __name__ == "__main__":
    sys.exit(main())
