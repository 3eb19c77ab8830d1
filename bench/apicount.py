"""Counting what a measured process asks of Prefect, without changing when anything is imported.

:func:`when_imported` runs a patch right after a module is first executed (a finder at the head
of ``sys.meta_path``), so a benchmark child can instrument Prefect and the engine and then run
the real program (the ``syncflow`` CLI, the floor's flows) with its own import order and its own
settings (e.g. the CLI sets ``PREFECT_LOGGING_LEVEL`` before Prefect is imported).

:class:`ApiCounter` counts, per process:

- every Prefect REST request of the async and the sync client (endpoint with ids replaced by
  ``{id}``, HTTP status, duration; calls slower than 2 s are kept one by one);
- every event handed to Prefect's events worker (task-run state changes travel this way: a task
  run makes no REST call), by event name, and the distinct task runs and flow runs they concern;
- every log record handed to the API log worker (they reach the API in batches, ``POST /logs/``).

:func:`per_instance` turns the counts into the categories of PROFILE.md (task runs, artifacts and
their updates, logs, lease renewals, slot requests and 423s, state reads, ...).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# ------------------------------------------------------------------------ post-import hooks

_PENDING: dict[str, list[Callable[[ModuleType], None]]] = {}
_LOCK = threading.RLock()


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        with _LOCK:
            hooks = _PENDING.pop(module.__name__, [])
        for hook in hooks:
            hook(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _PENDING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


_FINDER = _Finder()


def when_imported(name: str, hook: Callable[[ModuleType], None]) -> None:
    """Call ``hook(module)`` once ``name`` is imported (at once when it is already)."""
    with _LOCK:
        if name in sys.modules:
            module = sys.modules[name]
        else:
            _PENDING.setdefault(name, []).append(hook)
            if _FINDER not in sys.meta_path:
                sys.meta_path.insert(0, _FINDER)
            return
    hook(module)


def patch_attr(module: ModuleType, dotted: str, wrap: Callable[[Any], Any]) -> None:
    """Replace ``module.<dotted>`` (``fn`` or ``Class.method``) by ``wrap(original)``."""
    owner: Any = module
    *parents, attr = dotted.split(".")
    for part in parents:
        owner = getattr(owner, part)
    setattr(owner, attr, wrap(getattr(owner, attr)))


# ------------------------------------------------------------------------------ counting


def _outcome(exc: BaseException) -> str:
    """The HTTP status of an error response (Prefect raises on 4xx/5xx), else the exception's type."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return str(status) if status is not None else type(exc).__name__


