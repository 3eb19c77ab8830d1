"""Prefect-side control of a session: its concurrency limit, cancellation, artifacts, hooks.

The tasks wrap one call each (the Prefect client or the core in ``syncflow.store.sessions``). Two
helpers are plain coroutines on purpose: the cancellation watcher polls every ~2 s for the
whole session (a task run per poll would flood the UI), and the flow-run hooks run after
the flow's engine is done with it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from deployments.setup import limit_name
from syncflow.settings import get_settings
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import Category, Instance, SessionStatus, SyncSession
from tasks.session import PlannedRecord, PlannedSession

log = logging.getLogger(__name__)


def _locked(exc: BaseException) -> bool:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    return getattr(response, "status_code", None) == 423


class _No423Noise(logging.Filter):
    """Prefect's slot service logs an ERROR traceback for every 423 "limit full" answer when
    ``max_retries=0``; for :func:`hold_slot` that answer is the normal "wait", not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        item = args[-1] if args else None
        future = item[-1] if isinstance(item, tuple) and item else None
        try:
            exc = future.exception(timeout=0) if future is not None and future.done() else None  # type: ignore[union-attr]
        except Exception:
            return True
        return getattr(getattr(exc, "response", None), "status_code", None) != 423


_NOISE_FILTER = _No423Noise()


# The lease of a held slot: Prefect renews it while the holder lives; when the holder dies
# (SIGKILL, lost machine) a Prefect server frees the slot this long after the last renewal.
# 60 s is the server's minimum (Prefect's default is 300 s).
SLOT_LEASE_SECONDS = 60.0


# Per event loop and limit name: set when a holder in this process gives its slot back, so
# the next waiter asks at once instead of at its next poll (the hand-over was ~0.5 s per
# instance on average; a limit-1 session of 50 short syncs waited ~25 s for it).
_RELEASED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Event]] = weakref.WeakKeyDictionary()


def _released(name: str) -> asyncio.Event:
    events = _RELEASED.setdefault(asyncio.get_running_loop(), {})
    if name not in events:
        events[name] = asyncio.Event()
    return events[name]


@asynccontextmanager
async def hold_slot(name: str, *, poll_seconds: float = 1.0) -> AsyncIterator[None]:
    """Hold one slot of the global concurrency limit ``name`` for the body:
    ``concurrency(name, occupy=1, strict=True)`` (a missing limit is an error, not a silent
    "no cap"), asked again every ~``poll_seconds`` while the limit is full.

    Prefect's own wait sleeps the server's Retry-After, up to 10-30 s even when a slot frees
    at once (PrefectHQ/prefect#23183); one attempt at a time (``max_retries=0``) with our
    short poll hands a freed slot over in about a second — at once when the slot comes back
    from a holder in this process (the usual case: a session's own instance syncs). The slot is a lease renewed by
    Prefect while held; a waiter cancelled mid-request gives back a slot granted too late.
    """
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.asyncio import concurrency

    noisy = logging.getLogger("prefect._internal.concurrency")
    if _NOISE_FILTER not in noisy.filters:
        noisy.addFilter(_NOISE_FILTER)

    # A category paused by the queue admin (POST /api/admin/sync-queue/{category}/pause)
    # starts no new sync: wait here, before taking a slot, until it is resumed.
    category = name.removeprefix("tag:sync:")

    def paused() -> bool:
        from syncflow.store import pauses as queue_admin

        try:
            with session_scope() as s:
                return queue_admin.is_paused(s, category=category)
        except Exception:  # an unmigrated store or a bad name must not block syncs
            log.warning("could not read the pause flag of %r: not waiting", category, exc_info=True)
            return False

    told = False
    while True:
        while await asyncio.to_thread(paused):
            if not told:
                log.info("category %s is paused (queue admin): waiting for resume", category)
                told = True
            await asyncio.sleep(max(poll_seconds, 1.0) * random.uniform(0.8, 1.2))
        entered = False
        try:
            try:
                async with concurrency(name, occupy=1, strict=True, max_retries=0, lease_duration=SLOT_LEASE_SECONDS):
                    entered = True
                    yield
            finally:
                if entered:  # the slot is back: a waiter of this process asks again now
                    _released(name).set()
            return
        except ConcurrencySlotAcquisitionError as exc:
            if entered or not _locked(exc):
                raise
        event = _released(name)
        try:  # until a slot of this process comes back, or the poll interval (other processes)
            await asyncio.wait_for(event.wait(), poll_seconds * random.uniform(0.8, 1.2))
        except TimeoutError:
            pass
        if event.is_set():
            _RELEASED[asyncio.get_running_loop()].pop(name, None)


def _busy(category: str) -> bool:
    with session_scope() as s:
        return book.category_busy(s, category=category, lease_seconds=get_settings().lock_lease_seconds)


