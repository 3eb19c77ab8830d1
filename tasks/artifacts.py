"""Publishing a session to the Prefect UI (Artifacts): its progress while it runs, then its
summary and records table, rendered by :mod:`syncflow.reports.sessions` from the one view."""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from syncflow import names
from syncflow.reports.sessions import records_table, summary_markdown
from syncflow.schemas import SessionDetailView
from syncflow.store.book import PlannedSession

log = logging.getLogger(__name__)


@task(name="create-session-progress", cache_policy=NO_CACHE)
async def create_progress(plan: PlannedSession) -> Any:
    return await acreate_progress_artifact(
        progress=0.0,
        key=names.progress_artifact_key(plan.session_id),
        description=f"session {plan.session_id} ({plan.category}): instances done / {len(plan.records)}",
    )


async def update_progress(artifact_id: Any, done: int, total: int) -> None:
    """Plain coroutine (one call per finished instance; a task run each would flood the UI)."""
    try:
        await aupdate_progress_artifact(artifact_id, progress=100.0 * done / total if total else 100.0)
    except Exception:  # progress is cosmetic
        log.warning("could not update the session progress artifact", exc_info=True)


@task(name="publish-session-artifacts", cache_policy=NO_CACHE)
async def publish_artifacts(view: SessionDetailView) -> None:
    """The session's markdown summary and a table of its records (Prefect UI, Artifacts)."""
    sid = view.session_id
    await acreate_markdown_artifact(
        summary_markdown(view), key=names.summary_artifact_key(sid), description=f"session {sid}: {view.status}"
    )
    await acreate_table_artifact(
        records_table(view), key=names.records_artifact_key(sid), description=f"session {sid}: instance records"
    )


__all__ = ["create_progress", "publish_artifacts", "update_progress"]
