"""The ``syncflow`` command line: the sync store, instances, sessions, statistics, cleanup.

Layout of this module, top to bottom:

* global state (``--json``, ``--database-url``) and the error boundary (:class:`_Group`):
  every :class:`~syncflow.errors.SyncflowError` and database error becomes one line
  ``error: ...`` on stderr and exit code 1, never a traceback;
* store access (:func:`_store`: ``session_scope()`` on a checked engine), argument parsers,
  payload builders (plain dicts, which are also the ``--json`` output) and :func:`_render`;
* the command groups: ``db``, ``instances``, ``sessions``, then ``stats`` and ``cleanup``.

Commands build their payload inside ``session_scope()`` and print it only after the
transaction committed, so a printed "added"/"removed" is always true.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pydantic
import typer
from alembic.util.exc import CommandError as AlembicCommandError
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from typer.core import TyperGroup

from syncflow import __version__, migrations
from syncflow import instances as instance_svc
from syncflow import sessions as session_svc
from syncflow.db import get_engine, session_scope
from syncflow.errors import AlreadyExistsError, ConfigError, SyncflowError
from syncflow.models import (
    Category,
    Instance,
    InstanceKind,
    SessionStatus,
    SyncConfigItem,
    SyncInstanceRecord,
    SyncSession,
    SyncType,
    utcnow,
)
from syncflow.settings import get_settings, reset_settings

UPGRADE_HINT = "run `syncflow db upgrade`"

# ----------------------------------------------------------------------- global state


@dataclass
class _Options:
    """Options of the root command, shared with every subcommand through ``ctx.obj``."""

    json: bool = False


def _opts(ctx: typer.Context) -> _Options:
    found = ctx.find_object(_Options)
    return found if found is not None else _Options()


def _enable_json(ctx: typer.Context, value: bool) -> None:
    if value:
        ctx.ensure_object(_Options).json = True


JSON_HELP = "Print machine-readable JSON (times in ISO-8601 UTC) instead of tables; same as `syncflow --json ...`."
JsonFlag = Annotated[
    bool,
    typer.Option("--json", help=JSON_HELP, callback=_enable_json, expose_value=False, show_default=False),
]

# ------------------------------------------------------------------- error boundary


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {_one_line(message)}", err=True)
    raise typer.Exit(1)


def _warn(message: str) -> None:
    typer.echo(f"warning: {_one_line(message)}", err=True)


def _safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def _store_url() -> str:
    return get_settings().resolved_database_url()


def _scrub(message: str) -> str:
    """Remove the store's password from a driver message, should a driver ever echo it."""
    try:
        password = make_url(_store_url()).password
    except Exception:
        return message
    return message.replace(str(password), "***") if password else message


