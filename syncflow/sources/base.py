"""What a source kind is, for the rest of syncflow: the protocol a kind implements and the registry.

A *kind* (``http-seq``, ``postgres``, ``mysql``, ``telegram`` ...) says which categories its
instances can sync and how each category is read:

* **incremental** (``messages``): page by page after a cursor, :meth:`Source.read_page`; every
  page is stored with the advanced cursor in one transaction (``syncflow.engine.incremental``);
* **snapshot** (``metadata``, ``account``, ``config``, ``capacity``): everything at once,
  :meth:`Source.read_snapshot`, diffed against (or appended to) the store in one transaction
  (``syncflow.engine.snapshot``).

A source is opened from its connection (a Prefect block, in ``blocks/``) and used from worker
threads, synchronously. Its failures leave it as classified :mod:`syncflow.errors` exceptions
(transient, rate limited, auth, permanent), which is what the retry policy looks at.

Adding a kind: a module in this package with a client that satisfies :class:`Source`, one
:class:`SourceKind` entry in :data:`KINDS`, a block in ``blocks/`` that opens it, and (for new
data) a writer in ``syncflow.store``. Nothing in the flows changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol, runtime_checkable

from syncflow.errors import ConfigError

# Categories read page by page after a cursor; every other category is a snapshot.
INCREMENTAL_CATEGORIES = frozenset({"messages"})

MESSAGE_COLUMNS: Final = (
    "message_id",
    "server_msg_id",
    "seq",
    "conversation_id",
    "sender_id",
    "message_type",
    "content",
    "create_time",
    "server_time",
)
"""The generic message row every incremental source hands over and the store writes
(``syncflow.store.messages``), in this order; ``row[2]`` is the seq."""


@dataclass(frozen=True)
class ReadPolicy:
    """How a source is read: the page size and the retry policy (the seed's per-service config:
    maxRetries, baseDelay, backoffMultiplier, maxDelay, plus jitter). Not secret."""

    batch_size: int | None = None
    max_retries: int = 3
    base_delay: float = 1.0
    backoff_multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.5
    # Adaptive page size (syncflow.engine.batch_size): on when all three are set.
    min_batch_size: int | None = None
    max_batch_size: int | None = None
    target_page_seconds: float | None = None

    @property
    def adaptive(self) -> bool:
        return self.min_batch_size is not None and self.max_batch_size is not None and bool(self.target_page_seconds)

    @classmethod
    def of(cls, config: object) -> ReadPolicy:
        """The policy in the same-named attributes of ``config`` (a block's fields); one that
        ``config`` has not (a database block has no ``batch_size``) keeps its default."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})

    def delays(self) -> list[float]:
        """The wait before each retry, without jitter (Prefect adds it)."""
        return [min(self.base_delay * self.backoff_multiplier**i, self.max_delay) for i in range(self.max_retries)]


@dataclass(frozen=True)
class ConversationRow:
    """One conversation/chat of a metadata snapshot, as every chat kind reports it.

    ``type`` is text, as the source says it (a number or a word: ``"1"``, ``"group"``,
    ``"channel"``); the descriptive fields are what the source has, None when it has not.
    """

    conversation_id: str
    title: str | None = None
    type: str | None = None
    avatar_url: str | None = None
    username: str | None = None
    members_count: int | None = None
    avatar_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: Any) -> ConversationRow:
        return data if isinstance(data, cls) else cls(**data)


@runtime_checkable
class PageLike(Protocol):
    """One page of an incremental read.

    ``rows`` are tuples in :data:`MESSAGE_COLUMNS` order (the seq at index 2),
    ascending by seq; ``total_count`` is how many items the source says it has (None: it does
    not say); ``nbytes`` how many bytes the page took on the wire (0: unknown).
    """

    @property
    def rows(self) -> Sequence[tuple[Any, ...]]: ...

    @property
    def has_more(self) -> bool: ...

    @property
    def total_count(self) -> int | None: ...

    @property
    def nbytes(self) -> int: ...

    def cursor_after(self, last_seq: int) -> int: ...


class Source(Protocol):
    """A connection to one source instance (or, for Telegram, one chat of an account)."""

    def read_page(self, after: int, count: int) -> PageLike:
        """The items after cursor ``after``, at most ``count``, validated (incremental categories)."""
        ...

    def read_snapshot(self, category: str) -> list[Any]:
        """Everything ``category`` holds now (snapshot categories): items the store's writer
        for that category accepts (``ConversationRow``, ``AccountSnapshot``, ...)."""
        ...

    def close(self) -> None: ...


def page_reader(source: Source, options: Any) -> Callable[[int, int], PageLike]:
    """The page function of one run: ``source.reader(options)`` when the source takes per-run
    read options (Telegram: ``to_seq`` as the request's upper bound, ``skip_media``), else
    ``source.read_page``."""
    reader = getattr(source, "reader", None)
    return reader(options) if callable(reader) else source.read_page


@dataclass(frozen=True)
class SourceKind:
    """What the registry knows about a kind: its categories and whether it can run yet.

    ``dense_seq``: the source numbers every item of an instance in one sequence, so a seq hole
    is a missing item (deleted or late). Telegram message ids are not: in private chats and
    basic groups they are allocated per *account*, so a chat's ids have gaps that hold other
    chats' messages — holes there say nothing.
    """

    name: str
    categories: tuple[str, ...]
    default_categories: tuple[str, ...]
    available: bool = True
    note: str = ""
    dense_seq: bool = True

    def reads_incrementally(self, category: str) -> bool:
        return category in INCREMENTAL_CATEGORIES

    def check(self, category: str, *, instance: str) -> None:
        """ConfigError unless an instance of this kind can sync ``category`` now."""
        if not self.available:
            raise ConfigError(f"instance {instance}: kind {self.name!r} is not available yet ({self.note})")
        if category not in self.categories:
            raise ConfigError(
                f"instance {instance}: kind {self.name!r} cannot sync {category!r} "
                f"(it can: {', '.join(self.categories)})"
            )


_DB = ("account", "capacity", "config")

KINDS: dict[str, SourceKind] = {
    "http-seq": SourceKind("http-seq", ("messages", "metadata"), ("messages", "metadata")),
    "postgres": SourceKind("postgres", _DB, _DB),
    "mysql": SourceKind("mysql", _DB, _DB),
    "telegram": SourceKind("telegram", ("messages", "metadata"), ("messages", "metadata"), dense_seq=False),
    "sql-table": SourceKind(
        "sql-table", ("messages", "other"), ("messages", "other"), available=False, note="no source yet"
    ),
}


def source_kind(name: str) -> SourceKind:
    """The registry entry of kind ``name`` (ConfigError naming the known kinds otherwise)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown instance kind {name!r} (expected one of: {', '.join(KINDS)})") from None


def available_kinds() -> list[str]:
    return [k.name for k in KINDS.values() if k.available]


__all__ = [
    "INCREMENTAL_CATEGORIES",
    "KINDS",
    "MESSAGE_COLUMNS",
    "ConversationRow",
    "PageLike",
    "ReadPolicy",
    "Source",
    "SourceKind",
    "available_kinds",
    "page_reader",
    "source_kind",
]
