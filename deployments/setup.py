"""Bootstrap what syncflow's deployments need on a Prefect server, idempotently.

``syncflow setup`` (or ``python -m deployments.setup``) creates, when missing:

- the process work pool ``syncflow`` the deployments of ``prefect.yaml`` run on;
- one global concurrency limit ``tag:sync:<category>`` per category, with the seed's
  defaults (metadata 5, messages 3, account/capacity/config 5, other 3).

What exists is left as it is (a limit an operator changed keeps its value) unless
``--reset-limits`` asks to set every limit back to the defaults.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

WORK_POOL = "syncflow"

# The seed's defaults: metadata 5, messages 3; database categories 5.
DEFAULT_LIMITS: dict[str, int] = {
    "metadata": 5,
    "messages": 3,
    "account": 5,
    "capacity": 5,
    "config": 5,
    "other": 3,
}


@dataclass
class SetupReport:
    work_pool: str
    work_pool_created: bool
    limits: dict[str, int] = field(default_factory=dict)
    limits_created: list[str] = field(default_factory=list)
    limits_updated: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "work_pool": self.work_pool,
            "work_pool_created": self.work_pool_created,
            "limits": self.limits,
            "limits_created": self.limits_created,
            "limits_updated": self.limits_updated,
        }


def limit_name(category: str) -> str:
    """The global concurrency limit that caps ``category``: ``tag:sync:<category>`` (what
    ``prefect concurrency-limit create sync:<category> N`` creates)."""
    return f"tag:sync:{category}"


async def ensure_work_pool(client: Any, name: str = WORK_POOL) -> bool:
    """Create the process work pool ``name`` when missing; True when it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        await client.read_work_pool(name)
        return False
    except ObjectNotFound:
        pass
    try:
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                description="syncflow sessions and instance syncs",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
    except ObjectAlreadyExists:  # created meanwhile by another setup
        return False
    return True


async def ensure_limits(
    client: Any, limits: dict[str, int] | None = None, *, reset: bool = False
) -> tuple[dict[str, int], list[str], list[str]]:
    """Create every ``tag:sync:<category>`` limit that is missing; with ``reset``, set the
    existing ones to ``limits`` too. Returns (limit per category, created, updated)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    wanted = {**DEFAULT_LIMITS, **(limits or {})}
    now: dict[str, int] = {}
    created: list[str] = []
    updated: list[str] = []
    for category, value in wanted.items():
        name = limit_name(category)
        try:
            gcl = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=value))
                created.append(name)
            except ObjectAlreadyExists:
                pass
            gcl = await client.read_global_concurrency_limit_by_name(name)
        else:
            if reset and (gcl.limit != value or not gcl.active):
                await client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=value, active=True)
                )
                updated.append(name)
                gcl = await client.read_global_concurrency_limit_by_name(name)
        now[category] = gcl.limit
    return now, created, updated


async def setup(
    *, work_pool: str = WORK_POOL, limits: dict[str, int] | None = None, reset_limits: bool = False
) -> SetupReport:
    """Bootstrap the work pool and the limits on the Prefect API in use (PREFECT_API_URL)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        pool_created = await ensure_work_pool(client, work_pool)
        now, created, updated = await ensure_limits(client, limits, reset=reset_limits)
    return SetupReport(work_pool, pool_created, now, created, updated)


if __name__ == "__main__":  # pragma: no cover - `syncflow setup` is the documented way
    print(asyncio.run(setup()).as_dict())
