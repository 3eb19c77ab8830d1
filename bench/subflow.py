"""The syncflow child: one real ``sync_instance`` flow run, timed from the inside.

The harness wires the instance (block, instance row, session record) beforehand; this
process only imports the flow, calls it and reports. The engine is not changed: a few of its
functions are wrapped, at import, so each call is recorded as a span (a fetch, a batch's
transaction, and inside them HTTP, decode, validate, upsert), and each Prefect REST call
is timed and counted. That costs about a microsecond per call.

Run as a child of the harness: ``python -m bench.subflow SPEC_JSON``; the Prefect API
(``PREFECT_API_URL`` or ephemeral) and ``SYNCFLOW_DATABASE_URL`` come from the environment.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import probe

DEFAULT_FLOW = "flows.instance_sync:sync_instance"


@dataclass(frozen=True)
class SubflowSpec:
    """What the syncflow child is told to do (JSON on its command line)."""

    record_id: int
    instance: str
    out: str
    spawned_at: float
    flow: str = DEFAULT_FLOW
    """``module:attribute`` of the flow to run: another one A/B-tests a candidate change."""


_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def instrument_prefect_api(spans: probe.Spans, calls: Counter[str]) -> None:
    """Record every Prefect REST request (flow-run states, blocks, artifacts, log batches) as a span.

    Task-run state changes travel as events over a websocket: they are not seen here, their
    cost shows as the Prefect server's CPU (see the harness).
    """
    from prefect.client.base import PrefectHttpxAsyncClient

    send = PrefectHttpxAsyncClient.send

    async def timed_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await send(self, request, *args, **kwargs)
        finally:
            spans.add("prefect-api", start, time.perf_counter())
            calls[f"{request.method} {_ID.sub('{id}', request.url.path)}"] += 1

    PrefectHttpxAsyncClient.send = timed_send  # type: ignore[method-assign]


def instrument(spans: probe.Spans) -> None:
    """Record the engine's steps as spans (module attributes, looked up at call time)."""
    import syncflow.engine as engine
    from syncflow.engine import incremental
    from syncflow.sources import http_seq as seq_http

    client = seq_http.SeqHttpClient
    client.fetch_page = spans.wrap(probe.FETCH, client.fetch_page)  # type: ignore[method-assign]
    client._send = spans.wrap("http", client._send)  # type: ignore[method-assign]
    seq_http.decode_page = spans.wrap("decode", seq_http.decode_page)
    seq_http.validate_page = spans.wrap("validate", seq_http.validate_page)
    incremental.apply_batch = spans.wrap(probe.STORE, incremental.apply_batch)
    incremental.apply_message_batch = spans.wrap("upsert", incremental.apply_message_batch)
    engine.begin_instance_sync = spans.wrap("begin", engine.begin_instance_sync)  # type: ignore[attr-defined]
    engine.finish_instance_sync = spans.wrap("finish", engine.finish_instance_sync)  # type: ignore[attr-defined]


def _before(spans: probe.Spans, kind: str) -> float | None:
    """Time in ``kind`` spans that ended before the first fetch started (the start-up's share)."""
    fetch = spans.get(probe.FETCH)
    if not fetch:
        return None
    return sum(end - start for start, end in spans.get(kind) if end <= fetch[0][0])


def main(argv: list[str]) -> int:
    spec = SubflowSpec(**json.loads(argv[0]))
    imports = time.perf_counter()
    module, _, attribute = spec.flow.partition(":")
    sync_instance = getattr(importlib.import_module(module), attribute)
    import_s = time.perf_counter() - imports
    spans = probe.Spans()
    api_calls: Counter[str] = Counter()
    instrument(spans)
    instrument_prefect_api(spans, api_calls)
    called_at = time.time()
    call = time.perf_counter()
    result = asyncio.run(sync_instance(record_id=spec.record_id, instance=spec.instance))
    returned = time.perf_counter()
    user, system = probe.cpu_seconds()
    report: dict[str, Any] = {
        "variant": "syncflow",
        "flow": spec.flow,
        "process_start_to_call_s": called_at - spec.spawned_at,
        "import_s": import_s,
        **probe.summarize(spans, call=call, returned=returned),
        "peak_rss_mb": probe.peak_rss_mb(),
        "cpu_user_s": user,
        "cpu_sys_s": system,
        "prefect_api_calls": dict(api_calls.most_common()),
        "prefect_api_before_first_fetch_s": _before(spans, "prefect-api"),
        "result": result,
    }
    Path(spec.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
