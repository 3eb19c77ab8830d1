"""Conversation metadata: always a full snapshot, diffed against what is stored.

New conversations are created, changed ones updated (their ``version`` goes up), ones the
source no longer lists are marked deleted (kept, with when, version up), and a deleted one
that comes back is restored (counted as updated). The diff is :mod:`syncflow.store.snapshot_diff`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy.orm import Session

from syncflow.sources.base import ConversationRow
from syncflow.store.models import Conversation
from syncflow.store.snapshot_diff import DiffResult, SnapshotTable, apply_snapshot

FIELDS: Final = ("title", "type", "avatar_url", "username", "members_count", "avatar_id")


def _values(item: ConversationRow) -> dict[str, Any]:
    return {f: getattr(item, f) for f in FIELDS}


def _label(item: ConversationRow) -> str:
    return f"{item.conversation_id} ({item.title})" if item.title else item.conversation_id


def _updated(row: Conversation, item: ConversationRow, restored: bool) -> str:
    parts = [f"{f}: {getattr(row, f)!r} -> {getattr(item, f)!r}" for f in FIELDS if getattr(row, f) != getattr(item, f)]
    if restored:
        parts.insert(0, "restored")
    return f"{item.conversation_id}: {', '.join(parts) or 'refreshed'}"


CONVERSATIONS: Final = SnapshotTable[ConversationRow](
    model=Conversation,
    key="conversation_id",
    what="conversation",
    plural="conversations",
    coerce=ConversationRow.from_json,
    item_key=lambda c: c.conversation_id,
    same=lambda row, item: all(getattr(row, f) == getattr(item, f) for f in FIELDS),
    values=_values,
    created=lambda item: f"+{_label(item)}",
    updated=_updated,
    deleted=lambda row: f"-{row.conversation_id} ({row.title})" if row.title else f"-{row.conversation_id}",
    refuse_empty=False,  # a chat server may really have no conversation left
    versioned=True,
    stamps_session=False,
)


def apply_conversations(
    session: Session,
    *,
    instance_id: int,
    snapshot: Iterable[ConversationRow | dict[str, Any]],
    instance_name: str = "",
    session_id: str | None = None,
) -> DiffResult:
    """Diff ``snapshot`` against the stored conversations of the instance; flushes, never commits."""
    return apply_snapshot(
        session, CONVERSATIONS, instance_id=instance_id, snapshot=snapshot, instance_name=instance_name
    )


__all__ = ["CONVERSATIONS", "FIELDS", "ConversationRow", "apply_conversations"]
