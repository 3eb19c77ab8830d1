"""Start a session as a flow run of a deployment and return at once.

Used by ``syncflow sync run --deployment`` and the HTTP API. The session id is chosen here
(a UUID passed as the flow's ``session_id`` parameter), so the caller can follow the session
in the store as soon as a worker picks the run up; until then only the flow run exists
(state Scheduled/Pending in Prefect).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

MANUAL_BATCH = "sync-session/manual-batch"


@dataclass(frozen=True)
class Triggered:
    session_id: str
    flow_run_id: str
    flow_run_name: str
    deployment: str

    def as_dict(self) -> dict[str, str]:
        return {
            "session_id": self.session_id,
            "flow_run_id": self.flow_run_id,
            "flow_run_name": self.flow_run_name,
            "deployment": self.deployment,
        }


def category_tag(category: str) -> str:
    """The tag every session run of ``category`` carries (queue admin filters runs by it).

    Not ``sync:<category>``: that name is the concurrency limit's tag, and a tag limit
    would also take slots for the task runs of the parent."""
    return f"category:{category}"


async def trigger_session(
    parameters: dict[str, Any],
    *,
    deployment: str = MANUAL_BATCH,
    idempotency_key: str | None = None,
) -> Triggered:
    """Create a flow run of ``deployment`` (``flow-name/deployment-name``) with ``parameters``
    (the ``sync_session`` flow's) and return without waiting for it.

    Raises :class:`syncflow.errors.NotFoundError` when the deployment does not exist (run
    ``prefect deploy --all`` first)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from syncflow.errors import NotFoundError

    session_id = str(parameters.get("session_id") or uuid.uuid4())
    params = {**parameters, "session_id": session_id}
    category = str(params.get("category") or "messages")
    try:
        run = await run_deployment(
            deployment,
            parameters=params,
            timeout=0,
            as_subflow=False,
            idempotency_key=idempotency_key,
            tags=[category_tag(category)],
        )
    except ObjectNotFound:
        raise NotFoundError(
            f"deployment {deployment!r} not found on the Prefect API (deploy first: prefect deploy --all)"
        ) from None
    return Triggered(session_id, str(run.id), run.name, deployment)
