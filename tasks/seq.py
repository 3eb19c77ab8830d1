"""Thin Prefect tasks around the seq engine's steps (syncflow.engine.pipeline, syncflow.sources).

Tasks get names and numbers, never secrets or connections: the fetch task loads the
instance's block by name and keeps one HTTP client per block in this process.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as task_run_runtime

from blocks.seq_http import SeqHttpInstance
from syncflow.engine import pipeline as seq_engine
from syncflow.errors import ConfigError, RateLimitedError, TransientSyncError
from syncflow.sources.http_seq import SeqHttpClient
from syncflow.store.conversations import ConversationRow

_clients: dict[str, tuple[SeqHttpClient, SeqHttpInstance]] = {}
_clients_lock = threading.Lock()


async def _connection(block_name: str | None, instance: str) -> tuple[SeqHttpClient, SeqHttpInstance]:
    if not block_name:
        raise ConfigError(f"instance {instance} has no connection block (syncflow instances add ... --url --token-env)")
    with _clients_lock:
        cached = _clients.get(block_name)
    if cached is not None:
        return cached
    try:
        block = await SeqHttpInstance.aload(block_name)
    except ValueError as exc:
        raise ConfigError(f"instance {instance}: cannot load block {block_name!r}: {exc}") from None
    client = SeqHttpClient(block.base_url, block.token, timeout=block.timeout, instance=instance)
    with _clients_lock:
        _clients.setdefault(block_name, (client, block))
        return _clients[block_name]


def forget_clients() -> None:
    """Close the cached HTTP clients (after a block changed; tests)."""
    with _clients_lock:
        for client, _ in _clients.values():
            client.close()
        _clients.clear()


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only errors a retry can help (plain def: Prefect ignores callable objects)."""
    return isinstance(state.data, TransientSyncError)


@dataclass(frozen=True)
class ConnectionInfo:
    """The non-secret part of a block: what the flow needs to plan its batches and retries."""

    batch_size: int
    retry_delays: list[float]
    jitter: float
    max_delay: float


@task(name="describe-connection", cache_policy=NO_CACHE)
async def describe_connection(block_name: str | None, instance: str) -> ConnectionInfo:
    _, block = await _connection(block_name, instance)
    policy = block.retry_policy()
    return ConnectionInfo(
        batch_size=block.batch_size, retry_delays=policy.delays(), jitter=policy.jitter, max_delay=policy.max_delay
    )


@dataclass(frozen=True)
class Chunk:
    result: seq_engine.ChunkResult
    attempts: int


@task(name="sync-batches", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
async def sync_batches(run: seq_engine.InstanceRun, count: int, max_batches: int, max_delay: float = 60) -> Chunk:
    """Fetch and store up to ``max_batches`` pages from the committed cursor on (one
    transaction per page). A 429 sleeps its Retry-After (capped at ``max_delay``) before the
    retry.

    A retry resumes after the last committed page and stops after its first page: the
    next chunk is a new task run with the whole retry budget, so every fetch gets the
    block's max_retries, however long the sync."""
    client, _ = await _connection(run.block_name, run.instance_name)
    attempt = task_run_runtime.get_run_count()
    batches = 1 if attempt > 1 else max_batches
    try:
        result = await asyncio.to_thread(
            lambda: seq_engine.sync_chunk(run, client.fetch_page, count=count, max_batches=batches)
        )
    except RateLimitedError as exc:
        if exc.retry_after:
            await asyncio.sleep(min(exc.retry_after, max_delay))
        raise
    return Chunk(result=result, attempts=attempt)


@task(name="fetch-conversations", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
async def fetch_conversations(block_name: str | None, instance: str, max_delay: float = 60) -> list[ConversationRow]:
    """Every conversation of the instance. 429: sleeps Retry-After (capped) before the retry."""
    client, _ = await _connection(block_name, instance)
    try:
        convs = await asyncio.to_thread(client.fetch_conversations)
    except RateLimitedError as exc:
        if exc.retry_after:
            await asyncio.sleep(min(exc.retry_after, max_delay))
        raise
    return [ConversationRow(c.conversation_id, c.title, c.type, c.avatar_url) for c in convs]


@task(name="begin-sync", cache_policy=NO_CACHE)
async def begin_sync(
    record_id: int, owner: str, lease_seconds: float, flow_run_id: str | None, options: dict[str, Any] | None
) -> seq_engine.InstanceRun | seq_engine.Skipped:
    return await asyncio.to_thread(
        lambda: seq_engine.begin_instance_sync(
            record_id=record_id, owner=owner, lease_seconds=lease_seconds, flow_run_id=flow_run_id, options=options
        )
    )


@task(name="apply-metadata", cache_policy=NO_CACHE)
async def apply_metadata(run: seq_engine.InstanceRun, conversations: list[ConversationRow]) -> Any:
    return await asyncio.to_thread(lambda: seq_engine.apply_metadata(run, conversations=conversations))


@task(name="finish-sync", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 2, 4])
async def finish_sync(
    run: seq_engine.InstanceRun, outcome: str, details: dict[str, Any] | None, error: str | None
) -> str:
    return await asyncio.to_thread(
        lambda: seq_engine.finish_instance_sync(run, outcome=outcome, details=details, error=error)
    )
