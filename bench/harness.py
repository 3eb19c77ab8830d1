"""Rounds of measurements: wiring, one child process per run, and a correctness check per run.

A round, for one size N: start a seq server with N messages (its own process); create one
fresh PostgreSQL database per variant (the syncflow schema in both, so both write the same
``messages`` table with the same indexes); run each variant's full sync; append the
incremental messages on the server; run each variant's incremental sync; check every run
against the server (rows, cursor, a sample of rows field by field); drop the databases.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg

from bench.services import CpuSampler, PgDatabases, PrefectServerProcess, SeqServerProcess, conninfo
from bench.subflow import DEFAULT_FLOW

Variant = Literal["raw", "syncflow"]
Phase = Literal["full", "incremental"]
PrefectMode = Literal["server", "ephemeral"]

VARIANTS: tuple[Variant, ...] = ("raw", "syncflow")
REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-not-a-secret"
INSTANCE = "bench-im"
_CHILD_MODULE: dict[Variant, str] = {"raw": "bench.raw", "syncflow": "bench.subflow"}
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
_SAMPLE_SQL = (
    f"SELECT {', '.join(c for c, _ in _WIRE_NAMES)} FROM messages "  # constant column names
    "WHERE instance_id = %s AND message_id = %s"
)


@dataclass(frozen=True)
class Config:
    sizes: list[int]
    admin_url: str
    batch_size: int = 500
    incremental: int = 1000
    repeat: int = 1
    variants: tuple[Variant, ...] = VARIANTS
    prefect_mode: PrefectMode = "server"
    seed: int = 7
    child_timeout: float = 3600.0
    keep_logs: Path | None = None
    profile_dir: Path | None = None
    """When set, each syncflow child runs under ``py-spy record`` (collapsed stacks land here)."""
    py_spy: str = "py-spy"
    flow: str = DEFAULT_FLOW
    """The syncflow variant's flow (``module:attribute``); another one A/B-tests a change."""


@dataclass
class Check:
    """A run's result against the server: rows stored, cursor, sampled rows field by field."""

    expected_rows: int
    expected_cursor: int
    stored_rows: int
    distinct_seqs: int
    cursor: int | None
    synced_rows: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Measurement:
    variant: Variant
    phase: Phase
    size: int
    rows: int
    round: int
    child: dict[str, Any]
    cpu: dict[str, float]
    check: Check
    load_before: float = 0.0
    """1-minute load average just before the run: other work on the machine skews timings."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["check"]["ok"] = self.check.ok
        return out


@dataclass
class Target:
    """One variant's store in one round."""

    variant: Variant
    url: str
    instance_id: int
    item_id: int
    block_name: str | None = None


