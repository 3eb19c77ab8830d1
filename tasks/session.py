"""Thin Prefect tasks around session book-keeping (syncflow.store.sessions)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import Instance


@dataclass(frozen=True)
class PlannedRecord:
    record_id: int
    instance: str
    priority: int
    options: dict[str, Any] | None
    kind: str = "http-seq"  # the instance's kind: which subflow syncs it


@dataclass(frozen=True)
class PlannedSession:
    session_id: str
    category: str
    records: list[PlannedRecord]


def _open(kwargs: dict[str, Any]) -> PlannedSession:
    with session_scope() as s:
        row = book.open_session(s, **kwargs)
        recs = book.records_in_order(s, session_id=row.session_id)
        if not recs:
            book.finish_session(s, session_id=row.session_id)
        ids = {r.instance_id for r in recs}
        kinds = dict(s.execute(select(Instance.id, Instance.kind).where(Instance.id.in_(ids))).tuples().all())
        return PlannedSession(
            session_id=row.session_id,
            category=row.sync_category,
            records=[
                PlannedRecord(r.id, r.instance_name or "", r.priority, r.options, kinds.get(r.instance_id, "http-seq"))
                for r in recs
            ],
        )


@task(name="open-session", cache_policy=NO_CACHE)
async def open_session(**kwargs: Any) -> PlannedSession:
    """Create the session and its records (highest priority first)."""
    return await asyncio.to_thread(_open, kwargs)


def _summary(session_id: str) -> dict[str, Any]:
    with session_scope() as s:
        return book.session_summary(book.get_session(s, session_id=session_id, with_records=True))


@task(name="session-summary", cache_policy=NO_CACHE)
async def session_summary(session_id: str) -> dict[str, Any]:
    return await asyncio.to_thread(_summary, session_id)
