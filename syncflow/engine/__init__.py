"""One pipeline for one record of any kind: begin -> read/validate -> apply in one transaction -> finish.

* :mod:`~syncflow.engine.run`: begin (record running, single-flight lease) and finish;
* :mod:`~syncflow.engine.incremental`: pages after the cursor, one transaction each;
* :mod:`~syncflow.engine.snapshot`: a whole snapshot, one transaction;
* :mod:`~syncflow.engine.gaps`: the gap ledger's repair and the per-run reconciliation;
* :mod:`~syncflow.engine.lease`: keeping the lease alive between steps;
* :mod:`~syncflow.engine.metrics`: what ends up in ``sync_details``;
* :mod:`~syncflow.engine.options`: per-run options (full, ranges, batch size).

No Prefect here: ``tasks/sync.py`` wraps these steps, ``flows/instance_sync.py`` orders them.
"""

from syncflow.engine.gaps import GapPolicy, RepairResult, reconcile, repair_gaps, watches_gaps
from syncflow.engine.incremental import ChunkResult, apply_batch, resume_point, seq_holes, sync_chunk
from syncflow.engine.metrics import BatchClock
from syncflow.engine.options import SyncOptions
from syncflow.engine.run import InstanceRun, Skipped, begin_instance_sync, finish_instance_sync, should_stop
from syncflow.engine.snapshot import Stored, store_snapshot

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
