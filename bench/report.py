"""The one table of ``python -m bench`` (medians over the rounds, ratios per round), the detail
tables under it, and the JSON file."""

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

from bench.harness import BenchRun, Measurement
from bench.sessions import SessionBenchRun, SessionRun

ENGINE_TARGET = 1.15  # sync window vs raw
PROCESS_TARGET = 1.25  # whole process vs raw (1M), single runs vs the single floor, sessions vs the floor
SOURCE_MIN = 5.0  # the seq server alone must be at least this many times the raw pipeline's rate

Get = Callable[[Measurement], float | None]


def _med(values: Sequence[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cell(seconds: float | None, rss: float | None = None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:,.2f} s" + (f" · {rss:,.0f} MB" if rss else "")


def _ratio(value: float | None, base: str, target: float | None, *, at_least: bool = False) -> str:
    if value is None:
        return "-"
    mark = ""
    if target is not None:
        ok = value >= target if at_least else value <= target
        mark = f" {'✓' if ok else '✗'} ({'≥' if at_least else '≤'}{target:g})"
    return f"{value:.2f}x {base}{mark}"


def _load(loads: Sequence[float]) -> str:
    return "-" if not loads else f"{min(loads):.1f}-{max(loads):.1f}"


def _ms(run: BenchRun, variant: str, phase: str, size: int) -> list[Measurement]:
    return [m for m in run.measurements if (m.variant, m.phase, m.size) == (variant, phase, size)]


def _per_round_ratio(num: Sequence[Measurement], den: Sequence[Measurement], get: Get) -> float | None:
    by_round = {m.round: get(m) for m in den}
    ratios = []
    for m in num:
        a, b = get(m), by_round.get(m.round)
        if a is not None and b:
            ratios.append(a / b)
    return _med(ratios)


def _sync(m: Measurement) -> float | None:
    return m.child.get("sync_s")


def _proc(m: Measurement) -> float | None:
    return m.process_wall_s


def _rss(ms: Sequence[Measurement]) -> float | None:
    return _med([m.child.get("peak_rss_mb") for m in ms])


def _checks_ok(ms: Sequence[Measurement]) -> bool:
    return all(m.check is None or m.check.ok for m in ms)


def one_table(engine: BenchRun | None, sessions: SessionBenchRun | None) -> str:
    """Rows = work, columns = raw | dlt | Prefect's floor | syncflow | ratio vs the right baseline."""
    rows: list[list[str]] = []
    header_notes: list[str] = []
    failed: list[str] = []
    if engine is not None:
        cfg = engine.config
        floors = engine.floor_single
        floor_wall = _med([m.process_wall_s for m in floors])
        floor_rss = _rss(floors)
        for size in cfg.sizes:
            raw, dlt, sf = (_ms(engine, v, "full", size) for v in ("raw", "dlt", "syncflow"))
            loads = [m.load_before for m in raw + dlt + sf]
            rates = [r for r in engine.server_rates if r["size"] == size]
            source = _med([r["msgs_per_s"] for r in rates])
            raw_rate = _med([size / m.child["wall_s"] for m in raw])
            if source and raw_rate:
                factor = source / raw_rate
                rows.append(
                    [
                        f"seq source alone ({cfg.source}), {size:,} (msgs/s)",
                        f"{raw_rate:,.0f}/s",
                        "-",
                        "-",
                        f"{source:,.0f}/s (server)",
                        f"server {factor:.1f}x raw {'✓' if factor >= SOURCE_MIN else '✗'} (≥{SOURCE_MIN:g})",
                        _load([r["load_before"] for r in rates]),
                    ]
                )
                if factor < SOURCE_MIN:
                    header_notes.append(
                        f"**⚠ the seq source serves {size:,} only {factor:.1f}x as fast as the raw pipeline "
                        f"(< {SOURCE_MIN:g}x): the engine ratios at this size are not trustworthy.**"
                    )
            for label, get, target in (
                ("sync window", _sync, ENGINE_TARGET),
                ("whole process", _proc, PROCESS_TARGET),
            ):
                rows.append(
                    [
                        f"{label}, {size:,} messages",
                        _cell(_med([get(m) for m in raw]), _rss(raw) if label == "whole process" else None),
                        _cell(_med([get(m) for m in dlt]), _rss(dlt) if label == "whole process" else None)
                        if dlt
                        else "n/a",
                        "-",
                        _cell(_med([get(m) for m in sf]), _rss(sf) if label == "whole process" else None),
                        _ratio(_per_round_ratio(sf, raw, get), "raw", target),
                        _load(loads),
                    ]
                )
            for ms in (raw, dlt, sf):
                if not _checks_ok(ms):
                    failed.append(f"{ms[0].variant} full {size:,}")
        first = cfg.sizes[0]
        for phase, label in (("incremental", f"+{cfg.incremental:,} new ({first:,} stored)"), ("noop", "nothing new")):
            raw, dlt, sf = (_ms(engine, v, phase, first) for v in ("raw", "dlt", "syncflow"))
            if not sf and not raw:
                continue
            sf_wall = _med([m.process_wall_s for m in sf])
            raw_wall = _med([m.process_wall_s for m in raw])
            rows.append(
                [
                    f"{label}, whole process",
                    _cell(raw_wall, _rss(raw)),
                    _cell(_med([m.process_wall_s for m in dlt]), _rss(dlt)) if dlt else "n/a",
                    _cell(floor_wall, floor_rss) + " (single)",
                    _cell(sf_wall, _rss(sf)),
                    _ratio(sf_wall / floor_wall if sf_wall and floor_wall else None, "single floor", PROCESS_TARGET)
                    + (f"; {sf_wall / raw_wall:.1f}x raw" if sf_wall and raw_wall else ""),
                    _load([m.load_before for m in raw + dlt + sf]),
                ]
            )
            for ms in (raw, dlt, sf):
                if ms and not _checks_ok(ms):
                    failed.append(f"{ms[0].variant} {phase}")
    if sessions is not None:
        scfg = sessions.config
        walls: dict[tuple[str, int], float | None] = {}
        for limit in scfg.limits:
            fl = [r for r in sessions.runs if r.variant == "floor" and r.limit == limit and not r.profiled]
            sf_runs = [r for r in sessions.runs if r.variant == "syncflow" and r.limit == limit and not r.profiled]
            walls["floor", limit] = _med([r.process_wall_s for r in fl])
            walls["syncflow", limit] = _med([r.process_wall_s for r in sf_runs])
            ratio = _per_round_session_ratio(sf_runs, fl)
            overlap = _med([r.timeline.get("max_running") for r in sf_runs])
            rows.append(
                [
                    f"session {scfg.instances}x{scfg.messages:,}, limit {limit}, whole process"
                    + (f" (max {overlap:.0f} at once)" if overlap is not None else ""),
                    "-",
                    "-",
                    _cell(walls["floor", limit], _med([r.child.get("peak_rss_mb") for r in fl])),
                    _cell(walls["syncflow", limit], _med([r.child.get("peak_rss_mb") for r in sf_runs])),
                    _ratio(ratio, "floor", PROCESS_TARGET),
                    _load([r.load_before for r in fl + sf_runs]),
                ]
            )
            if any(r.check is not None and not r.check.ok for r in sf_runs):
                failed.append(f"session limit {limit}")
            for variant, what, name in _OTHER_FLOORS:
                base = [r for r in sessions.runs if r.variant == variant and r.limit == limit and not r.profiled]
                if not base:
                    continue
                walls[variant, limit] = _med([r.process_wall_s for r in base])
                rows.append(
                    [
                        f"session {scfg.instances}x{scfg.messages:,}, limit {limit}: {what}",
                        "-",
                        "-",
                        _cell(walls[variant, limit], _med([r.child.get("peak_rss_mb") for r in base])),
                        "-",
                        _ratio(_per_round_session_ratio(sf_runs, base), name, None),
                        _load([r.load_before for r in base]),
                    ]
                )
                if any(r.check is not None and not r.check.ok for r in base):
                    failed.append(f"{variant} limit {limit}")
        if 1 in scfg.limits and len(scfg.limits) > 1:
            top = max(scfg.limits)
            fs = _speedup(walls.get(("floor", 1)), walls.get(("floor", top)))
            ss = _speedup(walls.get(("syncflow", 1)), walls.get(("syncflow", top)))
            rows.append(
                [
                    f"session speed-up, limit 1 → {top}",
                    "-",
                    "-",
                    f"{fs:.2f}x" if fs else "-",
                    f"{ss:.2f}x" if ss else "-",
                    _ratio(ss / fs if ss and fs else None, "floor's", 1.0, at_least=True),
                    "",
                ]
            )
            for variant, _, name in _OTHER_FLOORS:
                hs = _speedup(walls.get((variant, 1)), walls.get((variant, top)))
                if hs:
                    rows.append(
                        [
                            f"session speed-up, limit 1 → {top}, against the {name}",
                            "-",
                            "-",
                            f"{hs:.2f}x",
                            f"{ss:.2f}x" if ss else "-",
                            _ratio(ss / hs if ss else None, f"{name}'s", None),
                            "",
                        ]
                    )
    if engine is not None:
        floors = engine.floor_single
        rows.append(
            [
                "single-run floor: parent flow + subflow + task, whole process",
                "-",
                "-",
                _cell(_med([m.process_wall_s for m in floors]), _rss(floors)),
                "-",
                "(the single-run baseline)",
                _load([m.load_before for m in floors]),
            ]
        )
        cli = engine.cli_start
        if cli:
            from bench._product import CLI_MODULE

            imp = cli.get(f"import {CLI_MODULE}", {})
            helpw = cli.get("syncflow --help", {})
            pre = cli.get("from prefect import flow", {})
            bare = cli.get("python -c pass", {})
            rows.append(
                [
                    "CLI start: `syncflow --help` (floor: `python -c 'from prefect import flow'`)",
                    "-",
                    "-",
                    _cell(pre.get("median_s")),
                    _cell(helpw.get("median_s")),
                    _ratio(helpw["median_s"] / pre["median_s"] if helpw and pre else None, "prefect import", None),
                    _load([v["load_before"] for v in cli.values()]),
                ]
            )
            rows.append(
                [
                    f"CLI import: `python -c 'import {CLI_MODULE}'` (floor: `python -c pass`)",
                    "-",
                    "-",
                    _cell(bare.get("median_s")),
                    _cell(imp.get("median_s")),
                    "-",
                    "",
                ]
            )
    out = [
        "| work | raw | dlt | Prefect's floor | syncflow | ratio (vs the right baseline) | load 1-min |",
        "|---|---:|---:|---:|---:|---|---:|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    if failed:
        header_notes.append(f"**FAILED checks: {', '.join(failed)}** (see the JSON)")
    return "\n".join([*header_notes, *([""] if header_notes else []), *out])


_OTHER_FLOORS: tuple[tuple[str, str, str], ...] = (
    ("floor-handover", "the floor with an in-process hand-over (no 423, no Retry-After)", "hand-over floor"),
    ("floor-data", "the floor whose tasks pull and store the same messages (raw pipeline)", "data floor"),
    ("floor-data-handover", "the data floor with the in-process hand-over", "data hand-over floor"),
)
"""The session floors beside the issue's (``bench.sessions`` variant, its row, its short name)."""


def _speedup(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _per_round_session_ratio(num: Sequence[SessionRun], den: Sequence[SessionRun]) -> float | None:
    by_round = {r.round: r.process_wall_s for r in den}
    return _med([r.process_wall_s / by_round[r.round] for r in num if by_round.get(r.round)])


def preamble(engine: BenchRun | None, sessions: SessionBenchRun | None, prefect: dict[str, Any]) -> str:
    parts = [f"{os.cpu_count()} CPUs; Prefect server `prefect server start` ({prefect.get('db')}, not counted)"]
    if engine is not None:
        cfg = engine.config
        rounds = f"median of {cfg.repeat} rounds" if cfg.repeat > 1 else "one round"
        parts.append(
            f"engine: batches of {cfg.batch_size}, PostgreSQL store, {cfg.source} seq server "
            f"in its own process, {rounds}"
            + (f", syncflow runs `{cfg.flow}`" if cfg.flow else ", syncflow runs `syncflow sync instance`")
        )
    if sessions is not None:
        scfg = sessions.config
        parts.append(
            f"sessions: {scfg.instances} instances, median of {scfg.repeat} round(s), syncflow runs `syncflow sync run`"
        )
    return "; ".join(parts) + ". Cells: seconds · peak RSS of the measured process."


def engine_details(run: BenchRun) -> str:
    """Where the engine's time goes (medians; the syncflow spans come from its instrumented steps)."""
    lines = [
        "| variant | phase | rows | process | call | sync | fetch | store | upsert | idle | CPU proc | CPU postgres "
        "| CPU prefect srv | CPU seq srv | REST calls | events | check |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    groups: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in run.measurements:
        groups.setdefault((m.variant, m.phase, m.size), []).append(m)
    for (variant, phase, size), ms in groups.items():

        def stage(kind: str, ms: list[Measurement] = ms) -> float | None:
            return _med([m.child.get("stage_s", {}).get(kind) for m in ms])

        checks = [m.check for m in ms if m.check is not None]
        ok = all(c.ok for c in checks)
        lines.append(
            f"| {variant} | {phase} | {ms[0].rows:,} (of {size:,}) | {_fmt(_med([m.process_wall_s for m in ms]))} "
            f"| {_fmt(_med([m.child.get('wall_s') for m in ms]))} | {_fmt(_med([m.child.get('sync_s') for m in ms]))} "
            f"| {_fmt(stage('fetch'))} | {_fmt(stage('store'))} | {_fmt(stage('upsert'))} "
            f"| {_fmt(_med([m.child.get('idle_s') for m in ms]))} "
            f"| {_fmt(_med([m.child.get('cpu_user_s', 0) + m.child.get('cpu_sys_s', 0) for m in ms]))} "
            f"| {_fmt(_med([m.cpu.get('postgres') for m in ms]))} "
            f"| {_fmt(_med([m.cpu.get('prefect-server') for m in ms]))} "
            f"| {_fmt(_med([m.cpu.get('seqserver') for m in ms]))} "
            f"| {_fmt(_med([sum(m.child.get('prefect_api_calls', {}).values()) for m in ms]), 0)} "
            f"| {_fmt(_med([sum(m.child.get('events', {}).values()) for m in ms]), 0)} "
            f"| {'ok' if ok else 'FAIL: ' + '; '.join(p for c in checks for p in c.problems)} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    versions = {}
    for dist in ("prefect", "psycopg", "httpx", "orjson", "sqlalchemy", "pydantic", "fastapi", "dlt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(), **versions}


def write_json(
    engine: BenchRun | None, sessions: SessionBenchRun | None, path: Path, postgres_version: str | None, table: str
) -> None:
    doc: dict[str, Any] = {
        "environment": {**environment(), "postgres": postgres_version},
        "loadavg_at_end": os.getloadavg(),
        "table": table,
    }
    if engine is not None:
        cfg = asdict(engine.config)
        doc["engine"] = {
            "started_at": engine.started_at,
            "seconds": engine.seconds,
            "config": cfg,
            "prefect": engine.prefect,
            "notes": engine.notes,
            "server_rates": engine.server_rates,
            "cli_start": engine.cli_start,
            "floor_single": [m.to_json() for m in engine.floor_single],
            "measurements": [m.to_json() for m in engine.measurements],
        }
    if sessions is not None:
        doc["sessions"] = {
            "started_at": sessions.started_at,
            "seconds": sessions.seconds,
            "config": asdict(sessions.config),
            "runs": [r.to_json() for r in sessions.runs],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))
