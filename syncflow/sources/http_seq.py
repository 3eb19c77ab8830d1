"""Client of the seq protocol (``http-seq`` instances).

``POST {base}/api/v1/messages/sync`` pulls messages after a cursor (``lastSeq``), in pages
of at most ``count``; ``GET {base}/api/v1/conversations`` gives the conversation metadata.
See the "seq protocol" section of DESIGN.md.

Every failure leaves this module as a classified :mod:`syncflow.errors` exception whose
message names the instance, the request and what was wrong:

=====================================================  ==========================
what happened                                          raised
=====================================================  ==========================
401 / 403                                              :class:`AuthError`
429 (``retry_after`` from the Retry-After header)      :class:`RateLimitedError`
5xx, timeout, connection error or drop, invalid JSON   :class:`TransientSyncError`
any other non-2xx status                               :class:`PermanentSyncError`
``code != 0``, wrong shape, a page breaking the rules  :class:`ProtocolError`
=====================================================  ==========================

Speed: a page is decoded from the response bytes by ``orjson`` and turned, with exact type
and range checks, into row tuples in column order (:data:`MESSAGE_COLUMNS`) that the store
can bulk-insert; no per-message model is built unless :attr:`Page.messages` is asked for.
A body that this fast path does not accept is decoded again by a pydantic validator of the
wire shape, which accepts lax forms or names exactly what is wrong. (Measured on a
500-message page: this is ~1.6x faster end to end than decoding with pydantic, see
``decode_page``.)
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Annotated, Any, Final, NoReturn, NotRequired, Self, TypeVar

import httpx
import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from typing_extensions import TypedDict  # pydantic needs this one, not typing.TypedDict, before 3.12

from syncflow.errors import (
    AuthError,
    ConfigError,
    PermanentSyncError,
    ProtocolError,
    RateLimitedError,
    TransientSyncError,
)
from syncflow.sources.base import MESSAGE_COLUMNS, ConversationRow

logger = logging.getLogger(__name__)

SEQ_MAX: Final = 2**63 - 1
"""Largest seq the protocol (int64) and the store (BIGINT) can hold."""

SYNC_PATH: Final = "/api/v1/messages/sync"
CONVERSATIONS_PATH: Final = "/api/v1/conversations"

_INT64_MIN: Final = -(2**63)
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_BODY_EXCERPT: Final = 200

Seq = Annotated[int, Field(ge=0, le=SEQ_MAX)]
Int64 = Annotated[int, Field(ge=_INT64_MIN, le=SEQ_MAX)]
Int32 = Annotated[int, Field(ge=_INT32_MIN, le=_INT32_MAX)]

MessageRow = tuple[str, str | None, int, str, str, int, str, int, int]
"""One message as a tuple in :data:`MESSAGE_COLUMNS` order; ``row[2]`` is the seq."""

_SEQ: Final = 2  # index of the seq in a MessageRow
_ID: Final = 0  # index of the message id in a MessageRow


# --------------------------------------------------------------------------- models


class Message(BaseModel):
    """One message of a sync page (snake_case attributes, camelCase wire aliases)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    message_id: str = Field(alias="messageID")
    server_msg_id: str | None = Field(default=None, alias="serverMsgID")
    seq: Seq
    conversation_id: str = Field(alias="conversationID")
    sender_id: str = Field(alias="senderID")
    message_type: Int32 = Field(alias="messageType")
    content: str
    create_time: Int64 = Field(alias="createTime", description="creation time, ms since epoch")
    server_time: Int64 = Field(alias="serverTime", description="server time, ms since epoch")

    def to_row(self) -> MessageRow:
        """The message as a tuple in :data:`MESSAGE_COLUMNS` order."""
        return (
            self.message_id,
            self.server_msg_id,
            self.seq,
            self.conversation_id,
            self.sender_id,
            self.message_type,
            self.content,
            self.create_time,
            self.server_time,
        )

    @classmethod
    def from_row(cls, row: MessageRow) -> Message:
        """Build a message from an already validated row (no validation)."""
        values: dict[str, Any] = dict(zip(MESSAGE_COLUMNS, row, strict=True))
        return cls.model_construct(None, **values)


