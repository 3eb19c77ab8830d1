"""Thin wrappers around the session book-keeping (:mod:`syncflow.book`), each unit of
work run in a thread. Plain coroutines the session flow awaits (a task run each cost ~3 events
and their ingestion per session, a third of a single run's Prefect overhead: issue 11); their
failures fail the session run as a failed task would. ``cleanup_sessions`` stays a task: it is
the cleanup flow's one step."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from syncflow import book
from syncflow.book import PlannedRecord, PlannedSession
from syncflow.schemas import SessionDetailView


async def open_session(**kwargs: Any) -> PlannedSession:
    """Create the session and its records (highest priority first)."""
    return await asyncio.to_thread(lambda: book.plan_session(**kwargs))


async def open_retry_session(
    retry_of: str, created_by: str | None, flow_run_id: str | None, session_id: str | None
) -> PlannedSession:
    """A new session over the failed instances of ``retry_of`` (highest priority first)."""
    return await asyncio.to_thread(
        lambda: book.plan_retry(
            retry_of=retry_of, created_by=created_by, flow_run_id=flow_run_id, session_id=session_id
        )
    )


async def metadata_targets(names: list[str], tags: list[str], max_age_seconds: float | None = None) -> list[str]:
    """The instances of a messages session (by names / tags / all) that also have metadata,
    less those whose metadata completed less than ``max_age_seconds`` ago."""
    return await asyncio.to_thread(book.metadata_targets, names, tags, max_age_seconds)


async def session_summary(session_id: str) -> SessionDetailView:
    """The session and its records, as the one view (:mod:`syncflow.schemas`)."""
    return await asyncio.to_thread(book.session_detail, session_id)


@task(name="cleanup-sessions", cache_policy=NO_CACHE)
async def cleanup_sessions(retention_days: int) -> dict[str, Any]:
    """Delete finished sessions older than the retention and release expired leases."""
    return await asyncio.to_thread(book.cleanup, retention_days)


@task(name="sweep-store", cache_policy=NO_CACHE)
async def sweep_store(older_than_seconds: float | None = None) -> dict[str, Any]:
    """Fail the records whose worker is gone, finish their sessions, release expired leases;
    ``dead_flow_runs``: the Prefect runs of the process that is gone."""
    return await asyncio.to_thread(book.sweep, older_than_seconds)


async def session_exists(session_id: str) -> bool:
    return await asyncio.to_thread(book.session_exists, session_id)


async def record_started(record_id: int) -> bool:
    """Whether the record left ``pending`` (its instance run opened it)."""
    return await asyncio.to_thread(book.record_started, record_id)


async def fail_unstarted_record(record_id: int, reason: str) -> bool:
    """Fail the record if it is still ``pending`` (its run was lost before it started)."""
    return await asyncio.to_thread(book.fail_unstarted_record, record_id, reason)


async def close_open_records(session_id: str, reason: str) -> None:
    """Fail the records that never ran (the session then finishes); no-op when it ended."""
    await asyncio.to_thread(book.close_open_records, session_id, reason)


__all__ = [
    "PlannedRecord",
    "PlannedSession",
    "cleanup_sessions",
    "close_open_records",
    "fail_unstarted_record",
    "metadata_targets",
    "open_retry_session",
    "open_session",
    "record_started",
    "session_exists",
    "session_summary",
    "sweep_store",
]
