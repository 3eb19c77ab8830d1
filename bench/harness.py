"""The engine rounds: raw, dlt and syncflow against a seq source that is not the bottleneck.

A round, for one size N: start the fast seq server (:mod:`bench.fastseq`, pages pre-serialised)
with N messages in its own process and measure its own rate; create one fresh PostgreSQL
database per variant; run each variant's full sync (each in its own child process, timed from
spawn to exit by this process and from the inside by the child); then, on the first size only
(by default), append the incremental messages and run each variant again, then once more with
nothing new; after those, time Prefect's single-run floor (:mod:`bench.floor`) on the same
Prefect server, and (first round) the CLI's own start. Every run is checked against the server
(rows, cursor, the run's count, sampled rows field by field); the databases are dropped.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
from psycopg import sql

from bench import _product, dltpeer
from bench.services import CpuSampler, PgDatabases, SeqServerProcess, conninfo

Variant = Literal["raw", "dlt", "syncflow"]
Phase = Literal["full", "incremental", "noop"]

VARIANTS: tuple[Variant, ...] = ("raw", "dlt", "syncflow")
REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-not-a-secret"
INSTANCE = "bench-im"
_CHILD_MODULE: dict[Variant, str] = {"raw": "bench.raw", "dlt": "bench.dltpeer", "syncflow": "bench.subflow"}
_SAMPLE_ROWS = 5
_WIRE_NAMES = (
    ("message_id", "messageID"),
    ("server_msg_id", "serverMsgID"),
    ("seq", "seq"),
    ("conversation_id", "conversationID"),
    ("sender_id", "senderID"),
    ("message_type", "messageType"),
    ("content", "content"),
    ("create_time", "createTime"),
    ("server_time", "serverTime"),
)
_COLS = ", ".join(c for c, _ in _WIRE_NAMES)
_LAST_RECORD = (
    "SELECT id FROM sync_instance_records WHERE instance_name = %s AND sync_category = 'messages' "
    "ORDER BY id DESC LIMIT 1"
)


@dataclass(frozen=True)
class Config:
    sizes: list[int]
    admin_url: str
    batch_size: int = 500
    incremental: int = 1000
    repeat: int = 1
    variants: tuple[Variant, ...] = VARIANTS
    seed: int = 7
    child_timeout: float = 3600.0
    keep_logs: Path | None = None
    profile_dir: Path | None = None
    """When set, each syncflow child runs under ``py-spy record`` (raw stacks land here)."""
    py_spy: str = "py-spy"
    flow: str | None = None
    """None: syncflow runs as its CLI (``syncflow sync instance``); ``module:attr``: that flow alone."""
    source: str = "fast"
    incremental_sizes: str = "first"
    """``first``: the incremental and nothing-new runs after the first size only; ``all``: every size."""
    floor_single: bool = True
    cli_start: bool = True
    cli_start_repeats: int = 5
    latency: float = 0.0
    """Seconds the fast seq server adds before every sync answer (a remote source)."""
    block_options: dict[str, Any] = field(default_factory=dict)
    """Extra fields of syncflow's http-seq block (e.g. ``adaptive_batch``)."""
    grid: int | None = None
    """The fast server's page grid (default: ``batch_size``)."""


@dataclass
class Check:
    """A run's result against the server: rows stored, cursor, sampled rows field by field."""

    expected_rows: int
    expected_cursor: int
    stored_rows: int
    distinct_ids: int
    cursor: int | None
    synced_rows: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Measurement:
    variant: str
    phase: str
    size: int
    rows: int
    round: int
    child: dict[str, Any]
    cpu: dict[str, float]
    check: Check | None
    load_before: float = 0.0
    """1-minute load average just before the run: other work on the machine skews timings."""
    process_wall_s: float = 0.0
    """Spawn to exit of the child process, timed by the harness."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.check is not None:
            out["check"]["ok"] = self.check.ok
        return out


@dataclass
class Target:
    """One variant's store in one round."""

    variant: Variant
    url: str
    instance_id: int = 0
    item_id: int = 0
    block_name: str | None = None
    pipelines_dir: str | None = None