class Page(BaseModel):
    """One answer of ``/messages/sync``: the messages as rows plus the paging fields.

    ``rows`` are tuples in :data:`MESSAGE_COLUMNS` order, seq ascending once
    :func:`validate_page` passed; ``nbytes`` is how many bytes the response carried.
    Built from the wire it skips validation (the bytes were validated already); built by
    hand (tests) it accepts ``messages`` as wire dicts, :class:`Message` objects or rows.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    rows: list[MessageRow] = Field(validation_alias=AliasChoices("rows", "messages"))
    max_seq: Seq = Field(alias="maxSeq")
    has_more: bool = Field(alias="hasMore")
    total_count: Annotated[int, Field(ge=0, le=SEQ_MAX)] = Field(alias="totalCount")
    nbytes: int = Field(default=0, ge=0, description="bytes received for this page")

    @field_validator("rows", mode="before")
    @classmethod
    def _messages_to_rows(cls, value: Any) -> Any:
        if not isinstance(value, Iterable) or isinstance(value, str | bytes | Mapping):
            return value
        return [_to_row(item) for item in value]

    @property
    def messages(self) -> list[Message]:
        """The messages as models (built on each access: prefer :attr:`rows`)."""
        return [Message.from_row(row) for row in self.rows]

    @property
    def seqs(self) -> list[int]:
        """The seqs of the page, in page order."""
        return [row[_SEQ] for row in self.rows]

    def cursor_after(self, last_seq: int) -> int:
        """The cursor once this page is stored: its highest seq, never below ``last_seq``.

        Valid after :func:`validate_page` (seqs ascending, so the last row is the highest).
        """
        if not self.rows:
            return last_seq
        return max(last_seq, self.rows[-1][_SEQ])

    def __len__(self) -> int:
        return len(self.rows)


def _to_row(item: Any) -> Any:
    if isinstance(item, Message):
        return item.to_row()
    if isinstance(item, Mapping):
        return Message.model_validate(item).to_row()
    return item


class Conversation(BaseModel):
    """One conversation of ``/conversations`` (the metadata category)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    conversation_id: str = Field(alias="conversationID")
    title: str | None = None
    # Descriptive: servers send a number or a word ("group", "private"); kept as text.
    type: str | None = None
    avatar_url: str | None = Field(default=None, alias="avatarUrl")

    @field_validator("type", mode="before")
    @classmethod
    def _type_as_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return str(value).lower()
        return str(value) if isinstance(value, int | float) else value


# ------------------------------------------------------------- wire shapes (decoding)
# TypedDicts validate in Rust straight into dicts, about twice as fast as models.


class _WireMessage(TypedDict):
    messageID: str
    serverMsgID: NotRequired[str | None]
    seq: Seq
    conversationID: str
    senderID: str
    messageType: Int32
    content: str
    createTime: Int64
    serverTime: Int64


class _WireSyncData(TypedDict):
    messages: list[_WireMessage]
    maxSeq: Seq
    hasMore: bool
    totalCount: Annotated[int, Field(ge=0, le=SEQ_MAX)]


class _WireSyncResponse(TypedDict):
    code: int
    message: NotRequired[str | None]
    data: NotRequired[_WireSyncData | None]


class _WireConversationsData(TypedDict):
    conversations: list[Conversation]


class _WireConversationsResponse(TypedDict):
    code: int
    message: NotRequired[str | None]
    data: NotRequired[_WireConversationsData | None]


_SYNC_RESPONSE: Final = TypeAdapter(_WireSyncResponse)
_CONVERSATIONS_RESPONSE: Final = TypeAdapter(_WireConversationsResponse)
_Answer = TypeVar("_Answer", _WireSyncResponse, _WireConversationsResponse)


# ------------------------------------------------------------------------ validation


