"""What a syncflow process asks of Python's cyclic garbage collector: to leave alone what lives
as long as the process (the loaded modules) and to skip its final collections at exit.

A `syncflow sync instance` with nothing new takes ~1.8 s in all; without this, ~0.5 s more went
to the collections at exit and ~0.07 s to full collections walking Prefect's and SQLAlchemy's
modules during the run (``bench/PROFILE.md``, round 6).
"""

from __future__ import annotations

import atexit
import gc

_registered = False


def freeze_loaded() -> None:
    """Exempt every object alive now from the collector's full collections: called once what
    the process needs is loaded (modules, classes, Prefect's models), which stays to the end."""
    gc.freeze()


def end_without_final_collections() -> None:
    """Make this process's exit skip Python's final garbage collections (idempotent).

    At exit Python runs full collections over every object still alive (0.4-0.5 s in a process
    that loaded Prefect, SQLAlchemy and pydantic) only to free memory the OS takes back. An exit
    handler freezes what is left instead, and frozen objects are skipped. Registered early, it
    runs after the exit handlers registered later (Prefect's flushes of run logs and events);
    buffered output is still flushed after it. Called by the CLI's entry point and by
    :func:`flow_module_loaded`.
    """
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True


def flow_module_loaded() -> None:
    """Called by every deployment's flow module once it is imported: in a worker's flow-run
    process (``python -m prefect.engine``, which loads the module by its path) Prefect and the
    flow are then loaded for the rest of the process, which exits after the run."""
    freeze_loaded()
    end_without_final_collections()
