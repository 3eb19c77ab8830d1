"""Session control commands: ``syncflow sessions cancel``, ``sessions retry-failed``, ``sweep``.

Like ``cli_sync``, these reach Prefect only lazily inside the commands (``import syncflow``
stays Prefect-free).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Annotated, Any

import typer
from sqlalchemy import select

from syncflow import cli as base
from syncflow import sessions as book
from syncflow.db import session_scope
from syncflow.errors import ConfigError, IllegalTransitionError
from syncflow.models import RecordStatus, SessionStatus, SyncSession
from syncflow.settings import get_settings

SessionIdArg = Annotated[str, typer.Argument(metavar="SESSION_ID", help="The session's id.", show_default=False)]


async def _cancel_run(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return f"flow run {flow_run_id} already {run.state.type.value.lower()}"
        if run.state is not None and run.state.type == StateType.CANCELLING:
            return f"flow run {flow_run_id} already cancelling"
        result = await client.set_flow_run_state(
            flow_run_id, Cancelling(message="cancelled by syncflow sessions cancel")
        )
        return f"flow run {flow_run_id}: {result.status.value.lower()} -> cancelling"


def cancel_flow_run(flow_run_id: str, *, timeout: float = 30.0) -> str:
    """Best effort: move the parent run to Cancelling (Prefect API of PREFECT_API_URL, or the
    ephemeral server on Prefect's local database). Returns what happened, in words."""
    try:
        return asyncio.run(asyncio.wait_for(_cancel_run(flow_run_id), timeout))
    except Exception as exc:  # Prefect unreachable, unknown run, ...
        return f"flow run {flow_run_id} not cancelled in Prefect ({type(exc).__name__}: {base._one_line(str(exc))})"


def cancel_everywhere(session_id: str, *, reason: str | None = None, prefect: bool = True) -> dict[str, Any]:
    """Cancel the session in the store (running syncs stop at their next batch boundary,
    committed batches stay) and, when it has a parent flow run, cancel that run too."""
    with session_scope(base._checked_engine()) as s:
        row = book.cancel_session(s, session_id=session_id, reason=reason or "cancelled by syncflow sessions cancel")
        flow_run_id = row.flow_run_id
        records = {r.instance_name: r.status for r in book.records_in_order(s, session_id=session_id)}
    prefect_msg = None
    if prefect and flow_run_id:
        from syncflow.cli_sync import _quiet_prefect

        _quiet_prefect()
        prefect_msg = cancel_flow_run(flow_run_id)
    return {
        "session_id": session_id,
        "status": SessionStatus.CANCELLED.value,
        "flow_run_id": flow_run_id,
        "prefect": prefect_msg,
        "records": records,
    }


def cancel_cmd(
    ctx: typer.Context,
    session_id: SessionIdArg,
    no_prefect: Annotated[
        bool, typer.Option("--no-prefect", help="Only mark it cancelled in the store; leave the Prefect run.")
    ] = False,
    _json: base.JsonFlag = False,
) -> None:
    """Cancel a running session: its instance syncs stop at their next batch boundary, keeping
    every committed batch; the parent Prefect flow run (if any) is moved to Cancelling."""
    payload = cancel_everywhere(session_id, prefect=not no_prefect)

    def human(p: dict[str, Any]) -> str:
        lines = [f"session {p['session_id']} cancelled ({len(p['records'])} record(s))"]
        if p["prefect"]:
            lines.append(p["prefect"])
        elif not p["flow_run_id"]:
            lines.append("no parent flow run recorded: store only")
        return "\n".join(lines)

    base._render(ctx, payload, human)


def retry_failed_cmd(
    ctx: typer.Context,
    session_id: SessionIdArg,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress display.")] = False,
    _json: base.JsonFlag = False,
) -> None:
    """Run a new session now over only the failed instances of SESSION_ID (linked by retry_of).

    SESSION_ID's statistics stay as they are. Exit status 1 when any instance failed again.
    """
    from syncflow import cli_sync

    with session_scope(base._checked_engine()) as s:  # fail fast, before Prefect starts
        old = book.get_session(s, session_id=session_id, with_records=True)
        if old.status == SessionStatus.RUNNING:
            raise IllegalTransitionError(f"session {session_id} is still running")
        if not any(r.status == RecordStatus.FAILED for r in old.records):
            raise ConfigError(f"session {session_id} has no failed instance to retry")
        category = old.sync_category
    cli_sync._quiet_prefect()
    from flows.session_sync import sync_session

    new_id = str(uuid.uuid4())

    async def go() -> Any:
        return await sync_session(
            retry_of=session_id, created_by=cli_sync._creator(), session_id=new_id, return_state=True
        )

    def find() -> str | None:
        with session_scope() as s:
            return s.scalar(select(SyncSession.session_id).where(SyncSession.session_id == new_id))

    live = not (quiet or base._opts(ctx).json) and sys.stdout.isatty()
    state = cli_sync.run_with_progress(go, find_session=find, quiet=not live, category=category)
    if find() is None:
        message = getattr(state, "message", None) or "the retry session did not start"
        try:
            state.result()
        except Exception as exc:
            message = str(exc)
        raise ConfigError(message)
    raise typer.Exit(cli_sync._final(ctx, new_id))


def sweep_cmd(
    ctx: typer.Context,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            metavar="SECONDS",
            min=0,
            help="Only records not updated for this long (default: the lease, SYNCFLOW_LOCK_LEASE_SECONDS).",
            show_default=False,
        ),
    ] = None,
    _json: base.JsonFlag = False,
) -> None:
    """Repair what crashed workers left: fail open records of running sessions whose lease ran out
    ("worker lost"), finish their sessions, release expired leases."""
    seconds = older_than if older_than is not None else float(get_settings().lock_lease_seconds)
    with session_scope(base._checked_engine()) as s:
        payload = book.sweep(s, older_than_seconds=seconds).as_dict()
    base._render(
        ctx,
        payload,
        lambda p: (
            f"swept {len(p['records_failed'])} record(s) (worker lost), finished {len(p['sessions_finished'])} "
            f"session(s), released {p['leases_released']} expired lease(s)"
        ),
    )


def register(app: typer.Typer) -> None:
    base.sessions_app.command("cancel")(cancel_cmd)
    base.sessions_app.command("retry-failed")(retry_failed_cmd)
    app.command("sweep")(sweep_cmd)
