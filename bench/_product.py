"""Every place where the benchmark touches syncflow's own code: ONE module to repoint.

Nothing else in ``bench/`` imports product code: the measured runs launch it by its console
script (``syncflow ...``, resolved from the installed package's entry points) or by a
``module:attribute`` string kept here, and the wiring that is not timed (migrations, blocks,
instances, records) goes through the functions below. Imports are lazy, so ``bench.fastseq``,
``bench.raw``, ``bench.floor`` and ``bench.dltpeer`` never load product code.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

# ------------------------------------------------------------------ names (strings only)

CLI_SCRIPT = "syncflow"
"""The console script (``[project.scripts]``); the bench runs it through its entry point."""
CLI_MODULE = "syncflow.cli"
"""What ``python -c 'import <CLI_MODULE>'`` times (the CLI's import cost)."""
INSTANCE_FLOW = "flows.instance_sync:sync_instance"
"""The per-instance subflow (flow name ``sync-instance``), for ``--flow`` A/B runs."""
REFERENCE_SEQSERVER = "syncflow.testing.seqserver"
"""The project's reference seq server (``--source reference``: the old, capped baseline)."""
MESSAGES_LIMIT = "tag:sync:messages"
"""The global concurrency limit a messages session takes its slots from."""
WORK_POOL = "syncflow"
"""The process work pool of ``prefect.yaml`` (``syncflow setup`` creates it)."""
SWEEP_DEPLOYMENT = "sweep/every-5-minutes"
"""The scheduled sweep (``syncflow sweep`` as a deployment)."""
SWEPT_PREFIX = "worker lost:"
"""How the error message of a record the sweep failed starts."""

# Functions instrumented in the measured child (module, attribute or Class.method, span kind).
ENGINE_SPANS: tuple[tuple[str, str, str], ...] = (
    ("syncflow.sources.http_seq", "SeqHttpClient.fetch_page", "fetch"),
    ("syncflow.sources.http_seq", "SeqHttpClient._send", "http"),
    ("syncflow.sources.http_seq", "decode_page", "decode"),
    ("syncflow.sources.http_seq", "validate_page", "validate"),
    ("syncflow.engine.incremental", "apply_batch", "store"),
    ("syncflow.engine.incremental", "apply_message_batch", "upsert"),
    ("syncflow.store.page_commit", "commit_page", "upsert"),  # PostgreSQL: upsert + cursor + record at once
    ("syncflow.engine", "begin_instance_sync", "begin"),
    ("syncflow.engine", "finish_instance_sync", "finish"),
    ("syncflow.engine.incremental", "resume_point", "resume"),
    ("syncflow.store.sync_state", "advance_cursor", "cursor"),
    ("syncflow.store.sessions", "add_record_progress", "record"),
)
# Frames of a py-spy profile: (substring of "function (file)", bucket); first match wins.
PROFILE_BUCKETS: tuple[tuple[str, str], ...] = (
    ("_fast_page", "decode: rows from JSON"),
    ("_decode_page_slow", "decode: rows from JSON"),
    ("decode_page", "decode: rows from JSON"),
    ("validate_page", "validation"),
    ("model_construct", "models (pydantic)"),
    ("pydantic", "models (pydantic)"),
    ("_apply_postgres", "COPY + upsert"),
    ("commit_page", "COPY + upsert (+ cursor + record, one statement)"),
    ("apply_message_batch", "COPY + upsert"),
    ("advance_cursor", "bookkeeping SQL: cursor"),
    ("add_record_progress", "bookkeeping SQL: record counters"),
    ("resume_point", "bookkeeping SQL: resume point"),
    ("begin_instance_sync", "bookkeeping SQL: begin/finish"),
    ("finish_instance_sync", "bookkeeping SQL: begin/finish"),
    ("commit", "commit"),
    ("_send (syncflow", "HTTP"),
    ("fetch_page", "HTTP"),
)


def cli_entry_point() -> Any:
    """The ``syncflow`` console script's callable, from the installed package's metadata."""
    (ep,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == CLI_SCRIPT]
    return ep.load()


# ------------------------------------------------------------------ wiring (not timed)


PACKAGES = ("syncflow", "flows", "tasks", "blocks", "deployments")
"""The product's top-level packages (``[tool.setuptools.packages.find]``)."""


def compile_bytecode() -> list[str]:
    """Byte-compile the product's packages where they are imported from, as ``pip install``
    does for a regular install, and return the directories compiled.

    An editable install (or a checkout on ``PYTHONPATH``) ships no ``.pyc``; a process started
    with ``PYTHONDONTWRITEBYTECODE=1`` (set on this machine) then compiles ~85 source files on
    every start, ~0.3 s that a user's installed syncflow never pays and the floor (Prefect only,
    compiled at install) never pays either. Reading a ``.pyc`` is unaffected by that variable."""
    import compileall
    import importlib.util
    from pathlib import Path

    done = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for where in spec.submodule_search_locations:
            if not compileall.compile_dir(where, quiet=1):
                raise RuntimeError(f"could not byte-compile {where}")
            done.append(str(Path(where)))
    return done


def migrate(url: str) -> None:
    """Create the syncflow schema in the (fresh) database at ``url``."""
    from syncflow.store.db import make_engine
    from syncflow.store.migrations import upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def save_seq_block(name: str, *, base_url: str, token: str, batch_size: int, **options: Any) -> None:
    """Save an http-seq connection block (needs PREFECT_API_URL)."""
    from blocks.seq_http import SeqHttpInstance

    SeqHttpInstance(base_url=base_url, token=token, batch_size=batch_size, **options).save(name, overwrite=True)


def register_instance(url: str, *, name: str, block_name: str | None) -> tuple[int, int]:
    """Register an http-seq instance and its messages sync state: ``(instance_id, item_id)``."""
    from syncflow.store import instances
    from syncflow.store.db import make_engine, session_scope
    from syncflow.store.models import SyncConfigItem
    from syncflow.store.sync_state import ensure_item

    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            inst = instances.add_instance(s, name=name, kind="http-seq", block_name=block_name)
            ensure_item(s, instance_id=inst.id, category="messages")
            item_id = s.query(SyncConfigItem.id).filter_by(instance_id=inst.id, category="messages").scalar()
            return int(inst.id), int(item_id)
    finally:
        engine.dispose()


def open_record(url: str, *, instance: str) -> int:
    """A messages session with one record for ``instance`` (what ``--flow`` runs are given)."""
    from syncflow.store import sessions
    from syncflow.store.db import make_engine, session_scope

    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            row = sessions.open_session(s, sync_category="messages", instances=[instance], created_by="bench")
            return int(sessions.records_in_order(s, session_id=row.session_id)[0].id)
    finally:
        engine.dispose()


def setup_session_store(
    url: str, *, names: list[str], blocks: list[str], seq_url: str, token: str, batch_size: int
) -> None:
    """Fresh store for the session benchmark: schema, one block and one instance per name."""
    save_seq_blocks(blocks, base_url=seq_url, token=token, batch_size=batch_size)
    setup_instances(url, names=names, blocks=blocks)


def save_seq_blocks(blocks: list[str], *, base_url: str, token: str, batch_size: int) -> None:
    """Save one http-seq connection block per name (needs PREFECT_API_URL)."""
    for block in blocks:
        save_seq_block(block, base_url=base_url, token=token, batch_size=batch_size)


def setup_instances(url: str, *, names: list[str], blocks: list[str]) -> None:
    """Fresh store over blocks saved beforehand: schema, one http-seq instance per name."""
    migrate(url)
    from syncflow.store import instances
    from syncflow.store.db import make_engine, session_scope

    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            for name, block in zip(names, blocks, strict=True):
                instances.add_instance(s, name=name, kind="http-seq", block_name=block)
    finally:
        engine.dispose()


def sync_instance_argv(instance: str) -> list[str]:
    """``syncflow sync instance NAME``: what a user runs for one instance (metadata first)."""
    return ["sync", "instance", instance, "--quiet"]


def sync_session_argv(instances: list[str]) -> list[str]:
    """``syncflow sync run``: one messages session over ``instances``, without the metadata phase."""
    argv = ["sync", "run", "--category", "messages", "--no-metadata", "--quiet"]
    for name in instances:
        argv += ["--instance", name]
    return argv


def sync_all_argv(*, scale_out: bool = False) -> list[str]:
    """``syncflow sync run --all``: one messages session over every enabled instance, without the
    metadata phase; ``scale_out``: as a run of ``sync-session/manual-batch`` with ``scale_out``
    true (each instance its own ``sync-instance/instance`` run), printing the run and session
    ids as JSON and returning at once."""
    argv = ["sync", "run", "--category", "messages", "--all", "--no-metadata", "--quiet"]
    return ["--json", *argv, "--deployment", "--scale-out", "--no-wait"] if scale_out else argv


def scale_out_argv(instances: list[str]) -> list[str]:
    """The scale-out session of :func:`sync_all_argv` over ``instances`` only."""
    argv = ["--json", "sync", "run", "--category", "messages", "--no-metadata", "--quiet"]
    for name in instances:
        argv += ["--instance", name]
    return [*argv, "--deployment", "--scale-out", "--no-wait"]


# ------------------------------------------------------------------ per-page A/B (bench.perpage)


def store_sql() -> dict[str, Any]:
    """The engine's per-page SQL as text (PostgreSQL): staging DDL, COPY, upsert, columns."""
    from syncflow.store import messages as ms

    stage = ms.stage_for(extended=False)
    return {
        "stage_ddl": stage.ddl,
        "copy": f"COPY {stage.table} ({', '.join(stage.columns)}) FROM STDIN (FORMAT BINARY)",
        "copy_types": list(stage.types),
        "upsert": stage.upsert,
        "columns": list(ms.COLUMNS),
    }


def engine_page_loop(url: str, *, record_id: int, pages: list[list[tuple[Any, ...]]]) -> float:
    """The engine's own per-page store (``seq_engine.apply_batch`` on one connection, as
    ``sync_chunk`` calls it) over ready rows, no HTTP and no threads; returns seconds."""
    import time

    from syncflow import engine as seq_engine
    from syncflow.engine.incremental import apply_batch
    from syncflow.store import messages as message_store
    from syncflow.store.db import make_engine

    engine = make_engine(url)
    try:
        run = seq_engine.begin_instance_sync(record_id=record_id, owner="bench", lease_seconds=600, engine=engine)
        assert isinstance(run, seq_engine.InstanceRun), run
        last = run.start_seq
        with engine.connect() as conn:
            message_store.prepare(conn)
            start = time.perf_counter()
            for i, rows in enumerate(pages):
                result = apply_batch(
                    run, rows=rows, last_seq=last, batch_no=i + 1, remaining=0, engine=engine, connection=conn
                )
                last = result.cursor
            seconds = time.perf_counter() - start
        seq_engine.finish_instance_sync(run, outcome="completed", details={}, engine=engine)
        return seconds
    finally:
        engine.dispose()
