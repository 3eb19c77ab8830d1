"""Chat instances: one instance per chat of an account (``telegram``).

A chat instance's ``config`` names its chat (``chat_id``) and account (``account``, also
its ``block_name``), plus what discovery saw (``type``, ``title``, ``username``,
``archived``). This module registers an account's chats on discovery (new ones added,
known ones kept under their name, left/deleted ones reported), gives each chat instance its
current title (the ``conversations`` row of its chat, written by the metadata sync, else the
title discovery saw), and lists instances for pickers (by kind, account, chat type, text).
Functions take a Session and flush, never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncflow.store.instances import add_instance, list_instances
from syncflow.store.models import Conversation, Instance, InstanceKind

if TYPE_CHECKING:  # Telethon (~1 s to import) only when chats are added
    from syncflow.sources.telegram import ChatInfo

TELEGRAM = InstanceKind.TELEGRAM.value


@dataclass
class Discovery:
    """What one discovery did: chats added, already known, and registered ones now gone."""

    account: str
    added: list[dict[str, Any]] = field(default_factory=list)
    known: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    listed: int = 0
    filtered_out: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "listed": self.listed,
            "filtered_out": self.filtered_out,
            "added": self.added,
            "known": self.known,
            "left": self.left,
        }


def chat_id_of(inst: Instance) -> int | None:
    chat = (inst.config or {}).get("chat_id")
    return chat if isinstance(chat, int) and not isinstance(chat, bool) else None


def account_chats(session: Session, *, account: str) -> list[Instance]:
    """The registered chat instances of ``account`` (its block), by name."""
    return [i for i in list_instances(session, kind=TELEGRAM) if i.block_name == account and chat_id_of(i) is not None]


def _unique_name(session: Session, wanted: str) -> str:
    taken = set(session.scalars(select(Instance.name).where(Instance.name.like(f"{wanted}%"))))
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted}-{n}" in taken:
        n += 1
    return f"{wanted}-{n}"


def _seen(chat: ChatInfo) -> dict[str, Any]:
    return {
        "type": str(chat.type),
        "title": chat.title,
        "username": chat.username,
        "archived": bool(chat.archived),
    }


def _entry(inst: Instance, **extra: Any) -> dict[str, Any]:
    cfg = inst.config or {}
    return {
        "name": inst.name,
        "chat_id": cfg.get("chat_id"),
        "title": cfg.get("title"),
        "type": cfg.get("type"),
        **extra,
    }


def register_chats(
    session: Session,
    *,
    account: str,
    chats: Sequence[ChatInfo],
    types: Collection[str] | None = None,
    archived: bool = False,
    tags: Iterable[str] = (),
    priority: int = 0,
) -> Discovery:
    """Register one ``telegram`` instance per listed chat of ``account`` not registered yet.

    ``chats`` is every chat of the account (archived ones included, each saying so); only
    those of ``types`` (None: all) and, unless ``archived``, not archived are registered. A
    known chat keeps its instance (name, tags, priority); its config gets what discovery saw
    now. A registered chat that is no longer listed, or that the account left, is reported in
    ``left`` (not removed: its data stays until ``syncflow instances remove``).
    """
    known = {cid: i for i in account_chats(session, account=account) if (cid := chat_id_of(i)) is not None}
    out = Discovery(account=account, listed=len(chats))
    listed: dict[int, ChatInfo] = {}
    for chat in chats:
        listed[chat.chat_id] = chat
        inst = known.get(chat.chat_id)
        if inst is not None:
            inst.config = {**(inst.config or {}), **_seen(chat), "chat_id": chat.chat_id, "account": account}
            if not chat.left:
                out.known.append(_entry(inst))
            continue
        if chat.left or (types is not None and chat.type not in types) or (chat.archived and not archived):
            out.filtered_out += 1
            continue
        from syncflow.sources.telegram_chat import chat_instance_name  # Telethon: ~1 s, only when adding chats

        name = _unique_name(session, chat_instance_name(account, chat))
        inst = add_instance(
            session,
            name=name,
            kind=TELEGRAM,
            block_name=account,
            priority=priority,
            tags=tags,
            description=f"Telegram {chat.type} {chat.title!r} of account {account}",
        )
        inst.config = {"chat_id": chat.chat_id, "account": account, **_seen(chat)}
        out.added.append(_entry(inst))
    for chat_id, inst in known.items():
        now = listed.get(chat_id)
        if now is None:
            out.left.append(_entry(inst, why="no longer among the account's chats (left or deleted)"))
        elif now.left:
            out.left.append(_entry(inst, why="the account left the chat (or it was deactivated)"))
    session.flush()
    return out


def chat_titles(session: Session, instance_ids: Iterable[int]) -> dict[int, str]:
    """The title of each chat instance among ``instance_ids``: its chat's stored conversation
    (metadata sync), else the title discovery saw. Other instances are left out."""
    ids = list(dict.fromkeys(instance_ids))
    if not ids:
        return {}
    wanted: dict[int, str] = {}
    out: dict[int, str] = {}
    for iid, cfg in session.execute(select(Instance.id, Instance.config).where(Instance.id.in_(ids))):
        chat = (cfg or {}).get("chat_id")
        if chat is None:
            continue
        wanted[iid] = str(chat)
        if (cfg or {}).get("title"):
            out[iid] = str(cfg["title"])
    if wanted:
        rows = session.execute(
            select(Conversation.instance_id, Conversation.conversation_id, Conversation.title).where(
                Conversation.instance_id.in_(list(wanted))
            )
        )
        for iid, conversation_id, title in rows:
            if wanted.get(iid) == conversation_id and title:
                out[iid] = title
    return out


def instance_choices(
    session: Session,
    *,
    category: str | None = None,
    kind: str | None = None,
    account: str | None = None,
    chat_type: str | None = None,
    q: str | None = None,
) -> list[dict[str, Any]]:
    """Instances for a picker (the console's manual-batch form), filtered.

    ``account``/``chat_type`` keep only chat instances of that account / chat type (the
    stored conversation's type, else discovery's; ``group`` also matches supergroups);
    ``q`` matches the name, the chat title or the username, case-insensitively. Chat
    instances carry ``account``, ``chat_id``, ``chat_type``, ``title`` and ``username``.
    """
    rows = list_instances(session, kind=kind, category=category)
    titles = chat_titles(session, [i.id for i in rows])
    chats = {i.id: str(chat_id_of(i)) for i in rows if chat_id_of(i) is not None}
    types: dict[int, str] = {}
    if chats:
        for iid, cid, typ in session.execute(
            select(Conversation.instance_id, Conversation.conversation_id, Conversation.type).where(
                Conversation.instance_id.in_(list(chats)), Conversation.deleted.is_(False)
            )
        ):
            if typ and chats.get(iid) == cid:
                types[iid] = typ
    wanted_types = {"group": {"group", "supergroup"}}.get(chat_type or "", {chat_type} if chat_type else None)
    needle = (q or "").strip().lower()
    out: list[dict[str, Any]] = []
    for i in rows:
        cfg = i.config or {}
        chat = chat_id_of(i)
        item: dict[str, Any] = {
            "name": i.name,
            "kind": i.kind,
            "categories": list(i.categories),
            "tags": list(i.tags),
            "enabled": i.enabled,
            "priority": i.priority,
            "account": (cfg.get("account") or i.block_name) if chat is not None else None,
            "chat_id": chat,
            "chat_type": (types.get(i.id) or cfg.get("type")) if chat is not None else None,
            "title": titles.get(i.id),
            "username": cfg.get("username") if chat is not None else None,
        }
        if account is not None and item["account"] != account:
            continue
        if wanted_types is not None and item["chat_type"] not in wanted_types:
            continue
        if needle and not any(needle in str(item[k] or "").lower() for k in ("name", "title", "username")):
            continue
        out.append(item)
    return out


__all__ = [
    "Discovery",
    "account_chats",
    "chat_id_of",
    "chat_titles",
    "instance_choices",
    "register_chats",
]
