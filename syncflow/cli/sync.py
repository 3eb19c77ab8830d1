"""The commands that run flows: ``syncflow sync ...`` and ``syncflow demo``.

They reach Prefect only lazily inside the commands (``import syncflow`` stays Prefect-free):
they create blocks, call the flows in ``flows/`` (Prefect's ephemeral mode unless
``PREFECT_API_URL`` names a server) and start or follow deployment runs through
``deployments.trigger`` and the seam, ``tasks.prefect_api``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text
from sqlalchemy import select

from syncflow.book import session_exists
from syncflow.cli import _output as out
from syncflow.cli import _runtime
from syncflow.errors import ConfigError, SyncflowError, clean_message
from syncflow.names import MANUAL_BATCH
from syncflow.reports.sessions import UNITS as REPORT_UNITS
from syncflow.reports.sessions import progress_text
from syncflow.schemas import SessionDetailView, measure_session_progress, record_view
from syncflow.store.db import session_scope
from syncflow.store.instances import select_instances
from syncflow.store.models import Category, InstanceKind, SyncInstanceRecord
from syncflow.validation import check_port, check_url

sync_app = typer.Typer(
    help="Run syncs now (locally; Prefect ephemeral mode unless PREFECT_API_URL is set).", no_args_is_help=True
)


def _quiet_prefect() -> None:
    # Before Prefect is imported: its console quiet (our own progress display and final table
    # replace it), its run logs still sent to the Prefect API, its tracebacks to a log file,
    # and the embedded (ephemeral) server made robust: see syncflow.cli._runtime.
    _runtime.prepare()


def block_name_for(instance: str, binding: str | None = None) -> str:
    """Prefect block names allow lowercase letters, digits and dashes. With ``binding`` (the
    instance's key, :func:`new_binding`) the name ends with it, so two instances never share a
    block, however alike their names (``coll`` and ``COLL``)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", instance.lower()).strip("-")[:48].strip("-")
    if binding:
        return f"syncflow-{slug or 'instance'}-{binding[:12]}"
    return f"syncflow-{slug or 'instance'}"


def new_binding() -> str:
    """A new instance key: its block's name ends with it and the block carries it."""
    return uuid.uuid4().hex


def save_seq_block(
    instance: str,
    *,
    url: str,
    token_env: str,
    timeout: float | None = None,
    batch_size: int | None = None,
    binding: str | None = None,
) -> str:
    """Create (or replace) the http-seq block of ``instance``; the token comes from env
    ``token_env``. ``binding``: the instance's key (the block's name ends with it, the block
    carries it)."""
    url = check_url(url, field="--url")
    token = os.environ.get(token_env, "")
    if not token:
        raise ConfigError(f"environment variable {token_env} (--token-env) is not set or empty")
    _quiet_prefect()
    from pydantic import ValidationError

    from blocks.seq_http import SeqHttpInstance

    fields: dict[str, Any] = {"base_url": url, "token": token}
    if timeout is not None:
        fields["timeout"] = timeout
    if batch_size is not None:
        fields["batch_size"] = batch_size
    if binding is not None:
        fields["binding"] = binding
    try:
        block = SeqHttpInstance(**fields)
    except ValidationError as exc:
        raise ConfigError(f"instance {instance}: {clean_message(exc.errors()[0]['msg'])}") from None
    name = block_name_for(instance, binding)
    _runtime.save_block(block, name)  # block.save(name, overwrite=True), race-safe
    return name


DB_KINDS = (InstanceKind.POSTGRES.value, InstanceKind.MYSQL.value)


def save_database_block(
    instance: str,
    *,
    kind: str,
    host: str | None,
    user: str | None,
    password_env: str | None = None,
    port: int | None = None,
    database: str | None = None,
    tls_mode: str | None = None,
    connect_timeout: float | None = None,
    binding: str | None = None,
) -> str:
    """Create (or replace) the database block of ``instance``; the password comes from env ``password_env``."""
    check_port(port)
    if not host or not user:
        raise ConfigError(f"a {kind} instance needs --host and --user (and usually --password-env VAR)")
    fields: dict[str, Any] = {"kind": kind, "host": host, "user": user}
    if password_env is not None:
        password = os.environ.get(password_env, "")
        if not password:
            raise ConfigError(f"environment variable {password_env} (--password-env) is not set or empty")
        fields["password"] = password
    for key, value in (
        ("port", port),
        ("database", database),
        ("tls_mode", tls_mode),
        ("connect_timeout", connect_timeout),
        ("binding", binding),
    ):
        if value is not None:
            fields[key] = value
    _quiet_prefect()
    from pydantic import ValidationError

    from blocks.database import DatabaseInstance

    try:
        block = DatabaseInstance(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"instance {instance}: {where}: {clean_message(err['msg'])}") from None
    block.connection()  # the same checks the sync will make (ConfigError)
    name = block_name_for(instance, binding)
    _runtime.save_block(block, name)  # block.save(name, overwrite=True), race-safe
    return name


def delete_block(kind: str, block_name: str) -> None:
    """Delete a block this command made (best effort: the instance it was for was not added)."""
    try:
        from blocks.connections import BLOCK_TYPES

        block_type = BLOCK_TYPES.get(kind)
        if block_type is not None:
            block_type.delete(block_name)
    except Exception:  # the error that got us here is the one to report
        pass


def connection_block(
    kind: str,
    *,
    instance: str,
    block: str | None,
    url: str | None,
    token_env: str | None,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    password_env: str | None = None,
    database: str | None = None,
    tls_mode: str | None = None,
    connect_timeout: float | None = None,
    binding: str | None = None,
    **extra: Any,
) -> str | None:
    """The block an instance's connection lives in: named with --block, made from --url/--token-env
    (http-seq) or from --host/--port/--user/--password-env/--database/--tls-mode/--connect-timeout
    (postgres, mysql). A block made here carries ``binding``, the instance's key."""
    db: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": user,
        "password_env": password_env,
        "database": database,
        "tls_mode": tls_mode,
        "connect_timeout": connect_timeout,
    }
    db_given = [f"--{k.replace('_', '-')}" for k, v in db.items() if v is not None]
    if db_given:
        if kind not in DB_KINDS:
            raise ConfigError(f"{'/'.join(db_given)} are for postgres and mysql instances, not {kind}")
        if url is not None or token_env is not None:
            raise ConfigError("--url/--token-env are for http-seq instances, not " + kind)
        if block is not None:
            raise ConfigError(f"give either --block or {'/'.join(db_given)}, not both")
        seq_only = [f"--{k.replace('_', '-')}" for k, v in extra.items() if v is not None]
        if seq_only:
            raise ConfigError(f"{'/'.join(seq_only)} are for http-seq instances, not {kind}")
        return save_database_block(instance, kind=kind, binding=binding, **db)
    if url is None and token_env is None:
        return block
    if kind != InstanceKind.HTTP_SEQ:
        raise ConfigError(f"--url/--token-env are for http-seq instances, not {kind}")
    if block is not None:
        raise ConfigError("give either --block or --url/--token-env, not both")
    if not url or not token_env:
        raise ConfigError("an http-seq instance needs both --url and --token-env")
    return save_seq_block(instance, url=url, token_env=token_env, binding=binding, **extra)


