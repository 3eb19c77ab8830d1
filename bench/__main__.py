"""``python -m bench``: raw baseline vs the syncflow subflow, printed as a markdown table.

    python -m bench                          # 100k and 1M messages, +1,000 incremental each
    python -m bench --quick                  # 10k and 100k: a smoke run
    python -m bench --sizes 200000 --repeat 3 --out bench/results/200k.json
    python -m bench --session-only           # only the session benchmark (bench/sessions.py)

After its table it runs the session benchmark (50 instances x 2,000 messages, one session at
GCL limits 1 and 3; ``--no-session`` skips it, ``--quick`` runs it over 10 instances).

Exit status: 0 when every run's check passed, 1 when a run stored something wrong, 2 when
the benchmark could not run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import psycopg

from bench.harness import VARIANTS, Config, Harness, Variant
from bench.report import markdown, write_json
from bench.services import ServiceError, conninfo
from bench.subflow import DEFAULT_FLOW

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SESSION_OUT = Path("bench/results/sessions.json")


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
    parser.add_argument(
        "--sizes", type=_sizes, default=[100_000, 1_000_000], help="messages per round (default 100000,1000000)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: sizes 10000,100000")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per size; the table shows medians")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--incremental", type=int, default=1000, help="messages appended for the incremental run (0: none)"
    )
    parser.add_argument("--variants", type=_variants, default=VARIANTS, help="raw,syncflow (default both)")
    parser.add_argument(
        "--prefect", choices=("server", "ephemeral"), default="server", help="Prefect API for the flow runs"
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="server on which the run's databases are created and dropped",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"), help="JSON results file")
    parser.add_argument("--logs", type=Path, default=None, help="keep the children's and servers' logs here")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run each syncflow child under py-spy (pip install py-spy); collapsed stacks go to DIR "
        "(sampling slows the child: do not compare those timings)",
    )
    parser.add_argument(
        "--flow",
        default=DEFAULT_FLOW,
        metavar="MODULE:ATTR",
        help="the flow the syncflow variant runs (A/B-test a candidate change without editing the engine)",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="the py-spy executable")
    session = parser.add_mutually_exclusive_group()
    session.add_argument("--no-session", action="store_true", help="skip the session benchmark (bench.sessions)")
    session.add_argument("--session-only", action="store_true", help="run only the session benchmark")
    parser.add_argument(
        "--session-out", type=Path, default=SESSION_OUT, help="JSON results file of the session benchmark"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [10_000, 100_000]
    if args.repeat < 1 or not 1 <= args.batch_size <= 10_000 or args.incremental < 0:
        parser.error("--repeat >= 1, --batch-size 1..10000, --incremental >= 0")
    return args


def _postgres_version(admin_url: str) -> str | None:
    with psycopg.connect(conninfo(admin_url), connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else None


def _sessions(args: argparse.Namespace) -> int:
    from bench import sessions

    return sessions.run_cli(
        instances=10 if args.quick else 50,
        messages=2000,
        limits=(1, 3),
        admin_url=args.pg_admin_url,
        out=args.session_out,
        logs=args.logs / "sessions" if args.logs else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.session_only:
        return _sessions(args)
    try:
        pg_version = _postgres_version(args.pg_admin_url)
    except psycopg.OperationalError as exc:
        print(f"bench: PostgreSQL is not reachable at {args.pg_admin_url}: {exc}", file=sys.stderr)
        return 2
    config = Config(
        sizes=args.sizes,
        admin_url=args.pg_admin_url,
        batch_size=args.batch_size,
        incremental=args.incremental,
        repeat=args.repeat,
        variants=args.variants,
        prefect_mode=args.prefect,
        keep_logs=args.logs,
        profile_dir=args.profile,
        py_spy=args.py_spy,
        flow=args.flow,
    )
    try:
        run = Harness(config).run()
    except (ServiceError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    write_json(run, args.out, pg_version)
    print(markdown(run))
    print(f"\n(results: {args.out}; total {run.seconds:.0f}s)")
    status = 0 if all(m.check.ok for m in run.measurements) else 1
    if not args.no_session:
        print()
        status = max(status, _sessions(args))
    return status


if __name__ == "__main__":
    sys.exit(main())
