"""``syncflow demo``: the main job on the embedded default, end to end.

Starts three reference seq servers on 127.0.0.1, registers them as instances (their tokens
go into Prefect blocks, never into the store), runs a messages session over them (which
first brings their metadata up to date in a metadata session of its own, the seed's rule),
appends new messages on the servers and runs a second, incremental messages session that
fetches only what is new; after each session it shows how many instance syncs ran at once
against the category's concurrency limit. Store: the demo's own SQLite file,
``$SYNCFLOW_HOME/demo/syncflow.db`` (default ./.syncflow/demo), never SYNCFLOW_DATABASE_URL's:
the demo's instances and sessions stay out of an operator's store and schedules. Prefect:
ephemeral mode unless PREFECT_API_URL names a server.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from syncflow.cli.sync import new_binding, run_session, save_seq_block
from syncflow.errors import NotFoundError
from syncflow.names import limit_name
from syncflow.store import instances as inst_svc
from syncflow.store.db import get_engine, session_scope
from syncflow.store.migrations import upgrade
from syncflow.store.models import Instance
from syncflow.store.retirement import purge_data
from syncflow.testing.seqserver import SeqServer

LATENCY = 0.25  # seconds per request: a remote server's round trip, so instance syncs overlap visibly

TOKEN_ENV = "SYNCFLOW_DEMO_TOKEN"
DEMO_TAG = "demo"
DEMO_DIR = "demo"  # under SYNCFLOW_HOME: the demo's own store


def use_demo_store() -> str:
    """Point this process at the demo's own SQLite store, ``$SYNCFLOW_HOME/demo/syncflow.db``
    (whatever SYNCFLOW_DATABASE_URL / --database-url say): its instances and sessions never land
    in an operator's store, so no scheduled session ever runs over them. Returns its URL."""
    from syncflow.settings import get_settings, reset_settings

    folder = (get_settings().home / DEMO_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'syncflow.db'}"
    os.environ["SYNCFLOW_DATABASE_URL"] = url
    reset_settings()
    return url


def _register(servers: dict[str, SeqServer]) -> None:
    """Point the demo instances at this run's servers (new ports each run). An instance of an
    earlier run is kept — its past sessions stay — with its synced data and cursor purged, so
    the first session is a first sync again."""
    for name, server in servers.items():
        with session_scope() as s:
            try:
                inst: Instance | None = inst_svc.live_instance(s, name=name)
            except NotFoundError:
                inst = None
            if inst is not None:
                purge_data(s, instance_id=inst.id)
            binding = (inst.block_binding if inst is not None else None) or new_binding()
        block = save_seq_block(name, url=server.url, token_env=TOKEN_ENV, binding=binding)
        with session_scope() as s:
            if inst is not None:
                row = inst_svc.get_instance(s, name=name)
                row.block_name, row.block_binding = block, binding
                continue
            inst_svc.add_instance(
                s,
                name=name,
                kind="http-seq",
                block_name=block,
                block_binding=binding,
                tags=[DEMO_TAG],
                priority=len(servers) - int(name.rsplit("-", 1)[1]),
                description="syncflow demo: a reference seq server started by `syncflow demo`",
            )


def _show_concurrency() -> None:
    """How many instance syncs of the latest session of each category ran at once."""
    from sqlalchemy import select

    from syncflow.store.models import SyncInstanceRecord, SyncSession
    from syncflow.store.sessions import max_overlap

    with session_scope() as s:
        latest: dict[str, str] = {}
        for row in s.scalars(select(SyncSession).order_by(SyncSession.started_at.desc()).limit(2)):
            latest.setdefault(row.sync_category, row.session_id)
        for category, sid in sorted(latest.items()):
            spans = [
                (r.started_at, r.completed_at)
                for r in s.scalars(select(SyncInstanceRecord).where(SyncInstanceRecord.session_id == sid))
                if r.started_at and r.completed_at
            ]
            peak = max_overlap(spans)
            typer.echo(
                f"   {category}: {len(spans)} instance syncs, at most {peak} at once "
                f"(Prefect limit {limit_name(category)}: {_limit(category)} slots)"
            )


def _limit(category: str) -> str:
    import asyncio

    from tasks import prefect_api as pf

    try:
        return str(asyncio.run(pf.read_limit(category)))
    except Exception:  # the display must not fail the demo
        return "?"


def demo(
    ctx: typer.Context,
    messages: Annotated[int, typer.Option("--messages", min=1, help="Messages on the first demo server.")] = 5000,
    new: Annotated[int, typer.Option("--new", min=1, help="Messages appended before the incremental run.")] = 250,
) -> None:
    """Run the main job on the embedded default: start 3 sample seq servers, sync their metadata
    and messages into the store, append messages, and sync again incrementally."""
    os.environ.setdefault(TOKEN_ENV, "demo-token")
    token = os.environ[TOKEN_ENV]
    demo_url = use_demo_store()
    upgrade(get_engine())
    typer.echo(f"store: {demo_url} (the demo's own; the store of your instances and schedules is not touched)")
    sizes = [messages, max(messages * 3 // 5, 1), max(messages * 2 // 5, 1)]
    servers = {
        f"demo-im-{i + 1}": SeqServer(messages=n, conversations=4 + i, token=token, seed=i + 1)
        for i, n in enumerate(sizes)
    }
    try:
        for name, server in servers.items():
            server.set_faults(latency=LATENCY)
            server.start()
            typer.echo(f"started {name}: {server.url} ({server.message_count} messages)")
        _register(servers)
        typer.echo("\n1) messages session (metadata first, then every message: a first sync)")
        code = run_session(ctx, category="messages", instances=[], tags=[DEMO_TAG])
        _show_concurrency()
        for server in servers.values():
            server.reset_requests()
            server.append(new)
        typer.echo(f"\n2) {new} new messages per server; messages session again (incremental)")
        # metadata_max_age=0: the demo shows the metadata phase again (it is fresh: it would be skipped)
        second = run_session(ctx, category="messages", instances=[], tags=[DEMO_TAG], metadata_max_age=0)
        code = 1 if 1 in (code, second) else max(code, second)  # the exit statuses of `sync run`
        _show_concurrency()
        for name, server in servers.items():
            asked = [r.last_seq for r in server.requests if r.path.endswith("/messages/sync")]
            typer.echo(f"   {name} was asked for lastSeq={asked}: only the new messages were fetched")
    finally:
        for server in servers.values():
            server.stop()
    typer.echo(
        f"\nnext (the demo's store): syncflow --database-url {demo_url} sessions list"
        f" · ... sessions show <id> · ... stats · ... instances show demo-im-1"
    )
    raise typer.Exit(code)