class ApiCounter:
    def __init__(self, slow_s: float = 2.0) -> None:
        self.calls: Counter[str] = Counter()
        self.status: Counter[str] = Counter()
        self.endpoint_status: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.task_runs: set[str] = set()
        self.flow_runs: set[str] = set()
        self.logs = 0
        self.api_seconds = 0.0
        self.slow: list[dict[str, Any]] = []
        self.slow_s = slow_s
        self.t0 = time.perf_counter()

    def _note(self, request: Any, start: float, outcome: str) -> None:
        took = time.perf_counter() - start
        endpoint = f"{request.method} {_ID.sub('{id}', request.url.path)}"
        self.calls[endpoint] += 1
        self.status[outcome] += 1
        if outcome != "200" and outcome != "201":
            self.endpoint_status[f"{endpoint} {outcome}"] += 1
        self.api_seconds += took
        if took >= self.slow_s:
            self.slow.append({"endpoint": endpoint, "at_s": start - self.t0, "took_s": took, "outcome": outcome})

    def install(self) -> ApiCounter:
        when_imported("prefect.client.base", self._patch_clients)
        when_imported("prefect.events.worker", self._patch_events)
        when_imported("prefect.logging.handlers", self._patch_logs)
        return self

    def _patch_clients(self, module: ModuleType) -> None:
        note = self._note

        def wrap_async(send: Any) -> Any:
            async def timed(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                start, outcome = time.perf_counter(), "?"
                try:
                    response = await send(client, request, *args, **kwargs)
                    outcome = str(response.status_code)
                    return response
                except BaseException as exc:
                    outcome = _outcome(exc)
                    raise
                finally:
                    note(request, start, outcome)

            return timed

        def wrap_sync(send: Any) -> Any:
            def timed(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                start, outcome = time.perf_counter(), "?"
                try:
                    response = send(client, request, *args, **kwargs)
                    outcome = str(response.status_code)
                    return response
                except BaseException as exc:
                    outcome = _outcome(exc)
                    raise
                finally:
                    note(request, start, outcome)

            return timed

        patch_attr(module, "PrefectHttpxAsyncClient.send", wrap_async)
        patch_attr(module, "PrefectHttpxSyncClient.send", wrap_sync)

    def _patch_events(self, module: ModuleType) -> None:
        counter = self

        def wrap(send: Any) -> Any:
            def counted(worker: Any, event: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    counter.events[str(event.event)] += 1
                    rid = str(event.resource.id)
                    if rid.startswith("prefect.task-run."):
                        counter.task_runs.add(rid)
                    elif rid.startswith("prefect.flow-run."):
                        counter.flow_runs.add(rid)
                except Exception:
                    pass
                return send(worker, event, *args, **kwargs)

            return counted

        patch_attr(module, "EventsWorker.send", wrap)

    def _patch_logs(self, module: ModuleType) -> None:
        counter = self

        def wrap(send: Any) -> Any:
            def counted(worker: Any, item: Any, *args: Any, **kwargs: Any) -> Any:
                counter.logs += 1
                return send(worker, item, *args, **kwargs)

            return counted

        patch_attr(module, "APILogWorker.send", wrap)

    def report(self) -> dict[str, Any]:
        return {
            "prefect_api_calls": dict(self.calls.most_common()),
            "prefect_api_status": dict(self.status.most_common()),
            "prefect_api_not_ok": dict(self.endpoint_status.most_common()),
            "prefect_api_s": self.api_seconds,
            "prefect_api_slow_calls": self.slow,
            "events": dict(self.events.most_common()),
            "task_runs": len(self.task_runs),
            "flow_runs_with_events": len(self.flow_runs),
            "logs_to_api": self.logs,
        }


# ------------------------------------------------------------------------- categories


def _sum(calls: dict[str, int], pred: Callable[[str], bool]) -> int:
    return sum(n for k, n in calls.items() if pred(k))


def categories(report: dict[str, Any]) -> dict[str, int]:
    """What a process asked of Prefect, in the categories of the issue (whole process)."""
    calls: dict[str, int] = report.get("prefect_api_calls", {})
    not_ok: dict[str, int] = report.get("prefect_api_not_ok", {})
    events: dict[str, int] = report.get("events", {})
    return {
        "REST calls": sum(calls.values()),
        "flow runs created": _sum(calls, lambda k: k == "POST /api/flow_runs/"),
        "flow-run state writes": _sum(calls, lambda k: k.startswith("POST /api/flow_runs/{id}/set_state")),
        "state reads (flow/task runs)": _sum(
            calls,
            lambda k: (
                k in ("GET /api/flow_runs/{id}", "POST /api/flow_runs/filter", "GET /api/task_runs/{id}")
                or k.startswith("POST /api/task_runs/filter")
            ),
        ),
        "task runs (REST: tracking task runs)": _sum(calls, lambda k: k == "POST /api/task_runs/"),
        "task runs (by events)": int(report.get("task_runs", 0)),
        "events": sum(events.values()),
        "artifacts created": _sum(calls, lambda k: k == "POST /api/artifacts/"),
        "artifact updates": _sum(calls, lambda k: k.startswith("PATCH /api/artifacts/")),
        "log records to API": int(report.get("logs_to_api", 0)),
        "log batches (POST /logs/)": _sum(calls, lambda k: k == "POST /api/logs/"),
        "slot requests": _sum(calls, lambda k: "concurrency_limits/increment" in k),
        "slot requests answered 423": _sum(not_ok, lambda k: "concurrency_limits/increment" in k and k.endswith("423")),
        "slot releases": _sum(calls, lambda k: "concurrency_limits/decrement" in k),
        "lease renewals": _sum(calls, lambda k: "/leases/" in k and k.endswith("/renew")),
        "flow-run updates (PATCH)": _sum(calls, lambda k: k == "PATCH /api/flow_runs/{id}"),
        "flows registered (POST /flows/)": _sum(calls, lambda k: k == "POST /api/flows/"),
        "blocks read": _sum(calls, lambda k: "/block_" in k),
        "client set-up (csrf, version, storage)": _sum(
            calls, lambda k: k in ("GET /api/csrf-token", "GET /api/admin/version", "GET /api/admin/storage")
        ),
        "other": _sum(
            calls,
            lambda k: (
                not any(
                    s in k
                    for s in (
                        "/flow_runs/",
                        "/task_runs/",
                        "/artifacts/",
                        "/logs/",
                        "concurrency_limits/increment",
                        "concurrency_limits/decrement",
                        "/leases/",
                        "/block_",
                        "/flows/",
                        "/csrf-token",
                        "/admin/",
                    )
                )
            ),
        ),
    }


# ----------------------------------------------------------------- processes not started by us


REPORT_DIR_ENV = "SYNCFLOW_BENCH_APICOUNT_DIR"
"""When set, :data:`SITECUSTOMIZE` makes every Python process of that environment count its
Prefect calls and write them to ``<dir>/<pid>.json`` at exit."""

SITECUSTOMIZE = f'''"""bench: count the Prefect API calls of every process of this environment (bench.apicount)."""
import os

if os.environ.get("{REPORT_DIR_ENV}"):
    try:
        from bench.apicount import report_at_exit

        report_at_exit(os.environ["{REPORT_DIR_ENV}"])
    except Exception:  # never break the process being measured
        pass
'''
"""A ``sitecustomize.py`` for a directory put first on PYTHONPATH: a Prefect worker and the
flow-run processes it spawns (which inherit its environment) each report their own calls."""


def report_at_exit(out_dir: str) -> ApiCounter:
    """Count this process's Prefect calls, events and API logs; at a normal exit write them,
    with the process's argv, flow run (``PREFECT__FLOW_RUN_ID``), peak RSS and CPU, to
    ``out_dir/<pid>.json``. A process killed by a signal writes nothing."""
    import atexit
    import json
    import os
    import resource
    from pathlib import Path

    counter = ApiCounter().install()
    started = time.time()

    def write() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        peak = 0.0
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        except OSError:
            pass
        doc = {
            "pid": os.getpid(),
            "argv": sys.argv,
            "flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID"),
            "started_at": started,
            "ended_at": time.time(),
            "peak_rss_mb": peak,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            **counter.report(),
        }
        try:
            Path(out_dir, f"{os.getpid()}.json").write_text(json.dumps(doc, default=str))
        except OSError:
            pass

    atexit.register(write)
    return counter
