"""``python -m bench.sessions``: one messages session over many http-seq instances against
Prefect's floor, at several values of the global concurrency limit, as whole processes.

    python -m bench.sessions                               # 50 instances x 2,000 messages, limits 1 and 3
    python -m bench.sessions --instances 10 --limits 1,2,4 --repeat 3
    python -m bench.sessions --profile bench/results/profiles --profile-limits 3

On one Prefect server (``prefect server start``, PostgreSQL-backed, own PREFECT_HOME; with
``--prefect-db sqlite`` the embedded default's server, :mod:`syncflow.cli._prefect_server`) and one
fast seq server (:mod:`bench.fastseq`; each instance has its own cursor and fetches all
``--messages``), for each round and each limit L:

- **floor** (:mod:`bench.floor`): ``tag:sync:bench-floor`` set to L; a process runs an async
  parent flow fanning out N async subflows of one no-op task each, each under
  ``concurrency(..., occupy=1, strict=True)``;
- **floor-handover**: the same, behind an in-process ``asyncio.Semaphore(L)``: a slot is asked of
  Prefect only when one of the process's own is free, so a freed slot passes on at once and no
  request waits out a 423's Retry-After (the hand-over syncflow must have, at Prefect's own cost);
- **floor-data**: the floor carrying the same data (a fresh store with N instances, not timed):
  each subflow's task runs the raw pipeline (:func:`bench.raw.pull`) for its instance, so the
  session's speed-up 1 -> L can be held against Prefect's shape doing the same work at its least;
- **floor-data-handover**: the floor with both: the same data, and the hand-over;
- **syncflow**: a setup child (not timed) makes a fresh PostgreSQL store with N instances and
  their blocks, and ``tag:sync:messages`` is set to L; then ``syncflow sync run --category
  messages --instance ... --no-metadata --quiet`` runs in a child (the CLI a user runs; the parent
  flow and all its subflows in that process).

Both are timed from spawn to exit (the ratio's numbers) and from the inside; both count their
Prefect REST calls (by endpoint and status), events and API log records. The syncflow store is
checked afterwards (every record completed with ``--messages`` items, ``N x messages`` rows, no
duplicate) and the records' started_at/completed_at give how many instances ran at once.

Exit status: 0 when every check passed, 1 when a run stored something wrong, 2 when the
benchmark could not run (PostgreSQL or Prefect not available, a child crashed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import psycopg

from bench import _product
from bench.floor import FLOOR_LIMIT, set_limit
from bench.services import (
    BenchEnv,
    CpuSampler,
    PgDatabases,
    SeqServerProcess,
    ServiceError,
    conninfo,
    cpu_probe,
    settle,
)

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-not-a-secret"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_OUT = Path("bench/results/sessions.json")
VARIANTS = ("floor", "floor-handover", "floor-data", "floor-data-handover", "syncflow")
DEFAULT_VARIANTS = ",".join(VARIANTS)


@dataclass(frozen=True)
class SessionConfig:
    instances: int = 50
    messages: int = 2000
    limits: tuple[int, ...] = (1, 3)
    admin_url: str = DEFAULT_ADMIN_URL
    batch_size: int = 500
    seed: int = 11
    repeat: int = 1
    child_timeout: float = 3600.0
    keep_logs: Path | None = None
    variants: tuple[str, ...] = VARIANTS
    profile_dir: Path | None = None
    """When set, the syncflow runs at ``profile_limits`` run under ``py-spy record``."""
    profile_limits: tuple[int, ...] = (3,)
    py_spy: str = "py-spy"
    server_profile_dir: Path | None = None
    """When set, every timed run py-spies the Prefect server, from spawn until the server is idle
    again (its services' backlog of the run included): ``DIR/server-<label>.txt``."""
    settle: bool = True
    """Wait for the Prefect server to go idle before each timed run (the backlog of the run before)."""


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
    variant: str
    limit: int
    round: int
    instances: int
    messages: int
    wall_s: float
    """The call inside the process (floor: the parent flow; syncflow: the CLI's main)."""
    process_wall_s: float
    """Spawn to exit: what the ratio compares."""
    child: dict[str, Any]
    timeline: dict[str, Any]
    cpu: dict[str, float]
    check: SessionCheck | None
    load_before: float
    profiled: bool = False
    settle_s: float = 0.0
    """Seconds waited before the run for the Prefect server to go idle (``--no-settle``: 0)."""
    settle_cpu_s: float = 0.0
    """The server's CPU seconds meanwhile: the backlog of what ran before, not timed in this run."""
    probe_ms: float | None = None
    """:func:`bench.services.cpu_probe` right before the run: how fast the machine was then."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.check is not None:
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


def max_overlap(intervals: Iterable[tuple[dt.datetime, dt.datetime]]) -> int:
    """The most intervals open at one instant (an end at t counts before a start at t)."""
    spans = list(intervals)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    cur = peak = 0
    for _, step in events:
        cur += step
        peak = max(peak, cur)
    return peak


def _settled(settled: tuple[float, float]) -> str:
    return f", server settled in {settled[0]:.1f}s ({settled[1]:.2f} CPU-s)" if settled[0] else ""


class SessionBench:
    """Runs the floor and syncflow sessions on a Prefect server it is given (:class:`BenchEnv`)."""

    def __init__(self, config: SessionConfig, env: BenchEnv, *, progress: Progress = _stderr) -> None:
        self.config = config
        self.env = env
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.dbs = PgDatabases(config.admin_url, prefix=f"syncflow_bench_sess_{self.run_id}")
        self.workdir = Path(tempfile.mkdtemp(prefix="sessions-", dir=env.workdir))
        self.logs = env.logs / "sessions"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.names = [f"bench-s{i:03d}" for i in range(config.instances)]
        self.blocks = [f"bench-sess-{self.run_id}-{i:03d}" for i in range(config.instances)]

    def run(self) -> SessionBenchRun:
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        t0 = time.perf_counter()
        runs: list[SessionRun] = []
        seq = SeqServerProcess(
            messages=self.config.messages,
            token=TOKEN,
            seed=self.config.seed,
            log_path=self.logs / "seqserver.log",
            page_size=self.config.batch_size,
        )
        try:
            seq.start()
            order = [v for v in VARIANTS if v in self.config.variants]
            for round_no in range(self.config.repeat):
                # The machine drifts within minutes: each variant goes first in turn, and runs its
                # limits back to back (a speed-up is one variant's two walls), in turn ascending
                # and descending.
                first = round_no % len(order)
                limits = self.config.limits if round_no % 2 == 0 else self.config.limits[::-1]
                for variant in order[first:] + order[:first]:
                    for limit in limits:
                        if variant == "syncflow":
                            runs.append(self._syncflow(limit, round_no, seq))
                        else:
                            runs.append(self._floor(limit, round_no, seq, variant))
        finally:
            try:
                seq.stop()
            finally:
                self.dbs.drop_all()
        return SessionBenchRun(self.config, runs, self.env.prefect, started_at, time.perf_counter() - t0)

    def _process(
        self, label: str, args: list[str], env: dict[str, str], *, profile: bool = False
    ) -> tuple[float, list[str]]:
        """Run a child to its end (stopped on any interruption); seconds from spawn to exit."""
        log_path = self.logs / f"{label}.log"
        prefix: list[str] = []
        if profile and self.config.profile_dir is not None:
            self.config.profile_dir.mkdir(parents=True, exist_ok=True)
            prefix = [
                self.config.py_spy, "record", "--format", "raw", "--rate", "200", "--idle", "--threads",
                "--nonblocking", "--output", str(self.config.profile_dir / f"session-{label}.txt"), "--",
            ]  # fmt: skip
        with log_path.open("ab") as log:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [*prefix, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=self.config.child_timeout)
                wall = time.perf_counter() - start
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
        return wall, prefix

    @contextlib.contextmanager
    def _spy_server(self, label: str) -> Iterator[None]:
        """With ``server_profile_dir``: py-spy the Prefect server (and a split server's services
        process, its child) for the block and until it is idle again after it (what a run costs
        the server includes the events it leaves behind)."""
        out_dir = self.config.server_profile_dir
        if out_dir is None:
            yield
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [
                self.config.py_spy, "record", "--format", "raw", "--rate", "100", "--nonblocking", "--subprocesses",
                "--pid", str(self.env.prefect["pid"]), "--output", str(out_dir / f"server-{label}.txt"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield
            settle(self.env.prefect["pid"])
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()

    @contextlib.contextmanager
    def _measured(self, label: str, seq: SeqServerProcess) -> Iterator[CpuSampler]:
        """A timed run's window: the servers' CPU (and, with ``--profile-server``, a profile)."""
        with (
            self._spy_server(label),
            CpuSampler({"prefect-server": self.env.prefect["pid"], "seqserver": seq.pid}) as cpu,
        ):
            yield cpu

    def _settle(self) -> tuple[float, float]:
        """Wait for the Prefect server to finish the work of what ran before (seconds, its CPU s)."""
        return settle(self.env.prefect["pid"]) if self.config.settle else (0.0, 0.0)

    def _floor(self, limit: int, round_no: int, seq: SeqServerProcess, variant: str) -> SessionRun:
        cfg = self.config
        label = f"{variant}-limit{limit}-{round_no}"
        set_limit(self.env.prefect["api_url"], FLOOR_LIMIT, limit)
        out = self.workdir / f"{label}.json"
        spec: dict[str, Any] = {"out": str(out), "instances": cfg.instances, "limit_name": FLOOR_LIMIT}
        spec["gate"] = limit if variant.endswith("-handover") else 0
        url = None
        if variant.startswith("floor-data"):
            url = self.dbs.create(f"floor_limit{limit}_{round_no}")
            spec["data"] = {
                "base_url": seq.url,
                "token": TOKEN,
                "conninfo": conninfo(url),
                "batch_size": cfg.batch_size,
                "targets": self._store_targets(label, url),
            }
            self.dbs.checkpoint()
        settled = self._settle()
        load, probe = os.getloadavg()[0], cpu_probe()
        with self._measured(label, seq) as cpu:
            spec["spawned_at"] = time.time()
            wall, _ = self._process(
                label, [sys.executable, "-m", "bench.floor", "session", json.dumps(spec)], self.env.child_env
            )
        child = json.loads(out.read_bytes())
        check = None
        if url is not None:
            check = self._check_rows(url, child)
            self.dbs.drop(url)
        status = "" if check is None else ", check " + ("ok" if check.ok else "FAIL: " + "; ".join(check.problems))
        self.progress(
            f"  {variant}, limit {limit}: process {wall:.2f}s (flow {child['wall_s']:.2f}s), "
            f"{child['peak_rss_mb']:.0f} MB, load {load:.1f}, probe {probe:.0f} ms{_settled(settled)}{status}"
        )
        return SessionRun(
            variant, limit, round_no, cfg.instances, cfg.messages if url else 0, child["wall_s"], wall, child, {},
            cpu.used, check, load, settle_s=settled[0], settle_cpu_s=settled[1], probe_ms=probe,
        )  # fmt: skip

    def _store_targets(self, label: str, url: str) -> list[list[int]]:
        """A fresh store with the session's instances (no blocks): ``[instance_id, item_id]`` each."""
        out = self.workdir / f"{label}-targets.json"
        code = (
            "import json,sys; from bench import _product; s=json.loads(sys.argv[1]); "
            "_product.migrate(s['url']); "
            "ids=[_product.register_instance(s['url'], name=n, block_name=None) for n in s['names']]; "
            "open(s['out'],'w').write(json.dumps(ids))"
        )
        setup = {"url": url, "names": self.names, "out": str(out)}
        self._process(f"{label}-setup", [sys.executable, "-c", code, json.dumps(setup)], self.env.child_env)
        return [list(t) for t in json.loads(out.read_text())]

    def _check_rows(self, url: str, child: dict[str, Any]) -> SessionCheck:
        """What the floor with data stored: every instance's messages, once, and its cursor at the end."""
        cfg = self.config
        expected = cfg.instances * cfg.messages
        with psycopg.connect(conninfo(url)) as conn:
            rows = conn.execute("SELECT count(*), count(DISTINCT (instance_id, message_id)) FROM messages").fetchone()
            behind = conn.execute(
                "SELECT count(*) FROM sync_config_items WHERE category = 'messages' AND coalesce(last_seq, 0) < %s",
                (cfg.messages,),
            ).fetchone()
        stored, distinct = (rows or (0, 0))[0], (rows or (0, 0))[1]
        problems = []
        if stored != expected or distinct != stored:
            problems.append(f"{stored:,} rows ({distinct:,} distinct), expected {expected:,}")
        if behind and behind[0]:
            problems.append(f"{behind[0]} cursor(s) short of {cfg.messages}")
        if child.get("messages") != expected:
            problems.append(f"the child pulled {child.get('messages')} messages, expected {expected:,}")
        return SessionCheck(cfg.instances, cfg.instances, 0, stored, expected, problems)

    def _syncflow(self, limit: int, round_no: int, seq: SeqServerProcess) -> SessionRun:
        cfg = self.config
        label = f"syncflow-limit{limit}-{round_no}"
        url = self.dbs.create(f"limit{limit}_{round_no}")
        child_env = {**self.env.child_env, "SYNCFLOW_DATABASE_URL": url}
        self.progress(f"  syncflow, limit {limit}: setting up {cfg.instances} instances (fresh store) ...")
        setup = {
            "url": url,
            "names": self.names,
            "blocks": self.blocks,
            "seq_url": seq.url,
            "token": TOKEN,
            "batch_size": cfg.batch_size,
        }
        code = (
            "import json,sys; from bench import _product; s=json.loads(sys.argv[1]); url=s.pop('url'); "
            "_product.setup_session_store(url, **s)"
        )
        self._process(f"{label}-setup", [sys.executable, "-c", code, json.dumps(setup)], child_env)
        set_limit(self.env.prefect["api_url"], _product.MESSAGES_LIMIT, limit)
        self.dbs.checkpoint()
        out = self.workdir / f"{label}.json"
        profile = cfg.profile_dir is not None and limit in cfg.profile_limits
        settled = self._settle()
        load, probe = os.getloadavg()[0], cpu_probe()
        spec: dict[str, Any] = {"mode": "cli", "argv": _product.sync_session_argv(self.names), "out": str(out)}
        with self._measured(label, seq) as cpu:
            spec["spawned_at"] = time.time()
            wall, _ = self._process(
                label, [sys.executable, "-m", "bench.subflow", json.dumps(spec)], child_env, profile=profile
            )
        child = json.loads(out.read_bytes())
        timeline, check = self._check(url, child)
        self.dbs.drop(url)
        run = SessionRun(
            "syncflow", limit, round_no, cfg.instances, cfg.messages, child["wall_s"], wall, child, timeline,
            cpu.used, check, load, profile, settled[0], settled[1], probe,
        )  # fmt: skip
        status = "ok" if check.ok else "FAIL: " + "; ".join(check.problems)
        self.progress(
            f"  syncflow, limit {limit}: process {wall:.2f}s (call {child['wall_s']:.2f}s), "
            f"max {timeline.get('max_running', 0)} running at once, {child['peak_rss_mb']:.0f} MB, "
            f"load {load:.1f}, probe {probe:.0f} ms{' (profiled)' if profile else ''}{_settled(settled)}, "
            f"check {status}"
        )
        return run

    def _check(self, url: str, child: dict[str, Any]) -> tuple[dict[str, Any], SessionCheck]:
        cfg = self.config
        expected = cfg.instances * cfg.messages
        with psycopg.connect(conninfo(url)) as conn:
            session = conn.execute(
                "SELECT session_id, status FROM sync_sessions WHERE sync_category = 'messages' ORDER BY id DESC LIMIT 1"
            ).fetchone()
            recs = conn.execute(
                "SELECT instance_name, status, items_synced, items_created, started_at, completed_at, error_message "
                "FROM sync_instance_records WHERE session_id = %s ORDER BY id",
                (session[0] if session else None,),
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
        if child.get("exit_code") != 0:
            p.append(f"syncflow sync run exited with {child.get('exit_code')}")
        if session is None or session[1] != "completed":
            p.append(f"session {session and session[0]} is {session and session[1]}")
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


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _range(values: Iterable[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{min(known):.0f}-{max(known):.0f}" if known else "-"


def median_of(runs: list[SessionRun], get: Callable[[SessionRun], float | None]) -> float | None:
    values = [v for v in (get(r) for r in runs) if v is not None]
    return statistics.median(values) if values else None


def _server_db(db: Any) -> str:
    return "sqlite: the embedded default's server, writes BEGIN IMMEDIATE" if db == "sqlite" else str(db)


def markdown(run: SessionBenchRun) -> str:
    """The session detail table: per variant and limit, medians over the rounds (unprofiled)."""
    from bench.apicount import categories

    cfg = run.config
    lines = [
        f"Sessions: {cfg.instances} instances x {cfg.messages:,} messages (syncflow and the data floors), the "
        f"floors' {cfg.instances} subflows of one task; one Prefect server ({_server_db(run.prefect.get('db'))}, "
        f"services: {run.prefect.get('services', 'one process')}); "
        f"median of {cfg.repeat} round(s); process = spawn to exit.",
        "",
        "| variant | limit | process s | call s | max at once | gap/instance s | REST calls/instance "
        "| 423s/instance | events/instance | peak RSS MB | CPU proc s | CPU prefect srv s | load | probe ms | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for variant in cfg.variants:
        for limit in cfg.limits:
            rs = [r for r in run.runs if r.variant == variant and r.limit == limit and not r.profiled]
            if not rs:
                continue
            n = cfg.instances
            cats = [categories(r.child) for r in rs]
            checks = [r.check for r in rs if r.check is not None]
            ok = all(c.ok for c in checks)
            check = "-" if not checks else ("ok" if ok else "FAIL: " + "; ".join(p for c in checks for p in c.problems))
            cpu_proc = median_of(
                rs, lambda r: r.child.get("cpu_s") or (r.child.get("cpu_user_s", 0) + r.child.get("cpu_sys_s", 0))
            )
            loads = [r.load_before for r in rs]
            lines.append(
                f"| {variant} | {limit} | {_f(median_of(rs, lambda r: r.process_wall_s))} "
                f"| {_f(median_of(rs, lambda r: r.wall_s))} "
                f"| {_f(median_of(rs, lambda r: r.timeline.get('max_running')), 0) if variant == 'syncflow' else '-'} "
                f"| {_f(median_of(rs, lambda r: r.timeline.get('gap_per_instance_s')))} "
                f"| {statistics.median(c['REST calls'] for c in cats) / n:.1f} "
                f"| {statistics.median(c['slot requests answered 423'] for c in cats) / n:.1f} "
                f"| {statistics.median(c['events'] for c in cats) / n:.1f} "
                f"| {_f(median_of(rs, lambda r: r.child.get('peak_rss_mb')), 0)} | {_f(cpu_proc)} "
                f"| {_f(median_of(rs, lambda r: r.cpu.get('prefect-server')))} "
                f"| {min(loads):.1f}-{max(loads):.1f} | {_range([r.probe_ms for r in rs])} | {check} |"
            )
    return "\n".join(lines)


def rounds_table(run: SessionBenchRun) -> str:
    """Per round: each variant's walls at the lowest and highest limit, its speed-up, and
    syncflow's speed-up over each floor's (the per-round ratios whose median is quoted)."""
    cfg = run.config
    low, high = min(cfg.limits), max(cfg.limits)
    if low == high or "syncflow" not in cfg.variants:
        return ""
    walls = {(r.variant, r.limit, r.round): r.process_wall_s for r in run.runs if not r.profiled}
    floors = [v for v in cfg.variants if v != "syncflow"]
    lines = [
        f"Per round: process walls at limit {low} / {high}, the speed-up, and syncflow's speed-up over each floor's.",
        "",
        "| round | "
        + " | ".join(f"{v} L{low} / L{high}" for v in cfg.variants)
        + " | "
        + " | ".join(f"syncflow / {v}" for v in floors)
        + " |",
        "|---:|" + "---:|" * (len(cfg.variants) + len(floors)),
    ]
    ratios: dict[str, list[float]] = {v: [] for v in floors}
    for n in range(cfg.repeat):
        ups: dict[str, float] = {}
        cells = []
        for v in cfg.variants:
            a, b = walls.get((v, low, n)), walls.get((v, high, n))
            if a and b:
                ups[v] = a / b
                cells.append(f"{a:.2f} / {b:.2f} ({a / b:.2f}x)")
            else:
                cells.append("-")
        for v in floors:
            if "syncflow" in ups and v in ups:
                ratios[v].append(ups["syncflow"] / ups[v])
                cells.append(f"{ratios[v][-1]:.2f}")
            else:
                cells.append("-")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    medians = [f"{statistics.median(ratios[v]):.2f}" if ratios[v] else "-" for v in floors]
    blank = " | ".join("" for _ in cfg.variants)
    lines.append(f"| median | {blank} | " + " | ".join(medians) + " |")
    cis = []
    for v in floors:
        lo_hi = median_ci(ratios[v])
        cis.append(f"{lo_hi[0]:.2f} to {lo_hi[1]:.2f}" if lo_hi else "-")
    lines.append(f"| 95 % CI of the median (bootstrap) | {blank} | " + " | ".join(cis) + " |")
    met = [f"{sum(x >= 1 for x in ratios[v])} of {len(ratios[v])}" if ratios[v] else "-" for v in floors]
    lines.append(f"| rounds >= 1 | {blank} | " + " | ".join(met) + " |")
    return "\n".join(lines)


def median_ci(
    values: list[float], *, level: float = 0.95, draws: int = 4000, seed: int = 0
) -> tuple[float, float] | None:
    """A percentile-bootstrap confidence interval of the median of ``values`` (seeded, so a
    report re-printed from its JSON reads the same); None with fewer than 3 values. How far a
    sitting's median speed-up ratio can be trusted on a machine whose runs spread +-30 %."""
    if len(values) < 3:
        return None
    rng = random.Random(seed)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(draws))
    tail = (1 - level) / 2
    return meds[int(tail * (draws - 1))], meds[int((1 - tail) * (draws - 1))]


def api_table(run: SessionBenchRun) -> str:
    """What each instance asks of Prefect, floor vs syncflow, per limit (first unprofiled round)."""
    from bench.apicount import categories

    cfg = run.config
    cols: list[tuple[str, SessionRun]] = []
    for limit in cfg.limits:
        for variant in cfg.variants:
            r = next((r for r in run.runs if r.variant == variant and r.limit == limit and not r.profiled), None)
            if r is not None:
                cols.append((f"{variant} L{limit}", r))
    if not cols:
        return ""
    cats = [categories(r.child) for _, r in cols]
    lines = [
        "| per instance | " + " | ".join(name for name, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for key in cats[0]:
        lines.append(f"| {key} | " + " | ".join(f"{c[key] / cfg.instances:.2f}" for c in cats) + " |")
    return "\n".join(lines)


def write_json(run: SessionBenchRun, path: Path, postgres_version: str | None) -> None:
    from bench.report import environment

    cfg = asdict(run.config)
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


# -------------------------------------------------------------------------------- CLI


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"integers separated by commas, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("at least one value >= 1")
    return values


def add_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    parser.add_argument(f"--{prefix}instances", type=int, default=50)
    parser.add_argument(f"--{prefix}messages", type=int, default=2000, help="messages per instance (one server)")
    parser.add_argument(f"--{prefix}limits", type=_ints, default=(1, 3), help="GCL limits to run at (default 1,3)")
    parser.add_argument(
        "--profile-limits", type=_ints, default=(3,), help="with --profile: the limits whose syncflow run is profiled"
    )
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="start each session run at once, not when the Prefect server has finished the work of the run before",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--repeat", type=int, default=1, help="rounds (medians are printed)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"of {DEFAULT_VARIANTS} (default all); floor-handover = the floor behind an in-process "
        "semaphore of the limit's size (a freed slot passes on at once, no 423); floor-data = the floor "
        "whose tasks pull and store the same messages with the raw pipeline; floor-data-handover = both",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="server on which the run's databases are created and dropped",
    )
    parser.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--prefect-services",
        choices=("one", "split"),
        default="one",
        help="split: the Prefect server's services in a second process, through Redis (needs prefect-redis)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--logs", type=Path, default=None, help="keep the children's and servers' logs here")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per session run")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="py-spy the syncflow runs")
    parser.add_argument(
        "--profile-server",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the Prefect server during every timed run, until it is idle again",
    )
    parser.add_argument("--py-spy", default=_py_spy())
    args = parser.parse_args(argv)
    if args.instances < 1 or args.messages < 1 or not 1 <= args.batch_size <= 10_000 or args.repeat < 1:
        parser.error("--instances >= 1, --messages >= 1, --batch-size 1..10000, --repeat >= 1")
    return args


def _py_spy() -> str:
    """py-spy beside this Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def _variants(text: str) -> tuple[str, ...]:
    chosen = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise SystemExit(f"bench.sessions: unknown variant(s) {', '.join(unknown) or '(none)'}; use {DEFAULT_VARIANTS}")
    return chosen


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def config_from(args: argparse.Namespace, **overrides: Any) -> SessionConfig:
    return SessionConfig(
        instances=args.instances,
        messages=args.messages,
        limits=args.limits,
        admin_url=args.pg_admin_url,
        batch_size=args.batch_size,
        repeat=args.repeat,
        child_timeout=args.timeout,
        keep_logs=args.logs,
        variants=_variants(getattr(args, "session_variants", DEFAULT_VARIANTS)),
        profile_dir=args.profile,
        profile_limits=args.profile_limits,
        py_spy=args.py_spy,
        server_profile_dir=getattr(args, "profile_server", None),
        settle=not getattr(args, "no_settle", False),
        **overrides,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.session_variants = args.variants
    try:
        with psycopg.connect(conninfo(args.pg_admin_url), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else None
    except psycopg.OperationalError as exc:
        print(f"bench.sessions: PostgreSQL is not reachable at {args.pg_admin_url}: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        with BenchEnv(
            admin_url=args.pg_admin_url,
            logs=args.logs,
            prefect_db=args.prefect_db,
            split_services=args.prefect_services == "split",
        ) as env:
            run = SessionBench(config_from(args), env).run()
    except (ServiceError, RuntimeError, OSError, psycopg.Error, subprocess.TimeoutExpired) as exc:
        print(f"bench.sessions: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.sessions: interrupted (everything it started is stopped, its databases dropped)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    write_json(run, args.out, pg_version)
    print(markdown(run))
    print()
    rounds = rounds_table(run)
    if rounds:
        print(rounds)
        print()
    print(api_table(run))
    print(f"\n(results: {args.out}; total {run.seconds:.0f}s)")
    return 0 if all(r.check is None or r.check.ok for r in run.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
