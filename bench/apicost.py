"""``python -m bench.apicost``: what one Prefect API call of each kind costs the Prefect server.

    python -m bench.apicost                # 200 calls of each kind, 3 rounds, medians
    python -m bench.apicost --calls 500 --rounds 5

On a fresh PostgreSQL-backed ``prefect server start`` (:class:`bench.services.BenchEnv`), this
process makes ``--calls`` calls of one kind after another (the kinds a session's instance makes:
flow-run creation, state writes and reads, the run-name PATCH, log records, events, artifacts),
each kind between two idle points of the server (:func:`bench.services.settle`), and prints the
CPU seconds the server process and PostgreSQL used per call. It prices what syncflow asks of
Prefect beyond the floor (``bench/apicount.py`` counts those calls per instance): the two together
say how much server CPU a change in the calls can buy, before a session is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.services import BenchEnv, CpuSampler, ServiceError, settle
from bench.sessions import DEFAULT_ADMIN_URL

KINDS = (
    "create flow run (Pending)",
    "PATCH flow run name",
    "set state Running",
    "GET flow run",
    "log record (40 a batch)",
    "event (a block's loaded)",
    "artifact create",
    "artifact update",
    "set state Completed",
)


async def _round(calls: int, measure: Callable[[str, Callable[[], Awaitable[None]]], Awaitable[None]]) -> None:
    """One round: every kind of call ``calls`` times, in ``KINDS`` order, on fresh flow runs."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate, LogCreate
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.states import Completed, Pending, Running
    from prefect.types._datetime import now

    @flow(name="apicost")
    def priced(i: int) -> int:
        return i

    async with get_client() as client:
        runs: list[Any] = []
        artifacts: list[Any] = []

        async def create() -> None:
            for i in range(calls):
                runs.append(await client.create_flow_run(priced, parameters={"i": i}, state=Pending()))

        async def rename() -> None:
            for run in runs:
                await client.set_flow_run_name(run.id, f"messages:instance-{run.id.hex[:8]}")

        async def running() -> None:
            for run in runs:
                await client.set_flow_run_state(run.id, Running())

        async def read() -> None:
            for run in runs:
                await client.read_flow_run(run.id)

        async def logs() -> None:
            for start in range(0, calls, 40):
                await client.create_logs(
                    [
                        LogCreate(
                            name="prefect.flow_runs",
                            level=20,
                            message=f"instance-{i}: completed",
                            timestamp=now("UTC"),
                            flow_run_id=runs[i].id,
                        )
                        for i in range(start, min(calls, start + 40))
                    ]
                )

        async def events() -> None:
            for run in runs:
                emit_event(
                    "prefect.block.syncflow-http-seq.loaded",
                    resource={"prefect.resource.id": f"prefect.block-document.{run.id}"},
                    related=[
                        {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.role": "flow-run"}
                    ],
                )
            await asyncio.to_thread(EventsWorker.instance().drain)

        async def create_artifacts() -> None:
            for run in runs:
                artifacts.append(
                    await client.create_artifact(ArtifactCreate(type="progress", data=0.0, flow_run_id=run.id))
                )

        async def update_artifacts() -> None:
            for artifact in artifacts:
                await client.update_artifact(artifact.id, ArtifactUpdate(data=50.0))

        async def completed() -> None:
            for run in runs:
                await client.set_flow_run_state(run.id, Completed())

        # the events client connects on its first event: not what an event costs the server
        emit_event("apicost.warm-up", resource={"prefect.resource.id": "apicost.warm-up"})
        await asyncio.to_thread(EventsWorker.instance().drain)
        steps = (create, rename, running, read, logs, events, create_artifacts, update_artifacts, completed)
        for kind, step in zip(KINDS, steps, strict=True):
            await measure(kind, step)


def run(calls: int, rounds: int, admin_url: str) -> dict[str, list[tuple[float, float, float]]]:
    """Per kind, per round: (server ms, PostgreSQL ms, wall ms) per call."""
    results: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in KINDS}
    with BenchEnv(admin_url=admin_url, logs=None) as env:
        os.environ.update(env.child_env)  # this process is the client: Prefect is imported after this
        os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"  # only the priced log records reach the API
        pid = int(env.prefect["pid"])

        async def measure(kind: str, step: Callable[[], Awaitable[None]]) -> None:
            await asyncio.to_thread(settle, pid)
            with CpuSampler({"server": pid}) as cpu:
                start = time.perf_counter()
                await step()
                wall = time.perf_counter() - start
                await asyncio.to_thread(settle, pid)  # what the call left to the server's services
            results[kind].append(
                (
                    cpu.used.get("server", 0.0) * 1000 / calls,
                    cpu.used.get("postgres", 0.0) * 1000 / calls,
                    wall * 1000 / calls,
                )
            )

        for _ in range(rounds):
            asyncio.run(_round(calls, measure))
    return results


def markdown(results: dict[str, list[tuple[float, float, float]]], calls: int) -> str:
    rounds = len(next(iter(results.values())))
    lines = [
        f"Prefect server CPU per call ({calls} calls of each kind, one after another; median of {rounds} round(s); "
        "the server's and PostgreSQL's CPU until the server is idle again):",
        "",
        "| call | server ms | range | PostgreSQL ms | client wall ms |",
        "|---|---:|---|---:|---:|",
    ]
    for kind, values in results.items():
        server = [v[0] for v in values]
        lines.append(
            f"| {kind} | {statistics.median(server):.2f} | {min(server):.2f}-{max(server):.2f} "
            f"| {statistics.median(v[1] for v in values):.2f} | {statistics.median(v[2] for v in values):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apicost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("SYNCFLOW_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="server on which the Prefect server's database is created and dropped",
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.rounds < 1:
        parser.error("--calls >= 1, --rounds >= 1")
    try:
        results = run(args.calls, args.rounds, args.pg_admin_url)
    except (ServiceError, OSError) as exc:
        print(f"bench.apicost: {exc}", file=sys.stderr)
        return 2
    print(markdown(results, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