def _db_message(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return _scrub(_one_line(str(orig) if orig is not None else str(exc).split("(Background on this error")[0]))


def _looks_unmigrated(message: str) -> bool:
    return bool(re.search(r"no such table|relation \S+ does not exist|doesn't exist", message, re.IGNORECASE))


def _not_initialised() -> ConfigError:
    return ConfigError(f"the store at {_safe_url(_store_url())} is not initialised: {UPGRADE_HINT}")


def _settings_message(exc: pydantic.ValidationError) -> str:
    problems = [f"SYNCFLOW_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
    return "invalid settings: " + "; ".join(problems)


class _Group(TyperGroup):
    """The root command group; its ``invoke`` is the CLI's error boundary for expected errors.

    Anything else is a bug: :func:`main` reports it in one line too (``--traceback`` shows it).
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SyncflowError as exc:
            _fail(str(exc))
        except ArgumentError as exc:  # unparsable URL, unknown driver
            _fail(f"invalid store URL {_safe_url(_store_url())}: {_scrub(str(exc))}")
        except SQLAlchemyError as exc:
            _fail(_database_message(exc))
        except pydantic.ValidationError as exc:
            _fail(_settings_message(exc))


def _database_message(exc: SQLAlchemyError) -> str:
    message = _db_message(exc)
    if _looks_unmigrated(message):
        return str(_not_initialised())
    if isinstance(exc, OperationalError):
        return (
            f"the store at {_safe_url(_store_url())} failed: {message} "
            f"(is it reachable? if it was never migrated, {UPGRADE_HINT})"
        )
    return f"database error: {message}"


# --------------------------------------------------------------------- store access


def _sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return False
    return not Path(parsed.database).exists()


def _checked_engine() -> Engine:
    """The configured store's engine, refusing a store that was never migrated.

    A missing SQLite file is reported without creating it.
    """
    if _sqlite_file_missing(_store_url()):
        raise _not_initialised()
    engine = get_engine()
    current = migrations.current_revision(engine)
    if current is None:
        raise _not_initialised()
    head = migrations.head_revision()
    if current != head:
        _warn(
            f"the store at {_safe_url(_store_url())} is at revision {current}, this syncflow expects {head} "
            f"(if the store is older, {UPGRADE_HINT})"
        )
    return engine


@contextmanager
def _store() -> Iterator[Session]:
    """One transaction on the checked store (``session_scope()`` commits on success)."""
    with session_scope(_checked_engine()) as session:
        yield session


# ----------------------------------------------------------------------- parsing

_AGE = re.compile(r"(\d+)\s*([hdw]?)")
_AGE_UNITS = {
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
    "": dt.timedelta(days=1),
}
AGE_HELP = "an age: `12h`, `30d`, `2w`, or a bare number of days"


def _parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``2w`` or a bare integer (days); anything else is a usage error."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not {AGE_HELP}")
    amount = int(match[1])
    if amount == 0:
        raise typer.BadParameter(f"{text!r}: the age must be greater than zero")
    try:
        age = amount * _AGE_UNITS[match[2]]
        utcnow() - age
    except OverflowError:
        raise typer.BadParameter(f"{text!r} is too large") from None
    return age


def _parse_since(text: str) -> dt.datetime:
    """An age (``7d``: that long ago) or an ISO date/time (naive means UTC)."""
    if _AGE.fullmatch(text.strip().lower()):
        return utcnow() - _parse_age(text)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither {AGE_HELP} nor an ISO date/time such as 2026-11-01 or 2026-11-01T08:00"
        ) from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


SINCE_HELP = (
    "Only sessions created since then: an age (`12h`, `7d`, `2w`, a bare number of days) "
    "or an ISO date/time (`2026-11-01`, `2026-11-01T08:00`; UTC unless it has an offset)."
)
SinceOpt = Annotated[
    dt.datetime | None, typer.Option("--since", metavar="AGE|DATE", parser=_parse_since, help=SINCE_HELP)
]

# -------------------------------------------------------------------- formatting


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


PIPE_WIDTH = 200


def _console() -> Console:
    # No markup: names, errors and tags are shown verbatim, whatever brackets they hold.
    # Piped output is not folded at 80 columns (ids and errors stay greppable) unless COLUMNS says so.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(markup=False, highlight=False, emoji=False, width=width)


def _render(
    ctx: typer.Context, payload: Any, human: Callable[[Any], str | RenderableType | Sequence[RenderableType]]
) -> None:
    """Print ``payload`` as JSON (``--json``) or as what ``human(payload)`` builds.

    A ``str`` is echoed as is (one line per message, no wrapping); rich renderables
    (tables) go through a console.
    """
    if _opts(ctx).json:
        typer.echo(json.dumps(payload, default=_json_default, indent=2, ensure_ascii=False))
        return
    out = human(payload)
    if isinstance(out, str):
        typer.echo(out)
    elif isinstance(out, Sequence):
        _console().print(*out)
    else:
        _console().print(out)


def _fmt_time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row))
    return table


def _fields(title: str, pairs: Sequence[tuple[str, Any]]) -> Table:
    """A two-column key/value table (the ``show`` commands)."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in pairs:
        table.add_row(key, _fmt(value))
    return table


def _instance_payload(inst: Instance) -> dict[str, Any]:
    return {
        "id": inst.id,
        "name": inst.name,
        "kind": inst.kind,
        "enabled": inst.enabled,
        "priority": inst.priority,
        "categories": list(inst.categories),
        "tags": list(inst.tags),
        "block_name": inst.block_name,
        "description": inst.description,
        "created_at": inst.created_at,
        "updated_at": inst.updated_at,
    }


def _sync_state_payload(item: SyncConfigItem) -> dict[str, Any]:
    return {
        "category": item.category,
        "status": item.status,
        "priority": item.priority,
        "last_seq": item.last_seq,
        "last_sync_time": item.last_sync_time,
        "metadata_version": item.metadata_version,
        "last_error": item.last_error,
        "options": item.options,
        "locked_by": item.lock_owner,
        "lock_expires_at": item.lock_expires_at,
    }


def _session_payload(row: SyncSession) -> dict[str, Any]:
    return {
        "session_id": row.session_id,
        "sync_type": row.sync_type,
        "sync_category": row.sync_category,
        "status": row.status,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "duration_seconds": row.duration_seconds,
        "total_instances": row.total_instances,
        "successful_instances": row.successful_instances,
        "failed_instances": row.failed_instances,
        "created_by": row.created_by,
        "flow_run_id": row.flow_run_id,
        "retry_of": row.retry_of,
        "error_message": row.error_message,
        "created_at": row.created_at,
    }


def _record_payload(rec: SyncInstanceRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "instance": rec.instance_name,
        "instance_id": rec.instance_id,
        "sync_category": rec.sync_category,
        "status": rec.status,
        "priority": rec.priority,
        "started_at": rec.started_at,
        "completed_at": rec.completed_at,
        "duration_seconds": rec.duration_seconds,
        "items_synced": rec.items_synced,
        "items_created": rec.items_created,
        "items_updated": rec.items_updated,
        "items_unchanged": rec.items_unchanged,
        "items_deleted": rec.items_deleted,
        "error_message": rec.error_message,
        "options": rec.options,
        "sync_details": rec.sync_details,
        "flow_run_id": rec.flow_run_id,
    }


# --------------------------------------------------------------------------- apps

app = typer.Typer(
    name="syncflow",
    cls=_Group,
    help=(
        "syncflow: sync sessions on Prefect 3, pulling many source instances into one SQL store.\n\n"
        "Manage the store (`db`), the source instances (`instances`), inspect sync sessions "
        "(`sessions`, `stats`) and delete old ones (`cleanup`)."
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
db_app = typer.Typer(help="Create and migrate the sync store's schema.", no_args_is_help=True)
instances_app = typer.Typer(
    help="Register, list, inspect, enable/disable and remove source instances.", no_args_is_help=True
)
sessions_app = typer.Typer(help="Inspect sync sessions and their per-instance records.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(instances_app, name="instances")
app.add_typer(sessions_app, name="sessions")
# Later commands register here: `sync`, `serve`, `setup` on `app`;
# `sessions cancel`, `sessions retry-failed` on `sessions_app`.


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
    ctx.obj = _Options(json=as_json)


# ----------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[
        str, typer.Option("--revision", help="Alembic revision to migrate to (default: the latest).")
    ] = "head",
    _json: JsonFlag = False,
) -> None:
    """Create the store's tables, or migrate them to REVISION. Safe to rerun."""
    engine = get_engine()
    before = migrations.current_revision(engine)
    try:
        migrations.upgrade(engine, revision)
    except AlembicCommandError as exc:  # unknown revision, a store newer than this syncflow
        raise ConfigError(f"cannot upgrade the store at {_safe_url(_store_url())} to {revision!r}: {exc}") from None
    payload = {
        "url": _safe_url(_store_url()),
        "from_revision": before,
        "to_revision": migrations.current_revision(engine),
    }

    def human(p: dict[str, Any]) -> str:
        if p["from_revision"] == p["to_revision"]:
            return f"the store at {p['url']} is at revision {p['to_revision']} already"
        return f"upgraded the store at {p['url']} from {p['from_revision'] or '(empty)'} to {p['to_revision']}"

    _render(ctx, payload, human)


@db_app.command("current")
def db_current(ctx: typer.Context, _json: JsonFlag = False) -> None:
    """Print the store's current schema revision and the latest one this syncflow knows."""
    url = _store_url()
    current = None if _sqlite_file_missing(url) else migrations.current_revision(get_engine())
    head = migrations.head_revision()
    payload = {"url": _safe_url(url), "current": current, "head": head, "up_to_date": current == head}

    def human(p: dict[str, Any]) -> str:
        state = "up to date" if p["up_to_date"] else UPGRADE_HINT
        current = p["current"] or "(none: not initialised)"
        return f"store:   {p['url']}\ncurrent: {current}\nhead:    {p['head']}  ({state})"

    _render(ctx, payload, human)


# ---------------------------------------------------------------------- instances

KINDS = ", ".join(InstanceKind.values())
CATEGORIES = ", ".join(Category.values())
InstanceName = Annotated[str, typer.Argument(metavar="NAME", help="The instance's name.", show_default=False)]


@instances_app.command("add")
def instances_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Unique name of the instance.", show_default=False)],
    kind: Annotated[str, typer.Option("--kind", help=f"Source kind: {KINDS}.", show_default=False)],
    block: Annotated[
        str | None,
        typer.Option(
            "--block",
            metavar="BLOCK_NAME",
            help="Name of the Prefect block that holds the connection and its secrets.",
            show_default=False,
        ),
    ] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first within a session.")] = 0,
    tags: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", metavar="TAG", help="A tag for selecting instances; repeat for several.", show_default=False
        ),
    ] = None,
    categories: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            metavar="CATEGORY",
            help=f"A category it can sync ({CATEGORIES}); repeat for several. Default: the kind's usual ones.",
            show_default=False,
        ),
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Register it disabled (sessions skip it).")] = False,
    description: Annotated[
        str | None, typer.Option("--description", metavar="TEXT", help="Free text for operators.", show_default=False)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", metavar="URL", help="http-seq: the server's base URL (creates the block).", show_default=False
        ),
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option(
            "--token-env",
            metavar="VAR",
            help="http-seq: name of the environment variable holding the bearer token (never the token itself).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="http-seq: request timeout in seconds.", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="http-seq: messages per request (default 500).", show_default=False),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", metavar="HOST", help="postgres/mysql: the server's host (creates the block).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=1, max=65535, help="postgres/mysql: TCP port (default 5432 / 3306).", show_default=False
        ),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER", help="postgres/mysql: the login user.", show_default=False)
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            metavar="VAR",
            help="postgres/mysql: name of the environment variable holding the password (never the password itself).",
            show_default=False,
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            metavar="DB",
            help="postgres/mysql: database to connect to (postgres: default postgres).",
            show_default=False,
        ),
    ] = None,
    tls_mode: Annotated[
        str | None,
        typer.Option(
            "--tls-mode",
            metavar="MODE",
            help="postgres/mysql: disable, prefer (default), require or verify-full.",
            show_default=False,
        ),
    ] = None,
    connect_timeout: Annotated[
        float | None,
        typer.Option(
            "--connect-timeout", help="postgres/mysql: seconds for connect + login (default 10).", show_default=False
        ),
    ] = None,
    _json: JsonFlag = False,
) -> None:
    """Register a source instance.

    For http-seq, `--url URL --token-env VAR` stores the connection in a Prefect block
    (the token read from $VAR, encrypted by Prefect). For postgres and mysql,
    `--host H [--port P] --user U [--password-env VAR] [--database DB] [--tls-mode M]
    [--connect-timeout S]` does the same (the password read from $VAR). Any kind may
    instead name an existing block with --block.
    """
    from syncflow.cli_sync import connection_block

    InstanceKind.parse(kind, what="instance kind")
    with _store() as session:
        if session.scalar(select(Instance.id).where(Instance.name == name.strip())) is not None:
            raise AlreadyExistsError(f"an instance named {name.strip()!r} exists already")
    block_name = connection_block(
        kind,
        instance=name.strip(),
        block=block,
        url=url,
        token_env=token_env,
        host=host,
        port=port,
        user=user,
        password_env=password_env,
        database=database,
        tls_mode=tls_mode,
        connect_timeout=connect_timeout,
        timeout=timeout,
        batch_size=batch_size,
    )
    with _store() as session:
        inst = instance_svc.add_instance(
            session,
            name=name,
            kind=kind,
            block_name=block_name,
            priority=priority,
            tags=tags or (),
            categories=categories or None,
            enabled=not disabled,
            description=description,
        )
        payload = _instance_payload(inst)
    _render(
        ctx,
        payload,
        lambda p: (
            f"added instance {p['name']!r} ({p['kind']}; categories: {_fmt(p['categories'])}; "
            f"{'enabled' if p['enabled'] else 'disabled'})"
        ),
    )