@dataclass
class BenchRun:
    config: Config
    measurements: list[Measurement]
    prefect: dict[str, Any]
    started_at: str
    seconds: float


Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Harness:
    def __init__(self, config: Config, *, progress: Progress = _stderr) -> None:
        self.config = config
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.dbs = PgDatabases(config.admin_url, prefix=f"syncflow_bench_{self.run_id}")
        self.workdir = Path(tempfile.mkdtemp(prefix="syncflow-bench-"))
        self.logs = config.keep_logs or self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.prefect_server: PrefectServerProcess | None = None
        self.child_env: dict[str, str] = {}

    # ------------------------------------------------------------------ the whole run

    def run(self) -> BenchRun:
        """Every round; the run's databases are dropped and its temporary files removed at the end
        (the logs are kept, and their place reported, when something failed)."""
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        t0 = time.perf_counter()
        measurements: list[Measurement] = []
        ok = False
        try:
            with self._prefect() as prefect:
                try:
                    for size in self.config.sizes:
                        for round_no in range(self.config.repeat):
                            measurements.extend(self._round(size, round_no))
                finally:
                    self.dbs.drop_all()
            ok = True
        finally:
            if ok or self.config.keep_logs is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                self.progress(f"logs kept in {self.logs}")
        return BenchRun(self.config, measurements, prefect, started_at, time.perf_counter() - t0)

    @contextmanager
    def _prefect(self) -> Iterator[dict[str, Any]]:
        """A Prefect API for the run; sets the environment this process and the children use."""
        home = self.workdir / "prefect-home"
        home.mkdir()
        env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        info: dict[str, Any] = {"mode": self.config.prefect_mode}
        if self.config.prefect_mode == "server":
            server = PrefectServerProcess(home=home, log_path=self.logs / "prefect-server.log")
            self.progress("starting a local Prefect server ...")
            try:
                env["PREFECT_API_URL"] = server.start()
                info.update(api_url=env["PREFECT_API_URL"], startup_s=server.startup_s)
                self.progress(f"Prefect server up at {env['PREFECT_API_URL']} in {server.startup_s:.1f}s")
                self.prefect_server = server
                yield from self._with_env(env, info)
            finally:
                server.stop()
        else:
            env["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "true"
            yield from self._with_env(env, info)

    def _with_env(self, env: dict[str, str], info: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # Set before prefect is first imported (by blocks.seq_http, in _prepare).
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.update(env)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.child_env = {**os.environ, "PYTHONPATH": path}
        yield info

    # ------------------------------------------------------------------------ a round

    def _round(self, size: int, round_no: int) -> list[Measurement]:
        cfg = self.config
        out: list[Measurement] = []
        label = f"{size}-{round_no}"
        with SeqServerProcess(
            messages=size, token=TOKEN, seed=cfg.seed, log_path=self.logs / f"seqserver-{label}.log"
        ) as server:
            server.start()
            targets = {v: self._prepare(v, server, label) for v in cfg.variants}
            phases: list[tuple[Phase, int]] = [("full", size)]
            if cfg.incremental:
                phases.append(("incremental", cfg.incremental))
            for phase, rows in phases:
                if phase == "incremental":
                    server.append(rows)
                for variant in cfg.variants:
                    out.append(self._measure(targets[variant], server, phase, size, rows, round_no))
            for target in targets.values():
                self.dbs.drop(target.url)
        return out

    def _prepare(self, variant: Variant, server: SeqServerProcess, label: str) -> Target:
        from syncflow.store import instances
        from syncflow.store.db import make_engine, session_scope
        from syncflow.store.migrations import upgrade
        from syncflow.store.models import SyncConfigItem
        from syncflow.store.sync_state import ensure_item

        url = self.dbs.create(f"{variant}_{label}".replace("-", "_"))
        engine = make_engine(url)
        try:
            upgrade(engine)
            block_name = None
            if variant == "syncflow":
                from blocks.seq_http import SeqHttpInstance

                block_name = f"bench-{self.run_id}-{label}"
                SeqHttpInstance(base_url=server.url, token=TOKEN, batch_size=self.config.batch_size).save(
                    block_name, overwrite=True
                )
            with session_scope(engine) as s:
                inst = instances.add_instance(s, name=INSTANCE, kind="http-seq", block_name=block_name)
                ensure_item(s, instance_id=inst.id, category="messages")
                item_id = s.query(SyncConfigItem.id).filter_by(instance_id=inst.id, category="messages").scalar()
                target = Target(variant, url, inst.id, int(item_id), block_name)
        finally:
            engine.dispose()
        return target

    def _open_record(self, target: Target) -> int:
        from syncflow.store import sessions
        from syncflow.store.db import make_engine, session_scope

        engine = make_engine(target.url)
        try:
            with session_scope(engine) as s:
                row = sessions.open_session(s, sync_category="messages", instances=[INSTANCE], created_by="bench")
                return sessions.records_in_order(s, session_id=row.session_id)[0].id
        finally:
            engine.dispose()

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
        else:
            record_id = self._open_record(target)
            spec = {"record_id": record_id, "instance": INSTANCE, "flow": self.config.flow}
        env = {**self.child_env, "SYNCFLOW_DATABASE_URL": target.url}
        self.dbs.checkpoint()
        load_before = os.getloadavg()[0]
        roots = {"seqserver": server.pid}
        if self.prefect_server is not None:
            roots["prefect-server"] = self.prefect_server.pid
        with (self.logs / f"{label}.log").open("wb") as log, CpuSampler(roots) as cpu:
            spec.update(out=str(out), spawned_at=time.time())
            proc = subprocess.run(
                [*self._profiler(label, variant), sys.executable, "-m", _CHILD_MODULE[variant], json.dumps(spec)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=self.config.child_timeout,
                check=False,
            )
        if proc.returncode != 0 or not out.exists():
            tail = (self.logs / f"{label}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{label}: child exited with {proc.returncode}; log tail:\n{tail}")
        child = json.loads(out.read_bytes())
        check = self._check(target, server, child, rows, record_id)
        m = Measurement(variant, phase, size, rows, round_no, child, cpu.used, check, load_before)
        status = "ok" if check.ok else "FAIL: " + "; ".join(check.problems)
        self.progress(
            f"  {label}: {child['wall_s']:.2f}s wall, {rows / child['wall_s']:,.0f} msgs/s, "
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
            self.config.py_spy, "record", "--format", "raw", "--rate", "250", "--idle", "--threads",
            "--nonblocking", "--output", str(where / f"{label}.txt"), "--",
        ]  # fmt: skip

    # ------------------------------------------------------------------- checking

    def _check(
        self, target: Target, server: SeqServerProcess, child: dict[str, Any], rows: int, record_id: int | None
    ) -> Check:
        state = server.state()
        with psycopg.connect(conninfo(target.url)) as conn:
            stored, distinct, max_seq = conn.execute(
                "SELECT count(*), count(DISTINCT seq), max(seq) FROM messages WHERE instance_id = %s",
                (target.instance_id,),
            ).fetchone()  # type: ignore[misc]
            cursor_row = conn.execute(
                "SELECT last_seq FROM sync_config_items WHERE id = %s", (target.item_id,)
            ).fetchone()
            cursor = cursor_row[0] if cursor_row else None
            record = None
            if record_id is not None:
                record = conn.execute(
                    "SELECT status, items_synced, items_created, error_message FROM sync_instance_records "
                    "WHERE id = %s",
                    (record_id,),
                ).fetchone()
            sample_problems = self._sample(conn, target, server, state["maxSeq"])
        synced = child["result"]["messages"] if target.variant == "raw" else (record[1] if record else None)
        check = Check(
            expected_rows=state["messages"],
            expected_cursor=state["maxSeq"],
            stored_rows=stored,
            distinct_seqs=distinct,
            cursor=cursor,
            synced_rows=synced,
        )
        p = check.problems
        if stored != state["messages"]:
            p.append(f"{stored} rows stored, the server has {state['messages']}")
        if distinct != stored:
            p.append(f"{stored - distinct} duplicate seqs")
        if cursor != state["maxSeq"] or max_seq != state["maxSeq"]:
            p.append(f"cursor {cursor} / max stored seq {max_seq}, server maxSeq {state['maxSeq']}")
        if synced != rows:
            p.append(f"{synced} rows synced in this run, expected {rows}")
        if record is not None and (record[0] != "completed" or record[2] != rows):
            p.append(f"record {record[0]}, {record[2]} created (expected completed, {rows}): {record[3] or ''}")
        p.extend(sample_problems)
        return check

    def _sample(
        self, conn: psycopg.Connection[Any], target: Target, server: SeqServerProcess, max_seq: int
    ) -> list[str]:
        """Compare a few rows, every field, with what the server serves."""
        rng = random.Random(max_seq)
        problems: list[str] = []
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for after in sorted({0, max(0, max_seq - _SAMPLE_ROWS), rng.randrange(max(1, max_seq))}):
            body = {"lastSeq": after, "count": _SAMPLE_ROWS, "timestamp": 0}
            page = httpx.post(f"{server.url}/api/v1/messages/sync", json=body, headers=headers, timeout=10.0).json()
            for msg in page["data"]["messages"]:
                row = conn.execute(_SAMPLE_SQL, (target.instance_id, msg["messageID"])).fetchone()
                want = tuple(msg.get(w) for _, w in _WIRE_NAMES)
                if row is None:
                    problems.append(f"message {msg['messageID']} (seq {msg['seq']}) missing")
                elif tuple(row) != want:
                    problems.append(f"message {msg['messageID']} differs: stored {tuple(row)}, served {want}")
        return problems[:5]
