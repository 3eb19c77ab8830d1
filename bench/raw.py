"""The raw baseline: the least code that does the job correctly, and nothing else.

httpx.Client + orjson + psycopg: per page of ``batch_size``, one transaction that binary-COPYs
the rows into a temporary staging table, upserts them into ``messages`` with ``INSERT ...
ON CONFLICT (instance_id, message_id) DO UPDATE`` and moves the cursor in
``sync_config_items``. Sequential (no prefetch), no validation, no counts, no book-keeping:
what syncflow's speed is held against (DESIGN.md, "Speed").

Run as a child of the harness: ``python -m bench.raw SPEC_JSON``; the result goes to the
spec's ``out`` file.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
import psycopg

from bench import probe

SYNC_PATH: Final = "/api/v1/messages/sync"
COLUMNS: Final = (
    "message_id",
    "server_msg_id",
    "seq",
    "conversation_id",
    "sender_id",
    "message_type",
    "content",
    "create_time",
    "server_time",
)
_COPY_TYPES: Final = ["text", "text", "int8", "text", "text", "int4", "text", "int8", "int8"]
_COLS: Final = ", ".join(COLUMNS)
_STAGE_DDL: Final = (
    "CREATE TEMPORARY TABLE bench_stage ("
    "message_id text, server_msg_id text, seq bigint, conversation_id text, sender_id text, "
    "message_type integer, content text, create_time bigint, server_time bigint"
    ") ON COMMIT DELETE ROWS"
)
_COPY: Final = f"COPY bench_stage ({_COLS}) FROM STDIN (FORMAT BINARY)"
_UPSERT: Final = (
    f"INSERT INTO messages (instance_id, {_COLS}, synced_at) "
    f"SELECT %(instance_id)s, {_COLS}, now() FROM bench_stage "
    "ON CONFLICT (instance_id, message_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    + ", synced_at = EXCLUDED.synced_at"
)
_CURSOR: Final = "UPDATE sync_config_items SET last_seq = %(seq)s, last_sync_time = now() WHERE id = %(item_id)s"


@dataclass(frozen=True)
class RawSpec:
    """What the raw child is told to do (JSON on its command line)."""

    base_url: str
    token: str
    conninfo: str
    instance_id: int
    item_id: int
    batch_size: int
    out: str
    spawned_at: float


@dataclass
class RawStats:
    messages: int = 0
    batches: int = 0
    cursor: int = 0


def sync(spec: RawSpec, spans: probe.Spans) -> RawStats:
    """Pull every page after the stored cursor into ``messages``; one transaction per page."""
    headers = {"Authorization": f"Bearer {spec.token}", "Content-Type": "application/json"}
    with connect(spec.conninfo) as conn, httpx.Client(base_url=spec.base_url, headers=headers, timeout=30.0) as http:
        return pull(
            conn, http, instance_id=spec.instance_id, item_id=spec.item_id, batch_size=spec.batch_size, spans=spans
        )


def connect(conninfo: str) -> psycopg.Connection[Any]:
    """A connection :func:`pull` can use (autocommit, with its staging table)."""
    conn = psycopg.connect(conninfo, autocommit=True)
    conn.execute(_STAGE_DDL)
    return conn


def pull(
    conn: psycopg.Connection[Any],
    http: httpx.Client,
    *,
    instance_id: int,
    item_id: int,
    batch_size: int,
    spans: probe.Spans | None = None,
) -> RawStats:
    """The pipeline on an open connection (:func:`connect`) and client (``http`` sends the
    token): every page after the stored cursor, one transaction each."""
    stats = RawStats()
    spans = spans or probe.Spans()
    row = conn.execute("SELECT last_seq FROM sync_config_items WHERE id = %s", (item_id,)).fetchone()
    last = (row[0] if row else None) or 0
    while True:
        with spans.timed(probe.FETCH):
            body = orjson.dumps({"lastSeq": last, "count": batch_size, "timestamp": time.time_ns() // 10**6})
            response = http.post(SYNC_PATH, content=body)
            response.raise_for_status()
            doc = orjson.loads(response.content)
            if doc["code"] != 0:
                raise RuntimeError(f"server answered code={doc['code']}: {doc.get('message')}")
            data = doc["data"]
            messages = data["messages"]
        if messages:
            with spans.timed(probe.STORE), conn.transaction(), conn.cursor() as cur:
                with cur.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for m in messages:
                        copy.write_row(
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
                        )
                cur.execute(_UPSERT, {"instance_id": instance_id})
                last = max(last, messages[-1]["seq"])
                cur.execute(_CURSOR, {"seq": last, "item_id": item_id})
            stats.messages += len(messages)
            stats.batches += 1
        if not data["hasMore"] or not messages:
            break
    stats.cursor = last
    return stats


def main(argv: list[str]) -> int:
    spec = RawSpec(**json.loads(argv[0]))
    spans = probe.Spans()
    call = time.perf_counter()
    called_at = time.time()
    stats = sync(spec, spans)
    returned = time.perf_counter()
    user, system = probe.cpu_seconds()
    report: dict[str, Any] = {
        "variant": "raw",
        "process_start_to_call_s": called_at - spec.spawned_at,
        **probe.summarize(spans, call=call, returned=returned),
        "peak_rss_mb": probe.peak_rss_mb(),
        "cpu_user_s": user,
        "cpu_sys_s": system,
        "result": {"messages": stats.messages, "batches": stats.batches, "cursor": stats.cursor},
    }
    Path(spec.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
