"""How a syncflow process ends: without Python's final garbage collections."""

from __future__ import annotations

import atexit
import gc

_registered = False


def end_without_final_collections() -> None:
    """Make this process's exit skip Python's final garbage collections (idempotent).

    At exit Python runs full collections over every object still alive: 0.4-0.5 s of a process
    that loaded Prefect, SQLAlchemy and pydantic (a `syncflow sync instance` with nothing new
    takes ~1.8 s in all; ``bench/PROFILE.md``, round 6), only to free memory the OS takes back.
    An exit handler freezes what is left instead, and frozen objects are skipped. Registered
    early, it runs after the exit handlers registered later (Prefect's flushes of run logs and
    events); buffered output is still flushed after it. Called by the CLI's entry point and on
    the first import of ``flows`` (a worker's flow-run process imports a deployment's flow).
    """
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True
