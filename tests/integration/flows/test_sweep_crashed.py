"""Issue 9 defect 10: a sync whose process was SIGKILLed leaves its flow run ``Running`` in
Prefect; ``syncflow sweep`` (and the ``sweep`` flow of the ``sweep/every-5-minutes``
deployment) closes the record and marks that flow run ``Crashed``.

The killed process is a real child running a real instance sync against the harness' Prefect
API and the test store (``crash_sync_child.py``, as the crash test of the seq engine).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from flows.sweep import sweep as sweep_flow
from syncflow import book as units
from syncflow.settings import reset_settings
from tests.integration.flows.test_seq_engine import MakeServer, record
from tests.integration.flows.test_seq_engine import make_server as make_server

CRASH_CHILD = Path(__file__).with_name("crash_sync_child.py")
LEASE = 5  # the smallest lease SYNCFLOW_LOCK_LEASE_SECONDS allows


async def _state(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).state


def _kill_mid_sync(wiring: Any, server: Any, engine: Engine, store_url: str, tmp_path: Path) -> tuple[int, str]:
    """A child process syncing ``im-k`` SIGKILLed once a batch committed: (record id, its flow run)."""
    from prefect.settings import PREFECT_API_URL

    wiring.add("im-k", server, batch_size=100)
    _, recs = wiring.open(["im-k"])
    rid = recs["im-k"]
    env = {
        **os.environ,
        "SYNCFLOW_DATABASE_URL": store_url,
        "SYNCFLOW_LOCK_LEASE_SECONDS": str(LEASE),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    err = tmp_path / "child.err"
    with err.open("wb") as fe:
        child = subprocess.Popen([sys.executable, str(CRASH_CHILD), str(rid)], env=env, stdout=fe, stderr=fe)
    try:
        deadline = time.monotonic() + 300
        while True:
            rec = record(engine, rid)
            if rec.status == "running" and rec.items_synced > 0 and rec.flow_run_id:
                break
            assert child.poll() is None, f"the child ended before its kill: {err.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the child never committed a batch"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert rec.flow_run_id is not None
    return rid, rec.flow_run_id


def _wait_for_lease_to_run_out() -> None:
    time.sleep(LEASE + 2)  # the record is then older than the lease too (--older-than LEASE)


def test_sweep_marks_the_killed_flow_run_crashed_and_closes_the_record(
    wiring: Any,
    make_server: MakeServer,
    engine: Engine,
    store_url: str,
    tmp_path: Path,
) -> None:
    from prefect.settings import PREFECT_API_URL

    server = make_server(messages=20_000)
    server.set_faults(latency=0.2)  # a page every 0.2 s: the kill lands mid-sync
    rid, run_id = _kill_mid_sync(wiring, server, engine, store_url, tmp_path)
    assert asyncio.run(_state(run_id)).is_running()  # what the defect was: Running forever
    _wait_for_lease_to_run_out()

    env = {**os.environ, "SYNCFLOW_DATABASE_URL": store_url, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    res = subprocess.run(
        [sys.executable, "-m", "syncflow", "--json", "sweep", "--older-than", str(LEASE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert rid in out["records_failed"] and run_id in out["dead_flow_runs"]
    assert [(c["flow_run_id"], c["was"], c["now"]) for c in out["crashed_flow_runs"]] == [
        (run_id, "Running", "Crashed")
    ]
    assert out["prefect_error"] is None
    rec = record(engine, rid)
    assert rec.status == "failed" and (rec.error_message or "").startswith("worker lost: im-k")
    state = asyncio.run(_state(run_id))
    assert state.is_crashed() and "syncflow sweep" in (state.message or "")

    # a second sweep finds nothing more to do: the run is final, it is left alone
    again = subprocess.run(
        [sys.executable, "-m", "syncflow", "--json", "sweep", "--older-than", str(LEASE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and json.loads(again.stdout)["crashed_flow_runs"] == []


def test_the_sweep_flow_crashes_runs_a_store_only_sweep_left_running(
    wiring: Any,
    make_server: MakeServer,
    engine: Engine,
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scheduled flow: a record an earlier sweep closed while Prefect was unreachable (here:
    a store-only sweep) still has its run Running; the flow checks it again and crashes it."""
    server = make_server(messages=20_000)
    server.set_faults(latency=0.2)
    rid, run_id = _kill_mid_sync(wiring, server, engine, store_url, tmp_path)
    _wait_for_lease_to_run_out()
    monkeypatch.setenv("SYNCFLOW_LOCK_LEASE_SECONDS", str(LEASE))
    reset_settings()
    first = units.sweep()  # the store's half only, as if Prefect had not answered
    assert rid in first["records_failed"]
    assert asyncio.run(_state(run_id)).is_running()

    out = asyncio.run(sweep_flow())
    assert out["records_failed"] == []  # nothing new to fail ...
    assert [c["flow_run_id"] for c in out["crashed_flow_runs"]] == [run_id]  # ... but the run is closed
    assert asyncio.run(_state(run_id)).is_crashed()


def test_the_sweep_deployment_runs_every_five_minutes() -> None:
    spec = yaml.safe_load((Path(__file__).parents[3] / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    sweep = deps["every-5-minutes"]
    assert sweep["entrypoint"] == "flows/sweep.py:sweep"
    assert [s["cron"] for s in sweep["schedules"]] == ["*/5 * * * *"]
