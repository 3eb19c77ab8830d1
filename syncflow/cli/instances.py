"""``syncflow instances``: register, list, show, enable/disable and remove source instances."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.cli import _output as out
from syncflow.errors import AlreadyExistsError
from syncflow.store import instances as instance_svc
from syncflow.store.models import Instance, InstanceKind, SyncConfigItem

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
    from syncflow.cli.sync import connection_block

    InstanceKind.parse(kind, what="instance kind")
    with out.store() as session:
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
    if check:
        from syncflow.cli.instance_admin import add_check

        add_check(name.strip(), kind, block_name, categories)
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
        )
        payload = out.instance_payload(inst)
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
    _json: out.JsonFlag = False,
) -> None:
    """List instances by name, optionally filtered."""
    with out.store() as session:
        rows = instance_svc.list_instances(session, kind=kind, tag=tag, category=category, enabled=enabled)
        payload = [out.instance_payload(i) for i in rows]
    out.render(
        ctx,
        payload,
        lambda p: out.table(
            f"{len(p)} instance(s)",
            ["NAME", "KIND", "ENABLED", "PRIORITY", "out.CATEGORIES", "TAGS", "BLOCK"],
            [
                [i["name"], i["kind"], i["enabled"], i["priority"], i["categories"], i["tags"], i["block_name"]]
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
            "sync_state": [out.sync_state_payload(i) for i in _sync_states(session, inst.id)]
        }

    def human(p: dict[str, Any]) -> list[RenderableType]:
        keys = ["name", "kind", "enabled", "priority", "categories", "tags", "block_name", "description"]
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
        return [fields, table]

    out.render(ctx, payload, human)


@instances_app.command("remove")
def instances_remove(
    ctx: typer.Context,
    name: out.InstanceName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    _json: out.JsonFlag = False,
) -> None:
    """Delete an instance with everything attached to it.

    The deletion cascades: its instance records in every session, its sync state (cursors)
    and ALL data synced from it (messages, conversations) are deleted too. It cannot be undone.
    """
    with out.store() as session:
        instance_svc.get_instance(session, name=name)
    if not yes and not typer.confirm(
        f"Delete instance {name!r} with its session records, its sync state and all data synced from it "
        "(messages, conversations)? This cannot be undone.",
        default=False,
        err=True,
    ):
        out.fail(f"instance {name!r} not removed")
    with out.store() as session:
        instance_svc.remove_instance(session, name=name)
    out.render(
        ctx,
        {"name": name, "removed": True},
        lambda p: f"removed instance {p['name']!r} with its records, sync state and synced data",
    )


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
