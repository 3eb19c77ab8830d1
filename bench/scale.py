"""``python -m bench.scale``: one session of many small instances, in one process and scaled
out over two process workers, and what a worker SIGKILLed mid-session leaves behind.

    python -m bench.scale                                            # 1,000 x 200 messages, limit 3, all parts
    python -m bench.scale --instances 20 --parts inproc,scaleout,kill   # a smoke run (~6 min)
    python -m bench.scale --instances 1000 --scaleout-instances 200     # scale-out parts smaller
    python -m bench.scale --parts kill --kill-at 0.5 --logs /tmp/scale-logs

One Prefect server (``prefect server start``, PostgreSQL-backed, filesystem lease storage as
the README's *Deployments* recipe), one fast seq server (:mod:`bench.fastseq`; every instance
has its own cursor and reads all ``--messages-per-instance``), one http-seq block per instance
(saved once), ``tag:sync:messages`` at ``--limit``; each part gets a fresh PostgreSQL store:

- **inproc**: ``syncflow sync run --category messages --all --no-metadata --quiet`` in one
  process (the parent flow and every subflow in it), counted by :mod:`bench.apicount`
  (:mod:`bench.subflow`), spawn to exit;
- **scaleout**: ``syncflow setup`` + ``prefect deploy --all`` (once; schedules paused, so no
  scheduled session joins in), ``--workers`` ``prefect worker start --pool syncflow`` processes,
  then ``syncflow --json sync run ... --deployment --scale-out --no-wait``: a run of
  ``sync-session/manual-batch`` with ``scale_out`` true, whose instance syncs are runs of
  ``sync-instance/instance`` on either worker. Wall = trigger to the session finished in the
  store. Peak RSS = the workers' process trees (worker + the flow-run processes it spawns),
  sampled from /proc. Every process of the workers' environment counts its Prefect calls
  (a ``sitecustomize`` that installs :func:`bench.apicount.report_at_exit`);
- **kill**: the same; once ``--kill-at`` of the records completed and the worker that does
  not run the session's parent runs an instance sync (``--kill-when running``; ``starting``:
  a run whose process has not opened its record yet), that worker is SIGKILLed with every
  process it started (a lost machine). The session should finish on the other worker: once
  the lease ran out (SYNCFLOW_LOCK_LEASE_SECONDS + 5 s) a run of ``sweep/every-5-minutes`` is
  created as its schedule would (the surviving worker runs it), and again every
  ``--sweep-every`` s while no record closes; it fails the dead worker's records ("worker
  lost") and marks their runs Crashed, so the parent goes on. A session with no record closed
  for ``--stall-seconds`` is reported stalled (with its open records, the killed runs' Prefect
  states and the slots held) and cancelled. Then: the limit's active slots (Prefect API) must
  be 0 within a lease, and a second scale-out session over the instances not completed must
  resume them at their cursors (N x M rows in all, none duplicated).

Exit status: 0 when every check passed, 1 when a run stored something wrong or did not
recover, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import psycopg

from bench import _product
from bench.apicount import REPORT_DIR_ENV, SITECUSTOMIZE, categories
from bench.floor import set_limit
from bench.services import (
    BenchEnv,
    CpuSampler,
    PgDatabases,
    SeqServerProcess,
    ServiceError,
    _all_stats,
    _Process,
    conninfo,
)
from bench.sessions import _utc, max_overlap

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-not-a-secret"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_OUT = Path("bench/results/scale.json")
PARTS = ("inproc", "scaleout", "kill")
_FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
_SUBMITTING = re.compile(r"submitting flow run '([0-9a-f-]{36})'")
_ABORTED = re.compile(r"Aborted submission of flow run '([0-9a-f-]{36})'")

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ScaleConfig:
    instances: int = 1000
    scaleout_instances: int = 1000
    messages: int = 200
    batch_size: int = 100
    limit: int = 3
    parts: tuple[str, ...] = PARTS
    workers: int = 2
    kill_at: float = 0.3
    kill_when: str = "running"
    worker_query_seconds: float = 1.0
    lease_seconds: int = 60
    sweep_every: float = 30.0
    stall_seconds: float = 180.0
    child_start_seconds: float = 60.0
    admin_url: str = DEFAULT_ADMIN_URL
    seed: int = 11
    timeout: float = 7200.0


_LOST_STARTING = "instance run lost before it started"  # the parent's reason (flows/session_sync.py)


# ------------------------------------------------------------------ /proc: the workers' trees


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def tree(root: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """``root`` and its live descendants (by parent pid: also those in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for pid, fields in (stats if stats is not None else _all_stats()).items():
        children.setdefault(int(fields[2]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


class TreeSampler:
    """Samples the process trees of the workers every ``interval`` s: the peak of their summed
    RSS (all workers together and each), every process's VmHWM, and which flow run each
    process executes (``PREFECT__FLOW_RUN_ID`` in its environment)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.5) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self.peak_total_mb = 0.0
        self.peak_by_root: dict[str, float] = {}
        self.hwm_mb: dict[int, float] = {}
        self.flow_run: dict[int, str] = {}
        self.root_of: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def sample(self) -> None:
        total = 0.0
        stats = _all_stats()
        with self._lock:
            for name, root in self.roots.items():
                tree_mb = 0.0
                for pid in tree(root, stats):
                    if pid not in self.root_of:
                        self.root_of[pid] = name
                        run = _environ(pid).get("PREFECT__FLOW_RUN_ID")
                        if run:
                            self.flow_run[pid] = run
                    tree_mb += _status_kb(pid, "VmRSS:") / 1024
                    self.hwm_mb[pid] = max(self.hwm_mb.get(pid, 0.0), _status_kb(pid, "VmHWM:") / 1024)
                self.peak_by_root[name] = max(self.peak_by_root.get(name, 0.0), tree_mb)
                total += tree_mb
            self.peak_total_mb = max(self.peak_total_mb, total)

    def forget(self, name: str) -> None:
        """Stop sampling a root (a killed worker)."""
        with self._lock:
            self.roots.pop(name, None)

    def runs_of(self, name: str) -> set[str]:
        with self._lock:
            return {run for pid, run in self.flow_run.items() if self.root_of.get(pid) == name}

    def live_runs_of(self, name: str) -> set[str]:
        """The flow runs of the processes alive now in ``name``'s tree."""
        with self._lock:
            root = self.roots.get(name)
            alive = set(tree(root)) if root else set()
            return {run for pid, run in self.flow_run.items() if pid in alive and self.root_of.get(pid) == name}

    def worker_of_run(self, run_id: str) -> str | None:
        with self._lock:
            return next((self.root_of[p] for p, r in self.flow_run.items() if r == run_id), None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class WorkerProcess(_Process):
    """``prefect worker start --pool syncflow`` (process type) in its own session."""

    name = "worker"

    def __init__(self, *, name: str, log_path: Path) -> None:
        super().__init__(log_path)
        self.worker_name = name
        self.killed = False

    def start(self, env: dict[str, str]) -> None:
        prefect = str(Path(sys.executable).with_name("prefect"))
        args = [
            prefect,
            "worker",
            "start",
            "--pool",
            _product.WORK_POOL,
            "--name",
            self.worker_name,
            "--type",
            "process",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill_tree(self) -> list[int]:
        """SIGKILL the worker's process group and every process it started (flow runs run in
        sessions of their own): a lost machine. Returns the pids killed."""
        assert self.proc is not None
        pids = tree(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.killed = True
        return pids


# ------------------------------------------------------------------ Prefect API (httpx)


class PrefectApi:
    """The few Prefect REST calls the harness makes (not counted: it is not the measured side)."""

    def __init__(self, api_url: str) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def online_workers(self, pool: str) -> set[str]:
        response = self.http.post(f"/work_pools/{pool}/workers/filter", json={})
        response.raise_for_status()
        return {w["name"] for w in response.json() if w.get("status") == "ONLINE"}

    def run_state(self, run_id: str) -> str | None:
        response = self.http.get(f"/flow_runs/{run_id}")
        response.raise_for_status()
        state = response.json().get("state") or {}
        return state.get("type")

    def active_slots(self, name: str) -> int:
        response = self.http.get(f"/v2/concurrency_limits/{name}")
        response.raise_for_status()
        return int(response.json()["active_slots"])

    def pause_schedules(self) -> int:
        """Deactivate every deployment schedule and delete the runs they already scheduled
        (a scheduled session would join the measured one). Returns the runs deleted."""
        response = self.http.post("/deployments/filter", json={})
        response.raise_for_status()
        for dep in response.json():
            for schedule in dep.get("schedules") or []:
                self.http.patch(
                    f"/deployments/{dep['id']}/schedules/{schedule['id']}", json={"active": False}
                ).raise_for_status()
        found = self.http.post(
            "/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "limit": 200}
        )
        found.raise_for_status()
        for run in found.json():
            self.http.delete(f"/flow_runs/{run['id']}")
        return len(found.json())

    def create_run(self, deployment: str) -> str:
        """A run of ``deployment`` now, as its schedule would create it (any worker of its pool)."""
        flow, _, name = deployment.partition("/")
        dep = self.http.get(f"/deployments/name/{flow}/{name}")
        dep.raise_for_status()
        run = self.http.post(f"/deployments/{dep.json()['id']}/create_flow_run", json={})
        run.raise_for_status()
        return str(run.json()["id"])


# ------------------------------------------------------------------------ the store


def _store(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo(url), autocommit=True, connect_timeout=10)


def session_progress(url: str, session_id: str) -> tuple[str | None, dict[str, int]]:
    """(the session's status or None before it is opened, its records by status)."""
    with _store(url) as conn:
        row = conn.execute("SELECT status FROM sync_sessions WHERE session_id = %s", (session_id,)).fetchone()
        counts = dict(
            conn.execute(
                "SELECT status, count(*) FROM sync_instance_records WHERE session_id = %s GROUP BY status",
                (session_id,),
            ).fetchall()
        )
    return (row[0] if row else None), {str(k): int(v) for k, v in counts.items()}


def session_records(url: str, session_id: str) -> list[dict[str, Any]]:
    with _store(url) as conn:
        cur = conn.execute(
            "SELECT instance_name, status, items_synced, items_created, started_at, completed_at, error_message, "
            "flow_run_id FROM sync_instance_records WHERE session_id = %s ORDER BY id",
            (session_id,),
        )
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def stored_rows(url: str) -> dict[str, int]:
    """Rows per instance name (instances without rows included)."""
    with _store(url) as conn:
        rows = conn.execute(
            "SELECT i.name, count(m.instance_id) FROM instances i LEFT JOIN messages m ON m.instance_id = i.id "
            "GROUP BY i.name"
        ).fetchall()
    return {str(name): int(n) for name, n in rows}


def rows_check(url: str, n: int, m: int) -> tuple[int, int, int]:
    """(rows stored, duplicate (instance, seq) rows, instances without exactly ``m`` rows)."""
    with _store(url) as conn:
        stored, distinct = conn.execute("SELECT count(*), count(DISTINCT (instance_id, seq)) FROM messages").fetchone()  # type: ignore[misc]
        per = stored_rows(url)
    return int(stored), int(stored) - int(distinct), sum(1 for v in per.values() if v != m) + max(0, n - len(per))


def records_timeline(recs: list[dict[str, Any]]) -> dict[str, Any]:
    spans = [(_utc(r["started_at"]), _utc(r["completed_at"])) for r in recs if r["started_at"] and r["completed_at"]]
    if not spans:
        return {"max_running": 0}
    durations = [(b - a).total_seconds() for a, b in spans]
    return {
        "max_running": max_overlap(spans),
        "instance_sync_median_s": statistics.median(durations),
        "records_span_s": (max(b for _, b in spans) - min(a for a, _ in spans)).total_seconds(),
    }


# ------------------------------------------------------------------------ the benchmark


@dataclass
class PartResult:
    part: str
    instances: int
    messages: int
    limit: int
    wall_s: float
    load_before: float
    peak_rss_mb: float
    """inproc: the process's VmHWM; scale-out: the peak of the workers' trees' summed RSS."""
    api: dict[str, Any]
    timeline: dict[str, Any]
    cpu: dict[str, float]
    problems: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


class ScaleBench:
    def __init__(self, config: ScaleConfig, env: BenchEnv, *, progress: Progress = _stderr) -> None:
        self.config = config
        self.env = env
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.dbs = PgDatabases(config.admin_url, prefix=f"syncflow_bench_scale_{self.run_id}")
        self.workdir = Path(tempfile.mkdtemp(prefix="scale-", dir=env.workdir))
        self.logs = env.logs / "scale"
        self.logs.mkdir(parents=True, exist_ok=True)
        most = max(config.instances if "inproc" in config.parts else 0, config.scaleout_instances)
        self.names = [f"bench-x{i:04d}" for i in range(most)]
        self.blocks = [f"bench-scale-{self.run_id}-{i:04d}" for i in range(most)]
        self.api = PrefectApi(env.prefect["api_url"])
        self.workers: list[WorkerProcess] = []
        self.deployed = False
        self.sitedir = self.workdir / "site"
        self.sitedir.mkdir()
        (self.sitedir / "sitecustomize.py").write_text(SITECUSTOMIZE)

    # ---------------------------------------------------------------- plumbing

    def _run(
        self, label: str, args: list[str], env: dict[str, str], *, timeout: float = 600.0, capture: bool = False
    ) -> tuple[float, str]:
        """Run a child to its end in its own session (stopped on any interruption); (seconds
        from spawn to exit, its stdout when ``capture``). A non-zero exit raises."""
        log_path = self.logs / f"{label}.log"
        with log_path.open("ab") as log:
            start = time.perf_counter()
            proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
                start_new_session=True,
            )
            try:
                out, _ = proc.communicate(timeout=timeout)
                wall = time.perf_counter() - start
            finally:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=5)
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{label}: {args[0]} exited with {proc.returncode}; log tail:\n{tail}")
        return wall, (out or b"").decode(errors="replace")

    def _syncflow(self) -> str:
        return str(Path(sys.executable).with_name(_product.CLI_SCRIPT))

    def _fresh_store(self, label: str, n: int, seq: SeqServerProcess) -> tuple[str, dict[str, str]]:
        url = self.dbs.create(label)
        env = {
            **self.env.child_env,
            "SYNCFLOW_DATABASE_URL": url,
            "SYNCFLOW_LOCK_LEASE_SECONDS": str(self.config.lease_seconds),
        }
        self.progress(f"  {label}: fresh store with {n} instances ...")
        spec = {"url": url, "names": self.names[:n], "blocks": self.blocks[:n]}
        code = (
            "import json,sys; from bench import _product; s=json.loads(sys.argv[1]); "
            "_product.setup_instances(s.pop('url'), **s)"
        )
        self._run(f"{label}-setup", [sys.executable, "-c", code, json.dumps(spec)], env)
        set_limit(self.env.prefect["api_url"], _product.MESSAGES_LIMIT, self.config.limit)
        self.dbs.checkpoint()
        return url, env

    def run(self) -> list[PartResult]:
        cfg = self.config
        results: list[PartResult] = []
        seq = SeqServerProcess(
            messages=cfg.messages,
            token=TOKEN,
            seed=cfg.seed,
            log_path=self.logs / "seqserver.log",
            page_size=cfg.batch_size,
        )
        try:
            seq.start()
            self.progress(f"saving {len(self.blocks)} http-seq blocks ...")
            spec = {"blocks": self.blocks, "base_url": seq.url, "token": TOKEN, "batch_size": cfg.batch_size}
            code = "import json,sys; from bench import _product; _product.save_seq_blocks(**json.loads(sys.argv[1]))"
            self._run("blocks", [sys.executable, "-c", code, json.dumps(spec)], self.env.child_env, timeout=3600)
            for part in cfg.parts:
                if part == "inproc":
                    results.append(self._inproc(seq))
                else:
                    results.append(self._scaleout(seq, kill=part == "kill"))
        finally:
            try:
                self.stop_workers()
                seq.stop()
            finally:
                self.api.close()
                self.dbs.drop_all()
        return results

    # ---------------------------------------------------------------- in one process

    def _inproc(self, seq: SeqServerProcess) -> PartResult:
        cfg = self.config
        n = cfg.instances
        url, env = self._fresh_store("inproc", n, seq)
        out = self.workdir / "inproc.json"
        load = os.getloadavg()[0]
        spec: dict[str, Any] = {"mode": "cli", "argv": _product.sync_all_argv(), "out": str(out)}
        self.progress(f"  inproc: syncflow sync run --all over {n} instances, limit {cfg.limit} (load {load:.1f}) ...")
        with CpuSampler({"prefect-server": self.env.prefect["pid"], "seqserver": seq.pid}) as cpu:
            spec["spawned_at"] = time.time()
            wall, _ = self._run(
                "inproc", [sys.executable, "-m", "bench.subflow", json.dumps(spec)], env, timeout=cfg.timeout
            )
        child = json.loads(out.read_bytes())
        with _store(url) as conn:
            sid = conn.execute("SELECT session_id FROM sync_sessions ORDER BY id DESC LIMIT 1").fetchone()
        recs = session_records(url, sid[0]) if sid else []
        result = PartResult(
            "inproc", n, cfg.messages, cfg.limit, wall, load, float(child.get("peak_rss_mb") or 0.0),
            {"syncflow process": categories(child), "raw": {k: child.get(k) for k in ("prefect_api_calls", "events")}},
            records_timeline(recs),
            {**cpu.used, "syncflow": float(child.get("cpu_user_s", 0)) + float(child.get("cpu_sys_s", 0))},
        )  # fmt: skip
        status, _ = session_progress(url, sid[0]) if sid else (None, {})
        self._check_session(result, url, status, recs, n)
        self._check_rows(result, url, n)
        self.dbs.drop(url)
        self.progress(f"  inproc: {wall:.1f}s, {result.peak_rss_mb:.0f} MB, check {_status(result)}")
        return result

    def _check_session(
        self, result: PartResult, url: str, status: str | None, recs: list[dict[str, Any]], n: int
    ) -> None:
        m, p = self.config.messages, result.problems
        if status != "completed":
            p.append(f"session is {status}")
        if len(recs) != n:
            p.append(f"{len(recs)} records, expected {n}")
        bad = [r for r in recs if r["status"] != "completed" or r["items_synced"] != m]
        if bad:
            r = bad[0]
            p.append(f"{len(bad)} record(s) not completed with {m} items (e.g. {r['instance_name']}: {r['status']} "
                     f"{r['items_synced']} {r['error_message'] or ''})"[:300])  # fmt: skip

    def _check_rows(self, result: PartResult, url: str, n: int) -> None:
        m = self.config.messages
        stored, dups, wrong = rows_check(url, n, m)
        result.detail.update(rows_stored=stored, duplicate_rows=dups, instances_without_all_rows=wrong)
        if stored != n * m:
            result.problems.append(f"{stored:,} rows stored, expected {n * m:,}")
        if dups:
            result.problems.append(f"{dups} duplicate (instance, seq) rows")
        if wrong:
            result.problems.append(f"{wrong} instance(s) without exactly {m} rows")

    # ---------------------------------------------------------------- scale-out

    def _deploy(self) -> None:
        if self.deployed:
            return
        env = self.env.child_env
        self.progress("  deploying: syncflow setup, prefect deploy --all (schedules paused) ...")
        self._run(
            "setup", [self._syncflow(), "setup", "--limit", f"messages={self.config.limit}", "--reset-limits"], env
        )
        prefect = str(Path(sys.executable).with_name("prefect"))
        self._run("deploy", [prefect, "--no-prompt", "deploy", "--all"], env, timeout=600)
        deleted = self.api.pause_schedules()
        self.progress(f"  deployed ({deleted} scheduled run(s) deleted)")
        self.deployed = True

    def _worker_env(self, store_env: dict[str, str], count_dir: Path) -> dict[str, str]:
        return {
            **store_env,
            "PYTHONPATH": os.pathsep.join([str(self.sitedir), store_env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            REPORT_DIR_ENV: str(count_dir),
            "PREFECT_WORKER_QUERY_SECONDS": f"{self.config.worker_query_seconds:g}",
            "SYNCFLOW_CHILD_START_SECONDS": f"{self.config.child_start_seconds:g}",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_CLI_PROMPT": "false",
            "PYTHONUNBUFFERED": "1",
        }

    def _start_workers(self, label: str, env: dict[str, str]) -> list[WorkerProcess]:
        workers = []
        for i in range(self.config.workers):
            w = WorkerProcess(
                name=f"{label}-w{chr(ord('a') + i)}", log_path=self.logs / f"{label}-worker-{chr(ord('a') + i)}.log"
            )
            w.start(env)
            self.workers.append(w)
            workers.append(w)
        names = {w.worker_name for w in workers}
        deadline = time.monotonic() + 120
        while not names <= self.api.online_workers(_product.WORK_POOL):
            for w in workers:
                if w.proc is not None and w.proc.poll() is not None:
                    raise ServiceError(f"worker {w.worker_name} exited with {w.proc.returncode} (see {w.log_path})")
            if time.monotonic() > deadline:
                raise ServiceError(f"workers {sorted(names)} not online within 120 s")
            time.sleep(0.5)
        return workers

    def stop_workers(self) -> None:
        """Stop every worker (SIGTERM to its group) and any flow-run process still running with
        this server's PREFECT_HOME (they run in sessions of their own)."""
        for w in self.workers:
            w.stop()
        self.workers.clear()
        server = self.env.prefect.get("pid")
        spared = set(tree(server)) if server else set()
        marker = str(self.env.server.home)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid == os.getpid() or pid in spared:
                continue
            if _environ(pid).get("PREFECT_HOME") == marker and _environ(pid).get("PREFECT__FLOW_RUN_ID"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _trigger(self, label: str, argv: list[str], env: dict[str, str]) -> dict[str, str]:
        _, out = self._run(label, [self._syncflow(), *argv], env, capture=True, timeout=300)
        return dict(json.loads(out[out.index("{") :]))

    def _wait_final(self, run_id: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        state = self.api.run_state(run_id)
        while state not in _FINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            state = self.api.run_state(run_id)
        return state

    def _scaleout(self, seq: SeqServerProcess, *, kill: bool) -> PartResult:
        cfg = self.config
        label = "kill" if kill else "scaleout"
        n = cfg.scaleout_instances
        self._deploy()
        url, store_env = self._fresh_store(label, n, seq)
        count_dir = self.workdir / f"apicount-{label}"
        count_dir.mkdir()
        env = self._worker_env(store_env, count_dir)
        workers = self._start_workers(label, env)
        roots = {w.worker_name: w.pid for w in workers}
        load = os.getloadavg()[0]
        self.progress(
            f"  {label}: {n} instances on {len(workers)} workers, limit {cfg.limit} (load {load:.1f})"
            + (f", SIGKILL one at {cfg.kill_at:.0%} completed" if kill else "")
            + " ..."
        )
        detail: dict[str, Any] = {"workers": list(roots)}
        sweeps: list[dict[str, Any]] = []
        with (
            CpuSampler({"prefect-server": self.env.prefect["pid"], "seqserver": seq.pid, **roots}) as cpu,
            TreeSampler(roots) as trees,
        ):
            t0 = time.perf_counter()
            fired = self._trigger(f"{label}-trigger", _product.sync_all_argv(scale_out=True), env)
            sid, parent = fired["session_id"], fired["flow_run_id"]
            killed_at: float | None = None
            armed: float | None = None
            next_sweep = float("inf")
            stalled = False
            progress, last_progress = -1, time.perf_counter()
            deadline = time.monotonic() + cfg.timeout
            while True:
                status, counts = session_progress(url, sid)
                if status is not None and status != "running":
                    break
                now = time.perf_counter()
                done = counts.get("completed", 0)
                closed = done + counts.get("failed", 0) + counts.get("cancelled", 0)
                if closed != progress:
                    progress, last_progress = closed, now
                if kill and killed_at is None and done >= cfg.kill_at * n:
                    armed = armed or now
                    victim, busy = self._victim(workers, trees, parent, url, sid)
                    if busy or now - armed > 60 or done >= n - cfg.limit:
                        killed_at = now
                        detail.update(self._kill(victim, trees, parent, busy, counts, now - t0))
                        next_sweep = killed_at + cfg.lease_seconds + 5
                if now >= next_sweep:
                    # the first sweep once the lease ran out; later ones (the schedule's next runs)
                    # only while the session makes no progress
                    if not sweeps or now - last_progress >= cfg.sweep_every:
                        sweeps.append(self._sweep(url, sid, now - (killed_at or now)))
                    next_sweep = time.perf_counter() + cfg.sweep_every
                if now - last_progress >= cfg.stall_seconds and (not kill or sweeps):
                    stalled = True
                    break
                if time.monotonic() > deadline:
                    stalled = True
                    break
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            if kill and killed_at is not None:
                detail["killed_runs_after"] = self._killed_runs(url, sid, detail.get("killed_flow_runs") or [])
            if stalled:
                detail["stalled"] = {
                    **self._stall_report(url, sid),
                    "no_progress_s": time.perf_counter() - last_progress,
                    "active_slots": self.api.active_slots(_product.MESSAGES_LIMIT),
                }
                self.progress(f"  {label}: the session did not finish: {detail['stalled']}; cancelling it")
                self._run(f"{label}-cancel", [self._syncflow(), "sessions", "cancel", sid], store_env)
                deadline = time.monotonic() + 180
                while session_progress(url, sid)[0] == "running" and time.monotonic() < deadline:
                    time.sleep(1)
            detail["parent_state"] = self._wait_final(parent, 120)
            detail["session_status"], detail["records_by_status"] = session_progress(url, sid)
            first = session_records(url, sid)
            slots = self._slots_after()
            detail.update(slots)
            if kill:
                detail["resume"] = self._resume(label, url, env, first, trees)
            time.sleep(1.0)  # the last flow-run processes exit and write their counts
        self.stop_workers()
        result = PartResult(
            label, n, cfg.messages, cfg.limit, wall, load, trees.peak_total_mb, {}, records_timeline(first), cpu.used
        )
        result.detail.update(detail)
        result.detail["sweeps"] = sweeps
        self._account(result, trees, parent, first, count_dir, workers)
        self._check_scaleout(result, url, first, kill)
        self.dbs.drop(url)
        self.progress(
            f"  {label}: {wall:.1f}s trigger to session finished, {result.peak_rss_mb:.0f} MB (workers' trees), "
            f"runs per worker {result.detail.get('runs_per_worker')}, check {_status(result)}"
        )
        return result

    def _victim(
        self, workers: list[WorkerProcess], trees: TreeSampler, parent: str, url: str, sid: str
    ) -> tuple[WorkerProcess, list[str]]:
        """The worker that does not run the session's parent, and its instance runs that are
        in the state ``--kill-when`` asks for: ``running`` (their record is running) or
        ``starting`` (their process lives, their record is not opened yet)."""
        trees.sample()
        host = trees.worker_of_run(parent)
        victim = next((w for w in workers if w.worker_name != host), workers[-1])
        live = trees.live_runs_of(victim.worker_name) - {parent}
        recs = {r["flow_run_id"]: r for r in session_records(url, sid) if r["flow_run_id"]}
        if self.config.kill_when == "starting":
            return victim, sorted(run for run in live if run not in recs)
        return victim, sorted(
            recs[run]["instance_name"] for run in live if recs.get(run, {}).get("status") == "running"
        )

    def _kill(
        self,
        victim: WorkerProcess,
        trees: TreeSampler,
        parent: str,
        busy: list[str],
        counts: dict[str, int],
        at_s: float,
    ) -> dict[str, Any]:
        """SIGKILL the worker with every process it started (a lost machine)."""
        host = trees.worker_of_run(parent)
        live = sorted(trees.live_runs_of(victim.worker_name))
        pids = victim.kill_tree()
        trees.forget(victim.worker_name)
        self.progress(
            f"    SIGKILLed worker {victim.worker_name} ({len(pids)} processes, {len(live)} flow run(s)) at "
            f"{at_s:.1f}s, {counts.get('completed', 0)} records completed; {self.config.kill_when}: {busy}; "
            f"the parent runs on {host}"
        )
        return {
            "killed_worker": victim.worker_name,
            "kill_when": self.config.kill_when,
            "parent_worker": host,
            "killed_at_s": at_s,
            "completed_at_kill": counts.get("completed", 0),
            "killed_processes": len(pids),
            "killed_flow_runs": live,
            "killed_running_records" if self.config.kill_when == "running" else "killed_starting_runs": busy,
        }

    def _sweep(self, url: str, sid: str, after_kill_s: float) -> dict[str, Any]:
        """One run of the sweep deployment (as its schedule creates it), on the surviving worker."""
        before = {
            r["instance_name"]
            for r in session_records(url, sid)
            if (r["error_message"] or "").startswith(_product.SWEPT_PREFIX)
        }
        run = self.api.create_run(_product.SWEEP_DEPLOYMENT)
        state = self._wait_final(run, 300)
        after = {
            r["instance_name"]
            for r in session_records(url, sid)
            if (r["error_message"] or "").startswith(_product.SWEPT_PREFIX)
        }
        self.progress(
            f"    sweep {after_kill_s:.0f}s after the kill: {state}, "
            f"{len(after - before)} record(s) failed 'worker lost'"
        )
        return {
            "flow_run_id": run,
            "after_kill_s": after_kill_s,
            "state": state,
            "records_swept": sorted(after - before),
        }

    def _killed_runs(self, url: str, sid: str, runs: list[str]) -> list[dict[str, Any]]:
        """Each flow run the kill ended: its Prefect state now and its record (if it opened one)."""
        recs = {r["flow_run_id"]: r for r in session_records(url, sid) if r["flow_run_id"]}
        return [
            {
                "flow_run_id": run,
                "prefect_state": self.api.run_state(run),
                "record": (recs[run]["instance_name"], recs[run]["status"]) if run in recs else None,
            }
            for run in runs
        ]

    def _stall_report(self, url: str, sid: str) -> dict[str, Any]:
        """What keeps a session open: its open records and the Prefect states of their runs."""
        recs = [r for r in session_records(url, sid) if r["status"] in ("pending", "running")]
        return {
            "open_records": len(recs),
            "examples": [
                {"instance": r["instance_name"], "status": r["status"], "flow_run_id": r["flow_run_id"],
                 "run_state": self.api.run_state(r["flow_run_id"]) if r["flow_run_id"] else None}
                for r in recs[:5]
            ],
        }  # fmt: skip

    def _slots_after(self) -> dict[str, Any]:
        """The limit's active slots once the session ended, and how long until none is held."""
        name = _product.MESSAGES_LIMIT
        start = time.perf_counter()
        at_end = self.api.active_slots(name)
        now = at_end
        while now and time.perf_counter() - start < self.config.lease_seconds + 60:
            time.sleep(1.0)
            now = self.api.active_slots(name)
        return {
            "active_slots_at_end": at_end,
            "active_slots_after": now,
            "slots_zero_after_s": time.perf_counter() - start if not now else None,
        }

    def _resume(
        self, label: str, url: str, env: dict[str, str], first: list[dict[str, Any]], trees: TreeSampler
    ) -> dict[str, Any]:
        """A second scale-out session over the instances the first did not complete (the
        surviving worker): each must resume at its cursor."""
        todo = sorted(r["instance_name"] for r in first if r["status"] != "completed")
        if not todo:
            return {"instances": 0}
        before = stored_rows(url)
        self.progress(f"    resume: a scale-out session over the {len(todo)} instance(s) not completed ...")
        t0 = time.perf_counter()
        fired = self._trigger(f"{label}-resume-trigger", _product.scale_out_argv(todo), env)
        deadline = time.monotonic() + self.config.timeout
        while session_progress(url, fired["session_id"])[0] in (None, "running") and time.monotonic() < deadline:
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        self._wait_final(fired["flow_run_id"], 120)
        recs = session_records(url, fired["session_id"])
        m = self.config.messages
        not_at_cursor = [
            r["instance_name"] for r in recs if before.get(r["instance_name"], 0) + (r["items_synced"] or 0) != m
        ]
        return {
            "instances": len(todo),
            "session_id": fired["session_id"],
            "parent_flow_run_id": fired["flow_run_id"],
            "status": session_progress(url, fired["session_id"])[0],
            "wall_s": wall,
            "rows_before": sum(before.get(i, 0) for i in todo),
            "records": len(recs),
            "completed": sum(1 for r in recs if r["status"] == "completed"),
            "child_flow_runs": [r["flow_run_id"] for r in recs],
            "not_resumed_at_cursor": not_at_cursor,
        }

    def _account(
        self,
        result: PartResult,
        trees: TreeSampler,
        parent: str,
        recs: list[dict[str, Any]],
        count_dir: Path,
        workers: list[WorkerProcess],
    ) -> None:
        """Runs per worker (the sampler's view of who ran which flow run, and the workers' logs)
        and the Prefect calls of every process, by role."""
        n = result.instances
        child_runs = {r["flow_run_id"] for r in recs if r["flow_run_id"]}
        resume = result.detail.get("resume") or {}
        per_worker: dict[str, int] = {}
        for w in workers:
            log = w.log_path.read_text(errors="replace") if w.log_path.exists() else ""
            submitted = set(_SUBMITTING.findall(log)) - set(_ABORTED.findall(log))
            ran = (trees.runs_of(w.worker_name) | submitted) & child_runs
            per_worker[w.worker_name] = len(ran)
        result.detail["runs_per_worker"] = per_worker
        result.detail["instance_runs_unattributed"] = len(child_runs) - sum(per_worker.values())
        sweep_runs = {s["flow_run_id"] for s in result.detail.get("sweeps", [])}
        resume_runs = set(resume.get("child_flow_runs") or []) | (
            {resume["parent_flow_run_id"]} if resume.get("parent_flow_run_id") else set()
        )
        roles: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(count_dir.glob("*.json")):
            doc = json.loads(path.read_bytes())
            run, argv = doc.get("flow_run_id"), " ".join(doc.get("argv") or [])
            if run == parent:
                role = "session parent"
            elif run in child_runs:
                role = "instance runs"
            elif run in sweep_runs:
                role = "sweep runs"
            elif run in resume_runs:
                role = "resume session"
            elif "worker" in argv and "start" in argv:
                role = "workers"
            elif "sync" in argv and "run" in argv:
                role = "trigger (syncflow CLI)"
            else:
                role = "other"
            roles.setdefault(role, []).append(doc)
        api: dict[str, Any] = {}
        for role, docs in roles.items():
            cats = [categories(d) for d in docs]
            api[role] = {
                "processes": len(docs),
                "REST calls": sum(c["REST calls"] for c in cats),
                "events": sum(c["events"] for c in cats),
                "slot requests answered 423": sum(c["slot requests answered 423"] for c in cats),
                "peak_rss_mb_max": max(float(d.get("peak_rss_mb") or 0) for d in docs),
                "peak_rss_mb_median": statistics.median(float(d.get("peak_rss_mb") or 0) for d in docs),
                "cpu_s": sum(float(d.get("cpu_s") or 0) for d in docs),
                "calls": _merge(d.get("prefect_api_calls") or {} for d in docs),
            }
        measured = ("session parent", "instance runs", "workers", "trigger (syncflow CLI)")
        api["per instance"] = {
            "REST calls": sum(api[r]["REST calls"] for r in measured if r in api) / n,
            "events": sum(api[r]["events"] for r in measured if r in api) / n,
            "instance-run processes counted": api.get("instance runs", {}).get("processes", 0),
        }
        result.api = api

    def _check_scaleout(self, result: PartResult, url: str, first: list[dict[str, Any]], kill: bool) -> None:
        d, p, n = result.detail, result.problems, result.instances
        if d.get("stalled"):
            p.append(f"the session did not finish ({d['stalled']['open_records']} record(s) left open)")
        if d.get("active_slots_after"):
            p.append(
                f"{d['active_slots_after']} slot(s) still active {self.config.lease_seconds + 60} s after the session"
            )
        if not kill:
            self._check_session(result, url, d["session_status"], first, n)
            if sum(1 for v in d["runs_per_worker"].values() if v) < min(2, len(d["runs_per_worker"])):
                p.append(f"not every worker ran instance syncs: {d['runs_per_worker']}")
        else:
            done = {r["instance_name"] for r in first if r["status"] == "completed"}
            killed = set(d.get("killed_running_records") or []) - done  # a sync may finish as it is killed
            swept = {r["instance_name"] for r in first if (r["error_message"] or "").startswith(_product.SWEPT_PREFIX)}
            d["records_worker_lost"] = sorted(swept)
            given_up = {r["instance_name"] for r in first if _LOST_STARTING in (r["error_message"] or "")}
            d["records_lost_starting"] = sorted(given_up)  # failed by the parent (SYNCFLOW_CHILD_START_SECONDS)
            if "killed_worker" not in d:
                p.append("no worker was killed (the session ended before --kill-at)")
            if d["session_status"] not in ("completed", "failed"):
                p.append(f"first session ended {d['session_status']}")
            hung = [k for k in d.get("killed_runs_after") or [] if k["prefect_state"] not in _FINAL]
            if hung:
                p.append(f"{len(hung)} killed flow run(s) never final in Prefect: {hung[:3]}")
            if killed - swept:
                p.append(
                    "killed worker's running records not closed 'worker lost' by the sweep: "
                    f"{sorted(killed - swept)[:5]}"
                )
            others = [r for r in first if r["status"] != "completed" and r["instance_name"] not in swept | given_up]
            if others:
                r = others[0]
                p.append(
                    f"{len(others)} record(s) neither completed nor swept (e.g. {r['instance_name']}: "
                    f"{r['status']} {r['error_message'] or ''})"[:300]
                )
            resume = d.get("resume") or {}
            if resume.get("instances"):
                if resume.get("status") != "completed" or resume.get("completed") != resume.get("instances"):
                    p.append(
                        f"resume session {resume.get('status')}: "
                        f"{resume.get('completed')}/{resume.get('instances')} completed"
                    )
                if resume.get("not_resumed_at_cursor"):
                    p.append(f"not resumed at the cursor: {resume['not_resumed_at_cursor'][:5]}")
        self._check_rows(result, url, n)


def _merge(dicts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _status(result: PartResult) -> str:
    return "ok" if result.ok else "FAIL: " + "; ".join(result.problems)


# ------------------------------------------------------------------------------ report


def markdown(results: list[PartResult], config: ScaleConfig) -> str:
    lines = [
        f"Scale: one messages session of N small instances ({config.messages} messages each, pages of "
        f"{config.batch_size}, one fast seq server), `tag:sync:messages` at {config.limit}; Prefect server on "
        f"PostgreSQL, store on PostgreSQL; scale-out: {config.workers} process workers "
        f"(PREFECT_WORKER_QUERY_SECONDS={config.worker_query_seconds:g}).",
        "",
        "| part | N | wall s | instances/s | peak RSS MB | REST calls/instance | events/instance | max at once "
        "| runs per worker | CPU s: server · postgres · workers | load | recovery | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|",
    ]
    for r in results:
        d = r.detail
        if r.part == "inproc":
            cats = r.api["syncflow process"]
            rest, events = cats["REST calls"] / r.instances, cats["events"] / r.instances
            per_worker, workers_cpu = "-", r.cpu.get("syncflow", 0.0)
            part = "in one process"
        else:
            per = r.api.get("per instance", {})
            rest, events = per.get("REST calls", 0.0), per.get("events", 0.0)
            per_worker = " / ".join(str(v) for v in d.get("runs_per_worker", {}).values())
            workers_cpu = sum(v for k, v in r.cpu.items() if k in d.get("workers", []))
            part = "scale-out, 2 workers" if r.part == "scaleout" else "scale-out, one worker SIGKILLed"
        recovery = "-"
        if r.part == "kill":
            res = d.get("resume") or {}
            sweeps = d.get("sweeps") or []
            first = next((s for s in sweeps if s["records_swept"]), None)
            recovery = (
                f"killed {d.get('killed_worker', '?')} at {d.get('completed_at_kill', 0)}/{r.instances} done "
                f"({len(d.get('killed_flow_runs') or [])} flow runs in it; "
                f"{len(d.get('killed_running_records') or d.get('killed_starting_runs') or [])} "
                f"{d.get('kill_when')}); session {d.get('session_status')}; "
            )
            recovery += (
                f"{len(d.get('records_worker_lost') or [])} 'worker lost' by sweep "
                f"{first['after_kill_s']:.0f} s after the kill ({len(sweeps)} sweep run(s))"
                if first
                else f"no record swept ({len(sweeps)} sweep run(s))"
            )
            if d.get("records_lost_starting"):
                recovery += f"; {len(d['records_lost_starting'])} run(s) lost while starting given up by the parent"
            if d.get("stalled"):
                st = d["stalled"]
                recovery += (
                    f"; STALLED ({st['open_records']} record(s) open, {st['active_slots']} slot(s) held, "
                    f"no progress for {st['no_progress_s']:.0f} s): cancelled"
                )
            hung = [k for k in d.get("killed_runs_after") or [] if k["prefect_state"] not in _FINAL]
            if hung:
                recovery += f"; {len(hung)} killed run(s) still {'/'.join(sorted({k['prefect_state'] for k in hung}))}"
            recovery += (
                f"; slots {d.get('active_slots_at_end')} at end → {d.get('active_slots_after')}"
                f"; resume {res.get('completed', 0)}/{res.get('instances', 0)} in {res.get('wall_s', 0):.0f} s"
            )
        elif r.part == "scaleout":
            recovery = f"slots {d.get('active_slots_at_end')} at end → {d.get('active_slots_after')}"
        lines.append(
            f"| {part} | {r.instances:,} | {r.wall_s:.1f} | {r.instances / r.wall_s:.2f} | {r.peak_rss_mb:.0f} "
            f"| {rest:.1f} | {events:.1f} | {r.timeline.get('max_running', 0)} | {per_worker} "
            f"| {r.cpu.get('prefect-server', 0):.0f} · {r.cpu.get('postgres', 0):.0f} · {workers_cpu:.0f} "
            f"| {r.load_before:.1f} | {recovery} | {_status(r)} |"
        )
    lines += [
        "",
        "wall: in one process spawn to exit; scale-out trigger (`syncflow sync run --deployment --scale-out "
        "--no-wait`) to the session finished in the store. Peak RSS: the process's VmHWM; scale-out the peak "
        "of the workers' process trees' summed RSS (worker + flow-run processes). REST calls and events per "
        "instance: scale-out sums the session parent, the instance runs, the workers and the trigger; a "
        "SIGKILLed process reports nothing (its calls are missing). CPU 'workers': in one process the "
        "syncflow process.",
    ]
    for r in results:
        if r.part == "inproc":
            continue
        roles = {k: v for k, v in r.api.items() if k != "per instance"}
        if roles:
            lines.append("")
            lines.append(f"{r.part}: Prefect calls by process role (per instance of the session)")
            lines.append("")
            lines.append("| role | processes | REST calls | events | 423s | peak RSS MB (median · max) | CPU s |")
            lines.append("|---|---:|---:|---:|---:|---|---:|")
            for role, v in roles.items():
                lines.append(
                    f"| {role} | {v['processes']} | {v['REST calls'] / r.instances:.1f} "
                    f"| {v['events'] / r.instances:.1f} "
                    f"| {v['slot requests answered 423'] / r.instances:.1f} "
                    f"| {v['peak_rss_mb_median']:.0f} · {v['peak_rss_mb_max']:.0f} | {v['cpu_s']:.0f} |"
                )
    return "\n".join(lines)


def write_json(results: list[PartResult], config: ScaleConfig, env: dict[str, Any], path: Path, seconds: float) -> None:
    from bench.report import environment

    doc = {
        "benchmark": "scale",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": seconds,
        "config": asdict(config),
        "environment": environment(),
        "prefect": env,
        "parts": [{**asdict(r), "ok": r.ok} for r in results],
        "table": markdown(results, config),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))


# -------------------------------------------------------------------------------- CLI


def _parts(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    if not chosen or set(chosen) - set(PARTS):
        raise argparse.ArgumentTypeError(f"--parts: one or more of {','.join(PARTS)}")
    return tuple(p for p in PARTS if p in chosen)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000, help="N of the in-process session (default 1000)")
    parser.add_argument(
        "--scaleout-instances", type=int, default=None, help="N of the scale-out parts (default: --instances)"
    )
    parser.add_argument("--messages-per-instance", type=int, default=200, help="M (default 200)")
    parser.add_argument("--batch-size", type=int, default=100, help="page size of the instances (default 100)")
    parser.add_argument("--limit", type=int, default=3, help="tag:sync:messages slots (default 3)")
    parser.add_argument("--parts", type=_parts, default=PARTS, help="inproc,scaleout,kill (default all)")
    parser.add_argument("--workers", type=int, default=2, help="process workers of the scale-out parts (default 2)")
    parser.add_argument("--kill-at", type=float, default=0.3, help="kill a worker once this share of records completed")
    parser.add_argument(
        "--kill-when",
        choices=("running", "starting"),
        default="running",
        help="kill once the victim runs an instance sync (default), or has a run whose process is starting",
    )
    parser.add_argument(
        "--worker-query-seconds", type=float, default=1.0, help="PREFECT_WORKER_QUERY_SECONDS (default 1)"
    )
    parser.add_argument("--lease-seconds", type=int, default=60, help="SYNCFLOW_LOCK_LEASE_SECONDS (default 60)")
    parser.add_argument(
        "--sweep-every", type=float, default=30.0, help="seconds between sweeps after the first (default 30)"
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=180.0,
        help="no record closed for this long (after a sweep, when killed): the session stalled (default 180)",
    )
    parser.add_argument(
        "--child-start-seconds",
        type=float,
        default=60.0,
        help="SYNCFLOW_CHILD_START_SECONDS of the workers: a run taken but not started for this long is "
        "given up by its session (product default 180; keep it below --stall-seconds)",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="server on which the run's databases are created and dropped",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--logs", type=Path, default=None, help="keep the children's, workers' and servers' logs here")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds allowed per session")
    args = parser.parse_args(argv)
    if args.scaleout_instances is None:
        args.scaleout_instances = args.instances
    if min(args.instances, args.scaleout_instances, args.messages_per_instance, args.limit) < 1:
        parser.error("--instances, --scaleout-instances, --messages-per-instance and --limit must be >= 1")
    if not 0 < args.kill_at < 1 or (args.workers < 2 and {"scaleout", "kill"} & set(args.parts)):
        parser.error("--kill-at between 0 and 1; --workers >= 2")
    return args


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = ScaleConfig(
        instances=args.instances,
        scaleout_instances=args.scaleout_instances,
        messages=args.messages_per_instance,
        batch_size=args.batch_size,
        limit=args.limit,
        parts=args.parts,
        workers=args.workers,
        kill_at=args.kill_at,
        kill_when=args.kill_when,
        worker_query_seconds=args.worker_query_seconds,
        lease_seconds=args.lease_seconds,
        sweep_every=args.sweep_every,
        stall_seconds=args.stall_seconds,
        child_start_seconds=args.child_start_seconds,
        admin_url=args.pg_admin_url,
        timeout=args.timeout,
    )
    try:
        with psycopg.connect(conninfo(args.pg_admin_url), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        print(f"bench.scale: PostgreSQL is not reachable at {args.pg_admin_url}: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = time.perf_counter()
    try:
        with BenchEnv(
            admin_url=args.pg_admin_url,
            logs=args.logs,
            server_env={"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE},
        ) as env:
            bench = ScaleBench(config, env)
            try:
                results = bench.run()
            finally:
                bench.stop_workers()
            prefect = env.prefect
    except (ServiceError, RuntimeError, OSError, psycopg.Error, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        print(f"bench.scale: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.scale: interrupted (everything it started is stopped, its databases dropped)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - started
    write_json(results, config, prefect, args.out, seconds)
    print(markdown(results, config))
    print(f"\n(results: {args.out}; total {seconds:.0f}s)")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
