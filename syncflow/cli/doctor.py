"""``syncflow doctor``: is this setup ready to run sessions? One line per finding, with the fix.

Looks at the store (reachable, migrated to this syncflow's head revision), which Prefect
server this process talks to (a real one in PREFECT_API_URL, or the temporary one Prefect
starts when it is unset), and on a real server: the work pool and its live workers, the
concurrency limits, the session deployment; finally, that every enabled instance's connection
block is on that server. Exit status 1 when anything failed (a warning alone exits 0).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from syncflow.cli import _output as out
from syncflow.names import DEFAULT_LIMITS, MANUAL_BATCH, WORK_POOL

TIMEOUT = 15.0

OK, WARN, FAIL = "ok", "warn", "fail"
MARK = {OK: "✓", WARN: "!", FAIL: "✗"}


@dataclass
class Finding:
    check: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix or None}


def _store() -> tuple[list[Finding], list[Any]]:
    """The store's findings and, when it is usable, the enabled instances (as check refs)."""
    from sqlalchemy import text

    from syncflow.cli.instance_admin import ref_of
    from syncflow.store import instances as instance_svc
    from syncflow.store import migrations
    from syncflow.store.db import get_engine, session_scope

    url = out.safe_url(out.store_url())
    if out.sqlite_file_missing(out.store_url()):
        return [Finding("store", FAIL, f"{url}: the SQLite file does not exist", "syncflow db upgrade")], []
    try:
        engine = get_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = migrations.current_revision(engine)
    except Exception as exc:
        return [
            Finding(
                "store",
                FAIL,
                f"{url} is not reachable: {out.one_line(str(getattr(exc, 'orig', None) or exc))[:300]}",
                "start the database or fix SYNCFLOW_DATABASE_URL / --database-url",
            )
        ], []
    head = migrations.head_revision()
    found = [Finding("store", OK, f"{url} reachable")]
    if current is None:
        found.append(Finding("store schema", FAIL, "never migrated (no tables)", "syncflow db upgrade"))
        return found, []
    if current != head:
        found.append(
            Finding("store schema", FAIL, f"at revision {current}, this syncflow expects {head}", "syncflow db upgrade")
        )
        return found, []
    found.append(Finding("store schema", OK, f"migrated (head revision {head})"))
    with session_scope(engine) as s:
        refs = [ref_of(i) for i in instance_svc.list_instances(s, enabled=True)]
    return found, refs


async def _prefect(refs: list[Any], work_pool: str) -> list[Finding]:
    from syncflow.errors import SyncflowError
    from tasks import instance_check as ic
    from tasks import prefect_api as pf

    found: list[Finding] = []
    real = pf.api_url()
    if real:
        why = await pf.ping(TIMEOUT)
        if why is not None:
            return [
                Finding(
                    "prefect server",
                    FAIL,
                    f"{real} does not answer: {why}",
                    "start it (prefect server start) or fix PREFECT_API_URL",
                )
            ]
        found.append(Finding("prefect server", OK, f"{real} (PREFECT_API_URL)"))
        try:
            pool = await pf.work_pool_status(work_pool, timeout=TIMEOUT)
            if not pool.exists:
                found.append(Finding("work pool", FAIL, f"{work_pool!r} does not exist", "syncflow setup"))
            elif pool.paused:
                found.append(
                    Finding("work pool", FAIL, f"{work_pool!r} is paused", f"prefect work-pool resume {work_pool}")
                )
            elif not pool.live_workers:
                found.append(
                    Finding(
                        "work pool",
                        FAIL,
                        f"{work_pool!r} has no live worker ({pool.workers} registered, none online): "
                        "deployment runs wait forever",
                        f"prefect worker start --pool {work_pool}",
                    )
                )
            else:
                found.append(
                    Finding(
                        "work pool",
                        OK,
                        f"{work_pool!r}: {len(pool.live_workers)} live worker(s) ({', '.join(pool.live_workers)})",
                    )
                )
            missing = await pf.missing_limits(list(DEFAULT_LIMITS), timeout=TIMEOUT)
            if missing:
                found.append(Finding("concurrency limits", FAIL, "missing: " + ", ".join(missing), "syncflow setup"))
            else:
                found.append(Finding("concurrency limits", OK, f"{len(DEFAULT_LIMITS)} present (tag:sync:<category>)"))
            try:
                pool_of = await pf.deployment_pool(MANUAL_BATCH, timeout=TIMEOUT)
                where = f"work pool {pool_of!r}" if pool_of else "a runner (syncflow runner)"
                found.append(Finding("deployments", OK, f"{MANUAL_BATCH} deployed, runs on {where}"))
            except SyncflowError as exc:
                if "not found" not in str(exc):
                    raise
                found.append(
                    Finding(
                        "deployments",
                        WARN,
                        f"{MANUAL_BATCH} is not deployed: no schedules, no `sync run --deployment`",
                        "prefect deploy --all",
                    )
                )
        except SyncflowError as exc:
            found.append(Finding("prefect server", FAIL, str(exc), "check the server's health and PREFECT_API_URL"))
            return found
    else:
        found.append(
            Finding(
                "prefect server",
                WARN,
                "temporary (no PREFECT_API_URL): runs, blocks and schedules live in a server this process starts "
                f"on {_prefect_home()}; fine for trying syncflow, not for production",
                "prefect server start, then export PREFECT_API_URL=http://127.0.0.1:4200/api, syncflow setup, "
                "prefect deploy --all and syncflow instances update NAME ... for each instance",
            )
        )
    for ref in refs:
        block = await ic.block_present(ref.kind, ref.block_name, ref.name, timeout=TIMEOUT)
        if block.ok:
            found.append(Finding(f"instance {ref.name}", OK, f"block {block.detail}"))
        else:
            fix = f"syncflow instances update {ref.name} ..."
            if "re-create it: " in block.detail:
                fix = block.detail.split("re-create it: ", 1)[1]
            found.append(Finding(f"instance {ref.name}", FAIL, block.detail.split("; re-create it")[0], fix))
    if not refs:
        found.append(Finding("instances", WARN, "no enabled instance", "syncflow instances add NAME --kind ..."))
    return found


def _prefect_home() -> str:
    from prefect.settings import PREFECT_HOME

    return str(PREFECT_HOME.value())


def doctor_cmd(
    ctx: typer.Context,
    work_pool: Annotated[str, typer.Option("--work-pool", help="The work pool deployments run on.")] = WORK_POOL,
    _json: out.JsonFlag = False,
) -> None:
    """Is this setup ready? The store (reachable, migrated), which Prefect server (real or
    temporary), the work pool and its live workers, the concurrency limits, the session
    deployment and every enabled instance's block on that server; one line each, with the fix.

    Exit status 1 when anything failed.
    """
    findings, refs = _store()
    from syncflow.cli import _runtime

    _runtime.prepare()
    findings += asyncio.run(_prefect(refs, work_pool))
    ok = not any(f.status == FAIL for f in findings)
    payload = {"ok": ok, "checks": [f.as_dict() for f in findings]}

    def human(p: dict[str, Any]) -> Any:
        problems = [c for c in p["checks"] if c["status"] == FAIL]
        title = "ready" if p["ok"] else f"{len(problems)} problem(s)"
        rows = [[c["check"], MARK[c["status"]], c["detail"], c["fix"] or ""] for c in p["checks"]]
        return out.table(f"syncflow doctor: {title}", ["CHECK", "", "FOUND", "FIX"], rows)

    out.render(ctx, payload, human)
    if not ok:
        raise typer.Exit(1)


__all__ = ["doctor_cmd"]