@instances_app.command("list")
def instances_list(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option("--kind", help=f"Only this kind ({KINDS}).", show_default=False)] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only instances with this tag.", show_default=False)] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="Only instances that support this category.", show_default=False)
    ] = None,
    enabled: Annotated[
        bool | None,
        typer.Option(
            "--enabled/--disabled", help="Only enabled / only disabled instances (default: both).", show_default=False
        ),
    ] = None,
    _json: JsonFlag = False,
) -> None:
    """List instances by name, optionally filtered."""
    with _store() as session:
        rows = instance_svc.list_instances(session, kind=kind, tag=tag, category=category, enabled=enabled)
        payload = [_instance_payload(i) for i in rows]
    _render(
        ctx,
        payload,
        lambda p: _table(
            f"{len(p)} instance(s)",
            ["NAME", "KIND", "ENABLED", "PRIORITY", "CATEGORIES", "TAGS", "BLOCK"],
            [
                [i["name"], i["kind"], i["enabled"], i["priority"], i["categories"], i["tags"], i["block_name"]]
                for i in p
            ],
        ),
    )


def _sync_states(session: Session, instance_id: int) -> list[SyncConfigItem]:
    # TODO(core): move to syncflow.instances (a read function for sync_config_items).
    return list(
        session.scalars(
            select(SyncConfigItem).where(SyncConfigItem.instance_id == instance_id).order_by(SyncConfigItem.category)
        )
    )


