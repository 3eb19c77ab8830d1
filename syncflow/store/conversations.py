"""Conversation metadata: always a full snapshot, diffed against what is stored.

New conversations are created, changed ones updated (their ``version`` goes up), ones the
source no longer lists are marked deleted (kept, with when), and a deleted one that comes
back is restored (counted as updated).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.errors import ProtocolError
from syncflow.store.models import Conversation, utcnow
from syncflow.store.sessions import ItemCounts

FIELDS = ("title", "type", "avatar_url")


@dataclass(frozen=True)
class ConversationRow:
    conversation_id: str
    title: str | None = None
    type: int | None = None
    avatar_url: str | None = None


@dataclass
class MetadataDiff:
    counts: ItemCounts
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def details(self, limit: int = 50) -> dict[str, Any]:
        return {
            "created_ids": self.created[:limit],
            "updated_ids": self.updated[:limit],
            "deleted_ids": self.deleted[:limit],
        }


def apply_conversations(
    session: Session, *, instance_id: int, snapshot: Iterable[ConversationRow], instance_name: str = ""
) -> MetadataDiff:
    """Diff ``snapshot`` against the stored conversations of the instance; flushes, never commits."""
    live: dict[str, ConversationRow] = {}
    for row in snapshot:
        if row.conversation_id in live:
            raise ProtocolError(
                f"instance {instance_name or instance_id}: conversation {row.conversation_id!r} listed twice"
            )
        live[row.conversation_id] = row
    stored: Sequence[Conversation] = list(
        session.scalars(select(Conversation).where(Conversation.instance_id == instance_id))
    )
    by_id = {c.conversation_id: c for c in stored}
    now = utcnow()
    diff = MetadataDiff(counts=ItemCounts())
    unchanged = 0
    for cid, row in live.items():
        old = by_id.get(cid)
        if old is None:
            session.add(
                Conversation(
                    instance_id=instance_id,
                    conversation_id=cid,
                    title=row.title,
                    type=row.type,
                    avatar_url=row.avatar_url,
                    version=1,
                )
            )
            diff.created.append(cid)
            continue
        changed = any(getattr(old, f) != getattr(row, f) for f in FIELDS) or old.deleted
        if changed:
            for f in FIELDS:
                setattr(old, f, getattr(row, f))
            old.deleted = False
            old.deleted_at = None
            old.version += 1
            diff.updated.append(cid)
        else:
            unchanged += 1
    for cid, old in by_id.items():
        if cid not in live and not old.deleted:
            old.deleted = True
            old.deleted_at = now
            old.version += 1
            diff.deleted.append(cid)
    session.flush()
    diff.counts = ItemCounts(
        synced=len(live),
        created=len(diff.created),
        updated=len(diff.updated),
        deleted=len(diff.deleted),
        unchanged=unchanged,
    )
    return diff