# ------------------------------------------------------------------------ progress


def _watch_once(session_id: str, show: Callable[[list[SyncInstanceRecord]], None]) -> None:
    try:
        with session_scope() as s:
            recs = list(
                s.scalars(
                    select(SyncInstanceRecord)
                    .where(SyncInstanceRecord.session_id == session_id)
                    .order_by(SyncInstanceRecord.priority.desc(), SyncInstanceRecord.instance_name)
                )
            )
            for r in recs:
                s.expunge(r)
        show(recs)
    except Exception:  # the display must never break the sync
        pass


def _watch(session_id: str, stop: threading.Event, show: Callable[[list[SyncInstanceRecord]], None]) -> None:
    while not stop.wait(0.5):
        _watch_once(session_id, show)


# What one item of a category is, in the live display.
UNITS: dict[str, str] = dict(REPORT_UNITS)


def run_with_progress(
    coro_factory: Callable[[], Any], *, find_session: Callable[[], str | None], quiet: bool, category: str = ""
) -> Any:
    """Run a flow coroutine while a live table shows each record's progress from the store:
    items done / expected (the source's totalCount), rate and ETA once a batch was measured
    (:func:`syncflow.schemas.measure_progress`, as the console and the Prefect artifacts), and
    a session row summing them when the session has several instances."""
    unit = UNITS.get(category, "items")
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.fields[status]:<10} {task.fields[text]}"),
        disable=quiet,
        console=out.console(),
    )
    bars: dict[int, Any] = {}
    session_bar: list[Any] = []

    def show(recs: list[SyncInstanceRecord]) -> None:
        views = [record_view(r) for r in recs]
        if len(views) > 1 and not session_bar:
            session_bar.append(progress.add_task(f"session ({len(views)})", total=None, status="", text=""))
        for v in views:
            if v.id not in bars:
                bars[v.id] = progress.add_task(v.instance_name or str(v.id), total=None, status=v.status, text="")
            p = v.progress
            total = p.expected if p is not None else None
            if v.status == "completed":
                total = max(v.items_synced, 1)
            text = progress_text(p, v.items_synced, unit) if p is not None else f"{v.items_synced:,} {unit}"
            progress.update(bars[v.id], completed=v.items_synced, total=total, status=v.status, text=text)
        if session_bar:
            sp = measure_session_progress(views)
            done = f"{sp.instances_done}/{sp.instances_total}"
            total = sp.expected if sp.instances_done < sp.instances_total else max(sp.items_synced, 1)
            progress.update(
                session_bar[0],
                completed=sp.items_synced,
                total=total,
                status=done,
                text=progress_text(sp, sp.items_synced, unit),
            )

    stop = threading.Event()
    holder: dict[str, str | None] = {"sid": None}

    def watcher() -> None:
        while not stop.is_set() and holder["sid"] is None:
            holder["sid"] = find_session()
            if holder["sid"] is None:
                stop.wait(0.3)
        if holder["sid"] is not None:
            _watch(holder["sid"], stop, show)

    if quiet:  # nothing to show: no watcher polling the store (it cost ~1 s of CPU per session)
        return asyncio.run(coro_factory())
    thread = threading.Thread(target=watcher, daemon=True)
    with Live(progress, console=out.console(), refresh_per_second=4, transient=False):
        thread.start()
        try:
            return asyncio.run(coro_factory())
        finally:
            stop.set()
            thread.join(timeout=5)
            if holder["sid"] is not None:  # the final state, not the last poll
                _watch_once(holder["sid"], show)
    if not quiet:
        out.console().print()


