"""``syncflow setup`` and ``syncflow runner``: the Prefect side of running syncflow for real.

``setup`` bootstraps a Prefect server (work pool + concurrency limits, idempotent);
``runner`` serves the deployments of ``prefect.yaml`` from this process (Prefect's
``serve``), for a single machine without a work pool and worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Annotated, Any

import typer

from syncflow.cli import _output as out
from syncflow.errors import ConfigError
from syncflow.names import WORK_POOL, limit_name


def _parse_limits(items: list[str] | None) -> dict[str, int]:
    from syncflow.store.models import Category

    out: dict[str, int] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"\d+", value.strip()) or int(value) < 1:
            raise ConfigError(f"--limit takes CATEGORY=N with N >= 1, not {item!r}")
        out[Category.parse(name.strip(), what="category").value] = int(value)
    return out


_DELAY = re.compile(r"(\d+)\s*([smh])")


def _parse_delay(text: str) -> dt.timedelta:
    """``30s``, ``15m``, ``1h`` (Prefect's proactive triggers need at least 10 s)."""
    match = _DELAY.fullmatch(text.strip().lower())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a delay like 30s, 15m or 1h")
    delay = dt.timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]])
    if delay < dt.timedelta(seconds=10):
        raise typer.BadParameter(f"{text!r}: at least 10s (Prefect's minimum for a proactive trigger)")
    return delay


def _api_url() -> str | None:
    from tasks import prefect_api as pf

    return pf.api_url()


def setup_cmd(
    ctx: typer.Context,
    work_pool: Annotated[str, typer.Option("--work-pool", help="The process work pool to create.")] = WORK_POOL,
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", help="CATEGORY=N: that category's concurrency limit (repeatable)."),
    ] = None,
    reset_limits: Annotated[
        bool, typer.Option("--reset-limits", help="Set existing limits to the defaults / --limit values too.")
    ] = False,
    alerts: Annotated[
        str | None,
        typer.Option(
            "--alerts",
            metavar="WEBHOOK_BLOCK",
            help="Also create the alert automations, notifying through this notification block "
            "(NAME or TYPE/NAME, e.g. custom-webhook/ops).",
            show_default=False,
        ),
    ] = None,
    alert_failures: Annotated[
        int, typer.Option("--alert-failures", min=1, metavar="N", help="Alert when an instance fails N syncs in a row.")
    ] = 3,
    alert_not_started: Annotated[
        dt.timedelta,
        typer.Option(
            "--alert-not-started",
            metavar="DELAY",
            parser=_parse_delay,
            help="Alert when a session run went Late and did not start within this: 30s, 15m, 1h (at least 10s).",
        ),
    ] = "15m",  # type: ignore[assignment]
    _json: out.JsonFlag = False,
) -> None:
    """Bootstrap the Prefect server in PREFECT_API_URL for syncflow's deployments (idempotent).

    Creates the process work pool and one global concurrency limit per category
    (tag:sync:<category>; metadata 5, messages 3, account/capacity/config 5, other 3) when
    missing; existing ones keep their values unless --reset-limits. Then deploy with
    `prefect deploy --all` and start a worker: `prefect worker start --pool syncflow`.
    """
    from deployments.setup import setup

    limits = _parse_limits(limit)
    if _api_url() is None:
        raise ConfigError(
            "PREFECT_API_URL is not set: `syncflow setup` prepares a running Prefect server "
            "(e.g. PREFECT_API_URL=http://127.0.0.1:4200/api after `prefect server start`)"
        )
    try:
        report = asyncio.run(setup(work_pool=work_pool, limits=limits, reset_limits=reset_limits))
    except Exception as exc:  # connection refused, auth, ...
        raise ConfigError(f"could not set up Prefect at {_api_url()}: {type(exc).__name__}: {exc}") from None
    payload = report.as_dict()
    if alerts is not None:
        from deployments.alerts import ensure_alerts

        made = asyncio.run(
            ensure_alerts(alerts, failures_in_a_row=alert_failures, not_started_within=alert_not_started)
        )
        payload["alerts"] = made.as_dict()

    def human(p: dict[str, Any]) -> Any:
        rows = [
            [
                limit_name(c),
                n,
                "created"
                if limit_name(c) in p["limits_created"]
                else ("updated" if limit_name(c) in p["limits_updated"] else "kept"),
            ]
            for c, n in p["limits"].items()
        ]
        pool = f"work pool {p['work_pool']!r}: {'created' if p['work_pool_created'] else 'exists'}"
        limits = out.table(pool, ["concurrency limit", "slots", ""], rows)
        if not p.get("alerts"):
            return limits
        made = p["alerts"]
        alerts_table = out.table(
            f"alerts through block {made['block']!r}", ["automation", ""], sorted(made["automations"].items())
        )
        return [limits, alerts_table]

    out.render(ctx, payload, human)


def runner_cmd(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Flow runs this process runs at once (default: no cap).")
    ] = None,
    schedules: Annotated[
        bool, typer.Option("--schedules/--no-schedules", help="Also run the cron schedules of prefect.yaml.")
    ] = True,
) -> None:
    """Serve the deployments of prefect.yaml from this process until stopped (Ctrl-C).

    The same deployment names as `prefect deploy --all` (sync-session/manual-batch, ...), run
    by this process instead of a work pool worker: `prefect deployment run`, the API and the
    schedules all work; cancelling a run in Prefect cancels its session. Needs a Prefect
    server (PREFECT_API_URL).
    """
    if _api_url() is None:
        raise ConfigError(
            "PREFECT_API_URL is not set: `syncflow runner` serves the deployments of a running Prefect server"
        )
    import os

    from deployments.runner import PREFECT_YAML, REPO, load_deployments
    from tasks import prefect_api as pf

    os.chdir(REPO)  # the served runs import flows/ and tasks/ from the repository
    deps = load_deployments(schedules=schedules)
    taken = asyncio.run(pf.deployments_on_work_pool([f"{d.flow_name}/{d.name}" for d in deps]))
    if taken:
        raise ConfigError(
            f"{', '.join(taken)} already deployed to a work pool (prefect deploy): a runner would take "
            "the name(s) over. Use workers for those, or delete them first: prefect deployment delete NAME"
        )
    typer.echo(
        f"serving {len(deps)} deployment(s) from {PREFECT_YAML.name}: "
        + ", ".join(f"{d.flow_name}/{d.name}" for d in deps)
    )
    pf.serve(deps, limit=limit)
