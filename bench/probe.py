"""Measurements taken inside a benchmark child: spans of work, peak RSS, CPU time.

A child records when each unit of work (a fetch, a store) starts and ends; from the spans
:func:`summarize` derives the start-up (call to the first fetch), the sync window (first
fetch to the last store), how much of that window fetching and storing overlapped, and the
time in it when neither ran: orchestration overhead (task runs, thread hops, bookkeeping
calls between the steps).
"""

from __future__ import annotations

import functools
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

Span = tuple[float, float]

FETCH = "fetch"
"""One page: request, response, decode (and, in syncflow, validation)."""
STORE = "store"
"""One batch's transaction: rows, cursor (and, in syncflow, the record's counters)."""


class Spans:
    """Start/end ``perf_counter`` pairs per kind of work; safe to fill from several threads."""

    def __init__(self) -> None:
        self._spans: dict[str, list[Span]] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, start: float, end: float) -> None:
        with self._lock:
            self._spans.setdefault(kind, []).append((start, end))

    @contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(kind, start, time.perf_counter())

    def wrap(self, kind: str, fn: Callable[P, R]) -> Callable[P, R]:
        """``fn`` with each call recorded as a span of ``kind``."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(kind, start, time.perf_counter())

        return wrapper

    def get(self, kind: str) -> list[Span]:
        with self._lock:
            return sorted(self._spans.get(kind, []))

    def kinds(self) -> list[str]:
        with self._lock:
            return sorted(self._spans)


def union(spans: list[Span]) -> list[Span]:
    """The disjoint, sorted union of ``spans``."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def length(spans: list[Span]) -> float:
    return sum(end - start for start, end in union(spans))


def intersection_length(a: list[Span], b: list[Span]) -> float:
    ua, ub = union(a), union(b)
    total, i, j = 0.0, 0, 0
    while i < len(ua) and j < len(ub):
        lo, hi = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        if hi > lo:
            total += hi - lo
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return total


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own memory.
    ``getrusage().ru_maxrss`` is not used there: it keeps the parent's peak across fork+exec,
    so a child of a big harness would report the harness's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def summarize(spans: Spans, *, call: float, returned: float) -> dict[str, Any]:
    """Timeline of one run from its spans; ``call``/``returned`` bracket the measured call."""
    fetch, store = spans.get(FETCH), spans.get(STORE)
    out: dict[str, Any] = {
        "wall_s": returned - call,
        "batches": len(store),
        "stage_s": {kind: sum(e - s for s, e in spans.get(kind)) for kind in spans.kinds()},
        "stage_calls": {kind: len(spans.get(kind)) for kind in spans.kinds()},
    }
    if not fetch or not store:
        return out
    first, last = fetch[0][0], max(e for _, e in store)
    window = last - first
    out.update(
        startup_s=first - call,
        first_batch_s=store[0][1] - call,
        sync_s=window,
        teardown_s=returned - last,
        busy_s=length(fetch + store),
        idle_s=window - length(fetch + store),
        overlap_s=intersection_length(fetch, store),
    )
    return out
