"""The session parent flow: one session over many instances, fanned out to subflows."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as flow_run_runtime
from prefect.states import Cancelled, State

from flows.instance_sync import sync_instance
from syncflow import names
from syncflow.settings import get_settings
from syncflow.store.models import Category, SessionStatus, SyncType
from tasks import artifacts, sync
from tasks import prefect_api as pf
from tasks import session as book
from tasks import session_control as ctl


class SessionFailed(Exception):
    """At least one instance of the session failed (the parent run fails so alerts fire)."""


@flow(
    name="sync-session",
    flow_run_name="{category}-{sync_type}",
    persist_result=True,  # the summary stays readable from the run's state (API, tests, retries)
    on_crashed=[ctl.close_on_crash],
    on_cancellation=[ctl.close_on_cancel],
    on_failure=[ctl.close_on_failure],
)
async def sync_session(
    category: str = "messages",
    instances: list[str] | None = None,
    tags: list[str] | None = None,
    sync_type: str = SyncType.MANUAL_BATCH.value,
    created_by: str | None = None,
    priorities: dict[str, int] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    concurrency: int | None = None,
    session_id: str | None = None,
    retry_of: str | None = None,
    refresh_metadata: bool = True,
    scale_out: bool = False,
    metadata_max_age: float | None = None,
) -> Any:
    """Sync ``category`` over the instances named (or tagged, or every enabled one).

    Instances run concurrently, highest priority first, at most as many at once as the
    Prefect global concurrency limit ``tag:sync:<category>`` allows — across sessions,
    processes and workers. The limit is created when missing with ``concurrency`` slots
    (default per category); an existing limit keeps its value (change it with
    ``prefect gcl update tag:sync:<category> --limit N``). The run fails when any instance
    failed and ends Cancelled when the session was cancelled (``syncflow sessions cancel``
    or cancelling this run in Prefect). ``session_id`` lets the caller choose the new
    session's id (a UUID) to follow it before the run starts. ``retry_of``: a new session
    over the failed instances of that session (``instances``/``tags`` are then ignored).

    ``refresh_metadata`` (messages only, the seed's rule): a metadata session over the same
    instances runs first, so messages land on up-to-date conversations; its failures are
    logged and do not stop the messages. Instances whose metadata completed less than
    ``metadata_max_age`` seconds ago are left out of it (default ``SYNCFLOW_METADATA_MAX_AGE``,
    1 h; 0 refreshes every one). ``scale_out``: each instance sync runs as a run of
    the ``sync-instance/instance`` deployment (every kind), so every
    worker of the pool shares the session; the limit still holds (the slot is held here
    while the child run runs).
    """
    logger = get_run_logger()
    metadata_session = None
    if category == Category.MESSAGES and refresh_metadata and not retry_of:
        max_age = get_settings().metadata_max_age if metadata_max_age is None else metadata_max_age
        metadata_session = await _refresh_metadata(instances, tags, sync_type, created_by, scale_out, max_age)
    if retry_of:
        plan = await book.open_retry_session(retry_of, created_by, flow_run_runtime.id, session_id)
        category = plan.category
        limit = await pf.ensure_concurrency_limit(category, concurrency or names.default_limit(category))
    else:
        # before our own records exist: they would count as a live sync of the category
        limit = await pf.ensure_concurrency_limit(category, concurrency or names.default_limit(category))
        plan = await book.open_session(
            sync_category=category,
            sync_type=sync_type,
            instances=instances or [],
            tags=tags or [],
            created_by=created_by,
            priorities=priorities,
            options=options,
            flow_run_id=flow_run_runtime.id,
            session_id=session_id,
            metadata_session_id=metadata_session,
        )
    if limit["reset_slots"]:
        logger.warning("%s: released %d stale slot(s) of dead holders", limit["name"], limit["reset_slots"])
    logger.info("session %s: %d instance(s), limit %s", plan.session_id, len(plan.records), limit["name"])
    # a session of one instance has no progress of its own: its record (and the instance's bar) is it
    progress = await artifacts.create_progress(plan) if len(plan.records) > 1 else None

    cancelled: dict[str, str] = {}
    started: set[int] = set()
    waiting: dict[int, asyncio.Task[Any]] = {}
    done = 0

    def on_cancel(reason: str) -> None:
        cancelled.setdefault("reason", reason)
        for rid, t in waiting.items():  # not started yet: stop waiting for a slot
            if rid not in started:
                t.cancel()

    # Slots are requested in priority order (each waits until the one before it holds a
    # slot); Prefect's limit alone decides how many run at once.
    turns = [asyncio.Event() for _ in plan.records]

    async def one(i: int, rec: Any) -> Any:
        nonlocal done
        try:
            if i:
                await turns[i - 1].wait()
            async with pf.hold_slot(names.limit_name(category)):  # a leased slot, as concurrency(strict=True)
                turns[i].set()
                if cancelled:
                    return None
                started.add(rec.record_id)
                if scale_out:
                    return await _run_child_deployment(rec, category)
                return await sync_instance(  # one subflow for every kind
                    record_id=rec.record_id, instance=rec.instance, category=category, return_state=True
                )
        finally:
            turns[i].set()
            done += 1
            if progress is not None:
                await artifacts.update_progress(progress, done, len(plan.records), plan.session_id)

    # the subflows run here: their blocks in a request per page of 200, not one per instance
    preloaded = await sync.preload_blocks(plan.records) if not scale_out and len(plan.records) > 1 else {}
    watcher = asyncio.create_task(ctl.watch_cancellation(plan.session_id, flow_run_runtime.id, on_cancel))
    try:
        for i, rec in enumerate(plan.records):
            waiting[rec.record_id] = asyncio.create_task(one(i, rec))
        outcomes = await asyncio.gather(*waiting.values(), return_exceptions=True)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        sync.drop_preloaded(preloaded)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    if errors:  # e.g. no slot could be had: records that never ran must not stay pending
        logger.error("session %s: %d instance(s) could not run: %s", plan.session_id, len(errors), errors[0])
        await book.close_open_records(plan.session_id, f"could not run: {type(errors[0]).__name__}: {errors[0]}")
    else:  # a child run that died (killed worker) leaves its record open: close it, say how
        ended = [o.name for o in outcomes if isinstance(o, State) and (o.is_crashed() or o.is_cancelled())]
        await book.close_open_records(
            plan.session_id, "instance run ended without closing its record" + (f": {ended[0]}" if ended else "")
        )

    view = await book.session_summary(plan.session_id)
    await artifacts.publish_artifacts(view)
    if view.status == SessionStatus.CANCELLED:
        reason = cancelled.get("reason") or f"session {plan.session_id} was cancelled"
        return Cancelled(message=reason)
    if view.failed_instances:
        failed = [r.instance_name or str(r.instance_id) for r in view.records if r.status == "failed"]
        raise SessionFailed(f"session {plan.session_id}: {len(failed)} instance(s) failed: {', '.join(failed)}")
    summary = view.model_dump(mode="json")  # the one session shape (syncflow.schemas), as JSON data
    if metadata_session is not None:
        summary["metadata_session_id"] = metadata_session
    return summary


async def _run_child_deployment(rec: Any, category: str) -> Any:
    """Run one instance sync as a deployment run (any worker of the pool) and wait for its
    final state; the run is linked to this parent in the Prefect UI. A run whose worker died
    while starting it (taken, never opened its record) is given up after
    ``SYNCFLOW_CHILD_START_SECONDS``: Crashed, its record failed, the slot freed."""
    limit = get_settings().child_start_seconds

    async def started() -> bool:
        return await book.record_started(rec.record_id)

    state = await pf.run_child(
        names.INSTANCE_DEPLOYMENT,
        {"record_id": rec.record_id, "instance": rec.instance, "category": category},
        tags=[names.category_tag(category)],
        started=started,
        start_timeout=limit,
    )
    if state.is_crashed() and not await started():
        await book.fail_unstarted_record(rec.record_id, f"instance run lost before it started: {state.message}")
    return state


async def _refresh_metadata(
    instances: list[str] | None,
    tags: list[str] | None,
    sync_type: str,
    created_by: str | None,
    scale_out: bool,
    max_age: float = 0.0,
) -> str | None:
    """The seed's rule: before messages, a metadata session over the same instances (those
    that have metadata, and whose metadata is older than ``max_age`` s). Returns its session
    id (None when there was nothing to refresh)."""
    logger = get_run_logger()
    targets = await book.metadata_targets(instances or [], tags or [], max_age)
    if not targets:
        return None
    sid = str(uuid.uuid4())
    state = await sync_session(
        category=Category.METADATA.value,
        instances=targets,
        session_id=sid,
        sync_type=sync_type,
        created_by=created_by,
        refresh_metadata=False,
        scale_out=scale_out,
        return_state=True,
    )
    if not state.is_completed():
        logger.warning("metadata refresh before messages ended %s: %s (messages go on)", state.name, state.message)
    return sid if await book.session_exists(sid) else None
