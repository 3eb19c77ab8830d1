"""``/api/admin/sync-queue``: the seed's queue admin, per category (its "service").

Prefect is the queue: a category's queued work is its session runs not started yet (tag
``category:<c>``), the dead letter is its failed sessions no retry covers yet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from syncflow.api import _prefect as pf
from syncflow.api import schemas as m
from syncflow.api.deps import READ, WRITE, Console, ConsoleDep
from syncflow.api.sessions_api import BAD, ERR, PREFECT, retry
from syncflow.errors import IllegalTransitionError, NotFoundError
from syncflow.store import pauses as queue_admin
from syncflow.store.db import session_scope
from syncflow.store.models import RecordStatus, utcnow

router = APIRouter(prefix="/api/admin/sync-queue", tags=["queue admin"])

CategoryPath = Annotated[m.CategoryName, Path(description="The category (the seed's 'service').")]


def _store_part(c: Console, category: str, since: dt.datetime) -> tuple[m.StoreCounts, m.PauseState]:
    with session_scope(c.get_engine()) as s:
        st = queue_admin.store_stats(s, category=category, since=since)
        pause = m.PauseState(**queue_admin.pause_state(queue_admin.get_pause(s, category=category)))
    return (
        m.StoreCounts(
            records=st.records,
            sessions=st.sessions,
            skipped=st.records.get(RecordStatus.SKIPPED, 0),
            failed_records=st.records.get(RecordStatus.FAILED, 0),
            pending_records=st.records.get(RecordStatus.PENDING, 0),
            failed_sessions_not_retried=st.failed_not_retried,
            last_processed_at=st.last_processed_at,
            last_failed_at=st.last_failed_at,
            last_error=st.last_error,
        ),
        pause,
    )


@router.get("/stats/{category}", response_model=m.QueueStatsOut, dependencies=READ, responses={**ERR, **BAD})
async def stats(
    c: ConsoleDep,
    category: CategoryPath,
    since_hours: Annotated[float, Query(gt=0, le=24 * 366, description="Window of the finished counts.")] = 24,
) -> m.QueueStatsOut:
    """Queued / running / awaiting-retry / failed runs (Prefect run states of the category's
    session runs), skipped and failed records and the last processed / failed times (store),
    and the pause state. ``runs`` is null (with ``prefect_error``) when Prefect is unreachable."""
    since = utcnow() - dt.timedelta(hours=since_hours)
    store, pause = await asyncio.to_thread(_store_part, c, category, since)
    runs = None
    error = None
    deployments: list[dict[str, object]] = []
    try:
        counts = await pf.run_counts(category, since=since, timeout=c.settings.prefect_timeout)
        deployments = await pf.category_deployments(category, timeout=c.settings.prefect_timeout)
        runs = m.RunCounts(queued=counts["queued_scheduled"] + counts["pending"], **counts)
    except pf.PrefectUnavailable as exc:
        error = str(exc)
    return m.QueueStatsOut(
        category=category,
        since=since,
        pause=pause,
        runs=runs,
        prefect_error=error,
        store=store,
        deployments=deployments,
    )


@router.post(
    "/{category}/retry-failed",
    response_model=m.QueueRetryOut,
    status_code=202,
    dependencies=WRITE,
    responses={**ERR, **BAD, **PREFECT},
)
async def retry_failed(
    c: ConsoleDep, category: CategoryPath, body: Annotated[m.QueueRetryIn | None, Body()] = None
) -> m.QueueRetryOut:
    """Retry the category's dead letter: for each failed session no retry covers yet (newest
    first, at most ``limit``), start a session over its failed instances. Idempotent: the retry
    of a failed session gets a fixed id, so asking twice starts it once."""
    body = body or m.QueueRetryIn()
    since = utcnow() - dt.timedelta(hours=body.since_hours) if body.since_hours else None

    def failed() -> list[str]:
        with session_scope(c.get_engine()) as s:
            rows = queue_admin.failed_sessions_to_retry(s, category=category, since=since, limit=body.limit)
            return [r.session_id for r in rows]

    triggered: list[m.TriggeredOut] = []
    skipped: list[dict[str, str]] = []
    for sid in await asyncio.to_thread(failed):
        try:
            out = await retry(c, sid, body.created_by, new_id=queue_admin.retry_session_id(sid))
        except (IllegalTransitionError, NotFoundError) as exc:  # changed or cleaned up meanwhile
            skipped.append({"session_id": sid, "reason": str(exc)})
            continue
        triggered.append(out)
    return m.QueueRetryOut(category=category, triggered=triggered, skipped=skipped)


@router.post("/{category}/pause", response_model=m.PauseOut, dependencies=WRITE, responses={**ERR, **BAD, **PREFECT})
async def pause(c: ConsoleDep, category: CategoryPath, body: Annotated[m.PauseIn | None, Body()] = None) -> m.PauseOut:
    """Pause the category: no new instance sync of it starts (sessions open and wait for
    resume; running syncs go on) and the schedules of its deployments (tag ``category:<c>``)
    are paused (Prefect drops their scheduled runs). Idempotent."""
    body = body or m.PauseIn()

    def flag(deployments: list[str]) -> tuple[bool, m.PauseState]:
        with session_scope(c.get_engine()) as s:
            was = queue_admin.is_paused(s, category=category)
            row = queue_admin.pause(
                s, category=category, paused_by=body.paused_by, reason=body.reason, deployments=deployments
            )
            return was, m.PauseState(**queue_admin.pause_state(row))

    was, _ = await asyncio.to_thread(flag, [])  # hold new syncs first
    try:
        paused = await pf.pause_schedules(category, timeout=c.settings.prefect_timeout)
    except pf.PrefectUnavailable as exc:
        raise pf.PrefectUnavailable(
            f"{category} is paused in the store (new syncs wait), but its deployments' schedules were not paused "
            f"(ask again when Prefect answers): {exc}"
        ) from exc
    _, state = await asyncio.to_thread(flag, [d["id"] for d in paused])
    return m.PauseOut(category=category, pause=state, deployments=paused, changed=not was)


@router.post("/{category}/resume", response_model=m.PauseOut, dependencies=WRITE, responses={**ERR, **BAD, **PREFECT})
async def resume(c: ConsoleDep, category: CategoryPath) -> m.PauseOut:
    """Undo a pause: the deployments the pause paused are resumed, held sessions go on."""

    def pending() -> list[str]:
        with session_scope(c.get_engine()) as s:
            return queue_admin.pause_state(queue_admin.get_pause(s, category=category))["paused_deployments"]

    resumed = await pf.resume_schedules(await asyncio.to_thread(pending), timeout=c.settings.prefect_timeout)

    def clear() -> tuple[bool, m.PauseState]:
        with session_scope(c.get_engine()) as s:
            changed, _ = queue_admin.resume(s, category=category)
            return changed, m.PauseState(**queue_admin.pause_state(queue_admin.get_pause(s, category=category)))

    changed, state = await asyncio.to_thread(clear)
    return m.PauseOut(category=category, pause=state, deployments=resumed, changed=changed)


@router.delete("/{category}/clear", response_model=m.ClearOut, dependencies=WRITE, responses={**ERR, **BAD, **PREFECT})
async def clear(
    c: ConsoleDep,
    category: CategoryPath,
    include_future: Annotated[
        bool, Query(description="Also cancel scheduled runs whose start time is still in the future.")
    ] = False,
) -> m.ClearOut:
    """Cancel the category's session runs waiting to start: Pending, and Scheduled/Late/
    AwaitingRetry runs whose start time has come. Future scheduled runs (a deployment's next
    cron runs) stay unless ``include_future=true``; running runs are left alone (cancel their
    sessions instead)."""
    cancelled = await pf.clear_queued(
        category,
        reason=f"queue of {category} cleared from the console",
        timeout=c.settings.prefect_timeout,
        include_future=include_future,
    )
    return m.ClearOut(category=category, cancelled=cancelled, include_future=include_future)
