"""The deployments of ``prefect.yaml`` served from one process (``syncflow runner``), for a
single machine without a work pool and worker: same names, parameters, tags, descriptions
and cron schedules as ``prefect deploy --all``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from tasks import prefect_api as pf

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"


def load_deployments(path: Path = PREFECT_YAML, *, schedules: bool = True) -> list[Any]:
    """The deployments of ``prefect.yaml`` as runner deployments (for :func:`tasks.prefect_api.serve`)."""
    import yaml

    spec = yaml.safe_load(path.read_text())
    out = []
    for d in spec.get("deployments") or []:
        # imported as a module (not loaded from a path) so Prefect records the entrypoint
        # ``flows/x.py:name`` relative to the repository, which the served runs load again
        file, _, attr = d["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(file.removesuffix(".py").replace("/", ".")), attr)
        crons = [
            (s["cron"], s.get("timezone") or "UTC") for s in (d.get("schedules") or []) if schedules and "cron" in s
        ]
        out.append(
            pf.runner_deployment(
                flow,
                name=d["name"],
                parameters=d.get("parameters") or {},
                tags=d.get("tags") or [],
                description=d.get("description"),
                crons=crons,
            )
        )
    return out
