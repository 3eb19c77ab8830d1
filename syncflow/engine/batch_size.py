"""Adaptive page size: grow or shrink an instance's batch size to hold a target page time.

A page costs a fixed part (the request's round trip, the transaction's commit and bookkeeping)
and a part per message. Against a slow source (50 ms of latency) small pages spend most of
their time waiting; against a fast one the per-page bookkeeping dominates. Holding each page
near ``target_seconds`` (fetch + store) amortises the fixed part without letting a page (one
transaction, one retry unit) grow without bound.

The size moves multiplicatively (at most x2 or /2 per page, with a dead band of +-20 % so it
settles), stays within ``[min_size, max_size]`` (the block's bounds), and only grows on a full
page: a short page (the end of the source) says nothing about how long a full one would take.
The size reached is remembered in the instance's sync state (``options.adaptive_batch_size``) so
the next run starts from it, and reported in the record's ``sync_details``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

P = TypeVar("P")

GROW_MAX = 2.0
SHRINK_MAX = 0.5
DEAD_BAND = (0.8, 1.25)  # target/actual within this: keep the size


@dataclass(frozen=True)
class AdaptiveBounds:
    """The block's bounds and target (JSON-friendly: a task parameter)."""

    min_size: int
    max_size: int
    target_seconds: float

    def clamp(self, size: int) -> int:
        return max(self.min_size, min(self.max_size, size))


@dataclass
class AdaptiveBatch:
    """The current page size of one incremental read, adjusted after every stored page."""

    size: int
    bounds: AdaptiveBounds
    smallest: int = field(init=False)
    largest: int = field(init=False)
    _fetched: dict[int, tuple[int, float]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.size = self.bounds.clamp(self.size)
        self.smallest = self.largest = self.size

    def timed(self, fetch: Callable[[int, int], P]) -> Callable[[int, int], P]:
        """``fetch`` that notes the size and duration of each request, by its cursor (any thread)."""

        def run(after: int, count: int) -> P:
            started = time.perf_counter()
            page = fetch(after, count)
            with self._lock:
                self._fetched[after] = (count, time.perf_counter() - started)
            return page

        return run

    def observe(self, *, after: int, rows: int, store_seconds: float) -> int:
        """The page requested after cursor ``after`` brought ``rows`` rows and took
        ``store_seconds`` to store: the size for the next request."""
        with self._lock:
            fetched = self._fetched.pop(after, None)
        if fetched is None or fetched[0] != self.size:
            return self.size  # a page asked for at an older size: its time says little about this one
        count, fetch_seconds = fetched
        seconds = fetch_seconds + store_seconds
        if seconds <= 0:
            return self.size
        ratio = self.bounds.target_seconds / seconds
        if DEAD_BAND[0] <= ratio <= DEAD_BAND[1]:
            return self.size
        if ratio > 1 and rows < count:  # a short page: no evidence a full one would be fast
            return self.size
        factor = max(SHRINK_MAX, min(GROW_MAX, ratio))
        self.size = self.bounds.clamp(round(self.size * factor))
        self.smallest = min(self.smallest, self.size)
        self.largest = max(self.largest, self.size)
        return self.size


__all__ = ["AdaptiveBatch", "AdaptiveBounds"]