@task(name="ensure-concurrency-limit", cache_policy=NO_CACHE)
async def ensure_concurrency_limit(category: str, default: int) -> dict[str, Any]:
    """Create ``tag:sync:<category>`` with ``default`` slots when missing (an existing limit
    keeps its value: change it with ``prefect gcl update tag:sync:<category> --limit N``).

    Stale slots: Prefect's ephemeral server never frees the slot of a killed holder. When the
    limit shows active slots while the store shows no live sync of the category (no unexpired
    lease, no recently touched open record), the slots are leaked: reset them to 0.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = limit_name(category)
    async with get_client() as client:
        try:
            gcl = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=default))
            except ObjectAlreadyExists:  # another session created it meanwhile
                pass
            gcl = await client.read_global_concurrency_limit_by_name(name)
            return {"name": name, "limit": gcl.limit, "created": True, "reset_slots": 0}
        reset = 0
        if gcl.active_slots > 0 and not await asyncio.to_thread(_busy, category):
            reset = gcl.active_slots
            log.warning("%s: %d slot(s) held with no live sync in the store: resetting them to 0", name, reset)
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
        if not gcl.active:
            log.warning("%s is inactive: Prefect does not cap %s syncs", name, category)
        return {"name": name, "limit": gcl.limit, "created": False, "reset_slots": reset}


def _retry(kwargs: dict[str, Any]) -> PlannedSession:
    with session_scope() as s:
        row = book.retry_failed(s, **kwargs)
        recs = book.records_in_order(s, session_id=row.session_id)
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


@task(name="open-retry-session", cache_policy=NO_CACHE)
async def open_retry_session(
    retry_of: str, created_by: str | None, flow_run_id: str | None, session_id: str | None
) -> PlannedSession:
    """A new session over the failed instances of ``retry_of`` (highest priority first)."""
    return await asyncio.to_thread(
        _retry,
        {"session_id": retry_of, "created_by": created_by, "flow_run_id": flow_run_id, "new_session_id": session_id},
    )


# ----------------------------------------------------------------------- cancellation


def _session_status(session_id: str) -> str:
    with session_scope() as s:
        return book.get_session(s, session_id=session_id).status


async def session_status(session_id: str) -> str:
    return await asyncio.to_thread(_session_status, session_id)


def _exists(session_id: str) -> bool:
    with session_scope() as s:
        return s.scalar(select(SyncSession.id).where(SyncSession.session_id == session_id)) is not None


async def session_exists(session_id: str) -> bool:
    return await asyncio.to_thread(_exists, session_id)


def _metadata_targets(names: list[str], tags: list[str]) -> list[str]:
    from syncflow.store.instances import select_instances

    with session_scope() as s:
        chosen = select_instances(s, category=Category.MESSAGES.value, names=names, tags=tags)
        return [i.name for i in chosen if i.supports(Category.METADATA.value) and i.enabled]


@task(name="metadata-targets", cache_policy=NO_CACHE)
async def metadata_targets(names: list[str], tags: list[str]) -> list[str]:
    """The instances of a messages session (by names / tags / all) that also have metadata."""
    return await asyncio.to_thread(_metadata_targets, names, tags)


def _cancel(session_id: str, reason: str) -> bool:
    with session_scope() as s:
        row = book.get_session(s, session_id=session_id)
        if row.status != SessionStatus.RUNNING:
            return False
        book.cancel_session(s, session_id=session_id, reason=reason)
        return True


HEARTBEAT_EVERY = 5  # polls (~10 s) between two touches of the session row


def _touch(session_id: str) -> None:
    with session_scope() as s:
        book.touch_session(s, session_id=session_id)


async def watch_cancellation(
    session_id: str, flow_run_id: str | None, on_cancel: Callable[[str], None], interval: float = 2.0
) -> None:
    """Until cancelled itself: every ``interval`` s, read the parent run's Prefect state and the
    session's status. When the run is CANCELLING/CANCELLED (Prefect UI, ``prefect flow-run
    cancel``) the session is cancelled in the store, so running syncs stop at their next batch
    boundary; when the session was cancelled (``syncflow sessions cancel``) ``on_cancel`` is
    called with the reason either way. Every ~10 s it also touches the session row: the
    parent's heartbeat, which keeps ``syncflow sweep`` off records still queued for a slot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    polls = 0
    async with get_client() as client:
        while True:
            await asyncio.sleep(interval)
            polls += 1
            try:
                if polls % HEARTBEAT_EVERY == 0:  # the sweep leaves a live parent's queued records alone
                    await asyncio.to_thread(_touch, session_id)
                if flow_run_id is not None:
                    run = await client.read_flow_run(flow_run_id)
                    if run.state is not None and run.state.type in (StateType.CANCELLING, StateType.CANCELLED):
                        reason = f"parent flow run {flow_run_id} was cancelled"
                        await asyncio.to_thread(_cancel, session_id, reason)
                        on_cancel(reason)
                        return
                if await session_status(session_id) == SessionStatus.CANCELLED:
                    on_cancel(f"session {session_id} was cancelled")
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must never break the session
                log.warning("cancellation watcher: poll failed", exc_info=True)


def _close_open(session_id: str, reason: str) -> None:
    with session_scope() as s:
        book.finish_session(s, session_id=session_id, error_message=reason)