@instances_app.command("show")
def instances_show(
    ctx: typer.Context,
    name: InstanceName,
    _json: JsonFlag = False,
) -> None:
    """Show an instance and its sync state per category (cursor, last sync, last error)."""
    with _store() as session:
        inst = instance_svc.get_instance(session, name=name)
        payload = _instance_payload(inst) | {
            "sync_state": [_sync_state_payload(i) for i in _sync_states(session, inst.id)]
        }

    def human(p: dict[str, Any]) -> list[RenderableType]:
        keys = ["name", "kind", "enabled", "priority", "categories", "tags", "block_name", "description"]
        fields = _fields(
            f"instance {p['name']}",
            [(k, p[k]) for k in keys]
            + [
                ("created (UTC)", _fmt_time(p["created_at"])),
                ("updated (UTC)", _fmt_time(p["updated_at"])),
            ],
        )
        states = p["sync_state"]
        if not states:
            return [fields, Text("no sync state yet (it has never been synced)")]
        table = _table(
            "sync state",
            ["CATEGORY", "STATUS", "LAST SEQ", "LAST SYNC (UTC)", "METADATA VERSION", "LAST ERROR"],
            [
                [
                    s["category"],
                    s["status"],
                    s["last_seq"],
                    _fmt_time(s["last_sync_time"]),
                    s["metadata_version"],
                    s["last_error"],
                ]
                for s in states
            ],
        )
        return [fields, table]

    _render(ctx, payload, human)


