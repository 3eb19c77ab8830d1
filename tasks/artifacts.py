"""Publishing to the Prefect UI (Artifacts): a session's progress while it runs, then its
summary and records table, rendered by :mod:`syncflow.reports.sessions` from the one view;
an instance sync's progress (long syncs only) and a snapshot's change list
(:mod:`syncflow.reports.changes`). Plain coroutines where a task run per call would flood the UI."""

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
from syncflow.book import PlannedSession
from syncflow.engine import InstanceRun, Stored
from syncflow.reports.changes import changes_key, changes_markdown
from syncflow.reports.sessions import records_table, summary_markdown
from syncflow.schemas import SessionDetailView

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


async def show_progress(artifact_id: Any, *, run: InstanceRun, done: int, remaining: int | None) -> Any:
    """The run's progress artifact (items stored / to fetch): created on first call, then updated.

    Only syncs longer than one chunk get one: an artifact is an API call, and a short sync's
    progress is its final state."""
    if artifact_id is None:
        artifact_id = await acreate_progress_artifact(
            progress=0.0, description=f"{run.category} of {run.instance_name}: items stored / to fetch"
        )
    total = done + (remaining or 0)
    await aupdate_progress_artifact(artifact_id, progress=100.0 * done / total if total else 100.0)
    return artifact_id


async def publish_changes(run: InstanceRun, stored: Stored) -> None:
    """A markdown artifact of what a snapshot changed, keyed per (category, instance) so its
    versions line up in the UI; nothing when nothing changed."""
    if not stored.changes_total:
        return
    await acreate_markdown_artifact(
        markdown=changes_markdown(run.category, run.instance_name, run.session_id, stored),
        key=changes_key(run.category, run.instance_name, run.instance_id),
        description=f"{run.category} changes of {run.instance_name}",
    )


__all__ = ["create_progress", "publish_artifacts", "publish_changes", "show_progress", "update_progress"]
