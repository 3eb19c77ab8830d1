"""``syncflow db``: create and migrate the sync store."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from syncflow.cli import _output as out
from syncflow.errors import ConfigError
from syncflow.store import migrations
from syncflow.store.db import get_engine

db_app = typer.Typer(help="Create and migrate the sync store's schema.", no_args_is_help=True)


# ----------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[
        str, typer.Option("--revision", help="Alembic revision to migrate to (default: the latest).")
    ] = "head",
    _json: out.JsonFlag = False,
) -> None:
    """Create the store's tables, or migrate them to REVISION. Safe to rerun."""
    from alembic.util.exc import CommandError as AlembicCommandError

    engine = get_engine()
    before = migrations.current_revision(engine)
    try:
        migrations.upgrade(engine, revision)
    except AlembicCommandError as exc:  # unknown revision, a store newer than this syncflow
        raise ConfigError(
            f"cannot upgrade the store at {out.safe_url(out.store_url())} to {revision!r}: {exc}"
        ) from None
    payload = {
        "url": out.safe_url(out.store_url()),
        "from_revision": before,
        "to_revision": migrations.current_revision(engine),
    }

    def human(p: dict[str, Any]) -> str:
        if p["from_revision"] == p["to_revision"]:
            return f"the store at {p['url']} is at revision {p['to_revision']} already"
        return f"upgraded the store at {p['url']} from {p['from_revision'] or '(empty)'} to {p['to_revision']}"

    out.render(ctx, payload, human)


@db_app.command("current")
def db_current(ctx: typer.Context, _json: out.JsonFlag = False) -> None:
    """Print the store's current schema revision and the latest one this syncflow knows."""
    url = out.store_url()
    current = None if out.sqlite_file_missing(url) else migrations.current_revision(get_engine())
    head = migrations.head_revision()
    payload = {"url": out.safe_url(url), "current": current, "head": head, "up_to_date": current == head}

    def human(p: dict[str, Any]) -> str:
        state = "up to date" if p["up_to_date"] else out.UPGRADE_HINT
        current = p["current"] or "(none: not initialised)"
        return f"store:   {p['url']}\ncurrent: {current}\nhead:    {p['head']}  ({state})"

    out.render(ctx, payload, human)
