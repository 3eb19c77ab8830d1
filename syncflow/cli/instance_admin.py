"""``syncflow instances update`` and ``syncflow instances check``: change a registered instance
in place (its connection block re-created on the *current* Prefect server) and ask whether it
is ready to sync (block, connection, credentials, privileges per category).

Registered on the ``instances`` group of :mod:`syncflow.cli.instances`. The checks themselves
are :mod:`syncflow.engine.check`; the block I/O :mod:`tasks.instance_check`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

import typer
from rich.console import RenderableType

from syncflow.cli import _output as out
from syncflow.cli._instance_check import PREFECT_TIMEOUT, _prepare, _problems_line
from syncflow.cli.instances import instances_app
from syncflow.errors import ConfigError, NotFoundError, clean_message
from syncflow.store import instances as instance_svc
from syncflow.store.instance_updates import update_instance
from syncflow.store.models import Instance

DB_KINDS = ("postgres", "mysql")


def ref_of(inst: Instance) -> Any:
    from tasks.instance_check import InstanceRef

    return InstanceRef(inst.name, inst.kind, inst.block_name, tuple(inst.categories), inst.config or None)


def pydantic_message(exc: Any) -> str:
    """The first problem of a pydantic ValidationError, without pydantic's "Value error, " prefix."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = clean_message(str(err.get("msg", exc)))
    return f"{where}: {msg}" if where else msg


def _secret(env: str, option: str) -> str:
    value = os.environ.get(env, "")
    if not value:
        raise ConfigError(f"environment variable {env} ({option}) is not set or empty")
    return value


def _given_fields(kind: str, **options: Any) -> dict[str, Any]:
    """The block fields the options change (secrets read from their variables)."""
    seq = {k: options[k] for k in ("url", "token_env", "timeout", "batch_size") if options[k] is not None}
    db = {
        k: options[k]
        for k in ("host", "port", "user", "password_env", "database", "tls_mode", "connect_timeout")
        if options[k] is not None
    }
    flags = lambda d: "/".join(f"--{k.replace('_', '-')}" for k in d)  # noqa: E731
    if kind == "http-seq":
        if db:
            raise ConfigError(f"{flags(db)} are for postgres and mysql instances, not {kind}")
        fields = {k: v for k, v in seq.items() if k in ("timeout", "batch_size")}
        if "url" in seq:
            fields["base_url"] = seq["url"]
        if "token_env" in seq:
            fields["token"] = _secret(seq["token_env"], "--token-env")
        return fields
    if kind in DB_KINDS:
        if seq:
            raise ConfigError(f"{flags(seq)} are for http-seq instances, not {kind}")
        fields = {k: v for k, v in db.items() if k != "password_env"}
        if "password_env" in db:
            fields["password"] = _secret(db["password_env"], "--password-env")
        return fields
    if seq or db:
        raise ConfigError(f"{flags({**seq, **db})} do not apply to {kind} instances (their blocks are made otherwise)")
    return {}


