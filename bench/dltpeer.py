"""The peer: a dlt pipeline with its defaults, reading the same seq server into PostgreSQL.

``pip install -e '.[bench]'`` brings dlt (``dlt[postgres]``); without it the benchmark skips
this column with a note. One resource, ``write_disposition="merge"`` on the primary key
``messageID``, an incremental cursor on ``seq`` (``dlt.sources.incremental``), pages of
``batch_size`` fetched with dlt's own requests helper; destination ``postgres``, dataset
``bench_dlt``. The pipeline's state lives in ``pipelines_dir`` (one per round) and in the
destination, so the incremental and nothing-new runs resume where the full run stopped.

Run as a child of the harness: ``python -m bench.dltpeer SPEC_JSON``. It reports the
``pipeline.run()`` call (extract, normalize, load: dlt's sync window) and the rows it loaded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import probe

DATASET = "bench_dlt"
TABLE = "messages"


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("dlt") is not None


def _with_password(url: str) -> str:
    """dlt insists on a password; a server on ``trust`` auth (this machine's) ignores it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" not in userinfo:
        return urlunsplit(parts._replace(netloc=f"{userinfo}:unused@{host}"))
    return url


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network here
    os.environ.setdefault("DLT_DATA_DIR", str(Path(spec["pipelines_dir"]) / "data"))
    import dlt
    from dlt.sources.helpers import requests

    url = spec["base_url"].rstrip("/") + "/api/v1/messages/sync"
    headers = {"Authorization": f"Bearer {spec['token']}"}
    count = int(spec["batch_size"])

    @dlt.resource(name=TABLE, write_disposition="merge", primary_key="messageID")
    def messages(cursor: Any = dlt.sources.incremental("seq", initial_value=0)) -> Any:  # noqa: B008 (dlt's idiom)
        last = cursor.last_value or 0
        while True:
            body = {"lastSeq": last, "count": count, "timestamp": time.time_ns() // 10**6}
            response = requests.post(url, json=body, headers=headers)
            response.raise_for_status()
            doc = response.json()
            if doc["code"] != 0:
                raise RuntimeError(f"server answered code={doc['code']}: {doc.get('message')}")
            data = doc["data"]
            page = data["messages"]
            if page:
                yield page
                last = page[-1]["seq"]
            if not data["hasMore"] or not page:
                break

    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt",
        destination=dlt.destinations.postgres(credentials=_with_password(spec["conninfo"])),
        dataset_name=DATASET,
        pipelines_dir=spec["pipelines_dir"],
    )
    called_at = time.time()
    call = time.perf_counter()
    pipeline.run(messages())
    wall = time.perf_counter() - call
    trace = pipeline.last_trace
    rows = 0
    if trace is not None and trace.last_normalize_info is not None:
        rows = int(trace.last_normalize_info.row_counts.get(TABLE, 0))
    steps = {}
    if trace is not None:
        for step in trace.steps:
            if step.started_at and step.finished_at:
                steps[step.step] = (step.finished_at - step.started_at).total_seconds()
    user, system = probe.cpu_seconds()
    report = {
        "variant": "dlt",
        "process_start_to_call_s": called_at - spec["spawned_at"],
        "wall_s": wall,
        "sync_s": wall,
        "steps_s": steps,
        "peak_rss_mb": probe.peak_rss_mb(),
        "cpu_user_s": user,
        "cpu_sys_s": system,
        "result": {"messages": rows},
    }
    Path(spec["out"]).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