# ------------------------------------------------------------------------ commands

RecordTable = ["instance", "status", "synced", "created", "updated", "unchanged", "deleted", "duration", "error"]


# Exit statuses of `sync run` / `sync instance` (README, "Exit statuses").
EXIT_OK = 0  # every instance synced (and the metadata session run first, if any, completed)
EXIT_FAILED = 1  # an instance failed, or the session was cancelled (also: any error, one line on stderr)
EXIT_SKIPPED = 3  # nothing failed, but an instance was skipped: another sync holds it
EXIT_METADATA = 4  # synced with warnings: the metadata session run first failed for some instances, or a
# record's reconciliation found messages missing that the gap ledger does not explain


def exit_status(view: SessionDetailView) -> int:
    """The exit status a session's outcome maps to (failure first, then skips, then warnings)."""
    if view.status != "completed" or view.failed_instances:
        return EXIT_FAILED
    if view.skipped_instances:
        return EXIT_SKIPPED
    if view.warnings:
        return EXIT_METADATA
    return EXIT_OK


def outcome_title(p: dict[str, Any]) -> str:
    """``session ID (messages): completed — 2/3 succeeded, 0 failed, 1 skipped``; a session all
    of whose records were skipped says ``skipped``, not ``completed``."""
    skipped = p.get("skipped_instances", 0)
    status = p["status"]
    if status == "completed" and skipped and not p["successful_instances"]:
        status = "skipped"
    title = (
        f"session {p['session_id']} ({p['sync_category']}): {status} — "
        f"{p['successful_instances']}/{p['total_instances']} succeeded, {p['failed_instances']} failed"
    )
    return title + (f", {skipped} skipped" if skipped else "")


