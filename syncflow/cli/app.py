"""The ``syncflow`` command: the root options and every command group, in one tree.

Each group lives in its own module (``db``, ``instances``, ``sessions``, ``changes``, ``sync``, ``report``,
``deploy``, ``serve``, ``demo``); what they share (options, the error boundary, store access,
parsing, rendering) is :mod:`syncflow.cli._output`. Imports point one way: this module imports
the groups, the groups import ``_output``, never this module.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import RenderableType

from syncflow import __version__, process
from syncflow.cli import _help as _help_fixes  # noqa: F401  (flags print no "<bool>" in --help)
from syncflow.cli import _output as out
from syncflow.cli import changes, db, demo, deploy, gaps, instances, report, serve, sessions, sync, telegram
from syncflow.cli import doctor as doctor_cli
from syncflow.cli import instance_admin as _instance_admin  # noqa: F401  (instances update/check)
from syncflow.settings import get_settings, reset_settings
from syncflow.store import sessions as session_svc
from syncflow.store.models import utcnow

app = typer.Typer(
    name="syncflow",
    cls=out.ErrorBoundary,
    help=(
        "syncflow: sync sessions on Prefect 3, pulling many source instances into one SQL store.\n\n"
        "Manage the store (`db`), the source instances (`instances`, `telegram` for Telegram accounts), "
        "inspect sync sessions (`sessions`, `stats`), ask what changed (`changes`), see the seq holes and "
        "their repair (`gaps`) and delete old sessions (`cleanup`)."
    ),
    epilog=(
        "The store is SYNCFLOW_DATABASE_URL (default: SQLite file syncflow.db under SYNCFLOW_HOME, "
        "itself .syncflow by default). Errors print one line `error: ...` on stderr and exit 1; "
        "usage errors exit 2."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db.db_app, name="db")
app.add_typer(instances.instances_app, name="instances")
app.add_typer(sessions.sessions_app, name="sessions")
app.add_typer(sync.sync_app, name="sync")
app.add_typer(report.report_app, name="report")
app.add_typer(serve.api_app, name="api")
app.add_typer(telegram.telegram_app, name="telegram")
app.add_typer(gaps.gaps_app, name="gaps")
app.command("sweep")(sessions.sweep_cmd)
app.command("changes")(changes.changes_cmd)
app.command("demo")(demo.demo)
app.command("setup")(deploy.setup_cmd)
app.command("runner")(deploy.runner_cmd)
app.command("serve")(serve.serve_cmd)
app.command("doctor")(doctor_cli.doctor_cmd)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"syncflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help=(
                "SQLAlchemy URL of the sync store, e.g. sqlite:///path/syncflow.db or "
                "postgresql+psycopg://user@host/db. Overrides SYNCFLOW_DATABASE_URL."
            ),
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print machine-readable JSON (times in ISO-8601 UTC) instead of tables, for scripts. "
            "Every command also accepts --json after its name.",
        ),
    ] = False,
    _traceback: Annotated[  # read by main(), which runs outside the command
        bool, typer.Option("--traceback", help="Show the Python traceback of an unexpected error (bug reports).")
    ] = False,
    _version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print syncflow's version and exit."),
    ] = False,
) -> None:
    if database_url is not None:
        os.environ["SYNCFLOW_DATABASE_URL"] = database_url
        reset_settings()
    ctx.obj = out.Options(json=as_json)


# ------------------------------------------------------------------ stats, cleanup


@app.command("stats")
def stats(
    ctx: typer.Context,
    since: out.SinceOpt = None,
    _json: out.JsonFlag = False,
) -> None:
    """Session statistics: counts by type x category x status, success rate, durations, records by status.

    Without --since, over every session in the store.
    """
    with out.store() as session:
        payload = session_svc.get_statistics(session, since=since).as_dict() | {"since": since}

    def human(p: dict[str, Any]) -> str | list[RenderableType]:
        scope = f" since {out.fmt_time(p['since'])} UTC" if p["since"] else ""
        if not p["total_sessions"]:
            return f"no sessions{scope}"
        breakdown = out.table(
            f"{p['total_sessions']} session(s){scope}",
            ["TYPE", "CATEGORY", "STATUS", "COUNT"],
            [[b["sync_type"], b["sync_category"], b["status"], b["count"]] for b in p["breakdown"]],
        )
        rate = p["success_rate"]
        d = p["duration_seconds"]
        summary = out.fields(
            "summary",
            [
                ("success rate", "-" if rate is None else f"{rate:.1%} (completed / (completed + failed))"),
                ("duration avg", out.fmt_duration(d.get("avg"))),
                ("duration p50", out.fmt_duration(d.get("p50"))),
                ("duration p95", out.fmt_duration(d.get("p95"))),
                ("duration max", out.fmt_duration(d.get("max"))),
            ],
        )
        records = out.table("instance records", ["STATUS", "COUNT"], sorted(p["instances"].items()))
        return [breakdown, summary, records]

    out.render(ctx, payload, human)


@app.command("cleanup")
def cleanup(
    ctx: typer.Context,
    older_than: Annotated[
        dt.timedelta | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            parser=out.parse_age,
            help=f"Delete sessions that finished longer ago than this: {out.AGE_HELP}. "
            "Default: SYNCFLOW_RETENTION_DAYS (30) days.",
            show_default=False,
        ),
    ] = None,
    _json: out.JsonFlag = False,
) -> None:
    """Delete finished sessions (completed, failed, cancelled) older than an age, with their instance records.

    Running sessions are never deleted; synced data stays.
    """
    age = older_than if older_than is not None else dt.timedelta(days=get_settings().retention_days)
    cutoff = utcnow() - age
    with out.store() as session:
        # cleanup_sessions counts whole days back from `now`; an age in hours goes through `now`.
        deleted = session_svc.cleanup_sessions(session, older_than_days=0, now=cutoff)
    payload = {"deleted": deleted, "older_than_seconds": age.total_seconds(), "cutoff": cutoff}
    out.render(
        ctx,
        payload,
        lambda p: (
            f"deleted {p['deleted']} finished session(s) completed before {out.fmt_time(p['cutoff'])} UTC, "
            "with their instance records"
        ),
    )


# ------------------------------------------------------------------------ entry


def main() -> None:
    """Console entry point (``syncflow``, ``python -m syncflow``).

    Expected errors are handled in :class:`out.ErrorBoundary`; anything reaching here is a bug, reported
    in one line unless ``--traceback`` was given.
    """
    process.freeze_loaded()  # SQLAlchemy, pydantic, typer, rich: ~50,000 objects
    process.end_without_final_collections()
    try:
        app(prog_name="syncflow")
    except Exception as exc:
        if "--traceback" in sys.argv[1:]:
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {out.one_line(str(exc))} "
            "(a bug: rerun with `syncflow --traceback ...` and report it)",
            err=True,
        )
        from syncflow.cli import _runtime

        _runtime.mention_log()  # e.g. Prefect's temporary server did not start: its output is there
        raise SystemExit(1) from None
