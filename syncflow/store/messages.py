"""Writing a batch of messages: dedup by (instance, message_id), exact counts.

A message already stored is updated when any of its fields changed and left alone when
not; the counts say how many rows were created, updated and unchanged. The caller's
transaction also advances the cursor and the record's counters, so a batch is all or nothing.

PostgreSQL: binary COPY into a per-connection temporary staging table, then one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE (changed)`` whose ``RETURNING (xmax = 0)`` tells
inserts from updates. SQLite and others: read the existing rows of the batch, classify in
Python, then ``executemany`` the inserts and the updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncflow.store.models import Message, utcnow
from syncflow.store.sessions import ItemCounts

# The order of a message row as the source clients hand it over.
COLUMNS = (
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
_COPY_TYPES = ["text", "text", "int8", "text", "text", "int4", "text", "int8", "int8"]
_DATA_COLUMNS = COLUMNS[1:]

MessageRow = tuple[Any, ...]

_STAGE_DDL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS syncflow_stage_messages ("
    "message_id text, server_msg_id text, seq bigint, conversation_id text, sender_id text, "
    "message_type integer, content text, create_time bigint, server_time bigint"
    ") ON COMMIT DELETE ROWS"
)
_STAGED = "syncflow_stage_messages"  # key in the pooled connection's info: the stage exists there
_STAGE_TXN = "syncflow_stage_txn"  # ... and the transaction that last filled it
_CHANGED = " OR ".join(f"m.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in _DATA_COLUMNS)
# The stage empties itself at commit (ON COMMIT DELETE ROWS); a second batch in the same
# transaction truncates it first (see _apply_postgres).
_UPSERT = (
    "WITH w AS ("
    f" INSERT INTO messages AS m (instance_id, {', '.join(COLUMNS)}, session_id, synced_at)"
    f" SELECT %(instance_id)s, {', '.join(COLUMNS)}, %(session_id)s, %(now)s FROM syncflow_stage_messages"
    " ON CONFLICT (instance_id, message_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _DATA_COLUMNS)
    + ", session_id = EXCLUDED.session_id, synced_at = EXCLUDED.synced_at"
    f" WHERE {_CHANGED}"
    " RETURNING (xmax = 0) AS inserted)"
    " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM w"
)


def prepare(connection: Connection) -> None:
    """Create the PostgreSQL staging table on this connection once, in its own transaction
    (afterwards every batch skips the DDL). A no-op elsewhere."""
    if connection.dialect.name != "postgresql" or connection.connection.info.get(_STAGED):
        return
    with connection.begin():
        connection.exec_driver_sql(_STAGE_DDL)
    connection.connection.info[_STAGED] = True


def _connection(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _dedup(rows: Sequence[MessageRow]) -> list[MessageRow]:
    """Last occurrence of each message_id wins (pages are validated; this is a safety net)."""
    seen: dict[Any, MessageRow] = {}
    for row in rows:
        seen[row[0]] = row
    return list(seen.values()) if len(seen) != len(rows) else list(rows)


def apply_message_batch(
    session: Session | Connection,
    *,
    instance_id: int,
    rows: Sequence[MessageRow],
    session_id: str | None = None,
) -> ItemCounts:
    """Upsert ``rows`` (tuples in :data:`COLUMNS` order) for one instance, in the caller's
    transaction (a Session or a Connection); never commits."""
    if not rows:
        return ItemCounts()
    unique = _dedup(rows)
    conn = _connection(session)
    if conn.dialect.name == "postgresql":
        created, updated = _apply_postgres(conn, instance_id, unique, session_id)
    else:
        created, updated = _apply_generic(conn, instance_id, unique, session_id)
    return ItemCounts(
        synced=len(rows),
        created=created,
        updated=updated,
        unchanged=len(rows) - created - updated,
    )


def _apply_postgres(
    conn: Connection, instance_id: int, rows: list[MessageRow], session_id: str | None
) -> tuple[int, int]:
    raw = conn.connection.driver_connection
    info = conn.connection.info
    txn = id(conn.get_transaction())
    with raw.cursor() as cur:  # type: ignore[union-attr]
        if not info.get(_STAGED):
            cur.execute(_STAGE_DDL)  # inside this transaction: not remembered, it may roll back
        elif info.get(_STAGE_TXN) == txn:
            cur.execute("TRUNCATE syncflow_stage_messages")  # a second batch in one transaction
        info[_STAGE_TXN] = txn
        with cur.copy(f"COPY syncflow_stage_messages ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(
            _UPSERT, {"instance_id": instance_id, "session_id": session_id, "now": utcnow().replace(tzinfo=None)}
        )
        created, updated = cur.fetchone()  # type: ignore[misc]
    return int(created), int(updated)


def _apply_generic(
    session: Connection, instance_id: int, rows: list[MessageRow], session_id: str | None
) -> tuple[int, int]:
    table = Message.__table__
    ids = [r[0] for r in rows]
    existing: dict[str, tuple[Any, ...]] = {}
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        for found in session.execute(
            select(table.c.message_id, *[table.c[c] for c in _DATA_COLUMNS]).where(
                table.c.instance_id == instance_id, table.c.message_id.in_(chunk)
            )
        ):
            existing[found[0]] = tuple(found[1:])
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        old = existing.get(row[0])
        if old is None:
            values = dict(zip(COLUMNS, row, strict=True))
            values.update(instance_id=instance_id, session_id=session_id, synced_at=now)
            inserts.append(values)
        elif old != tuple(row[1:]):
            values = {f"v_{c}": v for c, v in zip(_DATA_COLUMNS, row[1:], strict=True)}
            values.update(b_message_id=row[0], v_session_id=session_id, v_synced_at=now)
            updates.append(values)
    if inserts:
        session.execute(insert(table), inserts)
    if updates:
        session.execute(
            update(table)
            .where(table.c.instance_id == instance_id, table.c.message_id == bindparam("b_message_id"))
            .values({c: bindparam(f"v_{c}") for c in (*_DATA_COLUMNS, "session_id", "synced_at")}),
            updates,
        )
    return len(inserts), len(updates)


def count_messages(session: Session, *, instance_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Message).where(Message.instance_id == instance_id)) or 0


__all__ = ["COLUMNS", "MessageRow", "apply_message_batch", "count_messages", "prepare"]