@dataclass
class BenchRun:
    config: Config
    measurements: list[Measurement]
    server_rates: list[dict[str, Any]]
    floor_single: list[Measurement]
    cli_start: dict[str, Any]
    prefect: dict[str, Any]
    started_at: str
    seconds: float
    notes: list[str] = field(default_factory=list)


Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed_process(
    args: list[str], *, env: dict[str, str], log: Path, timeout: float, cwd: Path = REPO
) -> tuple[int, float]:
    """Run ``args`` to its end; ``(exit status, seconds from spawn to exit)``."""
    with log.open("ab") as out:
        start = time.perf_counter()
        proc = subprocess.run(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
        return proc.returncode, time.perf_counter() - start


class Harness:
    def __init__(
        self,
        config: Config,
        *,
        prefect: dict[str, Any],
        child_env: dict[str, str],
        workdir: Path,
        progress: Progress = _stderr,
    ) -> None:
        self.config = config
        self.prefect = prefect
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.dbs = PgDatabases(config.admin_url, prefix=f"syncflow_bench_{self.run_id}")
        self.workdir = Path(tempfile.mkdtemp(prefix="engine-", dir=workdir))
        self.logs = (config.keep_logs or workdir / "logs") / "engine"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.child_env = child_env
        self.notes: list[str] = []
        self.variants = tuple(v for v in config.variants if v != "dlt" or dltpeer.available())
        if "dlt" in config.variants and "dlt" not in self.variants:
            self.notes.append("dlt is not installed (`pip install -e '.[bench]'`): its column is skipped")

    # ------------------------------------------------------------------ the whole run

    def run(self) -> BenchRun:
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        t0 = time.perf_counter()
        measurements: list[Measurement] = []
        rates: list[dict[str, Any]] = []
        floors: list[Measurement] = []
        cli: dict[str, Any] = {}
        try:
            for i, size in enumerate(self.config.sizes):
                with_incremental = self.config.incremental and (self.config.incremental_sizes == "all" or i == 0)
                for round_no in range(self.config.repeat):
                    ms, rate = self._round(size, round_no, bool(with_incremental))
                    measurements.extend(ms)
                    rates.append(rate)
                    if i == 0 and self.config.floor_single:
                        floors.append(self._floor_single(round_no))
            if self.config.cli_start:
                cli = self._cli_start()
        finally:
            self.dbs.drop_all()
        return BenchRun(
            self.config,
            measurements,
            rates,
            floors,
            cli,
            self.prefect,
            started_at,
            time.perf_counter() - t0,
            self.notes,
        )

    # ------------------------------------------------------------------------ a round

    def _round(self, size: int, round_no: int, with_incremental: bool) -> tuple[list[Measurement], dict[str, Any]]:
        cfg = self.config
        out: list[Measurement] = []
        label = f"{size}-{round_no}"
        with SeqServerProcess(
            messages=size,
            token=TOKEN,
            seed=cfg.seed,
            log_path=self.logs / f"seqserver-{label}.log",
            source=cfg.source,
            page_size=cfg.grid or cfg.batch_size,
            latency=cfg.latency,
        ) as server:
            server.start()
            load = os.getloadavg()[0]
            rate = {"size": size, "round": round_no, "source": cfg.source, "load_before": load, **server.rate()}
            self.progress(f"  seq server ({cfg.source}) alone: {rate['msgs_per_s']:,.0f} msgs/s (load {load:.1f})")
            targets = {v: self._prepare(v, server, label) for v in self.variants}
            phases: list[tuple[Phase, int]] = [("full", size)]
            if with_incremental:
                phases += [("incremental", cfg.incremental), ("noop", 0)]
            for phase, rows in phases:
                if phase == "incremental":
                    server.append(rows)
                for variant in self.variants:
                    out.append(self._measure(targets[variant], server, phase, size, rows, round_no))
            for target in targets.values():
                self.dbs.drop(target.url)
        return out, rate

    def _prepare(self, variant: Variant, server: SeqServerProcess, label: str) -> Target:
        url = self.dbs.create(f"{variant}_{label}".replace("-", "_"))
        target = Target(variant, url)
        if variant == "dlt":
            target.pipelines_dir = str(self.workdir / f"dlt-{label}")
            return target
        _product.migrate(url)
        if variant == "syncflow":
            target.block_name = f"bench-{self.run_id}-{label}"
            self._in_child(
                "_product.save_seq_block",
                [target.block_name],
                {
                    "base_url": server.url,
                    "token": TOKEN,
                    "batch_size": self.config.batch_size,
                    **self.config.block_options,
                },
            )
        target.instance_id, target.item_id = _product.register_instance(
            url, name=INSTANCE, block_name=target.block_name
        )
        return target

    def _in_child(self, fn: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Call a :mod:`bench._product` function in a child with the Prefect environment
        (blocks are saved through the Prefect API; this process never imports Prefect)."""
        code = (
            "import json,sys; from bench import _product; "
            f"_product.{fn.split('.', 1)[1]}(*json.loads(sys.argv[1]), **json.loads(sys.argv[2]))"
        )
        rc, _ = timed_process(
            [sys.executable, "-c", code, json.dumps(args), json.dumps(kwargs)],
            env=self.child_env,
            log=self.logs / "setup.log",
            timeout=300,
        )
        if rc != 0:
            raise RuntimeError(f"{fn} failed (see {self.logs / 'setup.log'})")

    # -------------------------------------------------------------------- one run

    def _measure(
        self, target: Target, server: SeqServerProcess, phase: Phase, size: int, rows: int, round_no: int
    ) -> Measurement:
        variant = target.variant
        label = f"{variant}-{phase}-{size}-{round_no}"
        self.progress(f"  {label}: syncing {rows:,} rows ...")
        out = self.workdir / f"{label}.json"
        spec: dict[str, Any]
        record_id: int | None = None
        if variant == "raw":
            spec = {
                "base_url": server.url,
                "token": TOKEN,
                "conninfo": conninfo(target.url),
                "instance_id": target.instance_id,
                "item_id": target.item_id,
                "batch_size": self.config.batch_size,
            }
        elif variant == "dlt":
            spec = {
                "base_url": server.url,
                "token": TOKEN,
                "conninfo": conninfo(target.url),
                "pipelines_dir": target.pipelines_dir,
                "batch_size": self.config.batch_size,
            }
        elif self.config.flow:
            record_id = _product.open_record(target.url, instance=INSTANCE)
            spec = {"mode": "flow", "record_id": record_id, "instance": INSTANCE, "flow": self.config.flow}
        else:
            spec = {"mode": "cli", "argv": _product.sync_instance_argv(INSTANCE)}
        env = {**self.child_env, "SYNCFLOW_DATABASE_URL": target.url}
        self.dbs.checkpoint()
        load_before = os.getloadavg()[0]
        roots = {"seqserver": server.pid}
        if self.prefect.get("pid"):
            roots["prefect-server"] = self.prefect["pid"]
        with CpuSampler(roots) as cpu:
            spec.update(out=str(out), spawned_at=time.time())
            args = [*self._profiler(label, variant), sys.executable, "-m", _CHILD_MODULE[variant], json.dumps(spec)]
            rc, process_wall = timed_process(
                args, env=env, log=self.logs / f"{label}.log", timeout=self.config.child_timeout
            )
        if rc != 0 or not out.exists():
            tail = (self.logs / f"{label}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{label}: child exited with {rc}; log tail:\n{tail}")
        child = json.loads(out.read_bytes())
        if variant == "syncflow" and record_id is None:
            with psycopg.connect(conninfo(target.url)) as conn:
                row = conn.execute(_LAST_RECORD, (INSTANCE,)).fetchone()
                record_id = row[0] if row else None
        check = self._check(target, server, child, rows, record_id)
        m = Measurement(variant, phase, size, rows, round_no, child, cpu.used, check, load_before, process_wall)
        status = "ok" if check.ok else "FAIL: " + "; ".join(check.problems)
        window = child.get("sync_s")
        self.progress(
            f"  {label}: process {process_wall:.2f}s, sync window {window or 0:.2f}s, "
            f"{child['peak_rss_mb']:.0f} MB, load {load_before:.1f}, check {status}"
        )
        return m

    def _profiler(self, label: str, variant: Variant) -> list[str]:
        """The py-spy prefix of a child's command line (wall-clock samples, idle threads too)."""
        where = self.config.profile_dir
        if where is None or variant != "syncflow":
            return []
        where.mkdir(parents=True, exist_ok=True)
        return [
            self.config.py_spy, "record", "--format", "raw", "--rate", "200", "--idle", "--threads",
            "--nonblocking", "--output", str(where / f"{label}.txt"), "--",
        ]  # fmt: skip

    # ------------------------------------------------------------------- floors

    def _floor_single(self, round_no: int) -> Measurement:
        """One parent flow + one subflow + one task, spawn to exit, on the same Prefect server."""
        out = self.workdir / f"floor-single-{round_no}.json"
        load = os.getloadavg()[0]
        roots = {"prefect-server": self.prefect["pid"]} if self.prefect.get("pid") else {}
        with CpuSampler(roots) as cpu:
            spec = {"out": str(out), "spawned_at": time.time()}
            rc, wall = timed_process(
                [sys.executable, "-m", "bench.floor", "single", json.dumps(spec)],
                env=self.child_env,
                log=self.logs / f"floor-single-{round_no}.log",
                timeout=600,
            )
        if rc != 0:
            raise RuntimeError(f"floor single run failed (see {self.logs})")
        child = json.loads(out.read_bytes())
        self.progress(f"  floor, single run: process {wall:.2f}s, load {load:.1f}")
        return Measurement("floor", "single", 0, 0, round_no, child, cpu.used, None, load, wall)

    def _cli_start(self) -> dict[str, Any]:
        """``syncflow --help`` and ``python -c 'import <cli module>'``, spawn to exit (medians),
        against ``python -c 'from prefect import flow'`` (what any Prefect process imports)."""
        script = str(Path(sys.executable).with_name(_product.CLI_SCRIPT))
        probes = {
            "syncflow --help": [script, "--help"],
            f"import {_product.CLI_MODULE}": [sys.executable, "-c", f"import {_product.CLI_MODULE}"],
            "from prefect import flow": [sys.executable, "-c", "from prefect import flow"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        out: dict[str, Any] = {}
        for name, args in probes.items():
            walls = []
            load = os.getloadavg()[0]
            for _ in range(self.config.cli_start_repeats):
                rc, wall = timed_process(args, env=self.child_env, log=self.logs / "cli-start.log", timeout=120)
                if rc != 0:
                    raise RuntimeError(f"{name} exited with {rc} (see {self.logs / 'cli-start.log'})")
                walls.append(wall)
            out[name] = {"median_s": statistics.median(walls), "walls_s": walls, "load_before": load}
            self.progress(f"  {name}: {statistics.median(walls):.2f}s (median of {len(walls)}, load {load:.1f})")
        return out

    # ------------------------------------------------------------------- checking

    def _check(
        self, target: Target, server: SeqServerProcess, child: dict[str, Any], rows: int, record_id: int | None
    ) -> Check:
        state = server.state()
        table = "bench_dlt.messages" if target.variant == "dlt" else "messages"
        where = "" if target.variant == "dlt" else f" WHERE instance_id = {int(target.instance_id)}"
        record = None
        with psycopg.connect(conninfo(target.url)) as conn:
            stored, distinct, max_seq = conn.execute(
                sql.SQL("SELECT count(*), count(DISTINCT message_id), max(seq) FROM {}" + where).format(sql.SQL(table))
            ).fetchone()  # type: ignore[misc]
            if target.variant == "dlt":
                cursor = max_seq  # dlt keeps its cursor in its state: the highest stored seq is what it resumes from
            else:
                cursor_row = conn.execute(
                    "SELECT last_seq FROM sync_config_items WHERE id = %s", (target.item_id,)
                ).fetchone()
                cursor = cursor_row[0] if cursor_row else None
            if record_id is not None:
                record = conn.execute(
                    "SELECT status, items_synced, items_created, error_message FROM sync_instance_records "
                    "WHERE id = %s",
                    (record_id,),
                ).fetchone()
            sample_problems = self._sample(conn, target, server, state["maxSeq"], table, where)
        if target.variant == "syncflow":
            synced = record[1] if record else None
        else:
            synced = child["result"]["messages"]
        check = Check(state["messages"], state["maxSeq"], stored, distinct, cursor, synced)
        p = check.problems
        if target.variant == "syncflow" and child.get("exit_code", 0) != 0:
            p.append(f"syncflow exited with {child.get('exit_code')}")
        if stored != state["messages"]:
            p.append(f"{stored} rows stored, the server has {state['messages']}")
        if distinct != stored:
            p.append(f"{stored - distinct} duplicate message ids")
        if cursor != state["maxSeq"] or max_seq != state["maxSeq"]:
            p.append(f"cursor {cursor} / max stored seq {max_seq}, server maxSeq {state['maxSeq']}")
        if synced != rows:
            p.append(f"{synced} rows synced in this run, expected {rows}")
        if target.variant == "syncflow" and (record is None or record[0] != "completed" or record[2] != rows):
            p.append(f"record {record and record[0]}, {record and record[2]} created (expected completed, {rows})")
        p.extend(sample_problems)
        return check

    def _sample(
        self,
        conn: psycopg.Connection[Any],
        target: Target,
        server: SeqServerProcess,
        max_seq: int,
        table: str,
        where: str,
    ) -> list[str]:
        """Compare a few rows, every field, with what the server serves."""
        rng = random.Random(max_seq)
        problems: list[str] = []
        headers = {"Authorization": f"Bearer {TOKEN}"}
        query = sql.SQL(f"SELECT {_COLS} FROM {{}}" + (where + " AND" if where else " WHERE") + " message_id = %s")
        for after in sorted({0, max(0, max_seq - _SAMPLE_ROWS), rng.randrange(max(1, max_seq))}):
            body = {"lastSeq": after, "count": _SAMPLE_ROWS, "timestamp": 0}
            page = httpx.post(f"{server.url}/api/v1/messages/sync", json=body, headers=headers, timeout=10.0).json()
            for msg in page["data"]["messages"]:
                row = conn.execute(query.format(sql.SQL(table)), (msg["messageID"],)).fetchone()
                want = tuple(msg.get(w) for _, w in _WIRE_NAMES)
                if row is None:
                    problems.append(f"message {msg['messageID']} (seq {msg['seq']}) missing")
                elif tuple(row) != want:
                    problems.append(f"message {msg['messageID']} differs: stored {tuple(row)}, served {want}")
        return problems[:5]
