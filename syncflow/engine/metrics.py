"""What an instance sync measured, for the record's ``sync_details``."""

from __future__ import annotations

import time
from typing import Any

from syncflow.engine.incremental import ChunkResult
from syncflow.store.sessions import ItemCounts

MAX_HOLES_LISTED = 20


class BatchClock:
    """Collects the metrics that end up in ``sync_details``."""

    def __init__(self, start_seq: int) -> None:
        self.t0 = time.perf_counter()
        self.batches = 0  # stored by this run
        self.batch_no = 0  # the record's batch count after the last finished chunk
        self.cursor = start_seq  # the record's committed cursor after the last finished chunk
        self.batch_seconds = 0.0
        self.bytes = 0
        self.retries = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.start_seq = start_seq
        self.holes: list[tuple[int, int]] = []
        self.hole_count = 0
        self.counts = ItemCounts()
        self.recorded_holes = 0  # holes new to the gap ledger
        self.server: tuple[int, int, int] | None = None  # (cursor, totalCount, maxSeq) at the start
        self.extra: dict[str, Any] = {}  # the gap repair's and the reconciliation's details

    def add_chunk(self, chunk: ChunkResult, *, retries: int) -> None:
        self.batches += chunk.batches
        self.batch_no = chunk.batch_no
        self.cursor = chunk.cursor
        self.batch_seconds += chunk.store_seconds
        self.bytes += chunk.nbytes
        self.retries += retries
        self.counts = self.counts + chunk.counts
        if chunk.first_seq is not None and self.first_seq is None:
            self.first_seq = chunk.first_seq
        if chunk.last_seq is not None:
            self.last_seq = chunk.last_seq
        self._holes(chunk.holes)
        self.recorded_holes += chunk.recorded_holes
        if self.server is None:
            self.server = chunk.server

    def add_details(self, details: dict[str, Any], counts: ItemCounts | None = None) -> None:
        """Details of a step besides the page reads (gap repair, reconciliation) and the
        counts it added to the record (late arrivals are created messages too)."""
        self.extra.update(details)
        if counts is not None:
            self.counts = self.counts + counts

    def _holes(self, holes: list[tuple[int, int]]) -> None:
        self.hole_count += sum(b - a + 1 for a, b in holes)
        room = MAX_HOLES_LISTED - len(self.holes)
        if room > 0:
            self.holes.extend(holes[:room])

    def details(self, *, complete: bool = True) -> dict[str, Any]:
        """The metrics for ``sync_details``. After a failure (``complete=False``) the batch
        count is left out: each batch's own transaction keeps the record's count right even
        when a chunk failed half-way, and this clock did not see that chunk's batches."""
        duration = time.perf_counter() - self.t0
        return {
            **({"batches": self.batch_no} if complete else {}),
            "seq_range": [self.first_seq, self.last_seq],
            "start_cursor": self.start_seq,
            "duration_s": round(duration, 3),
            "avg_batch_s": round(self.batch_seconds / self.batches, 4) if self.batches else None,
            "throughput_msgs_per_s": round(self.counts.synced / duration, 1) if duration > 0 else None,
            "retries": self.retries,
            "bytes": self.bytes,
            "seq_holes": self.hole_count,
            "seq_hole_ranges": [list(h) for h in self.holes],
            "created": self.counts.created,
            "updated": self.counts.updated,
            "unchanged": self.counts.unchanged,
            "holes_recorded": self.recorded_holes,
            **self.extra,
        }


__all__ = ["MAX_HOLES_LISTED", "BatchClock"]
