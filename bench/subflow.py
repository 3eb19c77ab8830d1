"""The syncflow child: one real syncflow run, timed from the inside, Prefect calls counted.

Two modes (JSON spec on the command line, ``python -m bench.subflow SPEC``):

- ``cli`` (default): the ``syncflow`` console script with ``argv`` — what a user runs
  (``syncflow sync instance NAME``, ``syncflow sync run ...``), found through the installed
  package's entry points, so it follows the package wherever its modules move;
- ``flow``: ``await <module:attribute>(record_id=..., instance=...)`` — the per-instance subflow
  alone (``--flow`` A/B-tests a candidate flow without editing the engine).

Nothing is changed in the product: the engine's steps (fetch, decode, validate, store, upsert,
cursor, record counters) are wrapped right after their modules are imported, so each call is a
span, and :class:`bench.apicount.ApiCounter` counts every Prefect REST call, event and API log
record. That costs about a microsecond per call. The parent times the whole process
(spawn to exit); this child reports the call, the spans and the counts to ``spec["out"]``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import _product, probe
from bench.apicount import ApiCounter, patch_attr, when_imported

DEFAULT_FLOW = _product.INSTANCE_FLOW


@dataclass(frozen=True)
class SubflowSpec:
    """What the syncflow child is told to do (JSON on its command line)."""

    out: str
    spawned_at: float
    mode: str = "cli"
    argv: list[str] = field(default_factory=list)
    record_id: int | None = None
    instance: str = ""
    flow: str = DEFAULT_FLOW
    """``module:attribute`` of the flow to run in ``flow`` mode."""


def instrument_engine(spans: probe.Spans) -> None:
    """Record the engine's steps as spans, patched as soon as their modules are imported."""
    for module_name, attr, kind in _product.ENGINE_SPANS:
        when_imported(
            module_name,
            lambda module, attr=attr, kind=kind: patch_attr(module, attr, lambda fn, kind=kind: spans.wrap(kind, fn)),
        )


def _before(spans: probe.Spans, kind: str) -> float | None:
    """Time in ``kind`` spans that ended before the first fetch started (the start-up's share)."""
    fetch = spans.get(probe.FETCH)
    if not fetch:
        return None
    return sum(end - start for start, end in spans.get(kind) if end <= fetch[0][0])


def _run_cli(argv: list[str]) -> int:
    entry = _product.cli_entry_point()
    saved = sys.argv
    sys.argv = [_product.CLI_SCRIPT, *argv]
    try:
        entry()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved


def main(argv: list[str]) -> int:
    spec = SubflowSpec(**json.loads(argv[0]))
    started = time.time()
    spans = probe.Spans()
    counter = ApiCounter().install()
    instrument_engine(spans)
    result: Any = None
    import_s = 0.0
    if spec.mode == "flow":
        imports = time.perf_counter()
        module, _, attribute = spec.flow.partition(":")
        flow = getattr(importlib.import_module(module), attribute)
        import_s = time.perf_counter() - imports
    called_at = time.time()
    call = time.perf_counter()
    if spec.mode == "flow":
        result = asyncio.run(flow(record_id=spec.record_id, instance=spec.instance))
        code = 0
    else:
        code = _run_cli(spec.argv)
    returned = time.perf_counter()
    returned_at = time.time()
    user, system = probe.cpu_seconds()
    report: dict[str, Any] = {
        "variant": "syncflow",
        "mode": spec.mode,
        "argv": spec.argv,
        "flow": spec.flow if spec.mode == "flow" else None,
        "exit_code": code,
        "called_at": called_at,
        "returned_at": returned_at,
        "process_start_to_call_s": called_at - spec.spawned_at,
        "interpreter_start_s": started - spec.spawned_at,
        "import_s": import_s,
        **probe.summarize(spans, call=call, returned=returned),
        "peak_rss_mb": probe.peak_rss_mb(),
        "cpu_user_s": user,
        "cpu_sys_s": system,
        **counter.report(),
        "prefect_api_before_first_fetch_s": _before(spans, "prefect-api"),
        "result": result,
    }
    Path(spec.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str))
    return 0 if code == 0 else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
