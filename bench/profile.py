"""Where a profiled run's time goes: ``py-spy record --format raw --idle --threads`` stacks, bucketed.

    python -m bench.profile bench/results/profiles/syncflow-full-100000-0.txt [--rate 200] [--top 12]

``python -m bench --profile DIR`` (and ``python -m bench.sessions --profile DIR``) write the
stacks; this prints, per thread role (the event loop, the engine's worker thread, the prefetch
thread, Prefect's service threads, ...), the seconds spent in each bucket: decoding, validation,
models, HTTP, COPY, upsert, cursor and record SQL, commits, waiting for the prefetched page,
Prefect task runs, flow runs, artifacts, slots, API client, events, logs, imports, idle.

A sample is bucketed by the deepest first-party frame of its stack (syncflow's packages,
Prefect, bench) and by what lies below it (psycopg's COPY, a commit, pydantic, the socket);
a stack whose leaf is a wait (selector, condition, queue) is idle, named by who waits.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

_PRODUCT = ("(syncflow/", "(flows/", "(tasks/", "(blocks/", "(deployments/")
_IDLE_LEAF = (
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "EpollSelector.select (selectors.py",
    "Queue.get (queue.py",
    "_wait_for_tstate_lock (threading.py",
    "_worker (concurrent/futures/thread.py",
    "heartbeat_loop (prefect/flow_engine.py",  # time.sleep between heartbeats
)


def role(thread: str) -> str:
    """A thread's role from its name (ids and uuids dropped)."""
    name = thread.split(": ", 1)[1] if ": " in thread else "(unnamed)"
    if name == "MainThread":
        return "main thread (event loop)"
    if name.startswith("asyncio_"):
        return "to_thread worker (engine steps)"
    if name.startswith("fetch-"):
        return "prefetch thread (HTTP + decode)"
    if name.startswith("concurrency-lease-renewal"):
        return "Prefect lease renewal threads"
    name = re.sub(r"[-_ ]?\(?[0-9a-f]{8}-[0-9a-f-]{27}\)?", "", name)
    name = re.sub(r"-\d+ \(", " (", name)
    return re.sub(r"_\d+$", "", name)


def _first_party(frames: list[str]) -> tuple[int, str] | None:
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        if any(p in f for p in _PRODUCT) or "(prefect/" in f:
            return i, f
    return None


def _where(frame: str) -> str:
    """``func (path:line)`` -> ``path func``."""
    func, _, rest = frame.partition(" (")
    return f"{rest.rsplit(':', 1)[0]} {func}"


def bucket(frames: list[str]) -> str:
    leaf = frames[-1] if frames else ""
    if any("_find_and_load" in f for f in frames):
        return "imports"
    below_all = " ".join(frames)
    idle = any(p in leaf for p in _IDLE_LEAF) or leaf.startswith("thread (")
    if idle:
        if "sync_chunk (syncflow" in below_all:
            return "engine: waiting for the prefetched page"
        return "idle (waiting: event loop, queue, sleep)"
    found = _first_party(frames)
    if found is None:
        return "other (no first-party frame)"
    i, f = found
    below = " ".join(frames[i + 1 :])
    if "create_default_context (ssl.py" in below:
        return "Prefect: API client set-up (SSL context per client)"
    if "(syncflow/message_store.py" in f or "_apply_postgres" in below_all:
        return "store: COPY (binary)" if "copy" in below.lower() or "write_row" in below else "store: upsert"
    if "commit" in below.lower() and ("(syncflow/" in f):
        return "store: commit"
    if "advance_cursor" in f:
        return "store: cursor UPDATE"
    if "add_record_progress" in f:
        return "store: record counters UPDATE"
    if "(syncflow/sources/seq_http.py" in f:
        if "(pydantic" in below:
            return "fetch: models (pydantic)"
        if "validate_page" in f:
            return "fetch: validation"
        if "decode_page" in f or "_fast_page" in f:
            return "fetch: decode (JSON -> rows)"
        return "fetch: HTTP"
    if "resume_point" in f or "begin_instance_sync" in f or "finish_instance_sync" in f:
        return "bookkeeping SQL: begin / finish / resume point"
    if "(syncflow/sync_state.py" in f or "(syncflow/sessions.py" in f:
        return "bookkeeping SQL: leases, sessions, records"
    if "(syncflow/" in f and "seq_engine.py" in f:
        return "engine: other (SQLAlchemy, loop)"
    if "(syncflow/cli" in f:
        return "syncflow CLI (watcher, final table)"
    if "(syncflow/" in f or "(deployments/" in f:
        return f"syncflow: other ({_where(f)})"
    if any(p in f for p in ("(flows/", "(tasks/", "(blocks/")):
        return "syncflow flows/tasks code"
    for key, name in (
        ("prefect/artifacts", "Prefect: artifacts"),
        ("prefect/concurrency", "Prefect: slots (acquire/renew/release)"),
        ("prefect/task_engine", "Prefect: task runs"),
        ("prefect/tasks.py", "Prefect: task runs"),
        ("prefect/flow_engine", "Prefect: flow runs"),
        ("prefect/flows.py", "Prefect: flow runs"),
        ("prefect/events", "Prefect: events"),
        ("prefect/logging", "Prefect: logs"),
        ("prefect/results", "Prefect: result persistence"),
        ("prefect/filesystems", "Prefect: result persistence"),
        ("prefect/blocks", "Prefect: blocks"),
        ("prefect/client", "Prefect: API client"),
        ("prefect/_internal/concurrency", "Prefect: internal threads/services"),
    ):
        if key in f:
            return name
    return "Prefect: other"


def parse(path: Path) -> Iterable[tuple[str, list[str], int]]:
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        yield head, frames, int(count)


def summarize(path: Path, rate: float) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for thread, frames, count in parse(path):
        out[role(thread)][bucket(frames)] += count / rate
    return out


def markdown(path: Path, rate: float, top: int = 12) -> str:
    """Per thread role (busiest first): its busy buckets, then how long it waited."""
    data = summarize(path, rate)
    lines = [f"`{path.name}` ({rate:g} samples/s; idle = waiting in a selector, condition, queue or sleep):", ""]

    def busy(buckets: Counter[str]) -> float:
        return sum(s for b, s in buckets.items() if not b.startswith("idle"))

    total: Counter[str] = Counter()
    for buckets in data.values():
        total.update({b: s for b, s in buckets.items() if not b.startswith("idle")})
    work = sum(total.values())
    lines += [f"| all threads: busy {work:.2f} s | s | % of busy |", "|---|---:|---:|"]
    for b, s in total.most_common(top):
        lines.append(f"| {b} | {s:.2f} | {100 * s / work:.0f} |")
    lines.append("")
    for name, buckets in sorted(data.items(), key=lambda kv: -busy(kv[1])):
        work = busy(buckets)
        if work < 0.05:
            continue
        idle = sum(buckets.values()) - work
        lines += [f"| {name}: busy {work:.2f} s, idle {idle:.2f} s | s | % of busy |", "|---|---:|---:|"]
        for b, s in Counter({b: s for b, s in buckets.items() if not b.startswith("idle")}).most_common(top):
            lines.append(f"| {b} | {s:.2f} | {100 * s / work:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rate", type=float, default=200.0, help="py-spy's --rate of the recording")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    for path in args.files:
        print(markdown(path, args.rate, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
