"""Per-page store cost, A/B: the raw pipeline's SQL vs syncflow's, on ready rows (no HTTP, no threads).

    python -m bench.perpage --messages 200000 --repeat 3

Each variant stores the same pages of 500 (the fast server's messages, decoded once) into a fresh
PostgreSQL database with the syncflow schema, one transaction per page, on one connection:

- ``raw``: binary COPY into a staging table, ``INSERT ... ON CONFLICT DO UPDATE``, cursor UPDATE, commit
  (exactly bench/raw.py's statements);
- ``+product upsert``: the same with syncflow's upsert (``WHERE changed``, ``RETURNING (xmax = 0)``
  counted in a CTE, ``session_id``) instead of the plain one;
- ``+record counters``: that plus the record-counters UPDATE syncflow makes per page (counts
  added, ``sync_details || jsonb``, session and record status returned), as plain SQL;
- ``engine (apply_batch)``: syncflow's own ``seq_engine.apply_batch`` per page (SQLAlchemy; the
  cursor UPDATE also renews the single-flight lease);
- ``one statement (proposal)``: PROFILE.md's change (a).1+2 sketched in SQL: the same work as
  ``+record counters`` (changed-only upsert with created/updated counts, cursor with the lease,
  record counters and statuses) as ONE statement of data-modifying CTEs, driven by psycopg.

The differences are the price of each step of the per-page bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from typing import Any

import orjson
import psycopg

from bench import _product, fastseq
from bench.raw import _COPY, _COPY_TYPES, _CURSOR, _STAGE_DDL, _UPSERT
from bench.services import PgDatabases, conninfo

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_RECORD = (
    "UPDATE sync_instance_records SET items_synced = items_synced + %(n)s, items_created = items_created + %(c)s, "
    "items_updated = items_updated + %(u)s, items_unchanged = items_unchanged + %(k)s, updated_at = now(), "
    "sync_details = coalesce(sync_details, '{}'::jsonb) || %(d)s::jsonb WHERE id = %(id)s "
    "RETURNING (SELECT status FROM sync_sessions s WHERE s.session_id = sync_instance_records.session_id), status"
)


def pages_of(messages: int, size: int) -> list[list[tuple[Any, ...]]]:
    store = fastseq.Store(messages=messages, seed=7, page_size=size, conversations=5)
    out = []
    for page in store.pages:
        docs = orjson.loads(b"[" + page + b"]")
        out.append(
            [
                (
                    m["messageID"],
                    m.get("serverMsgID"),
                    m["seq"],
                    m["conversationID"],
                    m["senderID"],
                    m["messageType"],
                    m["content"],
                    m["createTime"],
                    m["serverTime"],
                )
                for m in docs
            ]
        )
    return out


def _psycopg_loop(url: str, pages: list[list[tuple[Any, ...]]], ids: dict[str, Any], variant: str) -> float:
    sqltext = _product.store_sql()
    product = variant != "raw"
    one = _one_statement(sqltext["columns"])
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(sqltext["stage_ddl"] if product else _STAGE_DDL)
        copy_sql = sqltext["copy"] if product else _COPY
        types = sqltext["copy_types"] if product else _COPY_TYPES
        last = 0
        start = time.perf_counter()
        for i, rows in enumerate(pages):
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
                if variant == "one statement (proposal)":
                    last = rows[-1][2]
                    details = orjson.dumps({"batches": i + 1, "cursor": last, "remaining": 0}).decode()
                    cur.execute(
                        one,
                        {
                            "instance_id": ids["instance_id"],
                            "session_id": ids["session_id"],
                            "seq": last,
                            "item_id": ids["item_id"],
                            "n": len(rows),
                            "d": details,
                            "id": ids["record_id"],
                        },
                    )
                    if cur.fetchone()[2] != 1:  # type: ignore[index]
                        raise RuntimeError("cursor row not updated (the lease check of the proposal)")
                    continue
                if product:
                    cur.execute(
                        sqltext["upsert"],
                        {"instance_id": ids["instance_id"], "session_id": ids["session_id"], "now": "2026-12-01"},
                    )
                    created, updated = cur.fetchone()  # type: ignore[misc]
                else:
                    cur.execute(_UPSERT, {"instance_id": ids["instance_id"]})
                    created, updated = len(rows), 0
                last = rows[-1][2]
                cur.execute(_CURSOR, {"seq": last, "item_id": ids["item_id"]})
                if variant == "+record counters":
                    details = orjson.dumps({"batches": i + 1, "cursor": last, "remaining": 0}).decode()
                    cur.execute(
                        _RECORD,
                        {"n": len(rows), "c": created, "u": updated, "k": 0, "d": details, "id": ids["record_id"]},
                    )
                    cur.fetchone()
        return time.perf_counter() - start


VARIANTS = ("raw", "+product upsert", "+record counters", "engine (apply_batch)", "one statement (proposal)")


def _one_statement(columns: list[str]) -> str:
    cols = ", ".join(columns)
    data = columns[1:]
    changed = " OR ".join(f"m.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in data)
    return (
        "WITH w AS ("
        f" INSERT INTO messages AS m (instance_id, {cols}, session_id, synced_at)"
        f" SELECT %(instance_id)s, {cols}, %(session_id)s, now() FROM syncflow_stage_messages"
        " ON CONFLICT (instance_id, message_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in data)
        + f", session_id = EXCLUDED.session_id, synced_at = EXCLUDED.synced_at WHERE {changed}"
        " RETURNING (xmax = 0) AS inserted),"
        " k AS (SELECT count(*) FILTER (WHERE inserted) AS created, count(*) FILTER (WHERE NOT inserted) AS updated"
        " FROM w),"
        " c AS (UPDATE sync_config_items SET last_seq = greatest(coalesce(last_seq, 0), %(seq)s),"
        " lock_expires_at = now() + interval '600 seconds', updated_at = now()"
        " WHERE id = %(item_id)s RETURNING 1),"
        " r AS (UPDATE sync_instance_records SET items_synced = items_synced + %(n)s,"
        " items_created = items_created + k.created, items_updated = items_updated + k.updated,"
        " items_unchanged = items_unchanged + %(n)s - k.created - k.updated, updated_at = now(),"
        " sync_details = coalesce(sync_details, '{}'::jsonb) || %(d)s::jsonb"
        " FROM k WHERE id = %(id)s RETURNING status, session_id)"
        " SELECT k.created, k.updated, (SELECT count(*) FROM c), r.status,"
        " (SELECT status FROM sync_sessions s WHERE s.session_id = r.session_id) FROM k, r"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perpage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-admin-url", default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    args = parser.parse_args(argv)
    pages = pages_of(args.messages, args.batch_size)
    dbs = PgDatabases(args.pg_admin_url, prefix=f"syncflow_bench_pp_{uuid.uuid4().hex[:8]}")
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    loads: list[float] = []
    try:
        for r in range(args.repeat):
            for variant in VARIANTS:
                url = dbs.create(f"v{VARIANTS.index(variant)}_{r}")
                _product.migrate(url)
                instance_id, item_id = _product.register_instance(url, name="bench-pp", block_name=None)
                record_id = _product.open_record(url, instance="bench-pp")
                with psycopg.connect(conninfo(url)) as conn:
                    (session_id,) = conn.execute(
                        "SELECT session_id FROM sync_instance_records WHERE id = %s", (record_id,)
                    ).fetchone()  # type: ignore[misc]
                ids = {"instance_id": instance_id, "item_id": item_id, "record_id": record_id, "session_id": session_id}
                dbs.checkpoint()
                loads.append(os.getloadavg()[0])
                if variant == "engine (apply_batch)":
                    seconds = _product.engine_page_loop(url, record_id=record_id, pages=pages)
                else:
                    seconds = _psycopg_loop(url, pages, ids, variant)
                results[variant].append(seconds)
                print(f"  {variant}: {seconds:.2f}s (load {loads[-1]:.1f})", file=sys.stderr, flush=True)
                dbs.drop(url)
    finally:
        dbs.drop_all()
    base = statistics.median(results["raw"])
    n = len(pages)
    print(
        f"{args.messages:,} messages in {n} pages of {args.batch_size}; median of {args.repeat}; "
        f"load {min(loads):.1f}-{max(loads):.1f}\n"
    )
    low = min(results["raw"])
    print(
        "| variant | median s | ms per page | vs raw | min s (least disturbed) | vs raw (min) "
        "| step's price, ms/page (min) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    prev = None
    for variant in VARIANTS:
        s, m = statistics.median(results[variant]), min(results[variant])
        step = "-" if prev is None else f"{1000 * (m - prev) / n:+.2f}"
        print(f"| {variant} | {s:.2f} | {1000 * s / n:.2f} | {s / base:.2f}x | {m:.2f} | {m / low:.2f}x | {step} |")
        prev = m
    return 0


if __name__ == "__main__":
    sys.exit(main())
