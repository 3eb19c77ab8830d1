"""One pipeline for one record of any kind: begin -> read/validate -> apply in one transaction -> finish.

* :mod:`~syncflow.engine.run`: begin (record running, single-flight lease) and finish;
* :mod:`~syncflow.engine.incremental`: pages after the cursor, one transaction each;
* :mod:`~syncflow.engine.snapshot`: a whole snapshot, one transaction;
* :mod:`~syncflow.engine.gaps`: the gap ledger's repair and the per-run reconciliation;
* :mod:`~syncflow.engine.lease`: keeping the lease alive between steps;
* :mod:`~syncflow.engine.metrics`: what ends up in ``sync_details``;
* :mod:`~syncflow.engine.options`: per-run options (full, ranges, batch size).

The steps exported here are units of work that wait for a store that went away for a moment
(a PostgreSQL restart): a step whose connection was lost runs again from what committed, for at
most ``SYNCFLOW_STORE_RETRY_SECONDS`` (:mod:`syncflow.store.outage`).

No Prefect here: ``tasks/sync.py`` wraps these steps, ``flows/instance_sync.py`` orders them.
"""

from typing import Any

from syncflow.engine import gaps as _gaps
from syncflow.engine import incremental as _incremental
from syncflow.engine import run as _run
from syncflow.engine import snapshot as _snapshot
from syncflow.engine.gaps import GapPolicy, RepairResult, watches_gaps
from syncflow.engine.incremental import ChunkResult, apply_batch, seq_holes
from syncflow.engine.metrics import BatchClock
from syncflow.engine.options import SyncOptions
from syncflow.engine.run import InstanceRun, Skipped
from syncflow.engine.snapshot import Stored
from syncflow.store.outage import retrying, store_retrying


def sync_chunk(*args: Any, resume: tuple[int, int] | None = None, **kwargs: Any) -> ChunkResult:
    """:func:`syncflow.engine.incremental.sync_chunk`, run again while the store is away. Only
    the first try starts at ``resume`` (the caller's committed point); a try after a lost
    connection resumes after the last page that committed, read from the record."""
    start = [resume]

    def attempt() -> ChunkResult:
        at, start[0] = start[0], None
        return _incremental.sync_chunk(*args, resume=at, **kwargs)

    return retrying(attempt, what="sync_chunk")


# A retried chunk resumes after the last committed page; begin/finish/snapshot are one
# transaction each (rolled back when the connection was lost).
resume_point = store_retrying(_incremental.resume_point)
begin_instance_sync = store_retrying(_run.begin_instance_sync)
finish_instance_sync = store_retrying(_run.finish_instance_sync)
should_stop = store_retrying(_run.should_stop)
store_snapshot = store_retrying(_snapshot.store_snapshot)
# The gap repair commits every few reads and settles each hole from what its read returned, so a
# re-run repeats reads, never counts; the reconciliation is one read and one UPDATE.
repair_gaps = store_retrying(_gaps.repair_gaps)
reconcile = store_retrying(_gaps.reconcile)

__all__ = [
    "BatchClock",
    "ChunkResult",
    "GapPolicy",
    "InstanceRun",
    "RepairResult",
    "Skipped",
    "Stored",
    "SyncOptions",
    "apply_batch",
    "begin_instance_sync",
    "finish_instance_sync",
    "reconcile",
    "repair_gaps",
    "resume_point",
    "seq_holes",
    "should_stop",
    "store_snapshot",
    "sync_chunk",
    "watches_gaps",
]
