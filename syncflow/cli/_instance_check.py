"""The connection check of ``instances add`` and ``instances update`` (``syncflow/engine/check.py``
through ``tasks/instance_check.py``), shared by both command modules."""

from __future__ import annotations

import asyncio
from typing import Any

from syncflow.errors import ConfigError

PREFECT_TIMEOUT = 30.0


def _prepare() -> None:
    from syncflow.cli import _runtime

    _runtime.prepare()  # before the first import of Prefect


def _problems_line(result: Any) -> str:
    return "; ".join(f"{c.check}: {c.detail}" for c in result.problems)


def add_check(name: str, kind: str, block_name: str | None, categories: list[str] | None) -> None:
    """``instances add``'s connection check (login) of the block just saved: a ConfigError
    with the failed checks when it fails."""
    from syncflow.sources.base import source_kind
    from syncflow.store.models import Category

    spec = source_kind(kind)
    cats = tuple(Category.parse(c, what="category").value for c in categories or spec.default_categories)
    for cat in cats:  # what the registry would refuse is said first, before any connection
        spec.check(cat, instance=name)
    if not block_name:
        return  # nothing to check yet (e.g. a Telegram chat added later by discover)
    _prepare()
    from tasks import instance_check as ic

    result = asyncio.run(
        ic.check_instance(ic.InstanceRef(name, kind, block_name, cats), timeout=PREFECT_TIMEOUT, login_only=True)
    )
    if not result.ok:
        raise ConfigError(
            f"instance {name} not added: {_problems_line(result)} (fix it, or add it anyway with --no-check)"
        )
