"""One page's bookkeeping on PostgreSQL in ONE statement: rows, cursor + lease, record counters.

The generic path (:func:`syncflow.engine.incremental.apply_batch` on any store) makes three
statements per page after the COPY — the upsert (:mod:`syncflow.store.messages`), the cursor
UPDATE that also renews and re-checks the lease (:func:`syncflow.store.sync_state.advance_cursor`)
and the record-counters UPDATE (:func:`syncflow.store.sessions.add_record_progress`) — each a
round trip and a compiled SQLAlchemy statement. On PostgreSQL the same three are data-modifying
CTEs of one statement, driven by psycopg on the connection that already holds the staged rows:

    WITH w AS (INSERT INTO messages ... ON CONFLICT DO UPDATE ... WHERE changed RETURNING (xmax = 0)),
         k AS (created/updated counted from w),
         c AS (UPDATE sync_config_items SET last_seq = greatest, lease ... WHERE lock_owner = us RETURNING 1),
         r AS (UPDATE sync_instance_records SET counters + k ... RETURNING status, session_id)
    SELECT created, updated, (rows of c), record status, session status

Same transaction (the caller's), same guarantees: no row of ``c`` means the lease was lost and
:class:`LeaseLostError` rolls the whole page back; no row of ``r`` is an unknown record. The
counts equal :func:`~syncflow.store.messages.apply_message_batch`'s (``synced`` = rows given,
``unchanged`` = the rest). Measured by ``python -m bench.perpage`` and ``python -m bench``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from syncflow.errors import NotFoundError
from syncflow.store.messages import COLUMNS, MessageRow, columns_of, dedup, stage_for, write_stage
from syncflow.store.models import utcnow
from syncflow.store.sessions import ItemCounts
from syncflow.store.sync_state import LeaseLostError


@functools.cache
def _statement(extended: bool, move_cursor: bool) -> str:
    stage = stage_for(extended)
    forward = " last_seq = CASE WHEN last_seq IS NULL OR last_seq < %(seq)s THEN %(seq)s ELSE last_seq END,"
    cursor = forward if move_cursor else ""
    return (
        f"WITH w AS ({stage.insert} RETURNING (xmax = 0) AS inserted),"
        " k AS (SELECT count(*) FILTER (WHERE inserted) AS created,"
        " count(*) FILTER (WHERE NOT inserted) AS updated FROM w),"
        f" c AS (UPDATE sync_config_items SET{cursor} lock_expires_at = %(lease_until)s, updated_at = %(now)s"
        " WHERE instance_id = %(instance_id)s AND category = %(category)s AND lock_owner = %(owner)s RETURNING 1),"
        " r AS (UPDATE sync_instance_records AS rec SET items_synced = rec.items_synced + %(synced)s,"
        " items_created = rec.items_created + k.created, items_updated = rec.items_updated + k.updated,"
        " items_unchanged = rec.items_unchanged + %(synced)s - k.created - k.updated, updated_at = %(now)s,"
        " sync_details = coalesce(rec.sync_details, '{}'::jsonb) || %(details)s::jsonb"
        " FROM k WHERE rec.id = %(record_id)s RETURNING rec.status, rec.session_id)"
        " SELECT k.created, k.updated, (SELECT count(*) FROM c),"
        " (SELECT s.status FROM sync_sessions AS s, r WHERE s.session_id = r.session_id),"
        " (SELECT status FROM r) FROM k"
    )


def commit_page(
    conn: Connection,
    *,
    instance_id: int,
    category: str,
    owner: str,
    record_id: int,
    session_id: str | None,
    rows: Sequence[MessageRow],
    last_seq: int | None,
    lease_seconds: float,
    details: Mapping[str, Any],
) -> tuple[ItemCounts, tuple[str, str]]:
    """Store ``rows`` (non-empty), move the cursor to ``last_seq`` (never back; ``None`` leaves
    it, range mode), renew the lease and add the counts and ``details`` to the record, in the
    caller's transaction on a PostgreSQL connection. Returns the counts and (session status,
    record status) like :func:`~syncflow.store.sessions.add_record_progress`.

    Raises :class:`LeaseLostError` when ``owner`` no longer holds the lease (the caller's
    transaction must roll back) and :class:`NotFoundError` for an unknown record.
    """
    columns = columns_of(rows)
    unique = dedup(rows)
    now = utcnow().replace(tzinfo=None)
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        write_stage(conn, cur, stage_for(columns is not COLUMNS), unique)
        cur.execute(
            _statement(columns is not COLUMNS, last_seq is not None),
            {
                "instance_id": instance_id,
                "session_id": session_id,
                "now": now,
                "seq": last_seq,
                "category": category,
                "owner": owner,
                "lease_until": now + dt.timedelta(seconds=lease_seconds),
                "synced": len(rows),
                "details": json.dumps(dict(details), default=str),
                "record_id": record_id,
            },
        )
        created, updated, held, session_status, record_status = cur.fetchone()
    if held != 1:
        raise LeaseLostError(f"lost the single-flight lease of {category} for instance {instance_id} ({owner})")
    if record_status is None:
        raise NotFoundError(f"unknown instance record {record_id}")
    created, updated = int(created), int(updated)
    counts = ItemCounts(synced=len(rows), created=created, updated=updated, unchanged=len(rows) - created - updated)
    return counts, (session_status, record_status)


__all__ = ["commit_page"]