def outcome_notes(p: dict[str, Any]) -> list[str]:
    """The lines under the table: each skipped record's reason (who holds it, until when) and
    the warnings (a metadata session run first that failed)."""
    notes = [r["error_message"] or f"skipped: {r['instance_name']}" for r in p["records"] if r["status"] == "skipped"]
    return notes + [f"warning: {w}" for w in p.get("warnings") or []]


def _final(ctx: typer.Context, session_id: str) -> int:
    """Print the session and its records (the one view, :mod:`syncflow.schemas`), then why
    records were skipped and any warning; returns the exit status (:func:`exit_status`)."""
    from syncflow.book import session_detail

    view = session_detail(session_id)
    payload = view.model_dump()

    def human(p: dict[str, Any]) -> Any:
        rows = [
            [
                r["instance_name"],
                r["status"],
                r["items_synced"],
                r["items_created"],
                r["items_updated"],
                r["items_unchanged"],
                r["items_deleted"],
                out.fmt_duration(r["duration_seconds"]),
                r["error_message"] or (f"warning: {r['warning']}" if r.get("warning") else None),
            ]
            for r in p["records"]
        ]
        table = out.table(outcome_title(p), RecordTable, rows)
        notes = outcome_notes(p)
        return Group(table, *(Text(n, no_wrap=True, overflow="ignore") for n in notes)) if notes else table

    out.render(ctx, payload, human)
    code = exit_status(view)
    if code == EXIT_FAILED:
        _runtime.mention_log()  # where Prefect's warnings and tracebacks of this run are
    return code


