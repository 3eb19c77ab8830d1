"""``syncflow sessions list|show|cancel|retry-failed`` and ``syncflow sweep``.

A session and its records print as the one view of :mod:`syncflow.schemas`. Prefect is
reached only lazily inside the commands, through the seam (``tasks.prefect_api``), so
``import syncflow`` stays Prefect-free.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text

from syncflow.book import session_exists
from syncflow.cli import _output as out
from syncflow.errors import ConfigError, IllegalTransitionError
from syncflow.reports.changes import change_lines
from syncflow.reports.sessions import progress_text, unit_of
from syncflow.schemas import RecordView, SessionProgress, session_detail_view, session_view
from syncflow.store import sessions as book
from syncflow.store import sessions as session_svc
from syncflow.store.chats import chat_titles
from syncflow.store.db import session_scope
from syncflow.store.models import RecordStatus, SessionStatus, SyncType
from syncflow.store.session_ids import short_ids

sessions_app = typer.Typer(
    help="Inspect, cancel and retry sync sessions and their per-instance records.", no_args_is_help=True
)


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    sync_type: Annotated[
        str | None,
        typer.Option("--type", help=f"Only this sync type ({', '.join(SyncType.values())}).", show_default=False),
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help=f"Only this category ({out.CATEGORIES}).", show_default=False)
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help=f"Only this status ({', '.join(SessionStatus.values())}).", show_default=False),
    ] = None,
    since: out.SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many sessions (1-1000).")] = 50,
    offset: Annotated[int, typer.Option("--offset", help="Skip this many (paging).")] = 0,
    _json: out.JsonFlag = False,
) -> None:
    """List sessions, newest first, with a "N of TOTAL" footer."""
    with out.store() as session:
        page = session_svc.list_sessions(
            session, sync_type=sync_type, sync_category=category, status=status, since=since, limit=limit, offset=offset
        )
        ids = [s.session_id for s in page.items]
        totals = session_svc.record_totals(session, ids)
        shorts = short_ids(session, ids)
        payload = {
            "items": [session_view(s, totals[s.session_id], shorts[s.session_id]).model_dump() for s in page.items],
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
        }

    def human(p: dict[str, Any]) -> list[RenderableType]:
        table = out.table(
            None,
            ["SESSION ID", "TYPE", "CATEGORY", "STATUS", "STARTED (UTC)", "DURATION", "OK/FAILED/TOTAL", "BY"],
            [
                [
                    s["session_id"],
                    s["sync_type"],
                    s["sync_category"],
                    s["status"],
                    out.fmt_time(s["started_at"]),
                    out.fmt_duration(s["duration_seconds"]),
                    f"{s['successful_instances']}/{s['failed_instances']}/{s['total_instances']}",
                    s["created_by"],
                ]
                for s in p["items"]
            ],
        )
        footer = Text(_page_footer(len(p["items"]), p["total"], p["offset"]))
        return [table, footer] if p["items"] else [footer]

    out.render(ctx, payload, human)


def _page_footer(shown: int, total: int, offset: int) -> str:
    if not shown:
        return f"0 of {total} session(s)"
    footer = f"{shown} of {total} session(s) (rows {offset + 1}-{offset + shown})"
    if offset + shown < total:
        footer += f"; next page: --offset {offset + shown}"
    return footer


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: out.SessionIdArg,
    changes: Annotated[
        int,
        typer.Option(
            "--changes",
            metavar="N",
            min=0,
            help="Per record, show the first N changes of a snapshot sync (accounts, grants, settings, "
            "conversations) and how many more; 0 hides them. --json always has the stored list.",
        ),
    ] = 10,
    _json: out.JsonFlag = False,
) -> None:
    """Show a session, the record of each of its instances, what each changed and, while it runs,
    its progress (done / expected, rate, ETA).

    SESSION_ID may be a unique prefix of the id, like the short ids of the console."""
    from syncflow.errors import NotFoundError

    try:
        with out.store() as session:
            full = out.session_id_of(session, session_id)
    except NotFoundError:
        queued = _queued_session(session_id)
        if queued is None:
            raise
        out.render(ctx, queued, _queued_human)
        return
    with out.store() as session:
        row = session_svc.get_session(session, session_id=full, with_records=True)
        titles = chat_titles(session, [r.instance_id for r in row.records])  # chat instances: the chat's title
        payload = session_detail_view(row, short_id=short_ids(session, [full])[full], titles=titles).model_dump()

    def human(p: dict[str, Any]) -> list[RenderableType]:
        link = out.flow_run_url(p["flow_run_id"])
        fields = out.fields(
            f"session {p['session_id']}",
            [
                ("type", p["sync_type"]),
                ("category", p["sync_category"]),
                ("status", p["status"]),
                ("started (UTC)", out.fmt_time(p["started_at"])),
                ("completed (UTC)", out.fmt_time(p["completed_at"])),
                ("duration", out.fmt_duration(p["duration_seconds"])),
                (
                    "instances",
                    f"{p['total_instances']} ({p['successful_instances']} ok, {p['failed_instances']} failed"
                    + (f", {p['skipped_instances']} skipped)" if p.get("skipped_instances") else ")"),
                ),
                *_session_progress_field(p),
                ("created by", p["created_by"]),
                ("flow run", f"{p['flow_run_id']} ({link})" if link else p["flow_run_id"]),
                ("retry of", p["retry_of"]),
                ("error", p["error_message"]),
                *_metadata_fields(p),
            ],
        )
        records = out.table(
            "instance records",
            [
                "INSTANCE",
                "STATUS",
                "STARTED (UTC)",
                "DURATION",
                "SYNCED",
                "CREATED",
                "UPDATED",
                "UNCHANGED",
                "DELETED",
                "ERROR",
            ],
            [
                [
                    f"{r['instance_name']} ({r['title']})" if r.get("title") else r["instance_name"],
                    r["status"],
                    out.fmt_time(r["started_at"]),
                    out.fmt_duration(r["duration_seconds"]),
                    r["items_synced"],
                    r["items_created"],
                    r["items_updated"],
                    r["items_unchanged"],
                    r["items_deleted"],
                    r["error_message"] or (f"warning: {r['warning']}" if r.get("warning") else None),
                ]
                for r in p["records"]
            ],
        )
        if not p["records"]:
            return [fields, Text("no instance records")]
        notes = _record_notes(p, changes)
        return [fields, records, Text("\n".join(notes))] if notes else [fields, records]

    out.render(ctx, payload, human)


def _metadata_fields(p: dict[str, Any]) -> list[tuple[str, Any]]:
    """A messages session: the metadata session it ran first, and the warnings about it."""
    meta = p.get("metadata_session")
    rows: list[tuple[str, Any]] = []
    if meta:
        rows.append(("metadata first", f"{meta['session_id']} {meta['status']} ({meta['failed_instances']} failed)"))
    rows += [("warning", w) for w in p.get("warnings") or []]
    return rows


def _queued_session(session_id: str) -> dict[str, Any] | None:
    """A session started on a Prefect server (``sync run --deployment``, the console) whose run
    has not opened it in the store yet: found by the run's idempotency key. None when there is
    no such run, no Prefect server (PREFECT_API_URL), or Prefect cannot say."""
    try:
        full = str(uuid.UUID(session_id))
    except ValueError:
        return None
    from syncflow.cli import _runtime

    _runtime.prepare()
    from tasks import prefect_api as pf

    if not pf.api_url():
        return None
    try:
        run = asyncio.run(pf.find_session_run(full, timeout=10))
    except Exception:
        return None
    if run is None or run.final:
        return None
    return {
        "session_id": full,
        "status": "queued",
        "flow_run_id": run.flow_run_id,
        "flow_run_name": run.name,
        "flow_run_state": run.state_name,
        "expected_start_time": run.expected_start_time,
        "records": [],
    }


def _queued_human(p: dict[str, Any]) -> list[RenderableType]:
    link = out.flow_run_url(p["flow_run_id"])
    fields = out.fields(
        f"session {p['session_id']}",
        [
            ("status", "queued (its flow run has not started: no worker has picked it up yet)"),
            ("flow run", f"{p['flow_run_name']} {p['flow_run_id']}" + (f" ({link})" if link else "")),
            ("flow run state", p["flow_run_state"]),
            ("expected start (UTC)", out.fmt_time(p["expected_start_time"])),
        ],
    )
    return [fields]


def _session_progress_field(p: dict[str, Any]) -> list[tuple[str, Any]]:
    if not p.get("progress"):
        return []
    prog = SessionProgress.model_validate(p["progress"])
    return [("progress", progress_text(prog, prog.items_synced, unit_of(p["sync_category"])))]


def _record_notes(p: dict[str, Any], limit: int) -> list[str]:
    """Below the records table: each running record's progress, then each record's changes (the
    first ``limit`` lines and how many more), printed as plain text (a change may contain [brackets])."""
    notes: list[str] = []
    unit = unit_of(p["sync_category"])
    for raw in p["records"]:
        r = RecordView.model_validate(raw)
        name = r.instance_name or str(r.instance_id)
        if r.progress is not None:
            notes.append(f"{name}: {progress_text(r.progress, r.items_synced, unit)}")
        details = r.sync_details or {}
        listed = [str(c) for c in details.get("changes") or []]
        total = details.get("changes_total")
        total = total if isinstance(total, int) else len(listed)
        if not limit or not total:
            continue
        head = (
            f"{name}: {total} change{'s' if total != 1 else ''} "
            f"({r.items_created} created, {r.items_updated} updated, {r.items_deleted} deleted)"
        )
        lines = change_lines(listed, total, limit)
        notes.append("\n".join([head, *(f"  {line}" for line in lines)]))
    return notes


SessionIdArg = out.SessionIdArg


CANCEL_REASON = "cancelled by syncflow sessions cancel"


def cancel_flow_run(flow_run_id: str, *, reason: str = CANCEL_REASON, timeout: float = 30.0) -> str:
    """Best effort: stop the parent run (Prefect API of PREFECT_API_URL, or the ephemeral
    server on Prefect's local database) the way the console does: not started yet ->
    Cancelled, started -> Cancelling. Returns what happened, in words."""
    from tasks import prefect_api as pf

    try:
        return asyncio.run(pf.cancel_run(flow_run_id, reason=reason, timeout=timeout))
    except Exception as exc:  # Prefect unreachable, refused, too slow, ...
        return f"flow run {flow_run_id} not cancelled in Prefect ({out.one_line(str(exc))})"


def cancel_everywhere(session_id: str, *, reason: str | None = None, prefect: bool = True) -> dict[str, Any]:
    """Cancel the session in the store (running syncs stop at their next batch boundary,
    committed batches stay) and, when it has a parent flow run, cancel that run too."""
    reason = reason or CANCEL_REASON
    with session_scope(out.checked_engine()) as s:
        row = book.cancel_session(s, session_id=session_id, reason=reason)
        flow_run_id = row.flow_run_id
        records = {r.instance_name: r.status for r in book.records_in_order(s, session_id=session_id)}
    prefect_msg = None
    if prefect and flow_run_id:
        from syncflow.cli.sync import _quiet_prefect

        _quiet_prefect()
        prefect_msg = cancel_flow_run(flow_run_id, reason=reason)
    return {
        "session_id": session_id,
        "status": SessionStatus.CANCELLED.value,
        "flow_run_id": flow_run_id,
        "prefect": prefect_msg,
        "records": records,
    }


@sessions_app.command("cancel")
def cancel_cmd(
    ctx: typer.Context,
    session_id: SessionIdArg,
    no_prefect: Annotated[
        bool, typer.Option("--no-prefect", help="Only mark it cancelled in the store; leave the Prefect run.")
    ] = False,
    _json: out.JsonFlag = False,
) -> None:
    """Cancel a running session: its instance syncs stop at their next batch boundary, keeping
    every committed batch; the parent Prefect flow run (if any) is moved to Cancelling."""
    with out.store() as s:
        session_id = out.session_id_of(s, session_id)
    payload = cancel_everywhere(session_id, prefect=not no_prefect)

    def human(p: dict[str, Any]) -> str:
        lines = [f"session {p['session_id']} cancelled ({len(p['records'])} record(s))"]
        if p["prefect"]:
            lines.append(p["prefect"])
        elif not p["flow_run_id"]:
            lines.append("no parent flow run recorded: store only")
        return "\n".join(lines)

    out.render(ctx, payload, human)


@sessions_app.command("retry-failed")
def retry_failed_cmd(
    ctx: typer.Context,
    session_id: SessionIdArg,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress display.")] = False,
    _json: out.JsonFlag = False,
) -> None:
    """Run a new session now over only the failed instances of SESSION_ID (linked by retry_of).

    SESSION_ID's statistics stay as they are. Exit status 1 when any instance failed again.
    """
    from syncflow.cli import sync as cli_sync

    with session_scope(out.checked_engine()) as s:  # fail fast, before Prefect starts
        session_id = out.session_id_of(s, session_id)
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
        return new_id if session_exists(new_id) else None

    live = not (quiet or out.opts(ctx).json) and sys.stdout.isatty()
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
    prefect: Annotated[
        bool,
        typer.Option(
            "--prefect/--no-prefect",
            help="Mark the flow runs of the dead processes Crashed in Prefect (default: yes).",
        ),
    ] = True,
    _json: out.JsonFlag = False,
) -> None:
    """Repair what crashed workers left: fail open records of running sessions whose lease ran out
    ("worker lost"), finish their sessions, release expired leases, and mark the flow runs of the
    dead processes Crashed in Prefect. The deployment sweep/every-5-minutes runs the same."""
    from syncflow import book as units

    out.checked_engine()  # a store that was never migrated is refused in one line
    payload = units.sweep(older_than)  # default age: the lease (SYNCFLOW_LOCK_LEASE_SECONDS)
    payload["crashed_flow_runs"], payload["prefect_error"] = [], None
    if prefect and payload["dead_flow_runs"]:
        payload["crashed_flow_runs"], payload["prefect_error"] = crash_flow_runs(payload["dead_flow_runs"])

    def text(p: dict[str, Any]) -> str:
        line = (
            f"swept {len(p['records_failed'])} record(s) (worker lost), finished {len(p['sessions_finished'])} "
            f"session(s), released {p['leases_released']} expired lease(s), "
            f"marked {len(p['crashed_flow_runs'])} flow run(s) crashed"
        )
        if p["prefect_error"]:
            line += f"\nwarning: flow runs not marked crashed in Prefect ({p['prefect_error']}); the next sweep retries"
        return line

    out.render(ctx, payload, text)


def crash_flow_runs(flow_run_ids: list[str], *, timeout: float = 60.0) -> tuple[list[dict[str, Any]], str | None]:
    """Best effort: mark the flow runs of dead processes Crashed (Prefect API of PREFECT_API_URL,
    or the ephemeral server on Prefect's local database); (what changed, why it failed)."""
    from syncflow.book import SWEEP_CRASH_REASON
    from syncflow.cli.sync import _quiet_prefect

    _quiet_prefect()
    from tasks import prefect_api as pf

    try:
        return asyncio.run(pf.crash_dead_runs(flow_run_ids, reason=SWEEP_CRASH_REASON, timeout=timeout)), None
    except Exception as exc:  # Prefect unreachable, refused, too slow, ...
        return [], out.one_line(str(exc))
