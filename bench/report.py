"""Markdown tables and the JSON file of a benchmark run (medians over the rounds)."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from bench.harness import BenchRun, Measurement, Phase, Variant
from bench.subflow import DEFAULT_FLOW

TARGET_RATIO = 1.25
_LABEL: dict[Variant, str] = {"raw": "raw baseline", "syncflow": "syncflow subflow"}

Key = tuple[int, Phase, Variant]


def _groups(run: BenchRun) -> dict[Key, list[Measurement]]:
    out: dict[Key, list[Measurement]] = {}
    for m in run.measurements:
        out.setdefault((m.size, m.phase, m.variant), []).append(m)
    return out


def _median(ms: Sequence[Measurement], get: Callable[[Measurement], float | None]) -> float | None:
    values = [v for v in (get(m) for m in ms) if v is not None]
    return statistics.median(values) if values else None


def _ratio(run: BenchRun, m: Measurement, get: Callable[[Measurement], float | None]) -> float | None:
    """``get(m)`` over the same quantity of the raw run of the same size, phase and round."""
    for raw in run.measurements:
        if (raw.variant, raw.size, raw.phase, raw.round) == ("raw", m.size, m.phase, m.round):
            num, den = get(m), get(raw)
            return num / den if num is not None and den else None
    return None


def _child(key: str) -> Callable[[Measurement], float | None]:
    return lambda m: m.child.get(key)


def _stage(kind: str) -> Callable[[Measurement], float | None]:
    return lambda m: m.child.get("stage_s", {}).get(kind)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rows_label(size: int, phase: Phase, rows: int) -> str:
    return f"{rows:,}" if phase == "full" else f"+{rows:,} (after {size:,})"


def summary(run: BenchRun) -> list[dict[str, Any]]:
    """One line per (size, phase, variant): medians over the rounds."""
    lines: list[dict[str, Any]] = []
    for (size, phase, variant), ms in _groups(run).items():
        wall = _median(ms, _child("wall_s"))
        rows = ms[0].rows
        lines.append(
            {
                "size": size,
                "phase": phase,
                "variant": variant,
                "rows": rows,
                "rounds": len(ms),
                "wall_s": wall,
                "msgs_per_s": rows / wall if wall else None,
                "ratio": _median(ms, lambda m: _ratio(run, m, _child("wall_s"))),
                "sync_ratio": _median(ms, lambda m: _ratio(run, m, _child("sync_s"))),
                "startup_s": _median(ms, _child("startup_s")),
                "first_batch_s": _median(ms, _child("first_batch_s")),
                "process_start_to_call_s": _median(ms, _child("process_start_to_call_s")),
                "sync_s": _median(ms, _child("sync_s")),
                "fetch_s": _median(ms, _stage("fetch")),
                "store_s": _median(ms, _stage("store")),
                "upsert_s": _median(ms, _stage("upsert")),
                "overlap_s": _median(ms, _child("overlap_s")),
                "idle_s": _median(ms, _child("idle_s")),
                "teardown_s": _median(ms, _child("teardown_s")),
                "peak_rss_mb": _median(ms, _child("peak_rss_mb")),
                "cpu_s": _median(ms, lambda m: m.child["cpu_user_s"] + m.child["cpu_sys_s"]),
                "postgres_cpu_s": _median(ms, lambda m: m.cpu.get("postgres")),
                "prefect_cpu_s": _median(ms, lambda m: m.cpu.get("prefect-server")),
                "seqserver_cpu_s": _median(ms, lambda m: m.cpu.get("seqserver")),
                "ok": all(m.check.ok for m in ms),
                "problems": sorted({p for m in ms for p in m.check.problems}),
            }
        )
    return lines


def markdown(run: BenchRun) -> str:
    lines = summary(run)
    cfg = run.config
    mode = (
        f"local Prefect server (`prefect server start`, SQLite, started in {run.prefect.get('startup_s', 0):.1f}s, "
        "not counted)"
        if run.prefect["mode"] == "server"
        else "Prefect ephemeral mode (a temporary server per process, counted in start-up)"
    )
    rounds = f"median of {cfg.repeat} rounds" if cfg.repeat > 1 else "one round"
    loads = [m.load_before for m in run.measurements] or [0.0]
    flow = "" if cfg.flow == DEFAULT_FLOW else f" syncflow runs `{cfg.flow}`."
    out = [
        f"Batches of {cfg.batch_size}, PostgreSQL store, loopback seq server in its own process, "
        f"{mode}; {rounds}; {os.cpu_count()} CPUs, 1-min load average before the runs "
        f"{min(loads):.1f}-{max(loads):.1f}.{flow}",
        "",
        "| variant | rows | wall s | msgs/s | vs raw (wall) | vs raw (sync) | start-up s | 1st batch s "
        "| peak RSS MB | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ln in lines:
        ratio = ln["ratio"]
        flag = "" if ln["variant"] == "raw" or ratio is None else (" ✓" if ratio <= TARGET_RATIO else " ✗")
        out.append(
            f"| {_LABEL[ln['variant']]} | {_rows_label(ln['size'], ln['phase'], ln['rows'])} "
            f"| {_fmt(ln['wall_s'])} | {_fmt(ln['msgs_per_s'], 0)} | {_times(ratio)}{flag} "
            f"| {_times(ln['sync_ratio'])} | {_fmt(ln['startup_s'], 3)} | {_fmt(ln['first_batch_s'], 3)} "
            f"| {_fmt(ln['peak_rss_mb'], 0)} | {'ok' if ln['ok'] else 'FAIL: ' + '; '.join(ln['problems'])} |"
        )
    out += [
        "",
        "Where the time goes (seconds; sync = first fetch to last commit; fetch/store = summed spans, "
        "idle = time in the sync window when neither a fetch nor a store ran; CPU columns are CPU seconds "
        "of each process during the run):",
        "",
        "| variant | rows | process→call | sync | fetch | store | upsert | overlap | idle | teardown "
        "| CPU pipeline | CPU postgres | CPU prefect srv | CPU seqserver |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ln in lines:
        out.append(
            f"| {_LABEL[ln['variant']]} | {_rows_label(ln['size'], ln['phase'], ln['rows'])} "
            f"| {_fmt(ln['process_start_to_call_s'])} | {_fmt(ln['sync_s'])} | {_fmt(ln['fetch_s'])} "
            f"| {_fmt(ln['store_s'])} | {_fmt(ln['upsert_s'])} | {_fmt(ln['overlap_s'])} | {_fmt(ln['idle_s'])} "
            f"| {_fmt(ln['teardown_s'])} | {_fmt(ln['cpu_s'])} | {_fmt(ln['postgres_cpu_s'])} "
            f"| {_fmt(ln['prefect_cpu_s'])} | {_fmt(ln['seqserver_cpu_s'])} |"
        )
    out += [
        "",
        "wall = the pipeline call (raw: `sync()`; syncflow: `await sync_instance(...)`) to its return; "
        "start-up = call to the first fetch; 1st batch = call to the first committed batch; "
        "process→call = process spawn + imports, not in wall. vs raw (sync) compares the sync windows only.",
    ]
    return "\n".join(out)


def environment() -> dict[str, Any]:
    versions = {}
    for dist in ("prefect", "psycopg", "httpx", "orjson", "sqlalchemy", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(), **versions}


def write_json(run: BenchRun, path: Path, postgres_version: str | None) -> None:
    cfg = asdict(run.config)
    cfg["keep_logs"] = str(cfg["keep_logs"]) if cfg["keep_logs"] else None
    doc = {
        "started_at": run.started_at,
        "seconds": run.seconds,
        "config": cfg,
        "environment": {**environment(), "postgres": postgres_version},
        "prefect": run.prefect,
        "summary": summary(run),
        "measurements": [m.to_json() for m in run.measurements],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))