def validate_page(page: Page, last_seq: int, count: int, *, instance: str = "?") -> None:
    """Check that ``page`` answers ``(last_seq, count)`` by the protocol's rules.

    Raises :class:`ProtocolError` when the page holds more than ``count`` messages, when
    seqs are not strictly ascending, when a messageID repeats, when a seq exceeds
    ``maxSeq``, or when ``hasMore`` is true for a page that does not get past
    ``last_seq`` (following it would loop forever). Messages at or below ``last_seq``
    are tolerated: a server re-sending what we have is harmless, the store dedups.
    """
    rows = page.rows
    n = len(rows)

    def fail(what: str) -> NoReturn:
        raise ProtocolError(
            f"{instance}: invalid page for POST {SYNC_PATH} (lastSeq={last_seq}, count={count}): {what}"
        )

    if n > count:
        fail(f"{n} messages, more than the {count} asked for")
    prev = -1
    for i, row in enumerate(rows):
        seq = row[_SEQ]
        if seq <= prev:
            rel = "repeats" if seq == prev else "is below"
            fail(f"seqs not strictly ascending: seq {seq} at index {i} {rel} seq {prev} at index {i - 1}")
        prev = seq
    if n and len({row[_ID] for row in rows}) != n:
        seen: dict[str, int] = {}
        for i, row in enumerate(rows):
            first = seen.setdefault(row[_ID], i)
            if first != i:
                fail(f"duplicate messageID {row[_ID]!r} at index {first} and {i}")
    if n and prev > page.max_seq:
        fail(f"seq {prev} (index {n - 1}) is above maxSeq={page.max_seq}")
    if page.has_more and (n == 0 or prev <= last_seq):
        got = "an empty page" if n == 0 else f"highest seq {prev} <= lastSeq"
        fail(f"hasMore=true with no progress past lastSeq ({got}); following it would loop")


# ------------------------------------------------------------------------- decoding


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date.

    ``None`` when the header is absent or unreadable; a date in the past gives ``0.0``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _excerpt(content: bytes) -> str:
    text = content[:_BODY_EXCERPT].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text + ("..." if len(content) > _BODY_EXCERPT else "")


def _shape_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _is_json_invalid(exc: ValidationError) -> bool:
    return any(err["type"] == "json_invalid" for err in exc.errors(include_url=False))


