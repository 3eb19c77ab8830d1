"""Writing a batch of messages: dedup by (instance, message_id), exact counts.

A message already stored is updated when any of its fields changed and left alone when
not; the counts say how many rows were created, updated and unchanged. The caller's
transaction also advances the cursor and the record's counters, so a batch is all or nothing.

Two row shapes: the 9 generic :data:`COLUMNS` (seq sources), and :data:`EXTENDED_COLUMNS`,
the same plus Telegram's ``edit_time``, ``kind``, ``reply_to`` and ``extra`` (JSON). The shape
is told by the rows' width; a generic row never touches the extra columns (a seq page still
writes its 9 columns, as fast as before).

PostgreSQL: binary COPY into a per-connection temporary staging table, then one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE (changed)`` whose ``RETURNING (xmax = 0)`` tells
inserts from updates. SQLite and others: read the existing rows of the batch, classify in
Python, then ``executemany`` the inserts and the updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from syncflow.errors import ProtocolError
from syncflow.sources.base import MESSAGE_COLUMNS
from syncflow.store.models import Message, utcnow
from syncflow.store.sessions import ItemCounts

# The order of a message row as the source clients hand it over.
COLUMNS = MESSAGE_COLUMNS
# Telegram's rows: the generic columns, then edit time (ms), kind, reply-to (text) and JSON extras.
EXTRA_COLUMNS = ("edit_time", "kind", "reply_to", "extra")
EXTENDED_COLUMNS = COLUMNS + EXTRA_COLUMNS
_COPY_TYPES = ["text", "text", "int8", "text", "text", "int4", "text", "int8", "int8"]
_DATA_COLUMNS = COLUMNS[1:]

MessageRow = tuple[Any, ...]


@dataclass(frozen=True)
class _Stage:
    """A PostgreSQL staging table for one row shape, and the upsert from it."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    ddl: str
    insert: str  # INSERT ... ON CONFLICT DO UPDATE ... WHERE (changed), without RETURNING
    upsert: str  # the insert, counting created and updated rows

    @property
    def txn_key(self) -> str:
        return f"{self.table}_txn"


