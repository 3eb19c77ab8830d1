"""The snapshot read of one instance, stored in one transaction.

A snapshot category (``metadata``, ``account``, ``config``, ``capacity``) is read whole and
stored with the record's counts and details, the lease check and (for diffed categories) the
``metadata_version`` bump, all in one unit of work. A session or record cancelled while the
source was being read stores nothing: the same transaction sees the cancellation first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from syncflow.engine.run import InstanceRun, cancel_reason
from syncflow.errors import ConfigError
from syncflow.store import sessions as book
from syncflow.store import sync_state
from syncflow.store.conversations import apply_conversations
from syncflow.store.db import get_engine, session_scope
from syncflow.store.models import Category
from syncflow.store.snapshot_diff import DiffResult
from syncflow.store.snapshots import append_capacity, apply_accounts, apply_settings

CHANGES_KEPT = 1000  # change lines handed back to the caller (its artifact); sync_details keeps fewer

# What stores a snapshot of each category (rows flushed in the caller's transaction).
_WRITERS: dict[str, Callable[..., DiffResult]] = {
    Category.METADATA.value: lambda s, run, items: apply_conversations(
        s, instance_id=run.instance_id, snapshot=items, instance_name=run.instance_name
    ),
    Category.ACCOUNT.value: lambda s, run, items: apply_accounts(
        s, instance_id=run.instance_id, snapshot=items, session_id=run.session_id, instance_name=run.instance_name
    ),
    Category.CONFIG.value: lambda s, run, items: apply_settings(
        s, instance_id=run.instance_id, snapshot=items, session_id=run.session_id, instance_name=run.instance_name
    ),
    Category.CAPACITY.value: lambda s, run, items: append_capacity(
        s, instance_id=run.instance_id, sizes=items, session_id=run.session_id, instance_name=run.instance_name
    ),
}
# Appended series, not diffed: no metadata_version.
_SERIES = frozenset({Category.CAPACITY.value})


@dataclass(frozen=True)
class Stored:
    """What storing a snapshot did (or why it stored nothing: ``cancelled``)."""

    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    changes_total: int = 0
    cancelled: str | None = None


def store_snapshot(run: InstanceRun, items: Sequence[Any], *, engine: Engine | None = None) -> Stored:
    """Store a snapshot of ``run.category`` with the record's counts and details, in one transaction.

    The same transaction renews the (instance, category) lease (``LeaseLostError`` — storing
    nothing — when another sync took it over) and, when a diffed category changed, bumps the
    state's ``metadata_version``. A cancelled session or record stores nothing.
    """
    writer = _WRITERS.get(run.category)
    if writer is None:
        raise ConfigError(f"instance {run.instance_name}: {run.category!r} is not a snapshot category")
    with session_scope(engine or get_engine()) as s:
        stop = cancel_reason(s, run)
        if stop is not None:
            return Stored(cancelled=stop)
        return _store(s, run, items, writer)


def _store(s: Session, run: InstanceRun, items: Sequence[Any], writer: Callable[..., DiffResult]) -> Stored:
    sync_state.advance_cursor(
        s,
        instance_id=run.instance_id,
        category=run.category,
        owner=run.owner,
        last_seq=None,
        lease_seconds=run.lease_seconds,
    )
    result = writer(s, run, items)
    details = result.details()
    if result.changed and run.category not in _SERIES:
        details["metadata_version"] = sync_state.bump_metadata_version(
            s, instance_id=run.instance_id, category=run.category
        )
    book.add_record_progress(s, record_id=run.record_id, counts=result.counts, details=details)
    c = result.counts
    return Stored(
        counts={
            "synced": c.synced,
            "created": c.created,
            "updated": c.updated,
            "deleted": c.deleted,
            "unchanged": c.unchanged,
        },
        details=details,
        changes=result.changes[:CHANGES_KEPT],
        changes_total=len(result.changes),
    )


__all__ = ["CHANGES_KEPT", "Stored", "store_snapshot"]
