"""``syncflow instances``: register, list, show, enable/disable and remove source instances."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.cli import _output as out
from syncflow.store import gaps as gap_ledger
from syncflow.store import instances as instance_svc
from syncflow.store.models import InstanceKind, SyncConfigItem

instances_app = typer.Typer(
    help="Register, list, inspect, enable/disable and remove source instances.", no_args_is_help=True
)


# ---------------------------------------------------------------------- instances


@instances_app.command("add")
def instances_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Unique name of the instance.", show_default=False)],
    kind: Annotated[str, typer.Option("--kind", help=f"Source kind: {out.KINDS}.", show_default=False)],
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
            help=f"A category it can sync ({out.CATEGORIES}); repeat for several. Default: the kind's usual ones.",
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
        typer.Option("--port", help="postgres/mysql: TCP port 1..65535 (default 5432 / 3306).", show_default=False),
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
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check", help="Check the connection and login first; refuse when they fail (default)."
        ),
    ] = True,
    _json: out.JsonFlag = False,
) -> None:
    """Register a source instance.

    For http-seq, `--url URL --token-env VAR` stores the connection in a Prefect block
    (the token read from $VAR, encrypted by Prefect). For postgres and mysql,
    `--host H [--port P] --user U [--password-env VAR] [--database DB] [--tls-mode M]
    [--connect-timeout S]` does the same (the password read from $VAR). Any kind may
    instead name an existing block with --block. The connection and login are checked first
    (the instance is not added when they fail): --no-check to skip.
    """
    payload = _add(
        name.strip(),
        kind,
        block=block,
        priority=priority,
        tags=tags,
        categories=categories,
        disabled=disabled,
        description=description,
        check=check,
        connection={
            "url": url,
            "token_env": token_env,
            "host": host,
            "port": port,
            "user": user,
            "password_env": password_env,
            "database": database,
            "tls_mode": tls_mode,
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "batch_size": batch_size,
        },
    )
    out.render(
        ctx,
        payload,
        lambda p: (
            f"added instance {p['name']!r} ({p['kind']}; categories: {out.fmt(p['categories'])}; "
            f"{'enabled' if p['enabled'] else 'disabled'})"
        ),
    )


@instances_app.command("list")
def instances_list(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Option("--kind", help=f"Only this kind ({out.KINDS}).", show_default=False)
    ] = None,
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
    retired: Annotated[
        bool, typer.Option("--retired", help="Only retired (removed) instances.", show_default=False)
    ] = False,
    all_: Annotated[bool, typer.Option("--all", help="Live and retired instances.", show_default=False)] = False,
    _json: out.JsonFlag = False,
) -> None:
    """List instances by name, optionally filtered (retired ones only with --retired or --all)."""
    which = None if all_ else retired
    with out.store() as session:
        rows = instance_svc.list_instances(
            session, kind=kind, tag=tag, category=category, enabled=enabled, retired=which
        )
        payload = [out.instance_payload(i) for i in rows]
    out.render(
        ctx,
        payload,
        lambda p: out.table(
            f"{len(p)} instance(s)",
            ["NAME", "KIND", "ENABLED", "PRIORITY", "CATEGORIES", "TAGS", "BLOCK"]
            + (["RETIRED (UTC)"] if which is not False else []),
            [
                [i["name"], i["kind"], i["enabled"], i["priority"], i["categories"], i["tags"], i["block_name"]]
                + ([out.fmt_time(i["retired_at"])] if which is not False else [])
                for i in p
            ],
        ),
    )


def _sync_states(session: Session, instance_id: int) -> list[SyncConfigItem]:
    # TODO(core): move to syncflow.store.instances (a read function for sync_config_items).
    return list(
        session.scalars(
            select(SyncConfigItem).where(SyncConfigItem.instance_id == instance_id).order_by(SyncConfigItem.category)
        )
    )


@instances_app.command("show")
def instances_show(
    ctx: typer.Context,
    name: out.InstanceName,
    _json: out.JsonFlag = False,
) -> None:
    """Show an instance and its sync state per category (cursor, last sync, last error)."""
    with out.store() as session:
        inst = instance_svc.get_instance(session, name=name)
        payload = out.instance_payload(inst) | {
            "sync_state": [out.sync_state_payload(i) for i in _sync_states(session, inst.id)],
            "gaps": gap_ledger.gap_counts(session, instance_id=inst.id),
        }

    def human(p: dict[str, Any]) -> list[RenderableType]:
        keys = ["name", "kind", "enabled", "priority", "categories", "tags", "block_name", "description"]
        if p.get("retired_at"):  # removed: kept for its history, never synced again
            keys.append("retired_at")
        if p.get("config"):  # e.g. a Telegram chat: its chat id and account
            keys.append("config")
        fields = out.fields(
            f"instance {p['name']}",
            [(k, p[k]) for k in keys]
            + [
                ("created (UTC)", out.fmt_time(p["created_at"])),
                ("updated (UTC)", out.fmt_time(p["updated_at"])),
            ],
        )
        states = p["sync_state"]
        g = p["gaps"]
        holes = Text(
            f"seq holes: {g['open']} open, {g['filled']} filled, {g['partly_filled']} partly filled, "
            f"{g['confirmed_empty']} confirmed empty (syncflow gaps list {p['name']})"
        )
        if not states:
            return [fields, Text("no sync state yet (it has never been synced)")]
        table = out.table(
            "sync state",
            ["CATEGORY", "STATUS", "LAST SEQ", "LAST SYNC (UTC)", "METADATA VERSION", "LAST ERROR"],
            [
                [
                    s["category"],
                    s["status"],
                    s["last_seq"],
                    out.fmt_time(s["last_sync_time"]),
                    s["metadata_version"],
                    s["last_error"],
                ]
                for s in states
            ],
        )
        return [fields, table, holes]

    out.render(ctx, payload, human)


@instances_app.command("remove")
def instances_remove(
    ctx: typer.Context,
    name: out.InstanceName,
    purge_data: Annotated[
        bool,
        typer.Option(
            "--purge-data",
            help="Also delete the data synced from it (messages, conversations, accounts, settings, capacity "
            "samples) and its sync state. Its sessions and records always stay.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    _json: out.JsonFlag = False,
) -> None:
    """Retire an instance: it is never synced again and leaves `instances list` (see --retired).

    Its history stays as it was: its records in past sessions, the sessions' totals and the
    statistics, all still naming it; its name stays taken. Its synced data stays too unless
    --purge-data (which can also be given later, on a retired instance). Its Prefect block is
    left alone.
    """
    from syncflow.store.retirement import retire_instance

    with out.store() as session:
        inst = instance_svc.get_instance(session, name=name)
        already = inst.retired
    if already and not purge_data:
        out.fail(f"instance {name!r} is retired already (add --purge-data to delete its synced data)")
    question = f"Retire instance {name!r} (its sessions and records stay)?"
    if purge_data:
        question = (
            f"{'Delete' if already else 'Retire instance ' + repr(name) + ' and delete'} all data synced from "
            f"{name!r} (messages, conversations, accounts, settings, capacity samples) and its sync state? "
            "Its sessions and records stay. The data cannot be restored."
        )
    if not yes and not typer.confirm(question, default=False, err=True):
        out.fail(f"instance {name!r} not removed")
    with out.store() as session:
        done = retire_instance(session, name=name, purge=purge_data)
    payload = {"name": done.name, "removed": True, "retired": True, "purged": done.purged if purge_data else None}

    def human(p: dict[str, Any]) -> str:
        text = f"retired instance {p['name']!r}: its sessions and records stay"
        if p["purged"] is not None:
            gone = ", ".join(f"{n} {t}" for t, n in sorted(p["purged"].items()) if n) or "nothing"
            text += f"; deleted its synced data and sync state ({gone})"
        else:
            text += "; its synced data stays (--purge-data deletes it)"
        return text

    out.render(ctx, payload, human)


def _set_enabled(ctx: typer.Context, name: str, enabled: bool) -> None:
    with out.store() as session:
        payload = out.instance_payload(instance_svc.set_enabled(session, name=name, enabled=enabled))
    out.render(ctx, payload, lambda p: f"instance {p['name']!r} is {'enabled' if p['enabled'] else 'disabled'}")


@instances_app.command("enable")
def instances_enable(
    ctx: typer.Context,
    name: out.InstanceName,
    _json: out.JsonFlag = False,
) -> None:
    """Enable an instance: sessions include it again."""
    _set_enabled(ctx, name, True)


@instances_app.command("disable")
def instances_disable(
    ctx: typer.Context,
    name: out.InstanceName,
    _json: out.JsonFlag = False,
) -> None:
    """Disable an instance: sessions skip it; its data and sync state stay."""
    _set_enabled(ctx, name, False)


# ------------------------------------------------------------- add: checks, then the block


def _add(
    name: str,
    kind: str,
    *,
    block: str | None,
    priority: int,
    tags: list[str] | None,
    categories: list[str] | None,
    disabled: bool,
    description: str | None,
    check: bool,
    connection: dict[str, Any],
) -> dict[str, Any]:
    """Check everything that can be checked before Prefect is touched (name, kind, categories,
    URL, port, the name and the block free), then make the block (named from a new instance key
    it also carries: no two instances share a block), check its connection and login (``check``),
    and register the instance; a block made for an instance that could not be registered (or
    whose check failed) is deleted again."""
    from syncflow.cli.sync import connection_block, delete_block, new_binding
    from syncflow.validation import check_port, check_url

    name = instance_svc.check_name(name)
    InstanceKind.parse(kind, what="instance kind")
    instance_svc.check_categories(kind, categories or None, name=name)
    if connection.get("url") is not None:
        check_url(connection["url"], field="--url")
    check_port(connection.get("port"), field="--port")
    with out.store() as session:
        instance_svc.check_name_free(session, name)
        if block is not None:
            instance_svc.check_block_free(session, block, kind=kind)
    binding = new_binding()
    block_name = connection_block(kind, instance=name, block=block, binding=binding, **connection)
    made = block_name is not None and block is None
    try:
        if check:
            from syncflow.cli._instance_check import add_check

            add_check(name, kind, block_name, categories)
        with out.store() as session:
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
                block_binding=binding if made else None,
            )
            return out.instance_payload(inst)
    except BaseException:
        if made and block_name:
            delete_block(kind, block_name)
        raise