def _build_block(kind: str, instance: str, fields: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from blocks.connections import BLOCK_TYPES

    block_type = BLOCK_TYPES[kind]
    if kind in DB_KINDS:
        fields = {**fields, "kind": kind}
    try:
        block = block_type(**fields)
    except ValidationError as exc:
        raise ConfigError(f"instance {instance}: {pydantic_message(exc)}") from None
    if kind in DB_KINDS:
        block.connection()  # type: ignore[attr-defined]  # a DatabaseInstance: the checks a sync makes
    return block


def _missing_fields_message(kind: str, instance: str, block_name: str | None, server: str) -> str:
    needs = "--url URL --token-env VAR" if kind == "http-seq" else "--host HOST --user USER [--password-env VAR]"
    where = f"block {block_name!r} is not on this Prefect server ({server})" if block_name else "it has no block"
    return f"instance {instance}: {where}: give {needs} to create it here"


# ------------------------------------------------------------------------ update


@instances_app.command("update")
def instances_update(
    ctx: typer.Context,
    name: out.InstanceName,
    url: Annotated[
        str | None, typer.Option("--url", metavar="URL", help="http-seq: base URL.", show_default=False)
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", metavar="VAR", help="http-seq: variable holding the token.", show_default=False),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="http-seq: request timeout (s).", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="http-seq: messages per request.", show_default=False)
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="postgres/mysql: host.", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="postgres/mysql: TCP port.", show_default=False)
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER", help="postgres/mysql: login user.", show_default=False)
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env", metavar="VAR", help="postgres/mysql: variable holding the password.", show_default=False
        ),
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", metavar="DB", help="postgres/mysql: database.", show_default=False)
    ] = None,
    tls_mode: Annotated[
        str | None,
        typer.Option(
            "--tls-mode",
            metavar="MODE",
            help="postgres/mysql: disable, prefer, require, verify-full.",
            show_default=False,
        ),
    ] = None,
    connect_timeout: Annotated[
        float | None,
        typer.Option("--connect-timeout", help="postgres/mysql: connect + login (s).", show_default=False),
    ] = None,
    block: Annotated[
        str | None,
        typer.Option("--block", metavar="BLOCK_NAME", help="Use this existing block instead.", show_default=False),
    ] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="Higher runs first.", show_default=False)] = None,
    tags: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Replace the tags (repeat for several).", show_default=False),
    ] = None,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove every tag.")] = False,
    categories: Annotated[
        list[str] | None,
        typer.Option("--category", metavar="CATEGORY", help="Replace the categories (repeatable).", show_default=False),
    ] = None,
    enabled: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Enable or disable it (sessions skip disabled).", show_default=False),
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", metavar="TEXT", help="Free text.", show_default=False)
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Check a new connection (login) before saving it (default)."),
    ] = True,
    _json: out.JsonFlag = False,
) -> None:
    """Change an instance in place; its history (sessions, sync state, data) stays.

    Connection options re-create its block on the CURRENT Prefect server (PREFECT_API_URL, or the
    temporary one): options not given keep the block's values when the block is there, and the
    whole connection must be given when it is not (an instance added before PREFECT_API_URL was
    set). A new connection is checked (login) before it is saved: --no-check to skip.
    """
    if tags is not None and clear_tags:
        raise ConfigError("give --tag or --clear-tags, not both")
    with out.store() as session:
        inst = instance_svc.live_instance(session, name=name)
        ref = ref_of(inst)
    fields = _given_fields(
        inst.kind,
        url=url,
        token_env=token_env,
        timeout=timeout,
        batch_size=batch_size,
        host=host,
        port=port,
        user=user,
        password_env=password_env,
        database=database,
        tls_mode=tls_mode,
        connect_timeout=connect_timeout,
    )
    if fields and block is not None:
        raise ConfigError("give either --block or connection options, not both")
    block_note = "unchanged"
    new_block_name: str | None = None
    check_result: Any = None
    if fields or block is not None:
        _prepare()
        from tasks import instance_check as ic

        server = ic.server_label()
        if block is not None:
            target = ic.InstanceRef(ref.name, ref.kind, block, ref.categories, ref.config)
            if check:
                check_result = asyncio.run(ic.check_instance(target, timeout=PREFECT_TIMEOUT, login_only=True))
                if not check_result.ok:
                    raise ConfigError(
                        f"instance {name} not updated: {_problems_line(check_result)} (--no-check: anyway)"
                    )
            new_block_name, block_note = block, f"now block {block!r}"
        else:
            old = asyncio.run(ic.block_fields(ref, timeout=PREFECT_TIMEOUT))
            merged = {**(old or {}), **fields}
            if inst.block_binding:  # the block keeps the instance's key (a sync checks it)
                merged["binding"] = inst.block_binding
            if old is None and inst.kind == "http-seq" and not {"base_url", "token"} <= merged.keys():
                raise ConfigError(_missing_fields_message(inst.kind, name, inst.block_name, server))
            if old is None and inst.kind in DB_KINDS and not {"host", "user"} <= merged.keys():
                raise ConfigError(_missing_fields_message(inst.kind, name, inst.block_name, server))
            new = _build_block(inst.kind, name, merged)
            if check:
                check_result = asyncio.run(ic.check_instance(ref, timeout=PREFECT_TIMEOUT, login_only=True, block=new))
                if not check_result.ok:
                    raise ConfigError(
                        f"instance {name} not updated: {_problems_line(check_result)} (--no-check: save it anyway)"
                    )
            from syncflow.cli import _runtime
            from syncflow.cli.sync import block_name_for

            new_block_name = inst.block_name or block_name_for(name, inst.block_binding)
            _runtime.save_block(new, new_block_name)
            block_note = f"{'re-created' if old is None else 'updated'} {new_block_name!r} on {server}"
    with out.store() as session:
        inst, changed = update_instance(
            session,
            name=name,
            block_name=new_block_name,
            own_block=block is None,
            priority=priority,
            tags=[] if clear_tags else tags,
            categories=categories,
            enabled=enabled,
            description=description,
        )
        payload = out.instance_payload(inst) | {
            "changed": changed,
            "block": block_note,
            "check": check_result.as_dict() if check_result is not None else None,
        }

    def human(p: dict[str, Any]) -> str:
        what = ", ".join(p["changed"]) if p["changed"] else "no registry field"
        line = f"updated instance {p['name']!r}: {what} changed; connection block {p['block']}"
        if p["check"]:
            line += "; login checked"
        return line

    out.render(ctx, payload, human)


