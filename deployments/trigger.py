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

from syncflow.names import MANUAL_BATCH, category_tag
from tasks import prefect_api as pf


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


async def trigger_session(
    parameters: dict[str, Any],
    *,
    deployment: str = MANUAL_BATCH,
    idempotency_key: str | None = None,
) -> Triggered:
    """Create a flow run of ``deployment`` (``flow-name/deployment-name``) with ``parameters``
    (the ``sync_session`` flow's), tagged ``category:<category>``, and return without waiting.

    Raises :class:`syncflow.errors.NotFoundError` when the deployment does not exist (run
    ``prefect deploy --all`` first)."""
    session_id = str(parameters.get("session_id") or uuid.uuid4())
    params = {**parameters, "session_id": session_id}
    category = str(params.get("category") or "messages")
    run = await pf.start_run(deployment, params, idempotency_key=idempotency_key, tags=[category_tag(category)])
    return Triggered(session_id, run.flow_run_id, run.name, deployment)