@instances_app.command("remove")
def instances_remove(
    ctx: typer.Context,
    name: InstanceName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    _json: JsonFlag = False,
) -> None:
    """Delete an instance with everything attached to it.

    The deletion cascades: its instance records in every session, its sync state (cursors)
    and ALL data synced from it (messages, conversations) are deleted too. It cannot be undone.
    """
    with _store() as session:
        instance_svc.get_instance(session, name=name)
    if not yes and not typer.confirm(
        f"Delete instance {name!r} with its session records, its sync state and all data synced from it "
        "(messages, conversations)? This cannot be undone.",
        default=False,
        err=True,
    ):
        _fail(f"instance {name!r} not removed")
    with _store() as session:
        instance_svc.remove_instance(session, name=name)
    _render(
        ctx,
        {"name": name, "removed": True},
        lambda p: f"removed instance {p['name']!r} with its records, sync state and synced data",
    )


def _set_enabled(ctx: typer.Context, name: str, enabled: bool) -> None:
    with _store() as session:
        payload = _instance_payload(instance_svc.set_enabled(session, name=name, enabled=enabled))
    _render(ctx, payload, lambda p: f"instance {p['name']!r} is {'enabled' if p['enabled'] else 'disabled'}")


@instances_app.command("enable")
def instances_enable(
    ctx: typer.Context,
    name: InstanceName,
    _json: JsonFlag = False,
) -> None:
    """Enable an instance: sessions include it again."""
    _set_enabled(ctx, name, True)