def _parse_priorities(items: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not re.fullmatch(r"-?\d+", value.strip()):
            raise ConfigError(f"--priority takes NAME=NUMBER, not {item!r}")
        out[name.strip()] = int(value)
    return out


def _creator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def run_session(
    ctx: typer.Context,
    *,
    category: str,
    instances: list[str],
    tags: list[str],
    priorities: dict[str, int] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    concurrency: int | None = None,
    quiet: bool = False,
    deployment: str | None = None,
    wait: bool = True,
    refresh_metadata: bool = True,
    scale_out: bool = False,
    metadata_max_age: float | None = None,
) -> int:
    """Run the session parent flow with a live display; returns the exit status.

    Locally (this process, Prefect's ephemeral mode unless PREFECT_API_URL is set), or with
    ``deployment`` as a run of that deployment on the Prefect server (its workers run it):
    the display then follows the session in the store until the run ends."""
    Category.parse(category, what="category")
    with session_scope(out.checked_engine()) as s:  # fail fast, before Prefect starts
        chosen = select_instances(s, category=category, names=instances, tags=tags)
        if not chosen:
            raise ConfigError(
                f"no enabled instance supports category {category!r}"
                + (f" with tag(s) {', '.join(tags)}" if tags else "")
            )
    _quiet_prefect()
    session_id = str(uuid.uuid4())
    params: dict[str, Any] = {
        "category": category,
        "instances": instances,
        "tags": tags,
        "created_by": _creator(),
        "priorities": priorities or None,
        "options": options or None,
        "concurrency": concurrency,
        "session_id": session_id,
        "refresh_metadata": refresh_metadata,
        "scale_out": scale_out,
        "metadata_max_age": metadata_max_age,  # None: SYNCFLOW_METADATA_MAX_AGE of the process running it
    }
    if deployment:
        return _run_deployment(ctx, deployment, params, wait=wait, quiet=quiet)
    from flows.session_sync import sync_session

    async def go() -> Any:
        return await sync_session(**{k: v for k, v in params.items() if v is not None}, return_state=True)

    def find() -> str | None:
        return session_id if session_exists(session_id) else None

    live = not (quiet or out.opts(ctx).json) and sys.stdout.isatty()
    state = run_with_progress(go, find_session=find, quiet=not live, category=category)
    sid = find()
    if sid is None:
        message = getattr(state, "message", None) or "the session did not start"
        try:
            state.result()
        except Exception as exc:  # the flow failed before it opened the session
            message = str(exc)
        _runtime.mention_log()
        raise ConfigError(message)
    return _final(ctx, sid)


def _prefect_api() -> str:
    from tasks import prefect_api as pf

    url = pf.api_url()
    if not url:
        raise ConfigError(
            "--deployment needs a Prefect server with the deployments and a worker: set PREFECT_API_URL "
            "(see the README, 'Deployments')"
        )
    return str(url)


async def _warn_without_workers(deployment: str) -> None:
    """Say at once when no worker of the deployment's work pool is online (the run would wait
    silently until one starts). Missing deployments are left to the trigger's error."""
    from tasks import prefect_api as pf

    try:
        pool = await pf.deployment_pool(deployment, timeout=15)
        if pool is None:  # served by a runner: no pool to look at
            return
        status = await pf.work_pool_status(pool, timeout=15)
    except SyncflowError:
        return
    if status.exists and not status.live_workers:
        out.warn(
            f"no live worker in work pool {pool!r}: the run waits until one starts "
            f"(start one: prefect worker start --pool {pool})"
        )
    elif status.exists and status.paused:
        out.warn(f"work pool {pool!r} is paused: the run waits until it is resumed (prefect work-pool resume {pool})")


def _run_deployment(ctx: typer.Context, deployment: str, params: dict[str, Any], *, wait: bool, quiet: bool) -> int:
    from deployments.trigger import trigger_session
    from tasks import prefect_api as pf

    api = _prefect_api()
    from syncflow.names import session_key

    async def start() -> Any:
        await _warn_without_workers(deployment)
        return await trigger_session(
            {k: v for k, v in params.items() if v is not None},
            deployment=deployment,
            # the run is found by this key while no worker has opened its session (`sessions show` says queued)
            idempotency_key=session_key(str(params["session_id"])),
        )

    try:
        fired = asyncio.run(start())
    except SyncflowError:
        raise
    except Exception as exc:  # connection refused, bad parameters (422), ...
        raise ConfigError(f"could not start a run of {deployment!r} on {api}: {type(exc).__name__}: {exc}") from None
    if not wait:
        out.render(
            ctx,
            fired.as_dict(),
            lambda p: (
                f"started flow run {p['flow_run_name']} ({p['flow_run_id']}) of {p['deployment']}: "
                f"session {p['session_id']}"
            ),
        )
        return 0
    if not (quiet or out.opts(ctx).json):
        typer.echo(f"flow run {fired.flow_run_name} ({fired.flow_run_id}) of {deployment}: session {fired.session_id}")

    async def follow() -> Any:
        return await pf.follow_run(fired.flow_run_id)

    def find() -> str | None:
        return fired.session_id if session_exists(fired.session_id) else None

    live = not (quiet or out.opts(ctx).json) and sys.stdout.isatty()
    state = run_with_progress(follow, find_session=find, quiet=not live, category=str(params["category"]))
    if find() is None:
        raise ConfigError(
            f"flow run {fired.flow_run_id} ended {state.name} before opening session {fired.session_id}: "
            f"{state.message or 'see the run in the Prefect UI'}"
        )
    return _final(ctx, fired.session_id)


@sync_app.command("instance")
def sync_instance_cmd(
    ctx: typer.Context,
    name: out.InstanceName,
    category: Annotated[
        str | None,
        typer.Option(
            "--category",
            help="messages (incremental by seq, after metadata), metadata; account, capacity, config "
            "(postgres/mysql instances). Default: messages, or the instance's first category.",
            show_default=False,
        ),
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Full re-sync: reset the cursor first.")] = False,
    from_seq: Annotated[int | None, typer.Option("--from-seq", help="Backfill from this seq (with --to-seq).")] = None,
    to_seq: Annotated[int | None, typer.Option("--to-seq", help="Backfill up to this seq; the cursor stays.")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Messages per request (default: the block's).")
    ] = None,
    refresh_metadata: Annotated[
        bool,
        typer.Option(
            "--refresh-metadata",
            help="messages: refresh the metadata first even when it is fresh (SYNCFLOW_METADATA_MAX_AGE, 1 h).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress bar.")] = False,
    _json: out.JsonFlag = False,
) -> None:
    """Sync one instance now, with a live progress bar and the final counts.

    Exit status 1 when the sync failed. The store is SYNCFLOW_DATABASE_URL's.
    """
    opts: dict[str, Any] = {}
    if full:
        opts["full"] = True
    if from_seq is not None:
        opts["from_seq"] = from_seq
    if to_seq is not None:
        opts["to_seq"] = to_seq
    if batch_size is not None:
        opts["batch_size"] = batch_size
    from syncflow.engine.options import SyncOptions

    SyncOptions.parse(opts, instance=name)
    if category is None:
        from syncflow.store.instances import get_instance

        with session_scope(out.checked_engine()) as s:
            cats = list(get_instance(s, name=name).categories)
        category = "messages" if "messages" in cats or not cats else cats[0]
    code = run_session(
        ctx,
        category=category,
        instances=[name],
        tags=[],
        options={name: opts} if opts else None,
        quiet=quiet,
        metadata_max_age=0 if refresh_metadata else None,
    )
    raise typer.Exit(code)


@sync_app.command("run")
def sync_run_cmd(
    ctx: typer.Context,
    category: Annotated[str, typer.Option("--category", help="What to sync: messages, metadata, account, ...")],
    instance: Annotated[list[str] | None, typer.Option("--instance", help="An instance; repeat for several.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Every enabled instance with this tag.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every enabled instance supporting the category.")] = False,
    priority: Annotated[
        list[str] | None, typer.Option("--priority", help="NAME=P: run NAME earlier (higher first).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Instances at once (default: the category's limit).")
    ] = None,
    deployment: Annotated[
        bool,
        typer.Option(
            "--deployment",
            help="Run it as a run of the manual-batch deployment on the Prefect server (PREFECT_API_URL) "
            "instead of in this process; the display follows it.",
        ),
    ] = False,
    deployment_name: Annotated[
        str, typer.Option("--deployment-name", help="The deployment --deployment runs.")
    ] = MANUAL_BATCH,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With --deployment: follow the run to its end (default).")
    ] = True,
    metadata: Annotated[
        bool,
        typer.Option(
            "--metadata/--no-metadata",
            help="messages: bring metadata up to date first (default; only where older than "
            "SYNCFLOW_METADATA_MAX_AGE, 1 h).",
        ),
    ] = True,
    refresh_metadata: Annotated[
        bool, typer.Option("--refresh-metadata", help="messages: refresh every instance's metadata, fresh or not.")
    ] = False,
    scale_out: Annotated[
        bool,
        typer.Option("--scale-out", help="Each instance sync as its own deployment run (any worker of the pool)."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress display.")] = False,
    _json: out.JsonFlag = False,
) -> None:
    """Run a session over several instances now (exit status 1 when any instance failed).

    In this process by default; with --deployment on the Prefect server's workers.
    """
    if not (instance or tag or all_):
        raise ConfigError("say which instances: --instance NAME (repeatable), --tag TAG or --all")
    if all_ and (instance or tag):
        raise ConfigError("--all excludes --instance and --tag")
    code = run_session(
        ctx,
        category=category,
        instances=instance or [],
        tags=tag or [],
        priorities=_parse_priorities(priority),
        concurrency=concurrency,
        quiet=quiet,
        deployment=deployment_name if deployment else None,
        wait=wait,
        refresh_metadata=metadata,
        scale_out=scale_out,
        metadata_max_age=0 if refresh_metadata else None,
    )
    raise typer.Exit(code)
