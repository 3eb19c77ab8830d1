"""The console's calls to Prefect (the API of PREFECT_API_URL), each bounded by a timeout.

Every call is the seam's (``tasks.prefect_api``); errors of the Prefect API become
:class:`PrefectUnavailable` (answered 502 by the API), a missing deployment to run
:class:`DeploymentMissing` (503).
"""

from __future__ import annotations

from typing import Any

from syncflow.errors import DeploymentMissing, NotFoundError, PrefectUnavailable
from tasks.prefect_api import (
    QueuedRun,
    bounded,
    cancel_run,
    category_deployments,
    clear_queued,
    deployment_parameters,
    find_session_run,
    pause_schedules,
    ping,
    resume_schedules,
    run_counts,
)


async def trigger(parameters: dict[str, Any], *, deployment: str, idempotency_key: str | None, timeout: float) -> Any:
    """Start a run of ``deployment`` (:func:`deployments.trigger.trigger_session`); a missing
    deployment is the server's configuration, not the request: :class:`DeploymentMissing`."""
    from deployments.trigger import trigger_session

    try:
        return await bounded(
            f"starting a run of {deployment}",
            trigger_session(parameters, deployment=deployment, idempotency_key=idempotency_key),
            timeout,
        )
    except NotFoundError as exc:
        raise DeploymentMissing(str(exc)) from None


__all__ = [
    "DeploymentMissing",
    "PrefectUnavailable",
    "QueuedRun",
    "cancel_run",
    "category_deployments",
    "clear_queued",
    "deployment_parameters",
    "find_session_run",
    "pause_schedules",
    "ping",
    "resume_schedules",
    "run_counts",
    "trigger",
]
