"""``python -m bench.gaps``: what the gap ledger's repair costs an incremental sync.

    python -m bench.gaps                       # 20,000 stored, then 5 runs of +1,000 with 1 % holes
    python -m bench.gaps --rounds 10 --new 1000 --stored 100000 --hole-rate 0.01
    python -m bench.gaps --store sqlite        # the embedded store instead of PostgreSQL

Two instances over two reference seq servers with the same seed (the same messages, the same
holes): one synced by the engine without the repair step (the pipeline before the gap ledger:
holes are still recorded with their page), one with it (repair of the open holes, the main read,
the reconciliation) — what every incremental sync does now. Each round appends ``--new`` messages
to both servers with ``--hole-rate`` holes, half of them late (released before the next round:
the repair finds them) and half deleted (they stay open and are re-read every run until the
window closes them: the steady-state cost, capped at ``gap_max_reads`` reads per run).

The engine runs in this process (no Prefect: its cost is the same for both columns), against
a throwaway PostgreSQL database (``syncflow_bench_gaps_<run>``, dropped at the end) or a
temporary SQLite file. Every round checks that the repaired store equals the server's truth and
that the unrepaired one misses exactly the late messages. Exit 0 when every check passed, 1 if
one failed, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from syncflow import engine as sync_engine
from syncflow.sources.http_seq import SeqHttpClient
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import make_engine, session_scope
from syncflow.store.migrations import upgrade
from syncflow.store.models import Message, SeqGap
from syncflow.testing.seqserver import SeqServer

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TOKEN = "bench-gaps-token"


@dataclass
class Run:
    seconds: float
    repair_seconds: float = 0.0
    reconcile_seconds: float = 0.0
    reads: int = 0
    late: int = 0
    created: int = 0
    open_holes: int = 0


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sync(engine: Engine, name: str, client: SeqHttpClient, *, repair: bool, batch: int) -> Run:
    """One incremental sync of ``name`` through the engine's steps (what the subflow runs)."""
    with session_scope(engine) as s:
        row = book.open_session(s, sync_category="messages", instances=[name])
        rid = book.records_in_order(s, session_id=row.session_id)[0].id
    started = time.perf_counter()
    run = sync_engine.begin_instance_sync(
        record_id=rid, owner=f"bench:{uuid.uuid4().hex[:8]}", lease_seconds=120, engine=engine
    )
    assert isinstance(run, sync_engine.InstanceRun)
    out = Run(seconds=0.0)
    if repair:
        r = sync_engine.repair_gaps(run, client.fetch_page, count=batch, engine=engine)
        out.repair_seconds, out.reads, out.late = r.seconds, r.reads, r.late_arrivals
    server: tuple[int, int, int] | None = None
    first: int | None = None
    while True:
        chunk = sync_engine.sync_chunk(run, client.fetch_page, count=batch, max_batches=50, engine=engine)
        server = server or chunk.server
        first = first if first is not None else chunk.first_seq
        if not chunk.has_more:
            break
    if repair:
        t = time.perf_counter()
        sync_engine.reconcile(run, server=server, first_seq=first, engine=engine)
        out.reconcile_seconds = time.perf_counter() - t
    sync_engine.finish_instance_sync(run, outcome="completed", engine=engine)
    out.seconds = time.perf_counter() - started
    with session_scope(engine) as s:
        rec = book.get_record(s, record_id=rid)
        out.created = rec.items_created
        out.open_holes = (
            s.scalar(
                select(func.count())
                .select_from(SeqGap)
                .where(SeqGap.instance_id == run.instance_id, SeqGap.status == "open")
            )
            or 0
        )
    return out


def _stored(engine: Engine, name: str) -> set[int]:
    with session_scope(engine) as s:
        iid = inst_svc.get_instance(s, name=name).id
        return set(s.scalars(select(Message.seq).where(Message.instance_id == iid)))