def _stage(table: str, columns: tuple[str, ...], types: list[str], sql_types: list[str]) -> _Stage:
    data = columns[1:]
    changed = " OR ".join(f"m.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in data)
    ddl = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {table} ("
        + ", ".join(f"{c} {t}" for c, t in zip(columns, sql_types, strict=True))
        + ") ON COMMIT DELETE ROWS"
    )
    # The stage empties itself at commit (ON COMMIT DELETE ROWS); a second batch in the same
    # transaction truncates it first (see _apply_postgres).
    insert = (
        f"INSERT INTO messages AS m (instance_id, {', '.join(columns)}, session_id, synced_at)"
        f" SELECT %(instance_id)s, {', '.join(columns)}, %(session_id)s, %(now)s FROM {table}"
        " ON CONFLICT (instance_id, message_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in data)
        + ", session_id = EXCLUDED.session_id, synced_at = EXCLUDED.synced_at"
        f" WHERE {changed}"
    )
    upsert = (
        f"WITH w AS ({insert} RETURNING (xmax = 0) AS inserted)"
        " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM w"
    )
    return _Stage(table, columns, tuple(types), ddl, insert, upsert)


_SQL_TYPES = ["text", "text", "bigint", "text", "text", "integer", "text", "bigint", "bigint"]
_GENERIC = _stage("syncflow_stage_messages", COLUMNS, _COPY_TYPES, _SQL_TYPES)
_EXTENDED = _stage(
    "syncflow_stage_messages_ext",
    EXTENDED_COLUMNS,
    [*_COPY_TYPES, "int8", "text", "text", "jsonb"],
    [*_SQL_TYPES, "bigint", "text", "text", "jsonb"],
)
_STAGED = "syncflow_stage_messages"  # key in the pooled connection's info: the generic stage exists there


def columns_of(rows: Sequence[MessageRow]) -> tuple[str, ...]:
    """The row shape of a batch: :data:`COLUMNS` or :data:`EXTENDED_COLUMNS` (ProtocolError otherwise)."""
    width = len(rows[0])
    for shape in (COLUMNS, EXTENDED_COLUMNS):
        if width == len(shape):
            if any(len(r) != width for r in rows):
                raise ProtocolError("a batch of messages mixes row shapes")
            return shape
    raise ProtocolError(f"a message row has {width} fields; expected {len(COLUMNS)} or {len(EXTENDED_COLUMNS)}")


def prepare(connection: Connection) -> None:
    """Create the PostgreSQL staging table on this connection once, in its own transaction
    (afterwards every batch skips the DDL). A no-op elsewhere."""
    if connection.dialect.name != "postgresql" or connection.connection.info.get(_STAGED):
        return
    with connection.begin():
        connection.exec_driver_sql(_GENERIC.ddl)
    connection.connection.info[_STAGED] = True


def _connection(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def stage_for(extended: bool) -> _Stage:
    """The PostgreSQL staging table of a row shape (generic or Telegram's extended rows)."""
    return _EXTENDED if extended else _GENERIC


def dedup(rows: Sequence[MessageRow]) -> list[MessageRow]:
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
    """Upsert ``rows`` (tuples in :data:`COLUMNS` or :data:`EXTENDED_COLUMNS` order, told by
    their width) for one instance, in the caller's transaction (a Session or a Connection);
    never commits."""
    if not rows:
        return ItemCounts()
    columns = columns_of(rows)
    unique = dedup(rows)
    conn = _connection(session)
    if conn.dialect.name == "postgresql":
        stage = stage_for(columns is not COLUMNS)
        created, updated = _apply_postgres(conn, instance_id, unique, session_id, stage)
    else:
        created, updated = _apply_generic(conn, instance_id, unique, session_id, columns)
    return ItemCounts(
        synced=len(rows),
        created=created,
        updated=updated,
        unchanged=len(rows) - created - updated,
    )


def write_stage(conn: Connection, cur: Any, stage: _Stage, rows: Sequence[MessageRow]) -> None:
    """COPY ``rows`` into ``stage`` with the psycopg cursor ``cur`` of ``conn``'s connection, in
    its current transaction (creating the stage there if this connection has none yet)."""
    info = conn.connection.info
    txn = id(conn.get_transaction())
    if not info.get(stage.table):
        cur.execute(stage.ddl)  # inside this transaction: not remembered, it may roll back
    elif info.get(stage.txn_key) == txn:
        cur.execute(f"TRUNCATE {stage.table}")  # a second batch in one transaction
    info[stage.txn_key] = txn
    with cur.copy(f"COPY {stage.table} ({', '.join(stage.columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(stage.types))
        for row in rows:
            copy.write_row(row)


def _apply_postgres(
    conn: Connection, instance_id: int, rows: list[MessageRow], session_id: str | None, stage: _Stage
) -> tuple[int, int]:
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        write_stage(conn, cur, stage, rows)
        cur.execute(
            stage.upsert, {"instance_id": instance_id, "session_id": session_id, "now": utcnow().replace(tzinfo=None)}
        )
        created, updated = cur.fetchone()
    return int(created), int(updated)


def _apply_generic(
    session: Connection,
    instance_id: int,
    rows: list[MessageRow],
    session_id: str | None,
    columns: tuple[str, ...] = COLUMNS,
) -> tuple[int, int]:
    table = cast(Table, Message.__table__)  # declarative types it as any FromClause
    data_columns = columns[1:]
    ids = [r[0] for r in rows]
    existing: dict[str, tuple[Any, ...]] = {}
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        for found in session.execute(
            select(table.c.message_id, *[table.c[c] for c in data_columns]).where(
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
            values = dict(zip(columns, row, strict=True))
            values.update(instance_id=instance_id, session_id=session_id, synced_at=now)
            inserts.append(values)
        elif old != tuple(row[1:]):
            values = {f"v_{c}": v for c, v in zip(data_columns, row[1:], strict=True)}
            values.update(b_message_id=row[0], v_session_id=session_id, v_synced_at=now)
            updates.append(values)
    if inserts:
        session.execute(insert(table), inserts)
    if updates:
        session.execute(
            update(table)
            .where(table.c.instance_id == instance_id, table.c.message_id == bindparam("b_message_id"))
            .values(
                {c: bindparam(f"v_{c}", type_=table.c[c].type) for c in (*data_columns, "session_id", "synced_at")}
            ),
            updates,
        )
    return len(inserts), len(updates)


def count_messages(session: Session, *, instance_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Message).where(Message.instance_id == instance_id)) or 0


__all__ = [
    "COLUMNS",
    "EXTENDED_COLUMNS",
    "EXTRA_COLUMNS",
    "MessageRow",
    "apply_message_batch",
    "columns_of",
    "count_messages",
    "dedup",
    "prepare",
    "stage_for",
    "write_stage",
]
