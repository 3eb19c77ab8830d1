"""Adaptive batch size against fixed 500, on a local source and on one with 50 ms of latency.

    python -m bench.adaptive                          # 100,000 messages, latency 0 and 0.05 s, 1 round
    python -m bench.adaptive --messages 50000 --latencies 0.05 --repeat 3

Each cell is a whole ``syncflow sync instance`` process (the CLI, as a user runs it) against
the fast seq server (:mod:`bench.fastseq`, its ``--latency`` delays every sync answer), on the
same Prefect server and PostgreSQL: once with the block's fixed ``batch_size=500``, once with
``adaptive_batch`` (start 500, bounds ``--min``/``--max``, ``--target`` seconds a page). The
server's page grid is 100, so every size the adaptive run asks (500 x 2^k) is served from
pre-built pages, as fixed 500 is. Prints one table: process and sync-window walls, requests
(HTTP calls), messages a request, the load before each run; medians over ``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from bench.harness import Config, Harness
from bench.services import BenchEnv, ServiceError, conninfo

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class Cell:
    latency: float
    mode: str
    process_s: list[float]
    window_s: list[float]
    requests: list[int]
    loads: list[float]
    ok: bool


def _med(values: list[float] | list[int]) -> float | None:
    return statistics.median(values) if values else None


def run_cell(env: BenchEnv, args: argparse.Namespace, latency: float, mode: str) -> Cell:
    options: dict[str, Any] = {}
    if mode == "adaptive":
        options = {
            "adaptive_batch": True,
            "min_batch_size": args.min,
            "max_batch_size": args.max,
            "target_page_seconds": args.target,
        }
    config = Config(
        sizes=[args.messages],
        admin_url=args.pg_admin_url,
        batch_size=500,
        incremental=0,
        repeat=args.repeat,
        variants=("syncflow",),
        floor_single=False,
        cli_start=False,
        latency=latency,
        block_options=options,
        grid=100,
        keep_logs=args.logs,
    )
    run = Harness(config, prefect=env.prefect, child_env=env.child_env, workdir=env.workdir).run()
    ms = [m for m in run.measurements if m.phase == "full"]
    return Cell(
        latency=latency,
        mode=mode,
        process_s=[m.process_wall_s for m in ms],
        window_s=[float(m.child.get("sync_s") or 0.0) for m in ms],
        requests=[int((m.child.get("stage_calls") or {}).get("http", 0)) for m in ms],
        loads=[m.load_before for m in ms],
        ok=all(m.check is None or m.check.ok for m in ms),
    )


def table(cells: list[Cell], messages: int) -> str:
    lines = [
        f"Adaptive batch size vs fixed 500: {messages:,} messages, `syncflow sync instance`, medians",
        "",
        "| source | batch | process s | sync window s | requests | msgs/request | window vs fixed "
        "| load 1-min | check |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    fixed = {c.latency: _med(c.window_s) for c in cells if c.mode == "fixed"}
    for c in cells:
        window, req = _med(c.window_s), _med(c.requests)
        base = fixed.get(c.latency)
        ratio = f"{window / base:.2f}x" if window and base and c.mode != "fixed" else "-"
        source = f"latency {c.latency * 1000:.0f} ms" if c.latency else "local"
        lines.append(
            f"| {source} | {'fixed 500' if c.mode == 'fixed' else 'adaptive'} | {_med(c.process_s) or 0:.2f} "
            f"| {window or 0:.2f} | {req or 0:.0f} | {messages / req if req else 0:,.0f} | {ratio} "
            f"| {min(c.loads):.1f}-{max(c.loads):.1f} | {'ok' if c.ok else 'FAILED'} |"
        )
    return "\n".join(lines)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adaptive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--latencies", default="0,0.05", help="seconds per sync answer, comma-separated")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--min", type=int, default=100, help="adaptive: min_batch_size")
    parser.add_argument("--max", type=int, default=5000, help="adaptive: max_batch_size")
    parser.add_argument("--target", type=float, default=0.5, help="adaptive: target_page_seconds")
    parser.add_argument("--pg-admin-url", default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--logs", type=Path, default=None, help="keep the children's and servers' logs here")
    args = parser.parse_args(argv)
    latencies = [float(x) for x in args.latencies.split(",") if x.strip()]
    try:
        with psycopg.connect(conninfo(args.pg_admin_url), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        print(f"bench.adaptive: PostgreSQL is not reachable at {args.pg_admin_url}: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    cells: list[Cell] = []
    try:
        with BenchEnv(admin_url=args.pg_admin_url, logs=args.logs) as env:
            for latency in latencies:
                for mode in ("fixed", "adaptive"):
                    cells.append(run_cell(env, args, latency, mode))
    except (ServiceError, RuntimeError, OSError, psycopg.Error, subprocess.TimeoutExpired) as exc:
        print(f"bench.adaptive: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.adaptive: interrupted (everything it started is stopped)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(table(cells, args.messages))
    return 0 if all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
