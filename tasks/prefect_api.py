"""The one seam between syncflow and Prefect's client and APIs.

Every call to Prefect's API client, to ``run_deployment``, to global concurrency limits, work
pools, artifacts, runner deployments and ``serve`` is here; the rest of syncflow uses only
``@flow`` / ``@task``, ``get_run_logger`` and ``prefect.runtime``.
Callers: ``flows/session_sync.py`` (limits, slots, scale-out children), ``tasks/artifacts.py``,
``tasks/session_control.py`` (the parent's cancellation watcher), ``deployments/`` (setup, trigger, runner), the CLI
(``syncflow sync --deployment``, ``sessions cancel``, ``setup``, ``runner``, ``demo``) and the
console API (through ``syncflow.api._prefect``).

Helpers the CLI and the API call are plain coroutines; those bounded by a ``timeout`` turn
every failure into :class:`syncflow.errors.PrefectUnavailable` (the API answers 502). What the
session flow shows as a step of its own (marking lost runs Crashed) is a ``@task``; its
bookkeeping (the limit, slots, artifacts) are plain coroutines: a task run costs events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from syncflow import book, names
from syncflow.errors import NotFoundError, PrefectUnavailable, SlotError, SyncflowError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client()


def api_url() -> str | None:
    """``PREFECT_API_URL`` (None: Prefect's ephemeral mode)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


async def bounded(what: str, coro: Awaitable[T], timeout: float) -> T:
    """``coro`` within ``timeout`` s; any failure but a syncflow error becomes
    :class:`PrefectUnavailable` naming ``what``."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except SyncflowError:
        raise
    except TimeoutError:
        raise PrefectUnavailable(f"Prefect API: {what} took more than {timeout:.0f} s") from None
    except Exception as exc:  # HTTP errors, refused connections, an object gone meanwhile, ...
        msg = " ".join(str(exc).split())[:300]
        raise PrefectUnavailable(f"Prefect API: {what} failed: {type(exc).__name__}: {msg}") from exc


async def ping(timeout: float) -> str | None:
    """None when the Prefect API answers its health check, else why not."""

    async def go() -> Any:
        async with _client() as client:
            return await client.api_healthcheck()

    try:
        err = await asyncio.wait_for(go(), timeout)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None if err is None else f"{type(err).__name__}: {err}"[:300]


# ------------------------------------------------------------------ health (doctor)


@dataclass(frozen=True)
class PoolStatus:
    """A work pool as ``syncflow doctor`` and ``sync run --deployment`` see it."""

    name: str
    exists: bool
    paused: bool = False
    workers: int = 0
    live_workers: tuple[str, ...] = ()


async def work_pool_status(name: str, *, timeout: float) -> PoolStatus:
    """Whether the work pool exists, is paused, and which of its workers are online (a worker
    is online while its heartbeats arrive)."""
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.exceptions import ObjectNotFound

    async def go() -> PoolStatus:
        async with _client() as client:
            try:
                pool = await client.read_work_pool(name)
            except ObjectNotFound:
                return PoolStatus(name, exists=False)
            workers = await client.read_workers_for_work_pool(name)
        live = tuple(sorted(w.name for w in workers if w.status == WorkerStatus.ONLINE))
        return PoolStatus(name, exists=True, paused=bool(pool.is_paused), workers=len(workers), live_workers=live)

    return await bounded(f"reading work pool {name}", go(), timeout)


async def missing_limits(categories: Sequence[str], *, timeout: float) -> list[str]:
    """The global concurrency limits ``tag:sync:<category>`` that do not exist (or are inactive)."""
    from prefect.exceptions import ObjectNotFound

    async def go() -> list[str]:
        missing: list[str] = []
        async with _client() as client:
            for category in categories:
                name = names.limit_name(category)
                try:
                    gcl = await client.read_global_concurrency_limit_by_name(name)
                except ObjectNotFound:
                    missing.append(name)
                    continue
                if not gcl.active:
                    missing.append(f"{name} (inactive)")
        return missing

    return await bounded("reading the concurrency limits", go(), timeout)


async def deployment_pool(deployment: str, *, timeout: float) -> str | None:
    """The work pool ``deployment`` runs on (None: served by a runner); :class:`NotFoundError`
    when it does not exist."""

    async def go() -> str | None:
        async with _client() as client:
            dep = await _read_deployment(client, deployment)
        return dep.work_pool_name or None

    return await bounded(f"reading deployment {deployment}", go(), timeout)


# ---------------------------------------------------------------------- automations


@dataclass(frozen=True)
class AlertSpec:
    """One automation ``syncflow setup --alerts`` keeps: an event trigger (the fields of
    Prefect's ``EventTrigger``) whose action sends a notification through a block."""

    name: str
    description: str
    trigger: dict[str, Any]
    subject: str
    body: str


async def notification_block_id(block: str, *, timeout: float) -> str:
    """The id of notification block ``block`` (``NAME`` or ``TYPE-SLUG/NAME``, as
    ``prefect block ls`` shows it). :class:`NotFoundError` naming what exists when missing,
    :class:`syncflow.errors.ConfigError` when that block cannot notify."""
    from syncflow.errors import ConfigError

    slug, _, name = block.rpartition("/")

    async def go() -> str:
        async with _client() as client:
            docs = await client.read_block_documents(include_secrets=False)
        found = [d for d in docs if d.name == name and (not slug or d.block_type.slug == slug)]
        if not found:
            notify = sorted(
                f"{d.block_type.slug}/{d.name}"
                for d in docs
                if d.block_schema and "notify" in (d.block_schema.capabilities or [])
            )
            raise NotFoundError(
                f"no block named {block!r} on the Prefect API (notification blocks there: "
                f"{', '.join(notify) or 'none'}; create one, e.g. a custom-webhook block, in the UI or with Python)"
            )
        if len(found) > 1:
            raise ConfigError(
                f"several blocks are named {name!r}: say which with TYPE/NAME "
                f"({', '.join(f'{d.block_type.slug}/{d.name}' for d in found)})"
            )
        doc = found[0]
        if doc.block_schema is not None and "notify" not in (doc.block_schema.capabilities or []):
            raise ConfigError(
                f"block {doc.block_type.slug}/{doc.name} cannot send notifications "
                "(use a notification block: custom-webhook, slack-webhook, ...)"
            )
        return str(doc.id)

    return await bounded(f"reading block {block}", go(), timeout)


async def ensure_automations(specs: Sequence[AlertSpec], *, block_id: str, timeout: float) -> dict[str, str]:
    """Create each automation that is missing, update one that differs (found by name); returns
    what happened to each: ``created``, ``updated`` or ``kept``."""

    async def go() -> dict[str, str]:
        done: dict[str, str] = {}
        async with _client() as client:
            for spec in specs:
                wanted = automation_for(spec, block_id)
                existing = await client.read_automations_by_name(spec.name)
                if not existing:
                    await client.create_automation(wanted)
                    done[spec.name] = "created"
                    continue
                first, *extra = existing
                for dup in extra:  # two setups raced: keep one
                    await client.delete_automation(dup.id)
                keys = {"description", "enabled", "trigger", "actions"}
                have = first.model_dump(mode="json", include=keys)
                if same_automation(have, wanted.model_dump(mode="json", include=keys)):
                    done[spec.name] = "kept"
                else:
                    await client.update_automation(first.id, wanted)
                    done[spec.name] = "updated"
        return done

    return await bounded("creating the automations", go(), timeout)


def automation_for(spec: AlertSpec, block_id: Any) -> Any:
    """The automation ``spec`` stands for, notifying through block ``block_id``."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    return AutomationCore(
        name=spec.name,
        description=spec.description,
        enabled=True,
        trigger=EventTrigger(**spec.trigger),
        actions=[SendNotification(block_document_id=block_id, subject=spec.subject, body=spec.body)],
    )


def same_automation(have: Any, wanted: Any) -> bool:
    """Whether two automations dumped as JSON say the same, whatever order their set fields
    (a trigger's ``expect``, ``after``, ``for_each``) came out in: a set dumps in its iteration
    order, which differs between processes (string hashes are randomised) and between two sets
    of the same strings built in another order."""

    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [canonical(v) for v in value]
            return sorted(items) if all(isinstance(v, str) for v in items) else items
        return value

    return bool(canonical(have) == canonical(wanted))


# ------------------------------------------------------------- concurrency limits


async def _ensure_limit(client: Any, category: str, slots: int, *, reset: bool = False) -> tuple[Any, str]:
    """Create ``tag:sync:<category>`` with ``slots`` when missing; with ``reset`` set an
    existing one back to ``slots`` (and active). Returns the limit and what happened:
    ``created``, ``raced`` (created meanwhile by someone else), ``updated`` or ``kept``."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = names.limit_name(category)
    try:
        gcl = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        outcome = "created"
        try:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
        except ObjectAlreadyExists:  # another session or setup created it meanwhile
            outcome = "raced"
        return await client.read_global_concurrency_limit_by_name(name), outcome
    if reset and (gcl.limit != slots or not gcl.active):
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
        return await client.read_global_concurrency_limit_by_name(name), "updated"
    return gcl, "kept"


async def ensure_limits(
    limits: dict[str, int] | None = None, *, reset: bool = False
) -> tuple[dict[str, int], list[str], list[str]]:
    """Create every ``tag:sync:<category>`` limit that is missing (the defaults of
    :data:`syncflow.names.DEFAULT_LIMITS`, overridden by ``limits``); with ``reset``, set the
    existing ones to those values too. Returns (limit per category, created, updated)."""
    wanted = {**names.DEFAULT_LIMITS, **(limits or {})}
    now: dict[str, int] = {}
    created: list[str] = []
    updated: list[str] = []
    async with _client() as client:
        for category, value in wanted.items():
            gcl, outcome = await _ensure_limit(client, category, value, reset=reset)
            if outcome == "created":
                created.append(gcl.name)
            elif outcome == "updated":
                updated.append(gcl.name)
            now[category] = gcl.limit
    return now, created, updated


async def read_limit(category: str) -> int:
    """The slots of ``tag:sync:<category>`` (raises when it does not exist)."""
    async with _client() as client:
        return int((await client.read_global_concurrency_limit_by_name(names.limit_name(category))).limit)


async def ensure_concurrency_limit(category: str, default: int) -> dict[str, Any]:
    """Create ``tag:sync:<category>`` with ``default`` slots when missing (an existing limit
    keeps its value: change it with ``prefect gcl update tag:sync:<category> --limit N``).
    A plain coroutine of the session flow, not a task run: its outcome is in the flow's log
    (the limit, slots reset), and a task run costs three events and its engine's start.

    Stale slots: Prefect's ephemeral server never frees the slot of a killed holder. When the
    limit shows active slots while the store shows no live sync of the category (no unexpired
    lease, no recently touched open record), the slots are leaked: reset them to 0.
    """
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    name = names.limit_name(category)
    async with _client() as client:
        gcl, outcome = await _ensure_limit(client, category, default)
        if outcome != "kept":
            return {"name": name, "limit": gcl.limit, "created": True, "reset_slots": 0}
        reset = 0
        if gcl.active_slots > 0 and not await asyncio.to_thread(book.category_busy, category):
            reset = gcl.active_slots
            log.warning("%s: %d slot(s) held with no live sync in the store: resetting them to 0", name, reset)
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
        if not gcl.active:
            log.warning("%s is inactive: Prefect does not cap %s syncs", name, category)
        return {"name": name, "limit": gcl.limit, "created": False, "reset_slots": reset}


# ---------------------------------------------------------------------- work pool


async def ensure_work_pool(name: str = names.WORK_POOL) -> bool:
    """Create the process work pool ``name`` when missing; True when it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with _client() as client:
        try:
            await client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    description="syncflow sessions and instance syncs",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:  # created meanwhile by another setup
            return False
    return True


# ----------------------------------------------------------------- holding a slot


# The lease of a held slot: renewed while the holder lives (:func:`_keep_lease`); when the holder dies
# (SIGKILL, lost machine) a Prefect server frees the slot this long after the last renewal.
# 60 s is the server's minimum (Prefect's default is 300 s).
SLOT_LEASE_SECONDS = 60.0


@dataclass
class _Local:
    """What this process (one event loop) knows of one limit, so that its waiters ask Prefect
    for a slot only when one may be free.

    ``released`` is set when a holder here gives its slot back: the next waiter asks at once
    instead of at its next poll (the hand-over was ~0.5 s per instance on average; a limit-1
    session of 50 short syncs waited ~25 s for it). ``free`` is how many slots were free when
    a request was last refused (0) plus those given back here since, less those taken here
    since (None: not known). While this process holds slots and knows none is free, a new
    waiter does not ask (the answer would be a 423: one per hand-over, ~1 per instance of a
    session) but waits for a slot of its own to come back, or for its poll (slots of other
    processes, a raised limit)."""

    released: asyncio.Event
    held: int = 0
    free: int | None = None

    def worth_asking(self) -> bool:
        return self.held == 0 or self.free is None or self.free > 0


_LOCAL: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Local]] = weakref.WeakKeyDictionary()


def _local(name: str) -> _Local:
    limits = _LOCAL.setdefault(asyncio.get_running_loop(), {})
    if name not in limits:
        limits[name] = _Local(asyncio.Event())
    return limits[name]


PAUSE_READ_EVERY = 2.0
"""Seconds a read of a category's pause flag stays good for one slot wait (:func:`hold_slot`)."""


def _paused(category: str) -> bool:
    try:
        return book.is_paused(category)
    except Exception:  # an unmigrated store or a bad name must not block syncs
        log.warning("could not read the pause flag of %r: not waiting", category, exc_info=True)
        return False


# ------------------------------------------------------------------ artifacts


async def create_artifact(kind: str, data: Any, *, key: str | None = None, description: str | None = None) -> Any:
    """An artifact of the current flow (or task) run: ``kind`` ``markdown`` (``data`` a str),
    ``table`` (a list of row dicts, NaN shown empty) or ``progress`` (a percentage, clamped to
    0-100); returns its id. What ``prefect.artifacts`` does, without importing it: that module
    builds ~25 pydantic models at import (~0.1-0.15 s of every sync process's start)."""
    import json
    import math

    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.utilities.context import get_task_and_flow_run_ids

    if kind == "table":

        def clean(v: Any) -> Any:
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return None if isinstance(v, float) and math.isnan(v) else v

        data = json.dumps(clean(data))
    elif kind == "progress":
        data = _percent(data)
    task_run_id, flow_run_id = get_task_and_flow_run_ids()
    async with _client() as client:
        made = await client.create_artifact(
            artifact=ArtifactCreate(
                type=kind,
                key=key,
                description=description,
                data=data,
                flow_run_id=flow_run_id,
                task_run_id=task_run_id,
            )
        )
    return made.id


async def update_progress_artifact(artifact_id: Any, progress: float, *, description: str | None = None) -> None:
    """Set a progress artifact's percentage (clamped to 0-100) and, when given, its description."""
    from prefect.client.schemas.actions import ArtifactUpdate

    update = (  # an unset description keeps the one shown
        ArtifactUpdate(data=_percent(progress))
        if description is None
        else ArtifactUpdate(data=_percent(progress), description=description)
    )
    async with _client() as client:
        await client.update_artifact(artifact_id=artifact_id, artifact=update)


def _percent(value: float) -> float:
    return max(0.0, min(100.0, float(value)))


@asynccontextmanager
async def hold_slot(name: str, *, poll_seconds: float = 1.0) -> AsyncIterator[None]:
    """Hold one slot of the global concurrency limit ``name`` for the body — what
    ``concurrency(name, occupy=1, strict=True)`` does (a missing limit is a :class:`SlotError`,
    not a silent "no cap"; the slot is a lease of :data:`SLOT_LEASE_SECONDS`, renewed while held,
    so a killed holder's slot frees itself on a running server), asked again every
    ~``poll_seconds`` while the limit is full.

    Done here with the caller's own Prefect client rather than by ``concurrency()``, which per
    hold opens a second client in a renewal thread (an SSL context, ~20 ms of CPU), renews the
    lease it has just been given, and waits on a full limit for the server's Retry-After, up to
    10-30 s even when a slot frees at once (PrefectHQ/prefect#23183). Here a freed slot is handed
    over in about a second — at once when it comes back from a holder in this process (the usual
    case: a session's own instance syncs; a waiter that knows the limit is full does not ask
    until then, see :class:`_Local`) — and the lease is renewed every half lease from the
    caller's event loop (the syncs themselves run in threads). When the renewal fails for good
    (the server lost the lease: 410, or three failed attempts) the body is cancelled and
    :class:`SlotError` raised, as ``strict=True`` does. A waiter cancelled mid-request gives back
    a slot granted too late. The ``prefect.concurrency-limit.acquired`` / ``released`` events are
    emitted as Prefect's own holders emit them.
    """
    # A category paused by the queue admin (POST /api/admin/sync-queue/{category}/pause)
    # starts no new sync: wait here, before taking a slot, until it is resumed.
    category = names.limit_category(name)

    # The flag is read once when the wait starts and again only when the last read is older than
    # PAUSE_READ_EVERY (a slot request refused by a full limit does not re-read it): one store
    # round trip per instance instead of one per request.
    told = False
    read_at: float | None = None
    polled = False
    local = _local(name)
    async with _client() as client:
        while True:
            if read_at is None or time.monotonic() - read_at >= PAUSE_READ_EVERY:
                while await asyncio.to_thread(_paused, category):
                    if not told:
                        log.info("category %s is paused (queue admin): waiting for resume", category)
                        told = True
                    await asyncio.sleep(max(poll_seconds, 1.0) * random.uniform(0.8, 1.2))
                read_at = time.monotonic()
            if polled or local.worth_asking():
                claimed = False
                if local.free:  # a waiter woken with this one does not ask for the same slot
                    local.free -= 1
                    claimed = True
                try:
                    granted = await _take_slot(client, name)
                except BaseException:  # cancelled, or no such limit: the claim goes back
                    if claimed and local.free is not None:
                        local.free += 1
                    raise
                if granted is not None:
                    local.held += 1
                    break
                local.free = 0
            event = local.released
            try:  # until a slot of this process comes back, or the poll interval (other processes)
                await asyncio.wait_for(event.wait(), poll_seconds * random.uniform(0.8, 1.2))
                polled = False
            except TimeoutError:
                polled = True
            if event.is_set() and local.released is event:
                local.released = asyncio.Event()

        lease_id, limit = granted
        acquired = _slot_event("acquired", limit)
        holder = asyncio.current_task()
        lost: list[str] = []
        keeper = asyncio.create_task(_keep_lease(client, name, lease_id, holder, lost))
        try:
            yield
        except asyncio.CancelledError:
            if not lost or holder is None:
                raise
            holder.uncancel()  # our own cancellation: say why instead
            raise SlotError(
                f"{name}: the slot's lease could not be renewed ({lost[0]}); the sync was stopped so the limit "
                "is not exceeded"
            ) from None
        else:
            if lost and holder is not None:  # the body swallowed our cancellation
                holder.uncancel()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            try:  # shielded: a holder cancelled now still gives its slot back
                await asyncio.shield(_give_back(client, name, lease_id))
            finally:
                local.held -= 1
                if local.free is not None:
                    local.free += 1
                local.released.set()  # the slot is back: a waiter of this process asks again now
            _slot_event("released", limit, acquired)


RENEW_EVERY = 0.5
"""Share of :data:`SLOT_LEASE_SECONDS` between two renewals of a held slot's lease."""


async def _take_slot(client: Any, name: str) -> tuple[Any, dict[str, Any]] | None:
    """One request for a slot of ``name``: (lease id, the limit), or None
    while the limit is full (423). Cancelled mid-request, a slot granted anyway is given back."""
    import httpx

    async def ask() -> tuple[Any, dict[str, Any]] | None:
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=SLOT_LEASE_SECONDS
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:
                return None
            detail = " ".join(exc.response.text.split())[:200]
            raise SlotError(f"{name}: Prefect refused a slot: {exc.response.status_code} {detail}") from None
        body = response.json()
        if not body.get("limits"):
            raise SlotError(
                f"concurrency limit {name} does not exist: a session creates it "
                f"(or: prefect gcl create {name} --limit N)"
            )
        return body["lease_id"], body["limits"][0]

    attempt = asyncio.ensure_future(ask())
    try:
        return await asyncio.shield(attempt)
    except asyncio.CancelledError:
        # the request may still be granted: wait for its answer (the client is still open) and
        # give a granted slot back; cancelled again meanwhile, the lease frees it in time
        with contextlib.suppress(BaseException):
            granted = await asyncio.shield(attempt)
            if granted is not None:
                await _give_back(client, name, granted[0])
        raise


async def _give_back(client: Any, name: str, lease_id: Any) -> None:
    try:
        await client.release_concurrency_slots_with_lease(lease_id=lease_id)
    except Exception as exc:  # the lease runs out by itself (SLOT_LEASE_SECONDS)
        log.warning("%s: could not give a slot back (%s); it frees itself when its lease ends", name, exc)


async def _keep_lease(client: Any, name: str, lease_id: Any, holder: asyncio.Task[Any] | None, lost: list[str]) -> None:
    """Renew the lease every ``RENEW_EVERY`` of it; when that fails for good, note why in ``lost``
    and cancel ``holder`` (the body of :func:`hold_slot`)."""
    import httpx

    while True:
        await asyncio.sleep(SLOT_LEASE_SECONDS * RENEW_EVERY)
        for attempt in range(3):
            try:
                await client.renew_concurrency_lease(lease_id=lease_id, lease_duration=SLOT_LEASE_SECONDS)
                break
            except Exception as exc:
                gone = isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 410
                if gone or attempt == 2:
                    why = "the server no longer has it" if gone else f"{type(exc).__name__}: {exc}"[:200]
                    log.error("%s: could not renew the slot's lease (%s): stopping its holder", name, why)
                    lost.append(why)
                    if holder is not None:
                        holder.cancel()
                    return
                log.warning("%s: renewing the slot's lease failed (%s); trying again", name, exc)
                await asyncio.sleep(2**attempt * random.uniform(0.8, 1.2))


def _slot_event(phase: str, limit: dict[str, Any], follows: Any = None) -> Any:
    """``prefect.concurrency-limit.<phase>`` for the held limit, as Prefect's own holders emit it
    (related to the current flow or task run)."""
    from prefect.events import emit_event

    return emit_event(
        f"prefect.concurrency-limit.{phase}",
        resource={
            "prefect.resource.id": f"prefect.concurrency-limit.{limit['id']}",
            "prefect.resource.name": str(limit["name"]),
            "slots-acquired": "1",
            "limit": str(limit["limit"]),
        },
        follows=follows,
    )


# ------------------------------------------------------------- starting and following


@dataclass(frozen=True)
class StartedRun:
    flow_run_id: str
    name: str


async def start_run(
    deployment: str, parameters: dict[str, Any], *, idempotency_key: str | None = None, tags: Sequence[str] = ()
) -> StartedRun:
    """Create a flow run of ``deployment`` (``flow-name/deployment-name``) and return without
    waiting for it (same ``idempotency_key``: the same run). :class:`NotFoundError` when the
    deployment does not exist."""
    from prefect.deployments import arun_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        run = await arun_deployment(
            deployment,
            parameters=parameters,
            timeout=0,
            as_subflow=False,
            idempotency_key=idempotency_key,
            tags=list(tags),
        )
    except ObjectNotFound:
        raise NotFoundError(
            f"deployment {deployment!r} not found on the Prefect API (deploy first: prefect deploy --all)"
        ) from None
    return StartedRun(str(run.id), run.name)


async def run_child(
    deployment: str,
    parameters: dict[str, Any],
    *,
    tags: Sequence[str] = (),
    started: Callable[[], Awaitable[bool]] | None = None,
    start_timeout: float | None = None,
    poll_seconds: float = 1.0,
) -> Any:
    """Run ``deployment`` as a child of the current flow run (any worker of the pool runs it;
    the Prefect UI links it to the parent) and return its final state.

    A worker that dies while it starts the run leaves it Pending (or Running, its process gone
    before it did anything) for ever, and nothing else would end it. So with ``started`` (has
    the run begun its work?) and ``start_timeout``: once a worker took the run, if ``started()``
    is still false ``start_timeout`` s later, the run is marked Crashed and that state returned.
    A run still Scheduled (no worker took it yet) is waited for.
    """
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import arun_deployment
    from prefect.states import Crashed

    run = await arun_deployment(deployment, parameters=parameters, timeout=0, as_subflow=True, tags=list(tags))
    taken_at: float | None = None
    async with _client() as client:
        while True:
            current = await client.read_flow_run(run.id)
            state = current.state
            if state is not None and state.is_final():
                return state
            if state is not None and state.type in (StateType.PENDING, StateType.RUNNING):
                taken_at = taken_at or time.monotonic()
                overdue = start_timeout is not None and time.monotonic() - taken_at > start_timeout
                if overdue and started is not None and not await started():
                    crashed: Any = Crashed(
                        message=f"{state.name} for {start_timeout:.0f} s without starting its sync: "
                        "its worker is gone (killed while starting the run?)"
                    )
                    await client.set_flow_run_state(run.id, crashed, force=True)
                    return crashed
            await asyncio.sleep(poll_seconds)


async def follow_run(flow_run_id: str, *, poll_seconds: float = 1.0) -> Any:
    """Wait for the flow run to reach a final state and return that state."""
    async with _client() as client:
        while True:
            run = await client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run.state
            await asyncio.sleep(poll_seconds)


@asynccontextmanager
async def cancel_watch() -> AsyncIterator[Callable[[str], Awaitable[bool]]]:
    """One client for a long watch: yields ``cancel_requested(flow_run_id)``, whether that run
    was asked to stop (state Cancelling or Cancelled: the Prefect UI, ``prefect flow-run cancel``)."""
    from prefect.client.schemas.objects import StateType

    async with _client() as client:

        async def cancel_requested(flow_run_id: str) -> bool:
            run = await client.read_flow_run(flow_run_id)
            return run.state is not None and run.state.type in (StateType.CANCELLING, StateType.CANCELLED)

        yield cancel_requested


# ---------------------------------------------------------------------- cancelling


async def cancel_run(flow_run_id: str, *, reason: str, timeout: float) -> str:
    """Stop a flow run: a run that has not started is Cancelled at once, a started one goes to
    Cancelling (its worker or runner kills it). Returns what happened, in words; any failure
    (within ``timeout``) is :class:`PrefectUnavailable`."""
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled, Cancelling

    async def go() -> str:
        async with _client() as client:
            try:
                run = await client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                return f"flow run {flow_run_id} not found in Prefect"
            st = run.state
            if st is not None and st.is_final():
                return f"flow run {flow_run_id} already {st.type.value.lower()}"
            if st is not None and st.type == StateType.CANCELLING:
                return f"flow run {flow_run_id} already cancelling"
            if st is None or st.type == StateType.SCHEDULED:
                await client.set_flow_run_state(flow_run_id, Cancelled(message=reason), force=True)
                return f"flow run {flow_run_id}: {st.name.lower() if st else 'no state'} -> cancelled"
            await client.set_flow_run_state(flow_run_id, Cancelling(message=reason), force=True)
            return f"flow run {flow_run_id}: {st.name.lower()} -> cancelling"

    return await bounded(f"cancelling flow run {flow_run_id}", go(), timeout)


async def crash_dead_runs(flow_run_ids: Sequence[str], *, reason: str, timeout: float) -> list[dict[str, Any]]:
    """Close flow runs whose process is gone (``syncflow sweep``): Running/Pending -> Crashed,
    Cancelling -> Cancelled, with ``reason``. Runs already final (or scheduled, paused, unknown
    to this Prefect API) are left as they are and not listed."""
    from prefect.client.schemas.objects import State, StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled, Crashed

    async def go() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with _client() as client:
            for fid in flow_run_ids:
                try:
                    run = await client.read_flow_run(fid)
                except ObjectNotFound:
                    continue
                st = run.state
                if st is None or st.type not in (StateType.RUNNING, StateType.PENDING, StateType.CANCELLING):
                    continue
                new: State = Cancelled(message=reason) if st.type == StateType.CANCELLING else Crashed(message=reason)
                result = await client.set_flow_run_state(fid, new, force=True)
                accepted = result.status.value == "ACCEPT"
                out.append(
                    {
                        "flow_run_id": str(fid),
                        "name": run.name,
                        "was": st.name,
                        "now": new.name if accepted else f"not changed ({result.status.value.lower()})",
                    }
                )
        return out

    return await bounded("marking dead flow runs crashed", go(), timeout)


@task(name="mark-crashed", cache_policy=NO_CACHE)
async def mark_crashed(flow_run_ids: list[str], reason: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The sweep flow's step: :func:`crash_dead_runs`."""
    return await crash_dead_runs(flow_run_ids, reason=reason, timeout=timeout)


# ---------------------------------------------------------------------- finding runs


@dataclass(frozen=True)
class QueuedRun:
    flow_run_id: str
    name: str
    state_type: str | None
    state_name: str | None
    state_message: str | None
    expected_start_time: dt.datetime | None
    final: bool


async def find_session_run(session_id: str, timeout: float) -> QueuedRun | None:
    """The run the console started for ``session_id`` (by its idempotency key), if any."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    async def go() -> QueuedRun | None:
        async with _client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[names.session_key(session_id)])
                ),
                limit=1,
            )
        if not runs:
            return None
        run = runs[0]
        st = run.state
        return QueuedRun(
            flow_run_id=str(run.id),
            name=run.name,
            state_type=st.type.value if st else None,
            state_name=st.name if st else None,
            state_message=st.message if st else None,
            expected_start_time=run.expected_start_time,
            final=bool(st and st.is_final()),
        )

    return await bounded("looking up a session's flow run", go(), timeout)


async def clear_queued(
    category: str, *, reason: str, timeout: float, limit: int = 1000, include_future: bool = False
) -> list[dict[str, Any]]:
    """Cancel the category's session runs waiting to start: Pending (handed to a worker:
    Cancelling) and Scheduled-type runs whose start time has come (Scheduled, Late,
    AwaitingRetry: Cancelled). Scheduled runs still in the future stay unless
    ``include_future``; running runs always stay."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import State, StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.states import Cancelled, Cancelling

    now = dt.datetime.now(dt.UTC)

    async def page(client: Any, state: Any) -> list[Any]:
        due = None
        if state == StateType.SCHEDULED and not include_future:
            due = FlowRunFilterExpectedStartTime(before_=now)
        return await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[names.SESSION_FLOW])),
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[names.category_tag(category)]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])),
                expected_start_time=due,
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=200,  # the API's maximum page
        )

    async def go() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        async with _client() as client:
            for state in (StateType.PENDING, StateType.SCHEDULED):
                while len(out) < limit:
                    runs = [r for r in await page(client, state) if str(r.id) not in seen]
                    if not runs:
                        break
                    out.extend(await cancel_all(client, runs[: limit - len(out)], seen))
        return out

    async def cancel_all(client: Any, runs: list[Any], seen: set[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for run in runs:
            seen.add(str(run.id))
            st = run.state
            new: State[Any] = (
                Cancelling(message=reason) if st and st.type == StateType.PENDING else Cancelled(message=reason)
            )
            result = await client.set_flow_run_state(run.id, new, force=True)
            accepted = result.status.value == "ACCEPT"
            out.append(
                {
                    "flow_run_id": str(run.id),
                    "name": run.name,
                    "was": st.name if st else None,
                    "expected_start_time": run.expected_start_time.isoformat() if run.expected_start_time else None,
                    "now": new.name if accepted else f"not changed ({result.status.value.lower()})",
                }
            )
        return out

    return await bounded(f"clearing the {category} queue", go(), timeout)


async def run_counts(category: str, *, since: dt.datetime, timeout: float) -> dict[str, Any]:
    """Counts of the category's session runs by state, and the latest end times."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateName,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    tag = FlowRunFilterTags(all_=[names.category_tag(category)])
    flows = FlowFilter(name=FlowFilterName(any_=[names.SESSION_FLOW]))
    now = dt.datetime.now(dt.UTC)

    def f(types: list[StateType], **extra: Any) -> FlowRunFilter:
        state_names = extra.pop("names", None)
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=types), name=state_names)
        return FlowRunFilter(tags=tag, state=state, **extra)

    not_retry = FlowRunFilterStateName(not_any_=["AwaitingRetry"])
    filters = {
        "queued_scheduled": f(
            [StateType.SCHEDULED], names=not_retry, expected_start_time=FlowRunFilterExpectedStartTime(before_=now)
        ),
        "upcoming": f(
            [StateType.SCHEDULED], names=not_retry, expected_start_time=FlowRunFilterExpectedStartTime(after_=now)
        ),
        "awaiting_retry": f([StateType.SCHEDULED], names=FlowRunFilterStateName(any_=["AwaitingRetry"])),
        "pending": f([StateType.PENDING]),
        "running": f([StateType.RUNNING]),
        "cancelling": f([StateType.CANCELLING]),
        "completed": f([StateType.COMPLETED], end_time=FlowRunFilterEndTime(after_=since)),
        "failed": f([StateType.FAILED, StateType.CRASHED], end_time=FlowRunFilterEndTime(after_=since)),
        "cancelled": f([StateType.CANCELLED], end_time=FlowRunFilterEndTime(after_=since)),
    }

    async def go() -> dict[str, Any]:
        async with _client() as client:
            keys = list(filters)
            counts = await asyncio.gather(
                *[client.count_flow_runs(flow_filter=flows, flow_run_filter=filters[k]) for k in keys]
            )
            out: dict[str, Any] = dict(zip(keys, counts, strict=True))
            for key, types in (
                ("last_completed_at", [StateType.COMPLETED]),
                ("last_failed_at", [StateType.FAILED, StateType.CRASHED]),
            ):
                runs = await client.read_flow_runs(
                    flow_filter=flows,
                    flow_run_filter=f(types),
                    sort=FlowRunSort.END_TIME_DESC,
                    limit=1,
                )
                out[key] = runs[0].end_time if runs and runs[0].end_time else None
        return out

    return await bounded(f"counting the {category} runs", go(), timeout)


# ---------------------------------------------------------------------- deployments


async def deployment_parameters(deployment: str, timeout: float) -> set[str] | None:
    """The parameter names ``deployment`` accepts (None: the deployment does not say)."""

    async def go() -> set[str] | None:
        async with _client() as client:
            dep = await _read_deployment(client, deployment)
            props = (dep.parameter_openapi_schema or {}).get("properties")
            return set(props) if isinstance(props, dict) else None

    return await bounded(f"reading deployment {deployment}", go(), timeout)


async def _read_deployment(client: Any, deployment: str) -> Any:
    """The deployment ``flow/name``; :class:`NotFoundError` saying to deploy first when missing."""
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_deployment_by_name(deployment)
    except ObjectNotFound:
        raise NotFoundError(
            f"deployment {deployment!r} not found on the Prefect API (deploy first: prefect deploy --all)"
        ) from None


async def deployments_on_work_pool(deployment_names: Sequence[str]) -> list[str]:
    """Those of ``deployment_names`` that exist and are deployed to a work pool."""
    from prefect.exceptions import ObjectNotFound

    out = []
    async with _client() as client:
        for name in deployment_names:
            try:
                dep = await client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if dep.work_pool_name:
                out.append(name)
    return out


async def _category_deployments(client: Any, category: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    return await client.read_deployments(
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[names.category_tag(category)]))
    )


async def pause_schedules(category: str, *, timeout: float) -> list[dict[str, str]]:
    """Pause the deployments tagged ``category:<category>`` that are not paused yet (Prefect
    deletes their auto-scheduled runs). Returns those it paused."""

    async def go() -> list[dict[str, str]]:
        paused: list[dict[str, str]] = []
        async with _client() as client:
            for dep in await _category_deployments(client, category):
                if dep.paused:
                    continue
                await client.pause_deployment(dep.id)
                paused.append({"id": str(dep.id), "name": dep.name})
        return paused

    return await bounded(f"pausing the {category} deployments", go(), timeout)


async def resume_schedules(ids: list[str], *, timeout: float) -> list[dict[str, str]]:
    """Resume the deployments ``ids`` (those a pause paused); gone ones are skipped."""
    from prefect.exceptions import ObjectNotFound

    async def go() -> list[dict[str, str]]:
        resumed: list[dict[str, str]] = []
        async with _client() as client:
            for dep_id in ids:
                try:
                    dep = await client.read_deployment(dep_id)
                    await client.resume_deployment(dep_id)
                except ObjectNotFound:
                    log.warning("deployment %s is gone: not resumed", dep_id)
                    continue
                resumed.append({"id": str(dep.id), "name": dep.name})
        return resumed

    return await bounded("resuming deployments", go(), timeout)


async def category_deployments(category: str, *, timeout: float) -> list[dict[str, Any]]:
    """The deployments tagged ``category:<category>``, with whether each is paused."""

    async def go() -> list[dict[str, Any]]:
        async with _client() as client:
            deps = await _category_deployments(client, category)
        return [{"id": str(d.id), "name": d.name, "paused": bool(d.paused)} for d in deps]

    return await bounded(f"reading the {category} deployments", go(), timeout)


# ------------------------------------------------------------------------- serving


def runner_deployment(
    flow: Any,
    *,
    name: str,
    parameters: dict[str, Any],
    tags: list[str],
    description: str | None,
    crons: Sequence[tuple[str, str]] = (),
) -> Any:
    """``flow`` as a runner deployment (for :func:`serve`) with cron schedules ``(cron, timezone)``."""
    from prefect.client.schemas.schedules import CronSchedule

    schedules = [CronSchedule(cron=cron, timezone=tz) for cron, tz in crons]
    return flow.to_deployment(
        name=name, parameters=parameters, tags=tags, description=description, schedules=schedules or None
    )


def serve(deployments: Sequence[Any], *, limit: int | None) -> None:
    """Serve ``deployments`` from this process until stopped (their schedules stay active when
    it stops: no pause on shutdown)."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments, limit=limit, pause_on_shutdown=False, print_starting_message=False)


__all__ = [
    "SLOT_LEASE_SECONDS",
    "AlertSpec",
    "PoolStatus",
    "QueuedRun",
    "StartedRun",
    "api_url",
    "automation_for",
    "bounded",
    "cancel_run",
    "cancel_watch",
    "category_deployments",
    "clear_queued",
    "crash_dead_runs",
    "create_artifact",
    "deployment_parameters",
    "deployment_pool",
    "deployments_on_work_pool",
    "ensure_automations",
    "ensure_concurrency_limit",
    "ensure_limits",
    "ensure_work_pool",
    "find_session_run",
    "follow_run",
    "hold_slot",
    "mark_crashed",
    "missing_limits",
    "notification_block_id",
    "pause_schedules",
    "ping",
    "read_limit",
    "resume_schedules",
    "run_child",
    "run_counts",
    "runner_deployment",
    "same_automation",
    "serve",
    "start_run",
    "update_progress_artifact",
    "work_pool_status",
]
