"""The parent run's control of its session: the cancellation watcher and the flow-run hooks.

Both are plain functions on purpose, not tasks: the watcher polls every ~2 s for the whole
session (a task run per poll would flood the UI), and the hooks run after the flow's engine
is done with the run. Prefect is read through the seam (``tasks.prefect_api``), the store
through its units of work (``syncflow.book``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from syncflow import book
from syncflow.store.models import SessionStatus
from tasks import prefect_api as pf

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5  # polls (~10 s) between two touches of the session row


async def watch_cancellation(
    session_id: str, flow_run_id: str | None, on_cancel: Callable[[str], None], interval: float = 2.0
) -> None:
    """Until cancelled itself: every ``interval`` s, read the parent run's Prefect state and the
    session's status. When the run is CANCELLING/CANCELLED (Prefect UI, ``prefect flow-run
    cancel``) the session is cancelled in the store, so running syncs stop at their next batch
    boundary; when the session was cancelled (``syncflow sessions cancel``) ``on_cancel`` is
    called with the reason either way. Every ~10 s it also touches the session row: the
    parent's heartbeat, which keeps ``syncflow sweep`` off records still queued for a slot."""
    polls = 0
    async with pf.cancel_watch() as cancel_requested:
        while True:
            await asyncio.sleep(interval)
            polls += 1
            try:
                if polls % HEARTBEAT_EVERY == 0:  # the sweep leaves a live parent's queued records alone
                    await asyncio.to_thread(book.touch, session_id)
                if flow_run_id is not None and await cancel_requested(flow_run_id):
                    reason = f"parent flow run {flow_run_id} was cancelled"
                    await asyncio.to_thread(book.cancel_if_running, session_id, reason)
                    on_cancel(reason)
                    return
                if await asyncio.to_thread(book.session_status, session_id) == SessionStatus.CANCELLED:
                    on_cancel(f"session {session_id} was cancelled")
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must never break the session
                log.warning("cancellation watcher: poll failed", exc_info=True)


def close_on_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_crashed``: fail the run's open records ("parent run crashed") so none stays running."""
    closed = book.close_session_of_run(str(flow_run.id), "failed", f"parent run crashed: {state.message or state.name}")
    if closed:
        log.warning("parent run %s crashed: closed session(s) %s", flow_run.id, ", ".join(closed))


def close_on_cancel(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation``: cancel the run's open records."""
    book.close_session_of_run(str(flow_run.id), "cancelled", f"parent flow run {flow_run.id} was cancelled")


def close_on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure``: a parent that failed before its records ran fails them (no-op when the
    session already finished, e.g. failed because an instance failed)."""
    book.close_session_of_run(str(flow_run.id), "failed", f"parent run failed: {state.message or state.name}")


__all__ = ["close_on_cancel", "close_on_crash", "close_on_failure", "watch_cancellation"]
