"""``/sync_sessions/api``: sessions, their records, statistics, manual batches, cancel, retry."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, status
from sqlalchemy.orm import Session

from syncflow.api import _prefect as pf
from syncflow.api import _views as views
from syncflow.api import schemas as m
from syncflow.api.deps import READ, WRITE, Console, ConsoleDep, DbDep, utc
from syncflow.errors import ConfigError, IllegalTransitionError, NotFoundError
from syncflow.names import session_key
from syncflow.schemas import ChangesPage, SessionDetailView, change_entry, session_detail_view, session_view
from syncflow.store import changes as change_store
from syncflow.store import instances as inst_svc
from syncflow.store import pauses as queue_admin
from syncflow.store import sessions as book
from syncflow.store.chats import chat_titles, instance_choices
from syncflow.store.db import session_scope
from syncflow.store.models import RecordStatus, SessionStatus, SyncType
from syncflow.store.session_ids import resolve_session_id, short_ids

router = APIRouter(prefix="/sync_sessions/api", tags=["sessions"])

# FastAPI's `responses=` type: status code -> OpenAPI response fields.
Responses = dict[int | str, dict[str, Any]]

ERR: Responses = {
    401: {"model": m.ErrorOut, "description": "Missing or invalid bearer token."},
    403: {"model": m.ErrorOut, "description": "No API token configured: writes are disabled."},
}
NOT_FOUND: Responses = {404: {"model": m.ErrorOut, "description": "Unknown session."}}
CONFLICT: Responses = {409: {"model": m.ErrorOut, "description": "The session's state does not allow it."}}
PREFECT: Responses = {
    502: {"model": m.ErrorOut, "description": "The Prefect API failed or could not be reached."},
    503: {"model": m.ErrorOut, "description": "The deployment to run is missing on the Prefect API."},
}
BAD: Responses = {422: {"model": m.ValidationErrorOut, "description": "Bad input: the message says what."}}

SessionIdPath = Annotated[
    str, Path(min_length=1, max_length=64, description="The session's id (a UUID).", examples=["3f2b..."])
]
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@router.get("/sessions", response_model=m.SessionPageOut, dependencies=READ, responses={**ERR, **BAD})
def list_sessions(
    s: DbDep,
    sync_type: Annotated[m.SyncTypeName | None, Query(description="scheduled or manual_batch")] = None,
    sync_category: Annotated[m.CategoryName | None, Query(description="Only this category.")] = None,
    status_: Annotated[m.SessionStatusName | None, Query(alias="status", description="Only this status.")] = None,
    since: Annotated[dt.datetime | None, Query(description="Created at or after (ISO 8601; naive = UTC).")] = None,
    until: Annotated[dt.datetime | None, Query(description="Created before (ISO 8601; naive = UTC).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> m.SessionPageOut:
    """Sessions, newest first, filtered and paged (``total`` counts every match)."""
    page = book.list_sessions(
        s,
        sync_type=sync_type,
        sync_category=sync_category,
        status=status_,
        since=utc(since, "since"),
        until=utc(until, "until"),
        limit=limit,
        offset=offset,
    )
    ids = [r.session_id for r in page.items]
    totals = book.record_totals(s, ids)
    shorts = short_ids(s, ids)
    items = [session_view(r, totals[r.session_id], shorts[r.session_id]) for r in page.items]
    return m.SessionPageOut(items=items, total=page.total, limit=limit, offset=offset)


def _load(c: Console, session_id: str) -> SessionDetailView | None:
    """The session of ``session_id`` or of a unique prefix of one (the console's short ids);
    None when no session has it (an ambiguous prefix is a 422 naming the candidates)."""
    with session_scope(c.get_engine()) as s:
        try:
            full = resolve_session_id(s, session_id)
        except NotFoundError:
            return None
        row = book.get_session(s, session_id=full, with_records=True)
        titles = chat_titles(s, [r.instance_id for r in row.records])  # chat instances: the chat's title
        return session_detail_view(row, short_id=short_ids(s, [full])[full], titles=titles)


async def _queued(c: Console, session_id: str) -> pf.QueuedRun | None:
    """The console-started run of a session not in the store yet (None when there is none or
    Prefect cannot say)."""
    if not _UUID.fullmatch(session_id):
        return None
    try:
        return await pf.find_session_run(session_id, timeout=min(c.settings.prefect_timeout, 10.0))
    except pf.PrefectUnavailable:
        return None


@router.get(
    "/sessions/{session_id}",
    response_model=SessionDetailView | m.QueuedSessionOut,
    dependencies=READ,
    responses={**ERR, **NOT_FOUND, **BAD},
)
async def get_session(c: ConsoleDep, session_id: SessionIdPath) -> SessionDetailView | m.QueuedSessionOut:
    """A session with its instance records (counts, durations, errors, progress of running ones,
    with rate and ETA once a batch was measured) and, while it runs, its own ``progress``.
    ``session_id`` may be a unique prefix of the id (the page's short ids).

    A session started through this API whose flow run no worker has picked up yet answers
    ``status: "queued"`` with its flow run; one whose run ended before opening it answers 404."""
    detail = await asyncio.to_thread(_load, c, session_id)
    if detail is not None:
        return detail
    run = await _queued(c, session_id)
    if run is None:
        raise NotFoundError(f"unknown session {session_id!r}")
    if run.final:
        # the run may have opened the session just before ending: look again
        detail = await asyncio.to_thread(_load, c, session_id)
        if detail is not None:
            return detail
        why = f": {run.state_message}" if run.state_message else ""
        raise NotFoundError(
            f"session {session_id} was never opened: its flow run {run.flow_run_id} ended {run.state_name}{why}"
        )
    return m.QueuedSessionOut(
        session_id=session_id,
        flow_run_id=run.flow_run_id,
        flow_run_name=run.name,
        flow_run_state=run.state_name,
        expected_start_time=run.expected_start_time,
    )


@router.get("/statistics", response_model=m.StatisticsOut, dependencies=READ, responses={**ERR, **BAD})
def get_statistics(
    s: DbDep,
    since: Annotated[dt.datetime | None, Query(description="Window start (default: until - 7 days).")] = None,
    until: Annotated[dt.datetime | None, Query(description="Window end (default: now).")] = None,
    sync_type: Annotated[m.SyncTypeName | None, Query()] = None,
    sync_category: Annotated[m.CategoryName | None, Query()] = None,
    bucket: Annotated[Literal["hour", "day"], Query(description="Timeline bucket.")] = "hour",
) -> m.StatisticsOut:
    """Sessions created in the window: counts by type x category x status, success rate,
    duration percentiles, throughput (items/s of finished records) and a timeline."""
    u = utc(until, "until")
    since_utc = utc(since, "since")
    if since_utc is None and u is not None and u - dt.timedelta(days=7) < dt.datetime(1970, 1, 1, tzinfo=dt.UTC):
        raise ConfigError("until is too early for the default 7-day window: give since too")
    return views.statistics(
        s, since=since_utc, until=u, sync_type=sync_type, sync_category=sync_category, bucket=bucket
    )


@router.get(
    "/changes",
    response_model=ChangesPage,
    dependencies=READ,
    responses={**ERR, **BAD, 404: {"model": m.ErrorOut, "description": "Unknown instance."}},
)
def list_changes(
    s: DbDep,
    instance: Annotated[str | None, Query(max_length=255, description="Only this instance (by name).")] = None,
    category: Annotated[
        m.CategoryName | None, Query(description="Only this category (account, config, metadata, capacity).")
    ] = None,
    since: Annotated[dt.datetime | None, Query(description="Changed at or after (ISO 8601; naive = UTC).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> ChangesPage:
    """What changed: the records of snapshot syncs (accounts and grants, settings, conversations,
    capacity) that changed something, newest first, each with its session, time, counts and its
    change list in words (the first 100; ``changes_total`` counts them all). An unknown instance
    is 404; a category that keeps no change list (messages) is 422."""
    recs = change_store.records_with_changes(
        s, instance=instance, category=category, since=utc(since, "since"), limit=limit, offset=offset
    )
    shorts = short_ids(s, [r.session_id for r in recs])
    return ChangesPage(items=[change_entry(r, shorts[r.session_id]) for r in recs], limit=limit, offset=offset)


@router.get("/instances", dependencies=READ, responses={**ERR, **BAD})
def list_instances(
    s: DbDep,
    category: Annotated[m.CategoryName | None, Query(description="Only those supporting it.")] = None,
    kind: Annotated[m.KindName | None, Query(description="Only this kind (e.g. telegram).")] = None,
    account: Annotated[
        str | None, Query(max_length=255, description="Only the chats of this Telegram account (its block name).")
    ] = None,
    chat_type: Annotated[
        m.ChatTypeName | None,
        Query(alias="type", description="Only chats of this type (group: supergroups too)."),
    ] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text in the name, the chat title or the username.")
    ] = None,
) -> list[dict[str, Any]]:
    """The registered instances (for the manual-batch form): name, kind, categories, tags, enabled;
    chat instances (Telegram) also their account, chat id, chat type, title and username."""
    return instance_choices(s, category=category, kind=kind, account=account, chat_type=chat_type, q=q)


# ------------------------------------------------------------------------- writes


def _plan_batch(c: Console, body: m.ManualBatchIn) -> tuple[list[str], bool]:
    """Validate a manual batch against the store: the instance names it will run over, and
    whether its category is paused."""
    from syncflow.engine.options import SyncOptions

    with session_scope(c.get_engine()) as s:
        try:
            chosen = inst_svc.select_instances(
                s, category=body.category, names=body.instances or [], tags=body.tags or []
            )
        except NotFoundError as exc:  # names in the body, not the URL: bad input
            raise ConfigError(str(exc)) from None
        if not chosen:
            how = f"with any of the tags {', '.join(body.tags)}" if body.tags else "at all"
            raise ConfigError(f"no enabled instance supporting {body.category!r} {how}")
        names = [i.name for i in chosen]
        for what, mapping in (("priorities", body.priorities), ("options", body.options)):
            stray = sorted(set(mapping or {}) - set(names))
            if stray:
                raise ConfigError(f"{what} given for instance(s) not in this batch: {', '.join(stray)}")
        if body.category == "messages":
            for name, opts in (body.options or {}).items():
                try:
                    SyncOptions.parse(opts, instance=name)
                except ConfigError:
                    raise
                except Exception as exc:
                    raise ConfigError(f"instance {name}: bad sync options: {exc}") from None
        return names, queue_admin.is_paused(s, category=body.category)


async def _trigger(c: Console, params: dict[str, Any], session_id: str) -> Any:
    return await pf.trigger(
        {**params, "session_id": session_id},
        deployment=c.settings.manual_batch_deployment,
        idempotency_key=session_key(session_id),
        timeout=c.settings.prefect_timeout,
    )


@router.post(
    "/sessions",
    response_model=m.TriggeredOut,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=WRITE,
    responses={**ERR, **BAD, **PREFECT},
)
async def start_manual_batch(c: ConsoleDep, body: m.ManualBatchIn) -> m.TriggeredOut:
    """Start a manual batch: a run of the manual-batch deployment. Answers at once with the new
    session's id; the session appears in the store when a worker starts the run (until then
    GET of the id answers ``status: "queued"``)."""
    names, held = await asyncio.to_thread(_plan_batch, c, body)
    extras = {
        k: v for k, v in (("scale_out", body.scale_out), ("refresh_metadata", body.refresh_metadata)) if v is not None
    }
    if extras:
        accepted = await pf.deployment_parameters(c.settings.manual_batch_deployment, c.settings.prefect_timeout)
        missing = sorted(set(extras) - accepted) if accepted is not None else []
        if missing:
            raise ConfigError(
                f"the deployment {c.settings.manual_batch_deployment!r} does not take {', '.join(missing)} "
                "(redeploy with a newer syncflow)"
            )
    params: dict[str, Any] = {
        "category": body.category,
        "sync_type": SyncType.MANUAL_BATCH.value,
        "created_by": body.created_by or "api",
        **extras,
    }
    if body.instances:
        params["instances"] = names
    elif body.tags:
        params["tags"] = body.tags
    for key in ("priorities", "options", "concurrency"):
        value = getattr(body, key)
        if value is not None:
            params[key] = value
    session_id = str(uuid.uuid4())
    run = await _trigger(c, params, session_id)
    return m.TriggeredOut(
        session_id=session_id,
        flow_run_id=run.flow_run_id,
        flow_run_name=run.flow_run_name,
        deployment=run.deployment,
        instances=names,
        held=held,
    )


def _retry_plan(s: Session, session_id: str) -> tuple[str, str, list[str], bool]:
    old = book.get_session(s, session_id=session_id, with_records=True)
    if old.status == SessionStatus.RUNNING:
        raise IllegalTransitionError(f"session {session_id} is still running: retry its failed instances when it ends")
    failed = [r.instance_name or str(r.instance_id) for r in old.records if r.status == RecordStatus.FAILED]
    if not failed:
        raise IllegalTransitionError(f"session {session_id} has no failed instance to retry")
    return old.sync_type, old.sync_category, failed, queue_admin.is_paused(s, category=old.sync_category)


async def retry(c: Console, session_id: str, created_by: str | None, new_id: str | None = None) -> m.TriggeredOut:
    def plan() -> tuple[str, str, list[str], bool]:
        with session_scope(c.get_engine()) as s:
            return _retry_plan(s, session_id)

    sync_type, category, failed, held = await asyncio.to_thread(plan)
    new_id = new_id or str(uuid.uuid4())
    params = {"retry_of": session_id, "sync_type": sync_type, "category": category, "created_by": created_by or "api"}
    run = await _trigger(c, params, new_id)
    return m.TriggeredOut(
        session_id=new_id,
        flow_run_id=run.flow_run_id,
        flow_run_name=run.flow_run_name,
        deployment=run.deployment,
        instances=failed,
        retry_of=session_id,
        held=held,
    )


@router.post(
    "/sessions/{session_id}/retry-failed",
    response_model=m.TriggeredOut,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=WRITE,
    responses={**ERR, **NOT_FOUND, **CONFLICT, **BAD, **PREFECT},
)
async def retry_failed(
    c: ConsoleDep, session_id: SessionIdPath, body: Annotated[m.RetryIn | None, Body()] = None
) -> m.TriggeredOut:
    """Start a new session over only the failed instances of a finished session (linked by
    ``retry_of``; each keeps its priority and options). 409 while it runs or when none failed."""
    return await retry(c, session_id, body.created_by if body else None)


def _cancel_in_store(c: Console, session_id: str, reason: str) -> tuple[str | None, dict[str, str]] | None:
    with session_scope(c.get_engine()) as s:
        try:
            row = book.cancel_session(s, session_id=session_id, reason=reason)
        except NotFoundError:
            return None
        records = {
            r.instance_name or str(r.instance_id): r.status for r in book.records_in_order(s, session_id=session_id)
        }
        return row.flow_run_id, records


@router.post(
    "/sessions/{session_id}/cancel",
    response_model=m.CancelOut,
    dependencies=WRITE,
    responses={**ERR, **NOT_FOUND, **CONFLICT, **BAD},
)
async def cancel_session(
    c: ConsoleDep, session_id: SessionIdPath, body: Annotated[m.CancelIn | None, Body()] = None
) -> m.CancelOut:
    """Cancel a running session: its pending and running records are cancelled (running syncs
    stop at their next batch boundary, committed batches stay) and its Prefect flow run goes
    to Cancelling. A session still queued in Prefect has its run cancelled. 409 when it ended."""
    reason = (body.reason if body and body.reason else None) or "cancelled from the console"
    done = await asyncio.to_thread(_cancel_in_store, c, session_id, reason)
    if done is None:
        run = await _queued(c, session_id)
        if run is None:
            raise NotFoundError(f"unknown session {session_id!r}")
        if run.final:
            raise IllegalTransitionError(
                f"cannot cancel: session {session_id}'s flow run already ended {run.state_name}"
            )
        msg = await pf.cancel_run(run.flow_run_id, reason=reason, timeout=c.settings.prefect_timeout)
        # the run may have opened the session meanwhile: cancel it in the store too
        late = await asyncio.to_thread(_cancel_in_store_quiet, c, session_id, reason)
        return m.CancelOut(
            session_id=session_id,
            status=SessionStatus.CANCELLED.value if late is None else late[0],
            flow_run_id=run.flow_run_id,
            prefect=msg,
            records=late[1] if late else {},
        )
    flow_run_id, records = done
    prefect_msg = None
    if flow_run_id:
        try:
            prefect_msg = await pf.cancel_run(flow_run_id, reason=reason, timeout=c.settings.prefect_timeout)
        except Exception as exc:  # the store says cancelled: syncs stop at their next batch anyway
            prefect_msg = f"flow run {flow_run_id} not cancelled in Prefect ({exc})"
    return m.CancelOut(
        session_id=session_id,
        status=SessionStatus.CANCELLED.value,
        flow_run_id=flow_run_id,
        prefect=prefect_msg,
        records=records,
    )


def _cancel_in_store_quiet(c: Console, session_id: str, reason: str) -> tuple[str, dict[str, str]] | None:
    with session_scope(c.get_engine()) as s:
        try:
            row = book.get_session(s, session_id=session_id)
        except NotFoundError:
            return None
        if row.status == SessionStatus.RUNNING:
            row = book.cancel_session(s, session_id=session_id, reason=reason)
        records = {
            r.instance_name or str(r.instance_id): r.status for r in book.records_in_order(s, session_id=session_id)
        }
        return row.status, records