def bench(engine: Engine, args: argparse.Namespace) -> tuple[list[tuple[Run, Run]], bool]:
    half = args.hole_rate / 2
    servers = {
        "plain": SeqServer(messages=args.stored, token=TOKEN, seed=args.seed),
        "repair": SeqServer(messages=args.stored, token=TOKEN, seed=args.seed),
    }
    ok = True
    rounds: list[tuple[Run, Run]] = []
    try:
        clients = {}
        for name, server in servers.items():
            server.start()
            with session_scope(engine) as s:
                inst_svc.add_instance(s, name=name, kind="http-seq")
            clients[name] = SeqHttpClient(server.url, TOKEN, instance=name)
            _sync(engine, name, clients[name], repair=name == "repair", batch=args.batch_size)  # the stored base
        for n in range(args.rounds):
            for server in servers.values():
                server.release_late()  # last round's late messages are visible now
                server.append(args.new, hole_rate=half, late_rate=half / (1 - half))
            if n % 2:  # alternate which goes first (a shared machine drifts)
                fixed = _sync(engine, "repair", clients["repair"], repair=True, batch=args.batch_size)
                plain = _sync(engine, "plain", clients["plain"], repair=False, batch=args.batch_size)
            else:
                plain = _sync(engine, "plain", clients["plain"], repair=False, batch=args.batch_size)
                fixed = _sync(engine, "repair", clients["repair"], repair=True, batch=args.batch_size)
            rounds.append((plain, fixed))
            truth = set(servers["repair"].seqs())
            if _stored(engine, "repair") != truth:
                print(f"round {n + 1}: the repaired store differs from the server's truth", file=sys.stderr)
                ok = False
            missed = set(servers["plain"].seqs()) - _stored(engine, "plain")
            if n and not missed:
                print(f"round {n + 1}: the store without repair misses nothing (no late message?)", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
    return rounds, ok


def table(rounds: list[tuple[Run, Run]], args: argparse.Namespace) -> str:
    lines = [
        f"gap repair cost: {args.stored:,} stored, {len(rounds)} runs of +{args.new:,} with "
        f"{args.hole_rate:.1%} holes (half late, half deleted), batch {args.batch_size}, store {args.store}",
        "",
        "| run | without repair (s) | with repair (s) | repair step (s) | reconcile (s) | reads | late found "
        "| created (w/o / with) | open holes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (p, f) in enumerate(rounds, start=1):
        lines.append(
            f"| {i} | {p.seconds:.3f} | {f.seconds:.3f} | {f.repair_seconds:.3f} | {f.reconcile_seconds:.3f} "
            f"| {f.reads} | {f.late} | "
            f"{p.created} / {f.created} | {f.open_holes} |"
        )
    without = statistics.median(p.seconds for p, _ in rounds)
    with_ = statistics.median(f.seconds for _, f in rounds)
    step = statistics.median(f.repair_seconds for _, f in rounds)
    rec = statistics.median(f.reconcile_seconds for _, f in rounds)
    lines += [
        f"| median | {without:.3f} | {with_:.3f} | {step:.3f} | {rec:.3f} | "
        f"{statistics.median(f.reads for _, f in rounds):g} | {sum(f.late for _, f in rounds)} (total) | | |",
        "",
        f"repair cost per incremental run: {with_ - without:+.3f} s ({with_ / without:.2f}x); "
        f"late messages recovered: {sum(f.late for _, f in rounds)}, lost without repair: "
        f"{sum(f.late for _, f in rounds)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gaps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", type=int, default=20_000, help="messages stored before the runs")
    parser.add_argument("--new", type=int, default=1_000, help="messages appended before each run")
    parser.add_argument("--rounds", type=int, default=5, help="incremental runs")
    parser.add_argument("--hole-rate", type=float, default=0.01, help="holes among the new seqs (half late)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--pg-admin-url", default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    args = parser.parse_args(argv)
    if not 0 < args.hole_rate < 0.5 or args.rounds < 1 or args.new < 1:
        print("bench.gaps: --hole-rate must be in (0, 0.5), --rounds and --new >= 1", file=sys.stderr)
        return 2
    db_name = f"syncflow_bench_gaps_{uuid.uuid4().hex[:8]}"
    tmp: Any = None
    try:
        if args.store == "postgres":
            try:
                with psycopg.connect(_conninfo(args.pg_admin_url), autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'CREATE DATABASE "{db_name}"')
            except psycopg.OperationalError as exc:
                print(f"bench.gaps: PostgreSQL is not reachable at {args.pg_admin_url}: {exc}", file=sys.stderr)
                return 2
            url = make_url(args.pg_admin_url).set(database=db_name).render_as_string(hide_password=False)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="syncflow-bench-gaps-")
            url = f"sqlite:///{Path(tmp.name) / 'store.db'}"
        engine = make_engine(url)
        try:
            upgrade(engine)
            rounds, ok = bench(engine, args)
        finally:
            engine.dispose()
        print(table(rounds, args))
        return 0 if ok else 1
    finally:
        if args.store == "postgres":
            with psycopg.connect(_conninfo(args.pg_admin_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
