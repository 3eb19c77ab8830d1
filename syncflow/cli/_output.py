"""What every ``syncflow`` command shares: options, the error boundary, store access, parsing, output.

Layout of this module, top to bottom:

* global state (``--json``, ``--database-url``) and the error boundary (:class:`ErrorBoundary`):
  every :class:`~syncflow.errors.SyncflowError` and database error becomes one line
  ``error: ...`` on stderr and exit code 1, never a traceback;
* store access (:func:`store`: ``session_scope()`` on a checked engine), argument parsers,
  payload builders (plain dicts, which are also the ``--json`` output; a session or a record
  is the one view of :mod:`syncflow.schemas`, dumped) and :func:`render`;
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
from rich.console import Console, RenderableType
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from typer.core import TyperGroup

from syncflow.errors import ConfigError, SyncflowError, clean_message
from syncflow.reports.sessions import fmt_eta
from syncflow.settings import get_settings
from syncflow.store import migrations
from syncflow.store.db import get_engine, session_scope
from syncflow.store.models import (
    Category,
    Instance,
    InstanceKind,
    SyncConfigItem,
    utcnow,
)

UPGRADE_HINT = "run `syncflow db upgrade`"

# ----------------------------------------------------------------------- global state


@dataclass
class Options:
    """Options of the root command, shared with every subcommand through ``ctx.obj``."""

    json: bool = False


def opts(ctx: typer.Context) -> Options:
    found = ctx.find_object(Options)
    return found if found is not None else Options()


def _enable_json(ctx: typer.Context, value: bool) -> None:
    if value:
        ctx.ensure_object(Options).json = True


JSON_HELP = "Print machine-readable JSON (times in ISO-8601 UTC) instead of tables; same as `syncflow --json ...`."
JsonFlag = Annotated[
    bool,
    typer.Option("--json", help=JSON_HELP, callback=_enable_json, expose_value=False, show_default=False),
]

# ------------------------------------------------------------------- error boundary


def one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(1)


def warn(message: str) -> None:
    typer.echo(f"warning: {one_line(message)}", err=True)


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def store_url() -> str:
    return get_settings().resolved_database_url()


def _scrub(message: str) -> str:
    """Remove the store's password from a driver message, should a driver ever echo it."""
    try:
        password = make_url(store_url()).password
    except Exception:
        return message
    return message.replace(str(password), "***") if password else message


