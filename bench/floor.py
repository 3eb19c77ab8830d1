"""Prefect's floor: the owner's shape with nothing in it, measured as whole processes.

    python -m bench.floor session SPEC   # parent flow -> N async subflows, one no-op task each,
                                         # each under concurrency(LIMIT, occupy=1, strict=True)
    python -m bench.floor single SPEC    # one parent flow + one subflow + one task

With ``"gate": L`` in a session's SPEC (the ``floor-handover`` variant of ``bench.sessions``), the
same shape waits on an in-process ``asyncio.Semaphore(L)`` before each ``concurrency(...)``: the
process asks Prefect for a slot only when one of its own is free, so a freed slot passes to the
next subflow at once and no request is answered 423 with a Retry-After (the hand-over the issue
requires of syncflow, at Prefect's own cost: fewer slot requests than syncflow makes).

With ``"data": {...}`` (the ``floor-data`` variant; ``floor-data-handover`` with the gate too),
the same shape carries the same data as syncflow's session: each subflow's one task runs the raw
pipeline (:func:`bench.raw.pull`, in a thread, on a pooled connection and one shared HTTP client)
for its own instance of a fresh store, so the session's speed-up can be held against Prefect's
shape doing the same work at its least.

No product code: only Prefect. The benchmark runs these on the same Prefect server, at the same
limits, right next to syncflow's runs, and times each process from spawn to exit (the floor of
"a session" and of "a single run"). ``SPEC`` is JSON: ``{"out": path, "spawned_at": t,
"instances": N, "limit_name": NAME}``. The limit is set by the parent (:func:`set_limit`, REST)
before the process starts. Tasks use ``cache_policy=NO_CACHE`` like syncflow's (no input hashing).
The child counts its Prefect API calls, events and API logs like the syncflow child.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench import probe
from bench.apicount import ApiCounter

FLOOR_LIMIT = "tag:sync:bench-floor"


def set_limit(api_url: str, name: str, limit: int) -> None:
    """Create or update the global concurrency limit ``name`` with ``limit`` slots, none active."""
    import httpx

    with httpx.Client(base_url=api_url, timeout=30.0) as http:
        found = http.get(f"/v2/concurrency_limits/{name}")
        if found.status_code == 404:
            http.post("/v2/concurrency_limits/", json={"name": name, "limit": limit, "active": True}).raise_for_status()
        else:
            found.raise_for_status()
        http.patch(
            f"/v2/concurrency_limits/{name}", json={"limit": limit, "active_slots": 0, "active": True}
        ).raise_for_status()
        got = http.get(f"/v2/concurrency_limits/{name}").json()
        if got["limit"] != limit or got["active_slots"] != 0:
            raise RuntimeError(f"{name}: {got['limit']} slots, {got['active_slots']} active after setting {limit}")


class _Pull:
    """The raw pipeline for subflow ``i`` of a ``floor-data`` session (``spec["data"]``: the seq
    server, its token, the store, the page size and ``targets``, ``[instance_id, item_id]`` per
    subflow). Connections are pooled (one per concurrent pull), as a long-lived process would."""

    def __init__(self, data: dict[str, Any]) -> None:
        import httpx

        self.data = data
        self.pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.lock = threading.Lock()
        headers = {"Authorization": f"Bearer {data['token']}", "Content-Type": "application/json"}
        self.http = httpx.Client(base_url=data["base_url"], headers=headers, timeout=30.0)
        self.messages = 0

    def __call__(self, i: int) -> int:
        from bench import raw

        instance_id, item_id = self.data["targets"][i]
        try:
            conn = self.pool.get_nowait()
        except queue.Empty:
            conn = raw.connect(self.data["conninfo"])
        try:
            stats = raw.pull(
                conn, self.http, instance_id=instance_id, item_id=item_id, batch_size=self.data["batch_size"]
            )
        finally:
            self.pool.put(conn)
        with self.lock:
            self.messages += stats.messages
        return stats.messages

    def close(self) -> None:
        self.http.close()
        while True:
            try:
                self.pool.get_nowait().close()
            except queue.Empty:
                return


def _flows(pull: _Pull | None = None) -> tuple[Any, Any]:
    import asyncio
    import contextlib

    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.concurrency.asyncio import concurrency

    @task(name="floor-noop", cache_policy=NO_CACHE)
    async def noop(i: int) -> int:
        if pull is not None:
            return await asyncio.to_thread(pull, i)
        return i

    @flow(name="floor-instance")
    async def floor_instance(i: int) -> int:
        return await noop(i)

    @flow(name="floor-session")
    async def floor_session(instances: int, limit_name: str | None, gate: int = 0) -> int:
        local = asyncio.Semaphore(gate) if gate else contextlib.nullcontext()

        async def one(i: int) -> int:
            if limit_name is None:
                return await floor_instance(i)
            async with local, concurrency(limit_name, occupy=1, strict=True):
                return await floor_instance(i)

        done = await asyncio.gather(*(one(i) for i in range(instances)))
        return len(done)

    return floor_session, floor_instance


def main(argv: list[str]) -> int:
    mode, spec = argv[0], json.loads(argv[1])
    counter = ApiCounter().install()
    import asyncio

    pull = _Pull(spec["data"]) if spec.get("data") else None
    floor_session, _ = _flows(pull)
    imported = time.time()
    call = time.perf_counter()
    try:
        if mode == "single":
            done = asyncio.run(floor_session(1, None))
        else:
            limit_name = spec.get("limit_name", FLOOR_LIMIT)
            done = asyncio.run(floor_session(int(spec["instances"]), limit_name, int(spec.get("gate") or 0)))
    finally:
        if pull is not None:
            pull.close()
    wall = time.perf_counter() - call
    user, system = probe.cpu_seconds()
    report = {
        "variant": ("floor-data" if pull is not None else "floor") + ("-handover" if spec.get("gate") else ""),
        "mode": mode,
        "instances": done,
        "wall_s": wall,
        "process_start_to_call_s": imported - spec["spawned_at"],
        "peak_rss_mb": probe.peak_rss_mb(),
        "cpu_s": user + system,
        "messages": pull.messages if pull is not None else 0,
        **counter.report(),
    }
    Path(spec["out"]).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