@instances_app.command("disable")
def instances_disable(
    ctx: typer.Context,
    name: InstanceName,
    _json: JsonFlag = False,
) -> None:
    """Disable an instance: sessions skip it; its data and sync state stay."""
    _set_enabled(ctx, name, False)


# ----------------------------------------------------------------------- sessions


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    sync_type: Annotated[
        str | None,
        typer.Option("--type", help=f"Only this sync type ({', '.join(SyncType.values())}).", show_default=False),
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help=f"Only this category ({CATEGORIES}).", show_default=False)
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help=f"Only this status ({', '.join(SessionStatus.values())}).", show_default=False),
    ] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many sessions (1-1000).")] = 50,
    offset: Annotated[int, typer.Option("--offset", help="Skip this many (paging).")] = 0,
    _json: JsonFlag = False,
) -> None:
    """List sessions, newest first, with a "N of TOTAL" footer."""
    with _store() as session:
        page = session_svc.list_sessions(
            session, sync_type=sync_type, sync_category=category, status=status, since=since, limit=limit, offset=offset
        )
        payload = {
            "items": [_session_payload(s) for s in page.items],
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
        }

    def human(p: dict[str, Any]) -> list[RenderableType]:
        table = _table(
            None,
            ["SESSION ID", "TYPE", "CATEGORY", "STATUS", "STARTED (UTC)", "DURATION", "OK/FAILED/TOTAL", "BY"],
            [
                [
                    s["session_id"],
                    s["sync_type"],
                    s["sync_category"],
                    s["status"],
                    _fmt_time(s["started_at"]),
                    _fmt_duration(s["duration_seconds"]),
                    f"{s['successful_instances']}/{s['failed_instances']}/{s['total_instances']}",
                    s["created_by"],
                ]
                for s in p["items"]
            ],
        )
        footer = Text(_page_footer(len(p["items"]), p["total"], p["offset"]))
        return [table, footer] if p["items"] else [footer]

    _render(ctx, payload, human)


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
    session_id: Annotated[str, typer.Argument(metavar="SESSION_ID", help="The session's id.", show_default=False)],
    _json: JsonFlag = False,
) -> None:
    """Show a session and the record of each of its instances."""
    with _store() as session:
        row = session_svc.get_session(session, session_id=session_id, with_records=True)
        payload = _session_payload(row) | {"records": [_record_payload(r) for r in row.records]}

    def human(p: dict[str, Any]) -> list[RenderableType]:
        fields = _fields(
            f"session {p['session_id']}",
            [
                ("type", p["sync_type"]),
                ("category", p["sync_category"]),
                ("status", p["status"]),
                ("started (UTC)", _fmt_time(p["started_at"])),
                ("completed (UTC)", _fmt_time(p["completed_at"])),
                ("duration", _fmt_duration(p["duration_seconds"])),
                (
                    "instances",
                    f"{p['total_instances']} ({p['successful_instances']} ok, {p['failed_instances']} failed)",
                ),
                ("created by", p["created_by"]),
                ("flow run", p["flow_run_id"]),
                ("retry of", p["retry_of"]),
                ("error", p["error_message"]),
            ],
        )
        records = _table(
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
                    r["instance"],
                    r["status"],
                    _fmt_time(r["started_at"]),
                    _fmt_duration(r["duration_seconds"]),
                    r["items_synced"],
                    r["items_created"],
                    r["items_updated"],
                    r["items_unchanged"],
                    r["items_deleted"],
                    r["error_message"],
                ]
                for r in p["records"]
            ],
        )
        return [fields, records] if p["records"] else [fields, Text("no instance records")]

    _render(ctx, payload, human)