# ------------------------------------------------------------------------- check


def check_table(results: list[dict[str, Any]], server: str) -> list[RenderableType]:
    bad = [r for r in results if not r["ok"]]
    rows = [
        [r["instance"] if i == 0 else "", c["check"], "✓" if c["ok"] else "✗", c["detail"]]
        for r in results
        for i, c in enumerate(r["checks"])
    ]
    title = f"{len(results)} instance(s) checked on {server}: " + (
        "all ready" if not bad else f"{len(bad)} with a problem ({', '.join(r['instance'] for r in bad)})"
    )
    return [out.table(title, ["INSTANCE", "CHECK", "OK", "DETAIL"], rows)]


@instances_app.command("check")
def instances_check(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAME]...", help="Instances to check.", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every enabled instance.")] = False,
    _json: out.JsonFlag = False,
) -> None:
    """Is an instance ready to sync? Its block on THIS Prefect server, the connection, the
    credentials and the privileges of each of its categories, in one table.

    Exit status 1 when any check failed (each failed line says what to do).
    """
    if not names and not all_:
        raise ConfigError("say which instances: NAME (one or more) or --all")
    if names and all_:
        raise ConfigError("--all excludes instance names")
    with out.store() as session:
        if all_:
            insts = instance_svc.list_instances(session, enabled=True)
            if not insts:
                raise NotFoundError("no enabled instance to check (syncflow instances add ...)")
        else:
            insts = [instance_svc.live_instance(session, name=n) for n in dict.fromkeys(names or [])]
        refs = [ref_of(i) for i in insts]
    _prepare()
    from tasks import instance_check as ic

    results = asyncio.run(ic.check_instances(refs, timeout=PREFECT_TIMEOUT))
    server = ic.server_label()
    payload = {
        "ok": all(r.ok for r in results),
        "prefect_server": server,
        "instances": [r.as_dict() for r in results],
    }
    out.render(ctx, payload, lambda p: check_table(p["instances"], p["prefect_server"]))
    if not payload["ok"]:
        raise typer.Exit(1)


__all__ = ["check_table", "instances_check", "instances_update", "pydantic_message", "ref_of"]
