"""The Prefect side of an instance check: is its connection block on *this* Prefect server,
and what does the source behind it answer (:mod:`syncflow.engine.check`).

Callers: ``syncflow instances check/add/update`` and ``POST /sync_sessions/api/instances/{name}/check``.
They pass what the store knows of the instance (kind, block name, categories, config); the
block is loaded here by name (its secrets never leave it) or given as an unsaved block
object (``instances update`` checks a changed connection before saving it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blocks.connections import HINTS, load_block
from syncflow.engine.check import BLOCK, Check, InstanceCheck, run_checks
from syncflow.errors import ConfigError
from tasks import prefect_api as pf


@dataclass(frozen=True)
class InstanceRef:
    """What the store knows of an instance, enough to check it."""

    name: str
    kind: str
    block_name: str | None
    categories: tuple[str, ...]
    config: dict[str, Any] | None = None


def server_label() -> str:
    """Which Prefect server this process talks to, in words."""
    url = pf.api_url()
    return url if url else "the temporary Prefect server (no PREFECT_API_URL)"


async def find_block(ref: InstanceRef, *, timeout: float) -> tuple[Any | None, Check]:
    """The instance's block on this Prefect server (None when missing) and the ``block`` check."""
    if not ref.block_name:
        return None, Check(
            BLOCK,
            False,
            f"no connection block registered ({HINTS.get(ref.kind, '--block NAME')}, "
            f"or syncflow instances update {ref.name} ...)",
        )
    try:
        block = await asyncio.wait_for(load_block(ref.kind, ref.block_name, ref.name), timeout)
    except ConfigError:
        return None, Check(
            BLOCK,
            False,
            f"block {ref.block_name!r} is not on this Prefect server ({server_label()}); re-create it: "
            f"syncflow instances update {ref.name} " + _connection_options(ref.kind),
        )
    except TimeoutError:
        return None, Check(BLOCK, False, f"the Prefect API ({server_label()}) did not answer within {timeout:.0f} s")
    except Exception as exc:  # refused connection, HTTP error, ...
        msg = " ".join(str(exc).split())[:300]
        return None, Check(BLOCK, False, f"the Prefect API ({server_label()}) failed: {type(exc).__name__}: {msg}")
    return block, Check(BLOCK, True, f"{ref.block_name!r} on {server_label()}")


def _connection_options(kind: str) -> str:
    if kind in ("postgres", "mysql"):
        return "--host HOST --user USER --password-env VAR"
    if kind == "http-seq":
        return "--url URL --token-env VAR"
    return "..."


def _opener(block: Any, ref: InstanceRef) -> Any:
    def open_source() -> tuple[Any, str]:
        source = block.open_source(ref.name, ref.config) if ref.config else block.open_source(ref.name)
        return source, block.describe()

    return open_source


async def check_instance(
    ref: InstanceRef, *, timeout: float = 30.0, login_only: bool = False, block: Any | None = None
) -> InstanceCheck:
    """Every check of ``ref`` (:mod:`syncflow.engine.check`): its block on this server (or the
    unsaved ``block`` given), connection, credentials and, unless ``login_only``, each category."""
    if block is None:
        block, found = await find_block(ref, timeout=timeout)
    else:
        found = Check(BLOCK, True, f"new connection ({block.describe()}), not saved yet")
    opener = _opener(block, ref) if block is not None else None
    return await asyncio.to_thread(
        run_checks, ref.name, ref.kind, list(ref.categories), block=found, open_source=opener, login_only=login_only
    )


async def check_instances(refs: Sequence[InstanceRef], *, timeout: float = 30.0) -> list[InstanceCheck]:
    """:func:`check_instance` of each, one after the other (a server's error stays its own)."""
    return [await check_instance(r, timeout=timeout) for r in refs]


async def block_fields(ref: InstanceRef, *, timeout: float) -> dict[str, Any] | None:
    """The fields of the instance's block on this server, secrets revealed (to build its
    replacement in this process; never printed), or None when it is not there."""
    if not ref.block_name:
        return None
    try:
        block = await asyncio.wait_for(load_block(ref.kind, ref.block_name, ref.name), timeout)
    except ConfigError:
        return None
    fields: dict[str, Any] = {}
    for key in type(block).model_fields:
        value = getattr(block, key)
        fields[key] = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return fields


async def block_present(kind: str, block_name: str | None, instance: str, *, timeout: float) -> Check:
    """The ``block`` check alone (``syncflow doctor``)."""
    _, found = await find_block(InstanceRef(instance, kind, block_name, ()), timeout=timeout)
    return found


__all__ = [
    "InstanceRef",
    "block_fields",
    "block_present",
    "check_instance",
    "check_instances",
    "find_block",
    "server_label",
]
