"""How the CLI prepares Prefect, before importing it: a quiet terminal without losing a log,
and an embedded (ephemeral) Prefect server that holds up under concurrency.

- **Terminal**: Prefect's console handler is silenced (``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``)
  — the CLI shows its own live table and final summary. Nothing else changes: the run
  loggers keep their level and ``PREFECT_LOGGING_TO_API_ENABLED`` stays on, so every flow
  and task run log reaches the Prefect API (the UI), as on a real server.
- **Log file**: Prefect's warnings, errors and tracebacks of this process, and everything the
  embedded server prints, go to ``$SYNCFLOW_HOME/logs/prefect.log``; the CLI names that file
  when a command failed (:func:`mention_log`).
- **Embedded server**: with no ``PREFECT_API_URL``, Prefect starts a temporary server of its
  own on ``PREFECT_HOME``'s SQLite database in every process; here it is started as
  :mod:`syncflow.cli._prefect_server` (the same app, its writes ``BEGIN IMMEDIATE``: see
  there why) with its output in the log file.

Call :func:`prepare` before the first ``import prefect`` of the process (it is idempotent).
When Prefect is already imported (tests, an application embedding the CLI), the process's
Prefect was configured by someone else: its logging and server are left as they are.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LOG_NAME = "prefect.log"
LOG_MAX_BYTES = 20 * 1024 * 1024  # then the file is moved to prefect.log.1 (one generation)

# What the CLI sets for its own process only; the embedded server's output must not be silenced.
_CONSOLE_QUIET = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",  # Prefect's console handler (root, uvicorn)
    "PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL": "CRITICAL",  # prefect._internal's stderr handler
}

_state: dict[str, Any] = {"prepared": False, "set": {}}


def log_path() -> Path:
    """Where Prefect's own logs of CLI processes go: ``$SYNCFLOW_HOME/logs/prefect.log``."""
    from syncflow.settings import get_settings

    return (get_settings().home / "logs" / LOG_NAME).resolve()


def prepare() -> None:
    """Quiet Prefect's console, keep its API logs, send its tracebacks to the log file, and
    make the embedded server robust. Idempotent; only the environment defaults when Prefect
    is already imported (then its logging and server are someone else's)."""
    if _state["prepared"]:
        return
    _state["prepared"] = True
    env = os.environ
    # The ephemeral server's telemetry service only adds writes to Prefect's SQLite file.
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "true")
    # Servers started at once on one PREFECT_HOME start one after the other (see
    # _prefect_server): Prefect's default wait of 20 s is too short for the last of several.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    if "prefect" in sys.modules:
        return
    for key, value in _CONSOLE_QUIET.items():
        if key not in env:
            env[key] = value
            _state["set"][key] = value
    path = _open_log()
    import prefect  # noqa: F401  (configures Prefect's logging, with the settings above)

    if path is not None:
        _log_to_file(path)
    if _ephemeral():
        _embed_server()


def _open_log() -> Path | None:
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_MAX_BYTES:
            path.replace(path.with_name(LOG_NAME + ".1"))
        return path
    except OSError:  # a read-only home must not stop a sync: no log file then
        return None


def _log_to_file(path: Path) -> None:
    handler = logging.FileHandler(path, delay=True, encoding="utf-8")
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"%(asctime)s pid {os.getpid()} %(levelname)s %(name)s: %(message)s"))
    _state["handler"] = handler
    # the root logger collects Prefect's loggers (run logs included: those at WARNING and
    # above are copied here); prefect._internal does not propagate.
    for name in ("", "prefect._internal"):
        logging.getLogger(name).addHandler(handler)


def mention_log() -> None:
    """Name the log file on stderr (after a failure), when something was logged there."""
    handler = _state.get("handler")
    if handler is None:
        return
    handler.flush()
    path = Path(handler.baseFilename)
    try:
        if not path.stat().st_size:
            return
    except OSError:
        return
    sys.stderr.write(f"Prefect's log (orchestrator warnings and tracebacks): {path}\n")


# ------------------------------------------------------------------------ embedded server


def _ephemeral() -> bool:
    """No Prefect API configured: Prefect will start its temporary server (ephemeral mode)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return not settings.api.url and bool(settings.server.ephemeral.enabled)


def _embed_server() -> None:
    """Have Prefect's ephemeral mode start :mod:`syncflow.cli._prefect_server` (output to the
    log file) instead of its own uvicorn command. Prefect still picks the port, waits for
    the server's health and stops it at exit."""
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - Prefect moved it: its own server then
        return
    if not hasattr(SubprocessASGIServer, "_run_uvicorn_command") or getattr(SubprocessASGIServer, "_syncflow", False):
        return

    def _run_uvicorn_command(self: Any) -> subprocess.Popen[Any]:
        return start_server(self.port)

    SubprocessASGIServer._run_uvicorn_command = _run_uvicorn_command  # type: ignore[method-assign]
    SubprocessASGIServer._syncflow = True  # type: ignore[attr-defined]


SERVER_MARKERS = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
"""What Prefect's own ephemeral command sets in its server's environment (``bench`` starts the
embedded server with them too)."""


def server_env() -> dict[str, str]:
    """The environment of the embedded server: the process's, Prefect's settings, the
    ephemeral markers Prefect's own command sets, and the console left as Prefect has it."""
    from prefect.settings import get_current_settings

    env = {
        **os.environ,
        **SERVER_MARKERS,
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    for key, value in _state["set"].items():
        if env.get(key) == value:
            del env[key]
    return env


# The server imports this syncflow (not one the working directory may hold: -P, no cwd on sys.path).
_SERVER_MAIN = "import sys; sys.path.insert(0, {root!r}); from syncflow.cli._prefect_server import main; main()"


def _root() -> Path:
    import syncflow

    return Path(syncflow.__file__).resolve().parent.parent


def start_server(port: int | None) -> subprocess.Popen[Any]:
    """Start the embedded server on 127.0.0.1:``port``; its output goes to the log file."""
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        sink: Any = open(path, "ab")  # the child keeps its copy; ours is closed below
    except OSError:
        sink = subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-P", "-c", _SERVER_MAIN.format(root=str(_root())), "--port", str(port)],
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    finally:
        if sink is not subprocess.DEVNULL:
            sink.close()


def save_block(block: Any, name: str) -> None:
    """``block.save(name, overwrite=True)``, again when another process registered the block's
    type at the same moment: Prefect checks for the type, then creates it, and the loser of
    that race gets ObjectAlreadyExists (seen with ``instances add`` run at once on a new
    PREFECT_HOME); the next attempt finds the type."""
    from prefect.exceptions import ObjectAlreadyExists

    for attempt in range(3):
        try:
            block.save(name, overwrite=True)
            return
        except ObjectAlreadyExists:
            if attempt == 2:
                raise