def _db_message(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return _scrub(one_line(str(orig) if orig is not None else str(exc).split("(Background on this error")[0]))


def _looks_unmigrated(message: str) -> bool:
    return bool(re.search(r"no such table|relation \S+ does not exist|doesn't exist", message, re.IGNORECASE))


def not_initialised() -> ConfigError:
    return ConfigError(f"the store at {safe_url(store_url())} is not initialised: {UPGRADE_HINT}")


def _settings_message(exc: pydantic.ValidationError) -> str:
    problems = [
        f"SYNCFLOW_{'_'.join(str(p) for p in err['loc']).upper()}: {clean_message(err['msg'])}" for err in exc.errors()
    ]
    return "invalid settings: " + "; ".join(problems)


class ErrorBoundary(TyperGroup):
    """The root command group; its ``invoke`` is the CLI's error boundary for expected errors.

    Anything else is a bug: :func:`main` reports it in one line too (``--traceback`` shows it).
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SyncflowError as exc:
            fail(str(exc))
        except ArgumentError as exc:  # unparsable URL, unknown driver
            fail(f"invalid store URL {safe_url(store_url())}: {_scrub(str(exc))}")
        except SQLAlchemyError as exc:
            fail(_database_message(exc))
        except pydantic.ValidationError as exc:
            fail(_settings_message(exc))


def _database_message(exc: SQLAlchemyError) -> str:
    message = _db_message(exc)
    if _looks_unmigrated(message):
        return str(not_initialised())
    if isinstance(exc, OperationalError):
        return (
            f"the store at {safe_url(store_url())} failed: {message} "
            f"(is it reachable? if it was never migrated, {UPGRADE_HINT})"
        )
    return f"database error: {message}"


# --------------------------------------------------------------------- store access


def sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return False
    return not Path(parsed.database).exists()


def checked_engine() -> Engine:
    """The configured store's engine, refusing a store that was never migrated.

    A missing SQLite file is reported without creating it.
    """
    if sqlite_file_missing(store_url()):
        raise not_initialised()
    engine = get_engine()
    current = migrations.current_revision(engine)
    if current is None:
        raise not_initialised()
    head = migrations.head_revision()
    if current != head:
        warn(
            f"the store at {safe_url(store_url())} is at revision {current}, this syncflow expects {head} "
            f"(if the store is older, {UPGRADE_HINT})"
        )
    return engine


@contextmanager
def store() -> Iterator[Session]:
    """One transaction on the checked store (``session_scope()`` commits on success)."""
    with session_scope(checked_engine()) as session:
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


def parse_age(text: str) -> dt.timedelta:
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


def parse_since(text: str) -> dt.datetime:
    """An age (``7d``: that long ago) or an ISO date/time (naive means UTC)."""
    if _AGE.fullmatch(text.strip().lower()):
        return utcnow() - parse_age(text)
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
    dt.datetime | None, typer.Option("--since", metavar="AGE|DATE", parser=parse_since, help=SINCE_HELP)
]

# -------------------------------------------------------------------- formatting


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


PIPE_WIDTH = 200


def console() -> Console:
    # No markup: names, errors and tags are shown verbatim, whatever brackets they hold.
    # Piped output is not folded at 80 columns (ids and errors stay greppable) unless COLUMNS says so.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(markup=False, highlight=False, emoji=False, width=width)


def render(
    ctx: typer.Context, payload: Any, human: Callable[[Any], str | RenderableType | Sequence[RenderableType]]
) -> None:
    """Print ``payload`` as JSON (``--json``) or as what ``human(payload)`` builds.

    A ``str`` is echoed as is (one line per message, no wrapping); rich renderables
    (tables) go through a console.
    """
    if opts(ctx).json:
        typer.echo(json.dumps(payload, default=_json_default, indent=2, ensure_ascii=False))
        return
    out = human(payload)
    if isinstance(out, str):
        typer.echo(out)
    elif isinstance(out, Sequence):
        console().print(*out)
    else:
        console().print(out)


def fmt_time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def fmt_duration(seconds: float | None) -> str:
    return fmt_eta(seconds, decimals=1)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    return table


def fields(title: str, pairs: Sequence[tuple[str, Any]]) -> Table:
    """A two-column key/value table (the ``show`` commands)."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in pairs:
        table.add_row(key, fmt(value))
    return table


def instance_payload(inst: Instance) -> dict[str, Any]:
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
        "config": inst.config,
        "retired_at": inst.retired_at,
        "created_at": inst.created_at,
        "updated_at": inst.updated_at,
    }


def sync_state_payload(item: SyncConfigItem) -> dict[str, Any]:
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


KINDS = ", ".join(InstanceKind.values())
CATEGORIES = ", ".join(Category.values())
InstanceName = Annotated[str, typer.Argument(metavar="NAME", help="The instance's name.", show_default=False)]


def flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI when ``PREFECT_UI_URL`` is set (else None)."""
    ui = (os.environ.get("PREFECT_UI_URL") or "").strip().rstrip("/")
    if not flow_run_id or not ui.startswith(("http://", "https://")):
        return None
    return f"{ui}/runs/flow-run/{flow_run_id}"


def session_id_of(session: Session, text: str) -> str:
    """The full id of the session ``text`` names: a whole id or a unique prefix (the console's
    short ids). Unknown or ambiguous prefixes are one-line errors naming the candidates."""
    from syncflow.store.session_ids import resolve_session_id

    return resolve_session_id(session, text)


SessionIdArg = Annotated[
    str,
    typer.Argument(
        metavar="SESSION_ID",
        help="The session's id, or a unique prefix of it (e.g. the 8 characters the console shows).",
        show_default=False,
    ),
]