def _server_error_code(content: bytes) -> tuple[int, str] | None:
    """``(code, message)`` when ``content`` is an envelope with an integer ``code != 0``."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    code = doc.get("code")
    if type(code) is not int or code == 0:
        return None
    return code, str(doc.get("message") or "")


def decode_page(content: bytes, *, where: str = "?") -> Page:
    """Decode a ``/messages/sync`` response body into a :class:`Page` (no page rules).

    ``where`` prefixes error messages (instance and request). Invalid or truncated JSON
    raises :class:`TransientSyncError`; ``code != 0`` or a wrong shape raises
    :class:`ProtocolError`. Call :func:`validate_page` on the result.

    Fast path: ``orjson.loads`` plus exact type and range checks in one loop. Anything it
    does not accept goes through the pydantic validator, which either accepts it (lax
    forms such as int64 sent as a string, as protobuf's JSON mapping does) or says
    precisely where the body is wrong.
    """
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return _decode_page_slow(content, where)  # truncated, or ints orjson cannot hold
    page = _fast_page(doc, len(content))
    return page if page is not None else _decode_page_slow(content, where)


def _fast_page(doc: Any, nbytes: int) -> Page | None:
    """The page when ``doc`` is a well-formed success answer in canonical types, else None."""
    if type(doc) is not dict or doc.get("code") != 0 or type(doc["code"]) is not int:
        return None
    data = doc.get("data")
    if type(data) is not dict:
        return None
    messages = data.get("messages")
    max_seq = data.get("maxSeq")
    has_more = data.get("hasMore")
    total = data.get("totalCount")
    if not (
        type(messages) is list
        and type(max_seq) is int
        and 0 <= max_seq <= SEQ_MAX
        and type(has_more) is bool
        and type(total) is int
        and 0 <= total <= SEQ_MAX
    ):
        return None
    rows: list[MessageRow] = []
    append = rows.append
    try:
        for m in messages:
            row = (
                m["messageID"],
                m.get("serverMsgID"),
                m["seq"],
                m["conversationID"],
                m["senderID"],
                m["messageType"],
                m["content"],
                m["createTime"],
                m["serverTime"],
            )
            if not (
                type(row[0]) is str
                and (row[1] is None or type(row[1]) is str)
                and type(row[2]) is int
                and 0 <= row[2] <= SEQ_MAX
                and type(row[3]) is str
                and type(row[4]) is str
                and type(row[5]) is int
                and _INT32_MIN <= row[5] <= _INT32_MAX
                and type(row[6]) is str
                and type(row[7]) is int
                and _INT64_MIN <= row[7] <= SEQ_MAX
                and type(row[8]) is int
                and _INT64_MIN <= row[8] <= SEQ_MAX
            ):
                return None
            append(row)
    except (KeyError, TypeError, AttributeError):  # a message that is not an object / lacks a key
        return None
    return Page.model_construct(rows=rows, max_seq=max_seq, has_more=has_more, total_count=total, nbytes=nbytes)


def _decode_page_slow(content: bytes, where: str) -> Page:
    """Decode with the pydantic validator: lax values, and precise errors."""
    doc = _validate_answer(_SYNC_RESPONSE, content, where, "sync")
    if doc["code"] != 0:
        _raise_code(where, doc["code"], doc.get("message") or "")
    data = doc.get("data")
    if data is None:
        raise ProtocolError(f"{where}: code 0 but no data in the answer")
    rows: list[MessageRow] = [
        (
            m["messageID"],
            m.get("serverMsgID"),
            m["seq"],
            m["conversationID"],
            m["senderID"],
            m["messageType"],
            m["content"],
            m["createTime"],
            m["serverTime"],
        )
        for m in data["messages"]
    ]
    return Page.model_construct(
        rows=rows,
        max_seq=data["maxSeq"],
        has_more=data["hasMore"],
        total_count=data["totalCount"],
        nbytes=len(content),
    )


def decode_conversations(content: bytes, *, where: str = "?") -> list[Conversation]:
    """Decode a ``/conversations`` response body (same error classes as :func:`decode_page`)."""
    doc = _validate_answer(_CONVERSATIONS_RESPONSE, content, where, "conversations")
    if doc["code"] != 0:
        _raise_code(where, doc["code"], doc.get("message") or "")
    data = doc.get("data")
    if data is None:
        raise ProtocolError(f"{where}: code 0 but no data in the answer")
    return data["conversations"]


def _validate_answer(adapter: TypeAdapter[_Answer], content: bytes, where: str, what: str) -> _Answer:
    """``content`` validated by ``adapter``. A body that is not such an answer raises: bad or
    truncated JSON a transient error, a server's error envelope its code, else a protocol error."""
    try:
        return adapter.validate_json(content)
    except ValidationError as exc:
        if _is_json_invalid(exc):
            raise TransientSyncError(
                f"{where}: invalid or truncated JSON ({len(content)} bytes): {exc.errors(include_url=False)[0]['msg']}"
            ) from exc
        server_error = _server_error_code(content)
        if server_error is not None:
            _raise_code(where, *server_error)
        raise ProtocolError(f"{where}: not a {what} answer: {_shape_errors(exc)}") from exc


def _raise_code(where: str, code: int, message: str) -> NoReturn:
    raise ProtocolError(f"{where}: server answered code={code}: {message or '(no message)'}")


# --------------------------------------------------------------------------- client


_SSL_CONTEXT: ssl.SSLContext | None = None
_SSL_LOCK = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """One verifying SSL context for every client of this process (httpx's defaults: certifi,
    or SSL_CERT_FILE/SSL_CERT_DIR). httpx builds one per client otherwise, even for an http://
    URL: ~25-50 ms of CPU per instance of a session (issue 11)."""
    global _SSL_CONTEXT
    with _SSL_LOCK:
        if _SSL_CONTEXT is None:
            _SSL_CONTEXT = httpx.create_ssl_context()
        return _SSL_CONTEXT


class SeqHttpClient:
    """Synchronous client of one seq-protocol instance.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``instance``
    names the source in error messages (default: the base URL). Use as a context manager
    or call :meth:`close`. ``bytes_received`` (response body bytes, all calls) and
    ``requests_sent`` count for metrics; each :class:`Page` also has its own ``nbytes``.
    """

    def __init__(
        self,
        base_url: str,
        token: str | SecretStr,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        instance: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not secret:
            raise ConfigError(f"{instance or base_url}: empty token")
        self.base_url = base_url.rstrip("/")
        self.instance = instance or self.base_url
        self.timeout = timeout
        self.bytes_received = 0
        self.requests_sent = 0
        try:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"},
                timeout=httpx.Timeout(timeout),
                transport=transport,
                verify=shared_ssl_context(),
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ConfigError(f"{self.instance}: bad base URL {base_url!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SeqHttpClient(instance={self.instance!r}, base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def fetch_page(self, last_seq: int, count: int = 500) -> Page:
        """Fetch the messages after ``last_seq`` (at most ``count``), validated.

        Raises the classified errors described in the module docstring.
        """
        if type(last_seq) is not int or not 0 <= last_seq <= SEQ_MAX:
            raise ConfigError(f"{self.instance}: lastSeq must be an int in [0, 2^63-1], got {last_seq!r}")
        if type(count) is not int or count < 1:
            raise ConfigError(f"{self.instance}: count must be an int >= 1, got {count!r}")
        where = f"{self.instance}: POST {SYNC_PATH} (lastSeq={last_seq}, count={count})"
        body = orjson.dumps({"lastSeq": last_seq, "count": count, "timestamp": time.time_ns() // 1_000_000})
        response = self._send("POST", SYNC_PATH, where, content=body)
        page = decode_page(response.content, where=where)
        validate_page(page, last_seq, count, instance=self.instance)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: page of %d (lastSeq=%d, maxSeq=%d, hasMore=%s, %d bytes)",
                self.instance,
                len(page),
                last_seq,
                page.max_seq,
                page.has_more,
                page.nbytes,
            )
        return page

    def fetch_conversations(self) -> list[Conversation]:
        """Fetch every conversation of the instance (the metadata category)."""
        where = f"{self.instance}: GET {CONVERSATIONS_PATH}"
        response = self._send("GET", CONVERSATIONS_PATH, where)
        return decode_conversations(response.content, where=where)

    # ---- the Source protocol (syncflow.sources.base)

    def read_page(self, after: int, count: int) -> Page:
        """``messages``: the page after cursor ``after`` (:meth:`fetch_page`)."""
        return self.fetch_page(after, count)

    def read_snapshot(self, category: str) -> list[ConversationRow]:
        """``metadata``: every conversation, as the store's :class:`ConversationRow`."""
        if category != "metadata":
            raise ConfigError(f"{self.instance}: an http-seq server has no {category!r} snapshot (only metadata)")
        return [
            ConversationRow(c.conversation_id, title=c.title, type=c.type, avatar_url=c.avatar_url)
            for c in self.fetch_conversations()
        ]

    def _send(self, method: str, path: str, where: str, content: bytes | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        self.requests_sent += 1
        try:
            response = self._http.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientSyncError(f"{where}: timed out after {self.timeout:g}s ({type(exc).__name__})") from exc
        except httpx.UnsupportedProtocol as exc:
            raise PermanentSyncError(f"{where}: unsupported URL: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientSyncError(f"{where}: connection failed or dropped ({type(exc).__name__}: {exc})") from exc
        except httpx.DecodingError as exc:
            raise TransientSyncError(f"{where}: undecodable response body: {exc}") from exc
        except httpx.RequestError as exc:
            raise PermanentSyncError(f"{where}: request failed ({type(exc).__name__}: {exc})") from exc
        self.bytes_received += len(response.content)
        status = response.status_code
        if 200 <= status < 300:
            return response
        self._raise_status(response, where)

    @staticmethod
    def _raise_status(response: httpx.Response, where: str) -> NoReturn:
        status = response.status_code
        what = f"{where}: HTTP {status} {response.reason_phrase}".rstrip()
        if response.content:
            what += f": {_excerpt(response.content)}"
        if status in (401, 403):
            raise AuthError(f"{what} (credentials refused; check the token)")
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            hint = "no Retry-After" if retry_after is None else f"retry after {retry_after:g}s"
            raise RateLimitedError(f"{what} (rate limited, {hint})", retry_after=retry_after)
        if status >= 500:
            raise TransientSyncError(f"{what} (server error)")
        if 300 <= status < 400:
            location = response.headers.get("Location", "?")
            raise PermanentSyncError(f"{what} (unexpected redirect to {location})")
        raise PermanentSyncError(f"{what} (request refused)")


__all__ = [
    "CONVERSATIONS_PATH",
    "MESSAGE_COLUMNS",
    "SEQ_MAX",
    "SYNC_PATH",
    "Conversation",
    "Message",
    "MessageRow",
    "Page",
    "SeqHttpClient",
    "decode_conversations",
    "decode_page",
    "parse_retry_after",
    "validate_page",
]
