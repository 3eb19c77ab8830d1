"""Bootstrap what syncflow's deployments need on a Prefect server, idempotently.

``syncflow setup`` (or ``python -m deployments.setup``) creates, when missing:

- the process work pool ``syncflow`` the deployments of ``prefect.yaml`` run on;
- one global concurrency limit ``tag:sync:<category>`` per category, with the seed's
  defaults (metadata 5, messages 3, account/capacity/config 5, other 3:
  :data:`syncflow.names.DEFAULT_LIMITS`).

What exists is left as it is (a limit an operator changed keeps its value) unless
``--reset-limits`` asks to set every limit back to the defaults. The Prefect calls are the
seam's (``tasks.prefect_api``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from syncflow.names import WORK_POOL
from tasks import prefect_api as pf


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


async def setup(
    *, work_pool: str = WORK_POOL, limits: dict[str, int] | None = None, reset_limits: bool = False
) -> SetupReport:
    """Bootstrap the work pool and the limits on the Prefect API in use (PREFECT_API_URL)."""
    pool_created = await pf.ensure_work_pool(work_pool)
    now, created, updated = await pf.ensure_limits(limits, reset=reset_limits)
    return SetupReport(work_pool, pool_created, now, created, updated)


if __name__ == "__main__":  # pragma: no cover - `syncflow setup` is the documented way
    print(asyncio.run(setup()).as_dict())
