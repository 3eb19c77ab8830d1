"""From an instance's block name to an open source: which block type each kind uses, and a
per-process cache of open sources (one HTTP pool per http-seq instance, reused by every chunk;
one source per Telegram chat, over its account's shared connection).

Tasks call :func:`open_source` with the block's *name*: secrets stay in the block, never in a
task parameter, a log or an artifact.
"""

from __future__ import annotations

import importlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from prefect.blocks.core import Block

from blocks.database import DatabaseInstance
from blocks.seq_http import SeqHttpInstance
from syncflow.errors import ConfigError
from syncflow.sources.base import ReadPolicy, Source, source_kind

# The block type that holds the connection of each kind. Telegram's is imported on first use
# (``block_type``): it loads Telethon, ~1 s of every sync process that has no chat to read.
BLOCK_TYPES: dict[str, type[Block]] = {
    "http-seq": SeqHttpInstance,
    "postgres": DatabaseInstance,
    "mysql": DatabaseInstance,
}
_LAZY_BLOCK_TYPES: dict[str, tuple[str, str]] = {"telegram": ("blocks.telegram", "TelegramAccountBlock")}


def block_type(kind: str) -> type[Block] | None:
    """The block type of ``kind`` (None when the kind has none)."""
    found = BLOCK_TYPES.get(kind)
    if found is None and kind in _LAZY_BLOCK_TYPES:
        module, name = _LAZY_BLOCK_TYPES[kind]
        found = BLOCK_TYPES[kind] = getattr(importlib.import_module(module), name)
    return found


HINTS: dict[str, str] = {
    "http-seq": "syncflow instances add ... --url URL --token-env VAR, or --block NAME",
    "postgres": "syncflow instances add ... --host --user --password-env VAR, or --block NAME",
    "mysql": "syncflow instances add ... --host --user --password-env VAR, or --block NAME",
    "telegram": "syncflow telegram login ACCOUNT ..., then syncflow telegram discover ACCOUNT",
}


@dataclass(frozen=True)
class Opened:
    """An open source with its non-secret reading plan and a description for the record."""

    source: Source
    policy: ReadPolicy
    describe: str
    binding: str | None = None  # the block's instance key (blocks syncflow made for one instance)


_opened: dict[str, Opened] = {}
_preloaded: dict[tuple[str, str], Block] = {}  # blocks read ahead for a session, each taken by its first load
_lock = threading.Lock()
PRELOAD_PAGE = 200
"""Block documents per read of :func:`preload_blocks` (the Prefect API's default page limit)."""


def check_binding(instance: str, block_name: str | None, expected: str | None, found: str | None) -> None:
    """ConfigError unless the block is the one ``instance`` was registered with: an instance
    registered with a block syncflow made (``expected``, its ``block_binding``) only syncs from a
    block carrying that key — never from another instance's connection."""
    if expected is None or found == expected:
        return
    what = f"the key of another instance ({found[:12]}...)" if found else "no instance key"
    raise ConfigError(
        f"instance {instance}: block {block_name!r} is not the one it was registered with (it carries {what}, "
        f"the instance expects {expected[:12]}...): refusing to sync; re-register the instance "
        "(syncflow instances remove, then add it under a new name)"
    )


async def load_block(kind: str, block_name: str | None, instance: str, binding: str | None = None) -> Any:
    """The block holding ``instance``'s connection (ConfigError naming what to do when missing,
    or when ``binding`` is given and the block carries another key: :func:`check_binding`)."""
    source_kind(kind)
    found = block_type(kind)
    if found is None:
        raise ConfigError(f"instance {instance}: kind {kind!r} has no connection block type")
    if not block_name:
        raise ConfigError(f"instance {instance} has no connection block ({HINTS.get(kind, '--block NAME')})")
    with _lock:
        preloaded = _preloaded.pop((kind, block_name), None)
    try:
        block = preloaded if preloaded is not None else await found.aload(block_name)
    except ValueError as exc:
        raise ConfigError(f"instance {instance}: cannot load {kind} block {block_name!r}: {exc}") from None
    check_binding(instance, block_name, binding, getattr(block, "binding", None))
    return block


def _key(kind: str, block_name: str | None, config: dict[str, Any] | None) -> str:
    return f"{kind}:{block_name}" + (f":{json.dumps(config, sort_keys=True, default=str)}" if config else "")


def is_open(kind: str, block_name: str | None, config: dict[str, Any] | None = None) -> bool:
    """Whether this process has the source open already (:func:`open_source` reads no block)."""
    with _lock:
        return _key(kind, block_name, config) in _opened


async def preload_blocks(kind: str, block_names: list[str]) -> int:
    """Read the blocks of many instances of ``kind`` ahead, a page of documents per request
    instead of one request per instance; each is kept here until :func:`load_block` takes it
    (once) or :func:`drop_preloaded` drops it. Blocks not found are left to ``load_block``
    (which names what is wrong). Returns how many were read."""
    found = block_type(kind)
    names = sorted({n for n in block_names if n})
    if found is None or not names:
        return 0
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import BlockDocument

    slug = found.get_block_type_slug()
    read = 0
    async with get_client() as client:
        for start in range(0, len(names), PRELOAD_PAGE):
            page = names[start : start + PRELOAD_PAGE]
            response = await client.request(
                "POST",
                "/block_documents/filter",
                json={
                    "block_documents": {"name": {"any_": page}, "is_anonymous": {"eq_": False}},
                    "block_types": {"slug": {"any_": [slug]}},
                    "include_secrets": True,
                    "limit": len(page),
                },
            )
            for item in response.json():
                document = BlockDocument.model_validate(item)
                block = found._load_from_block_document(document)  # what Block.aload does with its document
                with _lock:
                    _preloaded[(kind, str(document.name))] = block
                read += 1
    return read


def drop_preloaded(kind: str, block_names: list[str]) -> None:
    """Forget the blocks :func:`preload_blocks` read that no load took (a session's end)."""
    with _lock:
        for name in block_names:
            _preloaded.pop((kind, name), None)


async def open_source(
    kind: str,
    block_name: str | None,
    instance: str,
    config: dict[str, Any] | None = None,
    binding: str | None = None,
) -> Opened:
    """The open source of ``instance`` in this process (opened on first use, then reused).

    ``config`` is the instance's non-secret settings (a Telegram chat's id): instances that
    share a block but differ in config (the chats of one account) get a source each.
    ``binding``: the instance's ``block_binding``; a block carrying another key is refused."""
    key = _key(kind, block_name, config)
    with _lock:
        cached = _opened.get(key)
    if cached is not None:
        check_binding(instance, block_name, binding, cached.binding)
        return cached
    block = await load_block(kind, block_name, instance, binding)
    source = block.open_source(instance, config) if config else block.open_source(instance)
    opened = Opened(
        source=source, policy=block.read_policy(), describe=block.describe(), binding=getattr(block, "binding", None)
    )
    with _lock:
        _opened.setdefault(key, opened)
        return _opened[key]


def forget_sources() -> None:
    """Close every open source of this process (after a block changed; tests)."""
    with _lock:
        for opened in _opened.values():
            opened.source.close()
        _opened.clear()
        _preloaded.clear()


__all__ = [
    "BLOCK_TYPES",
    "Opened",
    "block_type",
    "check_binding",
    "drop_preloaded",
    "forget_sources",
    "is_open",
    "load_block",
    "open_source",
    "preload_blocks",
]
