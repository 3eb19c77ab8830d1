"""Publishing to the Prefect UI (Artifacts): a session's progress while it runs, then its
summary and records table, rendered by :mod:`syncflow.reports.sessions` from the one view;
an instance sync's progress (long syncs only) and a snapshot's change list
(:mod:`syncflow.reports.changes`). Plain coroutines: a task run per call costs events and API
calls that an artifact does not need (the artifacts belong to the flow run that publishes them)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from syncflow import book, names
from syncflow.book import PlannedSession
from syncflow.engine import InstanceRun, Stored
from syncflow.reports.changes import changes_key, changes_markdown
from syncflow.reports.sessions import (
    progress_text,
    records_table,
    session_progress_description,
    summary_markdown,
    unit_of,
)
from syncflow.schemas import SessionDetailView, measure_progress
from tasks import prefect_api as pf

log = logging.getLogger(__name__)


async def create_progress(plan: PlannedSession) -> Any:
    return await pf.create_artifact(
        "progress",
        0.0,
        key=names.progress_artifact_key(plan.session_id),
        description=f"session {plan.session_id} ({plan.category}): instances done / {len(plan.records)}",
    )


DESCRIBE_EVERY = 2.0  # seconds between two reads of the session for the description (the last one always)
PATCH_EVERY = 2.0  # seconds between two updates of the artifact (the last one always): one API call each


@dataclass
class _Published:
    """What a session progress artifact shows: updates of one artifact go one at a time, and a
    count older than the one shown is dropped (instances finish concurrently)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    done: int = -1
    described: float = 0.0
    patched: float | None = None


_published: dict[str, _Published] = {}


async def update_progress(artifact_id: Any, done: int, total: int, session_id: str | None = None) -> None:
    """Plain coroutine (one call per finished instance; a task run each would flood the UI).
    The artifact is updated at most every :data:`PATCH_EVERY` seconds (a count that comes
    sooner is left for the next one) and always for the last instance.

    With ``session_id`` the description also says the items done / expected, rate and ETA
    (:func:`syncflow.reports.sessions.session_progress_description`), read from the store at
    most every :data:`DESCRIBE_EVERY` seconds and on the last instance."""
    key = str(artifact_id)
    shown = _published.setdefault(key, _Published())
    last = done >= total
    try:
        async with shown.lock:
            if done <= shown.done:  # a later count is already shown
                return
            if not last and shown.patched is not None and time.monotonic() - shown.patched < PATCH_EVERY:
                return
            shown.done = done
            shown.patched = time.monotonic()
            description = None
            if session_id is not None and (last or time.monotonic() - shown.described >= DESCRIBE_EVERY):
                shown.described = time.monotonic()
                try:
                    view = await asyncio.to_thread(book.session_detail, session_id)
                    description = session_progress_description(view, done, total)
                except Exception:  # the count still goes out
                    log.warning("could not read session %s for its progress description", session_id, exc_info=True)
            for attempt in range(2 if last else 1):  # the final state is worth a second try
                try:
                    await pf.update_progress_artifact(
                        artifact_id, 100.0 * done / total if total else 100.0, description=description
                    )
                    break
                except Exception:  # progress is cosmetic
                    log.warning("could not update the session progress artifact", exc_info=True)
                    if attempt == 0 and last:
                        await asyncio.sleep(0.5)
    finally:
        if last:
            _published.pop(key, None)


async def publish_artifacts(view: SessionDetailView) -> None:
    """The session's markdown summary and a table of its records (Prefect UI, Artifacts)."""
    sid = view.session_id
    await pf.create_artifact(
        "markdown",
        summary_markdown(view),
        key=names.summary_artifact_key(sid),
        description=f"session {sid}: {view.status}",
    )
    await pf.create_artifact(
        "table",
        records_table(view),
        key=names.records_artifact_key(sid),
        description=f"session {sid}: instance records",
    )


async def show_progress(
    artifact_id: Any,
    *,
    run: InstanceRun,
    done: int,
    remaining: int | None,
    batches: int | None = None,
    elapsed: float | None = None,
) -> Any:
    """The run's progress artifact: created on first call, then updated; its description says
    items stored / expected (the source's totalCount), rate and ETA once a batch was measured
    (:func:`syncflow.schemas.measure_progress`, as the CLI and the console).

    Only syncs longer than one chunk get one: an artifact is an API call, and a short sync's
    progress is its final state."""
    p = measure_progress(done=done, remaining=remaining, batches=batches, elapsed=elapsed)
    description = f"{run.category} of {run.instance_name}: {progress_text(p, done, unit_of(run.category))}"
    if artifact_id is None:
        artifact_id = await pf.create_artifact("progress", 0.0, description=description)
    percent = p.percent if p.percent is not None else (100.0 if remaining == 0 else 0.0)
    await pf.update_progress_artifact(artifact_id, percent, description=description)
    return artifact_id


async def publish_changes(run: InstanceRun, stored: Stored) -> None:
    """A markdown artifact of what a snapshot changed, keyed per (category, instance) so its
    versions line up in the UI; nothing when nothing changed."""
    if not stored.changes_total:
        return
    await pf.create_artifact(
        "markdown",
        changes_markdown(run.category, run.instance_name, run.session_id, stored),
        key=changes_key(run.category, run.instance_name, run.instance_id),
        description=f"{run.category} changes of {run.instance_name}",
    )


__all__ = ["create_progress", "publish_artifacts", "publish_changes", "show_progress", "update_progress"]
