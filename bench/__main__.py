"""``python -m bench``: syncflow against honest baselines, in one sitting, as ONE table.

    python -m bench                          # 100k and 1M, +1,000 and nothing new, sessions 50x2,000 at 1 and 3
    python -m bench --quick                  # 10k and 100k, sessions of 10: a smoke run (~3 min)
    python -m bench --repeat 3               # medians over 3 rounds (quote only these)
    python -m bench --no-session             # the engine rows only
    python -m bench --session-only           # the session rows only (bench/sessions.py)
    python -m bench --profile bench/results/profiles   # py-spy every syncflow run (timings not comparable)

One Prefect server (``prefect server start``, PostgreSQL-backed) serves every flow run of the
sitting: syncflow's, and Prefect's floor (:mod:`bench.floor`). The seq source is
:mod:`bench.fastseq` (pages pre-serialised); its own rate is measured and must be >= 5x the raw
pipeline's. Columns: raw (:mod:`bench.raw`), dlt (:mod:`bench.dltpeer`, optional extra
``bench``), Prefect's floor, syncflow (its CLI), and the ratio against the right baseline.

Exit status: 0 when every run's check passed, 1 when a run stored something wrong, 2 when
the benchmark could not run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import psycopg

from bench import sessions as sessions_mod
from bench.harness import VARIANTS, Config, Harness, Variant
from bench.report import engine_details, one_table, preamble, write_json
from bench.services import BenchEnv, ServiceError, conninfo
from bench.sessions import _py_spy

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes integers separated by commas, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--sizes needs at least one size >= 1")
    return sizes


def _variants(text: str) -> tuple[Variant, ...]:
    chosen = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--variants: choose from {', '.join(VARIANTS)}")
    return tuple(v for v in VARIANTS if v in chosen)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[100_000, 1_000_000], help="messages per round")
    parser.add_argument("--quick", action="store_true", help="10k and 100k, sessions of 10 instances")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians (and per-round ratios) are printed")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--incremental", type=int, default=1000, help="messages appended (0: no incremental runs)")
    parser.add_argument(
        "--incremental-sizes", choices=("first", "all"), default="first", help="incremental runs after which sizes"
    )
    parser.add_argument("--variants", type=_variants, default=VARIANTS, help="raw,dlt,syncflow (default all)")
    parser.add_argument("--source", choices=("fast", "reference"), default="fast", help="the seq server")
    parser.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="server on which the run's databases are created and dropped",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"), help="JSON results file")
    parser.add_argument("--logs", type=Path, default=None, help="keep the children's and servers' logs here")
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="py-spy every syncflow run (raw stacks to DIR)"
    )
    parser.add_argument("--py-spy", default=_py_spy(), help="the py-spy executable")
    parser.add_argument(
        "--flow", default=None, metavar="MODULE:ATTR", help="run this flow alone instead of the CLI (A/B a change)"
    )
    sessions_mod.add_arguments(parser, prefix="session-")
    parser.add_argument("--session-variants", default=sessions_mod.DEFAULT_VARIANTS)
    session = parser.add_mutually_exclusive_group()
    session.add_argument("--no-session", action="store_true", help="skip the session rows")
    session.add_argument("--session-only", action="store_true", help="only the session rows")
    parser.add_argument("--no-floor-single", action="store_true", help="skip the single-run floor")
    parser.add_argument("--no-cli-start", action="store_true", help="skip the CLI start rows")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per child")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [10_000, 100_000]
        args.session_instances = 10
    if args.repeat < 1 or not 1 <= args.batch_size <= 10_000 or args.incremental < 0:
        parser.error("--repeat >= 1, --batch-size 1..10000, --incremental >= 0")
    return args


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with psycopg.connect(conninfo(args.pg_admin_url), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else None
    except psycopg.OperationalError as exc:
        print(f"bench: PostgreSQL is not reachable at {args.pg_admin_url}: {exc}", file=sys.stderr)
        return 2
    engine_run = session_run = None
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    ok = False
    env = BenchEnv(admin_url=args.pg_admin_url, logs=args.logs, prefect_db=args.prefect_db)
    try:
        with env:
            if not args.session_only:
                config = Config(
                    sizes=args.sizes,
                    admin_url=args.pg_admin_url,
                    batch_size=args.batch_size,
                    incremental=args.incremental,
                    repeat=args.repeat,
                    variants=args.variants,
                    child_timeout=args.timeout,
                    keep_logs=args.logs,
                    profile_dir=args.profile,
                    py_spy=args.py_spy,
                    flow=args.flow,
                    source=args.source,
                    incremental_sizes=args.incremental_sizes,
                    floor_single=not args.no_floor_single,
                    cli_start=not args.no_cli_start,
                )
                engine_run = Harness(config, prefect=env.prefect, child_env=env.child_env, workdir=env.workdir).run()
            if not args.no_session:
                sargs = argparse.Namespace(
                    instances=args.session_instances,
                    messages=args.session_messages,
                    limits=args.session_limits,
                    pg_admin_url=args.pg_admin_url,
                    batch_size=args.batch_size,
                    repeat=args.repeat,
                    timeout=args.timeout,
                    logs=args.logs,
                    session_variants=args.session_variants,
                    profile=args.profile,
                    profile_limits=args.profile_limits,
                    py_spy=args.py_spy,
                    no_settle=args.no_settle,
                )
                session_run = sessions_mod.SessionBench(sessions_mod.config_from(sargs), env).run()
        ok = True
    except (ServiceError, RuntimeError, OSError, psycopg.Error, subprocess.TimeoutExpired) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        print(f"bench: logs kept in {env.logs}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (everything it started is stopped, its databases dropped)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ok and args.logs is None:
            shutil.rmtree(env.workdir, ignore_errors=True)
    table = one_table(engine_run, session_run)
    write_json(engine_run, session_run, args.out, pg_version, table)
    print(preamble(engine_run, session_run, env.prefect))
    print()
    print(table)
    if engine_run is not None:
        for note in engine_run.notes:
            print(f"\nnote: {note}")
        print("\nEngine detail (seconds, medians):\n")
        print(engine_details(engine_run))
    if session_run is not None:
        print("\nSession detail:\n")
        print(sessions_mod.markdown(session_run))
        rounds = sessions_mod.rounds_table(session_run)
        if rounds:
            print("\n" + rounds)
        print("\nPrefect API per instance (whole process / instances):\n")
        print(sessions_mod.api_table(session_run))
    print(f"\n(results: {args.out})")
    failed = (engine_run is not None and any(m.check and not m.check.ok for m in engine_run.measurements)) or (
        session_run is not None and any(r.check is not None and not r.check.ok for r in session_run.runs)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
