"""One Telegram chat as a syncflow :class:`~syncflow.sources.base.Source` (a ``telegram`` instance).

A ``telegram`` instance is one chat of one account. Its source reads through the account's
shared connection (:meth:`TelegramConnection.shared`: one client per account per process)
inside the account's cross-process gate (``syncflow.engine.account_lease``, injected by
the block), and maps what it reads to the store's shapes:

* ``messages``: :meth:`TelegramChatSource.read_page` pages after a message id (the chat's
  seq and cursor), rows in ``syncflow.store.messages.EXTENDED_COLUMNS`` order (the 9 generic
  columns, then ``edit_time``, ``kind``, ``reply_to``, ``extra``); :meth:`~TelegramChatSource.reader`
  binds a run's options (``to_seq`` as Telegram's ``max_id``, ``skip_media``);
* ``metadata``: :meth:`TelegramChatSource.read_snapshot` gives one
  :class:`~syncflow.sources.base.ConversationRow` for the chat (none when the account left
  it, so the stored conversation is marked deleted).

Flood waits: the connection waits out one FloodWait up to the account's ``flood_wait_max``;
a longer one fails the call as transient naming the wait, and this module then refuses every
call of that account (any chat) until the wait is over, without asking Telegram again: a
retry during a flood wait only lengthens it.

Tests inject a fake client by naming a factory in ``SYNCFLOW_TELEGRAM_CLIENT_FACTORY``
(``module:callable``, see :func:`client_factory_from_settings`), used only when set.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from telethon import errors as tg_errors
from telethon import utils as tg_utils
from telethon.tl import types as tg

from syncflow.errors import ConfigError, TransientSyncError
from syncflow.settings import get_settings
from syncflow.sources.base import ConversationRow
from syncflow.sources.telegram import (
    ChatInfo,
    ClientFactory,
    TelegramAccount,
    TelegramConnection,
    TelegramMessage,
    TelegramPage,
)

# ----------------------------------------------------------------------------- gate


class Gate(Protocol):
    """What a source needs of the cross-process account limit (``AccountGate``)."""

    def hold(self) -> AbstractContextManager[None]: ...


class _NoGate:
    @contextmanager
    def hold(self) -> Iterator[None]:
        yield


def client_factory_from_settings() -> ClientFactory | None:
    """The client factory named by ``SYNCFLOW_TELEGRAM_CLIENT_FACTORY`` (tests), else None
    (Telethon's real ``TelegramClient``)."""
    spec = get_settings().telegram_client_factory
    if not spec:
        return None
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"SYNCFLOW_TELEGRAM_CLIENT_FACTORY must be module:callable, not {spec!r}")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"SYNCFLOW_TELEGRAM_CLIENT_FACTORY {spec!r}: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"SYNCFLOW_TELEGRAM_CLIENT_FACTORY {spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


# ------------------------------------------------------------------------ flood waits

_cooldowns: dict[str, tuple[float, int]] = {}  # account key -> (monotonic end, seconds asked)
_cooldown_lock = threading.Lock()
_FLOODS = (tg_errors.FloodWaitError, tg_errors.FloodPremiumWaitError, tg_errors.SlowModeWaitError)


def _flood_seconds(exc: BaseException) -> int | None:
    cause = exc.__cause__
    if isinstance(cause, _FLOODS):
        return int(getattr(cause, "seconds", 0) or 0)
    return None


def _check_cooldown(key: str, where: str) -> None:
    with _cooldown_lock:
        entry = _cooldowns.get(key)
    if entry is None:
        return
    end, seconds = entry
    left = end - time.monotonic()
    if left <= 0:
        with _cooldown_lock:
            _cooldowns.pop(key, None)
        return
    raise TransientSyncError(
        f"{where}: Telegram asked this account to wait {seconds}s (a flood wait longer than "
        f"flood_wait_max); {left:.0f}s left, not asking again before then"
    )


def _note_cooldown(key: str, seconds: int) -> None:
    with _cooldown_lock:
        _cooldowns[key] = (time.monotonic() + seconds, seconds)


def reset_cooldowns() -> None:
    """Forget every flood wait (tests)."""
    with _cooldown_lock:
        _cooldowns.clear()


# ------------------------------------------------------------------------------ page


def store_row(message: TelegramMessage) -> tuple[Any, ...]:
    """A message as the store writes it (``EXTENDED_COLUMNS`` order; ``reply_to`` as text)."""
    row = message.to_full_row()
    reply = row[11]
    return (*row[:11], None if reply is None else str(reply), row[12])


@dataclass(frozen=True)
class ChatPage:
    """A :class:`TelegramPage` as the engine reads it (``PageLike``): rows in the store's
    extended column order, ``reply_to`` as text (the store's type)."""

    page: TelegramPage

    @cached_property
    def rows(self) -> list[tuple[Any, ...]]:
        return [store_row(m) for m in self.page.messages]

    @property
    def has_more(self) -> bool:
        return self.page.has_more

    @property
    def total_count(self) -> int | None:
        return None

    @property
    def nbytes(self) -> int:
        return 0

    @property
    def ids(self) -> list[int]:
        return self.page.ids

    def cursor_after(self, last_seq: int) -> int:
        return self.page.cursor_after(last_seq)


def conversation_row(info: ChatInfo) -> ConversationRow:
    """The chat's metadata as the store's conversation row."""
    return ConversationRow(
        conversation_id=info.conversation_id,
        title=info.title,
        type=info.type,
        username=info.username,
        members_count=info.members_count,
        avatar_id=None if info.avatar_id is None else str(info.avatar_id),
    )


# ---------------------------------------------------------------------------- source


def parse_chat_id(config: dict[str, Any] | None, *, instance: str) -> int:
    """The chat id a telegram instance's ``config`` names (ConfigError saying what to do)."""
    chat = (config or {}).get("chat_id")
    if isinstance(chat, str) and re.fullmatch(r"-?\d+", chat.strip()):
        chat = int(chat)
    if type(chat) is not int or chat == 0:
        raise ConfigError(
            f"instance {instance}: a telegram instance needs the chat id in its config "
            "(register an account's chats with `syncflow telegram discover ACCOUNT`)"
        )
    return chat


class TelegramChatSource:
    """One chat of one account, read through the account's shared connection and gate."""

    def __init__(
        self,
        key: str,
        account: TelegramAccount,
        chat_id: int,
        *,
        instance: str = "",
        client_factory: ClientFactory | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.key = key
        self.account = account
        self.chat_id = chat_id
        self.instance = instance or f"{key}/{chat_id}"
        self._factory = client_factory
        self._gate = gate or _NoGate()

    def __repr__(self) -> str:
        return f"TelegramChatSource(account={self.key!r}, chat_id={self.chat_id})"

    def _connection(self) -> TelegramConnection:
        return TelegramConnection.shared(self.key, self.account, client_factory=self._factory)

    def _call(self, op: Callable[[TelegramConnection], Any]) -> Any:
        where = f"telegram account {self.key!r}, chat {self.chat_id}"
        with self._gate.hold():
            _check_cooldown(self.key, where)
            try:
                return op(self._connection())
            except TransientSyncError as exc:
                seconds = _flood_seconds(exc)
                if seconds is not None and seconds > self.account.flood_wait_max:
                    _note_cooldown(self.key, seconds)
                raise

    def read_page(self, after: int, count: int, *, to_id: int | None = None, skip_media: bool = True) -> ChatPage:
        """The chat's messages with ids above ``after`` (at most ``count``; up to ``to_id``)."""
        page = self._call(
            lambda c: c.read_page(self.chat_id, max(int(after), 0), count, to_id=to_id, skip_media=skip_media)
        )
        return ChatPage(page)

    def reader(self, options: Any) -> Callable[[int, int], ChatPage]:
        """``read_page`` bound to one run's options (``to_seq`` -> ``to_id``, ``skip_media``)."""
        to_id = getattr(options, "to_seq", None)
        skip_media = bool(getattr(options, "skip_media", True))
        return lambda after, count: self.read_page(after, count, to_id=to_id, skip_media=skip_media)

    def read_snapshot(self, category: str) -> list[ConversationRow]:
        """``metadata``: the chat as one conversation (none when the account left it)."""
        if category != "metadata":
            raise ConfigError(f"instance {self.instance}: a telegram chat has no {category!r} snapshot")
        info: ChatInfo = self._call(lambda c: c.read_chat(self.chat_id))
        return [] if info.left else [conversation_row(info)]

    def close(self) -> None:
        """Nothing of its own: the connection is the account's (the gate disconnects it when idle)."""


# ------------------------------------------------------------------------- discovery

# What ``--type`` accepts, and the chat types each word stands for.
TYPE_WORDS: dict[str, frozenset[str]] = {
    "user": frozenset({"user"}),
    "bot": frozenset({"bot"}),
    "group": frozenset({"group", "supergroup"}),
    "supergroup": frozenset({"supergroup"}),
    "channel": frozenset({"channel"}),
}


def parse_types(words: Collection[str] | None) -> frozenset[str] | None:
    """Chat types for ``--type user,group,channel`` (None: every type); ``group`` means basic
    groups and supergroups."""
    if not words:
        return None
    out: set[str] = set()
    for word in words:
        for part in word.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part not in TYPE_WORDS:
                raise ConfigError(f"unknown chat type {part!r} (expected some of: {', '.join(TYPE_WORDS)})")
            out |= TYPE_WORDS[part]
    return frozenset(out) or None


def list_chats(
    key: str, account: TelegramAccount, *, client_factory: ClientFactory | None = None, gate: Gate | None = None
) -> list[ChatInfo]:
    """Every chat of the account (archived ones too, each saying so), in Telegram's order."""
    with (gate or _NoGate()).hold():
        conn = TelegramConnection.shared(key, account, client_factory=client_factory)
        return conn.list_dialogs(None, archived=True)


def _slug(text: str, limit: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:limit].strip("-")


def chat_code(chat_id: int) -> str:
    """A short, unique-per-account, sign-free code of a marked chat id: ``u123`` (user),
    ``g123`` (basic group), ``c123`` (channel or supergroup)."""
    real, peer = tg_utils.resolve_id(chat_id)
    prefix = {tg.PeerUser: "u", tg.PeerChat: "g", tg.PeerChannel: "c"}.get(peer, "x")
    return f"{prefix}{real}"


def chat_instance_name(account: str, info: ChatInfo) -> str:
    """The instance name of a discovered chat: ``<account>-<title slug>-<code>``, e.g.
    ``main-family-c1234567`` (the type when the title has no ASCII letters). The code makes it
    unique per account; once registered, a chat keeps its name even if its title changes."""
    slug = _slug(info.title) or info.type
    return f"{account}-{slug}-{chat_code(info.chat_id)}"


__all__ = [
    "TYPE_WORDS",
    "ChatPage",
    "Gate",
    "TelegramChatSource",
    "chat_code",
    "chat_instance_name",
    "client_factory_from_settings",
    "conversation_row",
    "list_chats",
    "parse_chat_id",
    "parse_types",
    "reset_cooldowns",
    "store_row",
]
