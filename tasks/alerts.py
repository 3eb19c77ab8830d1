"""The event behind the "instance failing N runs in a row" alert.

When an instance sync fails, :func:`instance_failed` counts how many of that instance's
latest syncs of the category failed in a row (:func:`syncflow.engine.streaks.failure_streak`)
and emits ``syncflow.instance.failed`` for resource ``syncflow.instance.<name>`` with the count
as label ``syncflow.consecutive-failures``. The automation ``syncflow setup --alerts`` creates
matches the count N, so it fires once per streak, when the N-th failure in a row happens.
The error text in the payload is the record's (sources never put secrets in it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from syncflow import names
from syncflow.engine.streaks import failure_streak

log = logging.getLogger(__name__)


async def instance_failed(
    *, instance_id: int, instance: str, category: str, session_id: str, error: str | None
) -> int | None:
    """Emit the failure event; returns the streak (None when it could not be told). Never
    raises: an alert must not fail the sync."""
    try:
        streak = await asyncio.to_thread(failure_streak, instance_id, category)
        from prefect.events import emit_event

        resource: dict[str, Any] = {
            "prefect.resource.id": f"{names.INSTANCE_RESOURCE_PREFIX}{instance}",
            "prefect.resource.name": instance,
            "syncflow.category": category,
            names.STREAK_LABEL: str(streak),
        }
        emit_event(
            event=names.INSTANCE_FAILED_EVENT,
            resource=resource,
            payload={
                "session_id": session_id,
                "category": category,
                "consecutive_failures": streak,
                "error": (error or "")[:500],
            },
        )
        return streak
    except Exception:  # the store or the events client: log, never fail the sync
        log.warning("could not emit %s for %s", names.INSTANCE_FAILED_EVENT, instance, exc_info=True)
        return None


__all__ = ["instance_failed"]
