"""The console's calls to Prefect (the API of PREFECT_API_URL), each bounded by a timeout.

Prefect is imported lazily inside the functions: importing ``syncflow.api`` stays cheap.
Errors of the Prefect API become :class:`PrefectUnavailable` (answered 502 by the API).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from syncflow.errors import SyncflowError

log = logging.getLogger(__name__)

T = TypeVar("T")

SESSION_FLOW = "sync-session"


class PrefectUnavailable(SyncflowError):
    """The Prefect API could not be reached or refused a request."""


def category_tag(category: str) -> str:
    from deployments.trigger import category_tag as tag

    return tag(category)


def session_key(session_id: str) -> str:
    """The idempotency key of the run the console starts for ``session_id`` (lets the console
    find a run that has not opened its session yet)."""
    return f"syncflow-session:{session_id}"


async def _bounded(what: str, coro: Awaitable[T], timeout: float) -> T:
    try:
        return await asyncio.wait_for(coro, timeout)
    except SyncflowError:
        raise
    except TimeoutError:
        raise PrefectUnavailable(f"Prefect API: {what} took more than {timeout:.0f} s") from None
    except Exception as exc:  # HTTP errors, refused connections, an object gone meanwhile, ...
        msg = " ".join(str(exc).split())[:300]
        raise PrefectUnavailable(f"Prefect API: {what} failed: {type(exc).__name__}: {msg}") from exc


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client()


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


# ---------------------------------------------------------------------- triggering


@dataclass(frozen=True)
class QueuedRun:
    flow_run_id: str
    name: str
    state_type: str | None
    state_name: str | None
    state_message: str | None
    expected_start_time: dt.datetime | None
    final: bool


async def trigger(parameters: dict[str, Any], *, deployment: str, idempotency_key: str | None, timeout: float) -> Any:
    from deployments.trigger import trigger_session

    return await _bounded(
        f"starting a run of {deployment}",
        trigger_session(parameters, deployment=deployment, idempotency_key=idempotency_key),
        timeout,
    )


async def deployment_parameters(deployment: str, timeout: float) -> set[str] | None:
    """The parameter names ``deployment`` accepts (None: the deployment does not say)."""
    from syncflow.errors import NotFoundError

    async def go() -> set[str] | None:
        from prefect.exceptions import ObjectNotFound

        async with _client() as client:
            try:
                dep = await client.read_deployment_by_name(deployment)
            except ObjectNotFound:
                raise NotFoundError(
                    f"deployment {deployment!r} not found on the Prefect API (deploy first: prefect deploy --all)"
                ) from None
            props = (dep.parameter_openapi_schema or {}).get("properties")
            return set(props) if isinstance(props, dict) else None

    return await _bounded(f"reading deployment {deployment}", go(), timeout)


async def find_session_run(session_id: str, timeout: float) -> QueuedRun | None:
    """The run the console started for ``session_id`` (by its idempotency key), if any."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    async def go() -> QueuedRun | None:
        async with _client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[session_key(session_id)])
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

    return await _bounded("looking up a session's flow run", go(), timeout)


# ---------------------------------------------------------------------- cancelling


async def cancel_run(flow_run_id: str, *, reason: str, timeout: float) -> str:
    """Stop a flow run: a run that has not started is Cancelled at once, a started one goes to
    Cancelling (its worker or runner kills it). Returns what happened, in words."""
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

    return await _bounded(f"cancelling flow run {flow_run_id}", go(), timeout)


async def clear_queued(category: str, *, reason: str, timeout: float, limit: int = 1000) -> list[dict[str, Any]]:
    """Cancel the category's session runs that have not started (Scheduled, Late,
    AwaitingRetry: Cancelled; Pending, i.e. handed to a worker: Cancelling). Running runs stay."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.states import Cancelled, Cancelling

    async def page(client: Any) -> list[Any]:
        return await client.read_flow_runs(  # type: ignore[no-any-return]
            flow_filter=FlowFilter(name=FlowFilterName(any_=[SESSION_FLOW])),
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[category_tag(category)]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])),
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=200,  # the API's maximum page
        )

    async def go() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        async with _client() as client:
            while len(out) < limit:
                runs = [r for r in await page(client) if str(r.id) not in seen]
                if not runs:
                    break
                out.extend(await cancel_all(client, runs[: limit - len(out)], seen))
        return out

    async def cancel_all(client: Any, runs: list[Any], seen: set[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for run in runs:
            seen.add(str(run.id))
            st = run.state
            new = Cancelling(message=reason) if st and st.type == StateType.PENDING else Cancelled(message=reason)
            result = await client.set_flow_run_state(run.id, new, force=True)
            accepted = result.status.value == "ACCEPT"
            out.append(
                {
                    "flow_run_id": str(run.id),
                    "name": run.name,
                    "was": st.name if st else None,
                    "now": new.name if accepted else f"not changed ({result.status.value.lower()})",
                }
            )
        return out

    return await _bounded(f"clearing the {category} queue", go(), timeout)


# ---------------------------------------------------------------------- queue stats


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

    tag = FlowRunFilterTags(all_=[category_tag(category)])
    flows = FlowFilter(name=FlowFilterName(any_=[SESSION_FLOW]))
    now = dt.datetime.now(dt.UTC)

    def f(types: list[StateType], **extra: Any) -> FlowRunFilter:
        names = extra.pop("names", None)
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=types), name=names)
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

    return await _bounded(f"counting the {category} runs", go(), timeout)


# ---------------------------------------------------------------------- pause / resume


async def pause_schedules(category: str, *, timeout: float) -> list[dict[str, str]]:
    """Pause the deployments tagged ``category:<category>`` that are not paused yet (Prefect
    deletes their auto-scheduled runs). Returns those it paused."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    async def go() -> list[dict[str, str]]:
        paused: list[dict[str, str]] = []
        async with _client() as client:
            deps = await client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[category_tag(category)]))
            )
            for dep in deps:
                if dep.paused:
                    continue
                await client.pause_deployment(dep.id)
                paused.append({"id": str(dep.id), "name": dep.name})
        return paused

    return await _bounded(f"pausing the {category} deployments", go(), timeout)


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

    return await _bounded("resuming deployments", go(), timeout)


async def category_deployments(category: str, *, timeout: float) -> list[dict[str, Any]]:
    """The deployments tagged ``category:<category>``, with whether each is paused."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    async def go() -> list[dict[str, Any]]:
        async with _client() as client:
            deps = await client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[category_tag(category)]))
            )
        return [{"id": str(d.id), "name": d.name, "paused": bool(d.paused)} for d in deps]

    return await _bounded(f"reading the {category} deployments", go(), timeout)


class DeploymentMissing(SyncflowError):
    """The deployment the console runs sessions as does not exist on the Prefect API."""