# ------------------------------------------------------------------ stats, cleanup


@app.command("stats")
def stats(
    ctx: typer.Context,
    since: SinceOpt = None,
    _json: JsonFlag = False,
) -> None:
    """Session statistics: counts by type x category x status, success rate, durations, records by status.

    Without --since, over every session in the store.
    """
    with _store() as session:
        payload = session_svc.get_statistics(session, since=since).as_dict() | {"since": since}

    def human(p: dict[str, Any]) -> str | list[RenderableType]:
        scope = f" since {_fmt_time(p['since'])} UTC" if p["since"] else ""
        if not p["total_sessions"]:
            return f"no sessions{scope}"
        breakdown = _table(
            f"{p['total_sessions']} session(s){scope}",
            ["TYPE", "CATEGORY", "STATUS", "COUNT"],
            [[b["sync_type"], b["sync_category"], b["status"], b["count"]] for b in p["breakdown"]],
        )
        rate = p["success_rate"]
        d = p["duration_seconds"]
        summary = _fields(
            "summary",
            [
                ("success rate", "-" if rate is None else f"{rate:.1%} (completed / (completed + failed))"),
                ("duration avg", _fmt_duration(d.get("avg"))),
                ("duration p50", _fmt_duration(d.get("p50"))),
                ("duration p95", _fmt_duration(d.get("p95"))),
                ("duration max", _fmt_duration(d.get("max"))),
            ],
        )
        records = _table("instance records", ["STATUS", "COUNT"], sorted(p["instances"].items()))
        return [breakdown, summary, records]

    _render(ctx, payload, human)


@app.command("cleanup")
def cleanup(
    ctx: typer.Context,
    older_than: Annotated[
        dt.timedelta | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            parser=_parse_age,
            help=f"Delete sessions that finished longer ago than this: {AGE_HELP}. "
            "Default: SYNCFLOW_RETENTION_DAYS (30) days.",
            show_default=False,
        ),
    ] = None,
    _json: JsonFlag = False,
) -> None:
    """Delete finished sessions (completed, failed, cancelled) older than an age, with their instance records.

    Running sessions are never deleted; synced data stays.
    """
    age = older_than if older_than is not None else dt.timedelta(days=get_settings().retention_days)
    cutoff = utcnow() - age
    with _store() as session:
        # cleanup_sessions counts whole days back from `now`; an age in hours goes through `now`.
        deleted = session_svc.cleanup_sessions(session, older_than_days=0, now=cutoff)
    payload = {"deleted": deleted, "older_than_seconds": age.total_seconds(), "cutoff": cutoff}
    _render(
        ctx,
        payload,
        lambda p: (
            f"deleted {p['deleted']} finished session(s) completed before {_fmt_time(p['cutoff'])} UTC, "
            "with their instance records"
        ),
    )


# ------------------------------------------------------------------------ entry


def main() -> None:
    """Console entry point (``syncflow``, ``python -m syncflow``).

    Expected errors are handled in :class:`_Group`; anything reaching here is a bug, reported
    in one line unless ``--traceback`` was given.
    """
    try:
        app(prog_name="syncflow")
    except Exception as exc:
        if "--traceback" in sys.argv[1:]:
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} "
            "(a bug: rerun with `syncflow --traceback ...` and report it)",
            err=True,
        )
        raise SystemExit(1) from None


from syncflow.cli_sync import register as _register_flow_commands  # noqa: E402  (needs the helpers above)

_register_flow_commands(app)

__all__ = ["app", "main"]
