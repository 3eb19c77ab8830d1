"""The embedded default's Prefect server: Prefect's own ephemeral server, with its SQLite
writes made to wait for each other instead of failing.

Run (as ``main()`` with ``--port P``) by :mod:`syncflow.cli._runtime`
in place of the ``uvicorn ... prefect.server.api.server:create_app`` command Prefect's
ephemeral mode runs (same app, same services, same database under ``PREFECT_HOME``).

Why: Prefect's SQLite backend opens write transactions ``BEGIN DEFERRED``. A transaction that
reads first (``create_task_run`` reads the flow run's labels, slot acquisition reads the limit)
and then writes, while another connection — a concurrent API call, the event persister or
the task-run recorder of this server, or the temporary server of another ``syncflow``
process on the same file — wrote in between, cannot upgrade its stale snapshot: SQLite
answers ``SQLITE_BUSY`` at once, without waiting for ``busy_timeout`` (60 s here). Prefect
turns that into HTTP 503 and a traceback; its client retries after 2, 4, 8, 16, 32 s and
gives up after 6 attempts (the instance fails). ``BEGIN IMMEDIATE`` takes the write lock
when the transaction starts, so writers queue on the busy timeout (milliseconds each) and
never see a stale snapshot; reads outside transactions stay concurrent (WAL).

Start-up is serialised per ``PREFECT_HOME`` (a file lock held until the app's start-up —
migrations, block-type registration — is done): the first processes started at once on a
new ``PREFECT_HOME`` otherwise migrate the same new database together, and all but one fail
(``No such index``, ``expected to match one row ... in 'alembic_version'``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

START_LOCK = "syncflow-server-start.lock"


def patch_sqlite_write_transactions() -> bool:
    """Make every SQLite transaction Prefect's server begins ``BEGIN IMMEDIATE``.

    Returns False (and changes nothing) when Prefect's configuration class has moved."""
    from prefect.server.database import configurations

    config = getattr(configurations, "AioSqliteConfiguration", None)
    original = getattr(config, "begin_transaction", None)
    if config is None or original is None:
        return False
    if getattr(original, "_syncflow_immediate", False):
        return True

    @asynccontextmanager
    async def begin_transaction(self: Any, session: Any, with_for_update: bool = False) -> AsyncIterator[Any]:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction._syncflow_immediate = True  # type: ignore[attr-defined]
    config.begin_transaction = begin_transaction
    return True


def _start_lock_path() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser() / START_LOCK


async def _lock_start() -> int | None:
    """An exclusive lock on PREFECT_HOME's start lock file (waits for the holder); None where
    file locks are not available."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    path = _start_lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock_start(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases its flock


def create_app() -> Any:
    """Prefect's server app (``prefect.server.api.server:create_app``), its start-up run under
    PREFECT_HOME's start lock."""
    from prefect.server.api.server import create_app as prefect_create_app

    app = prefect_create_app()
    startup = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        fd = await _lock_start()
        try:
            async with startup(application) as state:
                _unlock_start(fd)
                fd = None
                yield state
        finally:
            _unlock_start(fd)

    app.router.lifespan_context = lifespan
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """``--port P``: serve Prefect's API on 127.0.0.1:P. Exit status 3 only when the port is
    taken (Prefect's start-up loop then picks another), 1 when the app could not start."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m syncflow.cli._prefect_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if not patch_sqlite_write_transactions():
        print("syncflow: could not patch Prefect's SQLite transactions (Prefect changed?)", file=sys.stderr)
    import uvicorn

    try:
        _serve(uvicorn, args.port)
    except SystemExit as exc:
        # uvicorn exits 3 when it cannot start, port taken or app start-up failed; Prefect
        # takes 3 for "port taken" and starts another server on another port, without end
        # when it is the app (a broken database): exit 1 then, so Prefect gives up and says so.
        if exc.code == 3 and _port_free(args.port):
            raise SystemExit(1) from None
        raise


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _serve(uvicorn: Any, port: int) -> None:
    uvicorn.main(  # the command Prefect's SubprocessASGIServer runs, in this process
        [
            "--factory",
            "syncflow.cli._prefect_server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
    )


if __name__ == "__main__":
    main()
