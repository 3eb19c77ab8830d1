"""Thin wrappers around the session book-keeping (:mod:`syncflow.book`), each unit of
work run in a thread. The steps a session shows in the Prefect UI are tasks; the helpers the
session flow calls on its final path are plain coroutines."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from syncflow import book
from syncflow.book import PlannedRecord, PlannedSession
from syncflow.schemas import SessionDetailView


@task(name="open-session", cache_policy=NO_CACHE)
async def open_session(**kwargs: Any) -> PlannedSession:
    """Create the session and its records (highest priority first)."""
    return await asyncio.to_thread(lambda: book.plan_session(**kwargs))


@task(name="open-retry-session", cache_policy=NO_CACHE)
async def open_retry_session(
    retry_of: str, created_by: str | None, flow_run_id: str | None, session_id: str | None
) -> PlannedSession:
    """A new session over the failed instances of ``retry_of`` (highest priority first)."""
    return await asyncio.to_thread(
        lambda: book.plan_retry(
            retry_of=retry_of, created_by=created_by, flow_run_id=flow_run_id, session_id=session_id
        )
    )


@task(name="metadata-targets", cache_policy=NO_CACHE)
async def metadata_targets(names: list[str], tags: list[str], max_age_seconds: float | None = None) -> list[str]:
    """The instances of a messages session (by names / tags / all) that also have metadata,
    less those whose metadata completed less than ``max_age_seconds`` ago."""
    return await asyncio.to_thread(book.metadata_targets, names, tags, max_age_seconds)


@task(name="session-summary", cache_policy=NO_CACHE)
async def session_summary(session_id: str) -> SessionDetailView:
    """The session and its records, as the one view (:mod:`syncflow.schemas`)."""
    return await asyncio.to_thread(book.session_detail, session_id)


@task(name="cleanup-sessions", cache_policy=NO_CACHE)
async def cleanup_sessions(retention_days: int) -> dict[str, Any]:
    """Delete finished sessions older than the retention and release expired leases."""
    return await asyncio.to_thread(book.cleanup, retention_days)


async def session_exists(session_id: str) -> bool:
    return await asyncio.to_thread(book.session_exists, session_id)


async def close_open_records(session_id: str, reason: str) -> None:
    """Fail the records that never ran (the session then finishes); no-op when it ended."""
    await asyncio.to_thread(book.close_open_records, session_id, reason)


__all__ = [
    "PlannedRecord",
    "PlannedSession",
    "cleanup_sessions",
    "close_open_records",
    "metadata_targets",
    "open_retry_session",
    "open_session",
    "session_exists",
    "session_summary",
]