async def close_open_records(session_id: str, reason: str) -> None:
    """Fail the records that never ran (the session then finishes); no-op when it ended."""
    await asyncio.to_thread(_close_open, session_id, reason)


# ----------------------------------------------------------------------------- hooks


def _close(flow_run_id: str, outcome: str, reason: str) -> list[str]:
    with session_scope() as s:
        return book.close_session_of_run(s, flow_run_id=flow_run_id, outcome=outcome, reason=reason)


def close_on_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_crashed``: fail the run's open records ("parent run crashed") so none stays running."""
    closed = _close(str(flow_run.id), "failed", f"parent run crashed: {state.message or state.name}")
    if closed:
        log.warning("parent run %s crashed: closed session(s) %s", flow_run.id, ", ".join(closed))


def close_on_cancel(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation``: cancel the run's open records."""
    _close(str(flow_run.id), "cancelled", f"parent flow run {flow_run.id} was cancelled")


def close_on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure``: a parent that failed before its records ran fails them (no-op when the
    session already finished, e.g. failed because an instance failed)."""
    _close(str(flow_run.id), "failed", f"parent run failed: {state.message or state.name}")


# ------------------------------------------------------------------------- artifacts


def artifact_key(session_id: str) -> str:
    return f"session-{session_id.lower()}"


@task(name="create-session-progress", cache_policy=NO_CACHE)
async def create_progress(plan: PlannedSession) -> Any:
    from prefect.artifacts import acreate_progress_artifact

    return await acreate_progress_artifact(
        progress=0.0,
        key=f"{artifact_key(plan.session_id)}-progress",
        description=f"session {plan.session_id} ({plan.category}): instances done / {len(plan.records)}",
    )


async def update_progress(artifact_id: Any, done: int, total: int) -> None:
    from prefect.artifacts import aupdate_progress_artifact

    try:
        await aupdate_progress_artifact(artifact_id, progress=100.0 * done / total if total else 100.0)
    except Exception:  # progress is cosmetic
        log.warning("could not update the session progress artifact", exc_info=True)


def _rows(session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with session_scope() as s:
        row = book.get_session(s, session_id=session_id, with_records=True)
        head = {
            "session_id": row.session_id,
            "category": row.sync_category,
            "type": row.sync_type,
            "status": row.status,
            "total": row.total_instances,
            "ok": row.successful_instances,
            "failed": row.failed_instances,
            "retry_of": row.retry_of,
            "duration": row.duration_seconds,
        }
        recs = []
        for r in row.records:
            dur = r.duration_seconds
            recs.append(
                {
                    "instance": r.instance_name,
                    "status": r.status,
                    "synced": r.items_synced,
                    "created": r.items_created,
                    "updated": r.items_updated,
                    "unchanged": r.items_unchanged,
                    "deleted": r.items_deleted,
                    "duration_s": round(dur, 3) if dur is not None else None,
                    "items_per_s": round(r.items_synced / dur, 1) if dur else None,
                    "error": r.error_message or "",
                }
            )
        return head, recs


def _markdown(head: dict[str, Any], recs: list[dict[str, Any]]) -> str:
    lines = [
        f"# Sync session `{head['session_id']}`",
        "",
        f"- category: **{head['category']}** ({head['type']})",
        f"- status: **{head['status']}**",
        f"- instances: {head['total']} ({head['ok']} ok, {head['failed']} failed)",
    ]
    if head["duration"] is not None:
        lines.append(f"- duration: {head['duration']:.1f} s")
    if head["retry_of"]:
        lines.append(f"- retry of: `{head['retry_of']}`")
    lines += [
        "",
        "| instance | status | synced | created | updated | duration (s) | items/s | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        err = str(r["error"]).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['instance']} | {r['status']} | {r['synced']} | {r['created']} | {r['updated']} | "
            f"{r['duration_s'] if r['duration_s'] is not None else '-'} | "
            f"{r['items_per_s'] if r['items_per_s'] is not None else '-'} | {err} |"
        )
    return "\n".join(lines) + "\n"


@task(name="publish-session-artifacts", cache_policy=NO_CACHE)
async def publish_artifacts(session_id: str) -> None:
    """The session's markdown summary and a table of its records (Prefect UI, Artifacts)."""
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

    head, recs = await asyncio.to_thread(_rows, session_id)
    key = artifact_key(session_id)
    await acreate_markdown_artifact(
        _markdown(head, recs), key=f"{key}-summary", description=f"session {session_id}: {head['status']}"
    )
    await acreate_table_artifact(recs, key=f"{key}-records", description=f"session {session_id}: instance records")


__all__ = [
    "PlannedRecord",
    "artifact_key",
    "close_on_cancel",
    "close_on_crash",
    "close_on_failure",
    "close_open_records",
    "create_progress",
    "ensure_concurrency_limit",
    "hold_slot",
    "limit_name",
    "metadata_targets",
    "open_retry_session",
    "publish_artifacts",
    "session_exists",
    "session_status",
    "update_progress",
    "watch_cancellation",
]
