"""Client of Telegram chats (``telegram`` instances), over Telethon 1.x.

One Telegram *account* (api_id, api_hash, a Telethon ``StringSession`` string) gives
access to many *chats*; syncflow syncs each chat as one instance, by two categories:
``metadata`` (:meth:`TelegramConnection.read_chat`: title, type, username, members count,
avatar id; always a full snapshot) and ``messages`` (:meth:`TelegramConnection.read_page`:
incremental by message id, which is the chat's seq and cursor).

Why the shape:

* **Synchronous facade over async Telethon.** The engine calls sources from worker
  threads, synchronously. A :class:`TelegramConnection` owns one background event-loop
  thread and one Telethon client; its methods submit coroutines to that loop and wait.
* **One client per account per process.** Telegram revokes a session used from two
  places at once, and every connect costs a handshake: :meth:`TelegramConnection.shared`
  keeps a process-wide registry keyed by the account key, so the chats of one account
  share one client. (Across processes the integrator needs a per-account limit; not here.)
* **An adapter seam.** Everything goes through these Telethon client calls, and only
  these, so tests inject a fake (``syncflow.testing.telegram_fake``) that returns
  Telethon's own types and raises Telethon's own errors::

      await client.connect()
      await client.is_user_authorized()
      await client.get_entity(chat_id)
      client.iter_dialogs(archived=False | None)             # async iterator of Dialog
      client.iter_messages(entity, min_id=.., max_id=.., reverse=True, limit=..)
      client.disconnect()                                    # awaited if awaitable
      # login only:
      await client.send_code_request(phone)
      await client.sign_in(phone=.., code=..)
      await client.sign_in(password=..)                      # on SessionPasswordNeededError
      client.session.save()                                  # -> the session string

  Members counts come from the entity (``participants_count``) and never from
  ``get_participants``: that call needs admin rights on channels and costs a request.
* **Classified errors.** Every failure leaves as a :mod:`syncflow.errors` exception built
  by :func:`classify`, naming the account key and the chat, never a secret:

  ================================================================  =======================
  Telethon / Python error                                           raised
  ================================================================  =======================
  FloodWait, FloodPremiumWait, SlowModeWait (after one wait)        RateLimitedError
  the same, longer than ``flood_wait_max``                          TransientSyncError
  AuthKeyUnregistered, SessionRevoked/Expired, UserDeactivated(Ban),
  AuthKeyDuplicated/Invalid, other 401s, not authorised             AuthError ("login again")
  ChannelPrivate, ChatForbidden, ChatAdminRequired, ChannelInvalid,
  PeerIdInvalid, UserBannedInChannel, ValueError of get_entity,
  other 400/403/404 RPC errors                                      PermanentSyncError
  ConnectionError, OSError, TimeoutError, IncompleteReadError,
  ServerError, RpcCallFail, TimedOut, Telethon's transport errors   TransientSyncError
  ================================================================  =======================

  A FloodWait up to ``flood_wait_max`` seconds is slept once (in the calling thread, so
  other chats go on) and the call retried; a second one becomes :class:`RateLimitedError`
  with ``retry_after``, which the engine honours like Retry-After.

Media: bytes are **never downloaded**. Each message carries its media *metadata* (ids,
mime type, size, file name, duration, dimensions) in ``extras()["extra"]["media"]``;
``skip_media=False`` is accepted for the seed's option but downloading is not
implemented (a warning is logged once per connection), so it returns the same rows.

The entity cache: a ``StringSession`` does not persist Telethon's entity cache, so in a
fresh process ``get_entity(chat_id)`` fails with "Could not find the input entity" until
the dialogs were listed once. The connection does that listing once per client, on the
first miss, before concluding the chat is gone.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Literal, TypeVar, get_args

from telethon import errors as tg_errors
from telethon import utils as tg_utils
from telethon.tl import types as tg

from syncflow.errors import (
    AuthError,
    ConfigError,
    PermanentSyncError,
    ProtocolError,
    RateLimitedError,
    SyncflowError,
    TransientSyncError,
)
from syncflow.sources.base import MESSAGE_COLUMNS

logger = logging.getLogger(__name__)

T = TypeVar("T")

ChatType = Literal["user", "bot", "group", "supergroup", "channel"]
CHAT_TYPES: Final[frozenset[str]] = frozenset(get_args(ChatType))
"""The chat types :meth:`TelegramConnection.list_dialogs` can filter on."""

ClientFactory = Callable[["TelegramAccount"], Any]
"""Builds a Telethon-like client for an account (``TelegramClient`` by default)."""

Sleep = Callable[[float], None]

# ---------------------------------------------------------------------------- columns

GENERIC_COLUMNS: Final = MESSAGE_COLUMNS
"""Order of :meth:`TelegramMessage.to_row`: the generic message store's columns, the same
order as ``syncflow.sources.base.MESSAGE_COLUMNS``."""

EXTRA_COLUMNS: Final = ("edit_time", "kind", "reply_to", "extra")
"""Keys of :meth:`TelegramMessage.extras`, the Telegram-only fields."""

TELEGRAM_COLUMNS: Final = GENERIC_COLUMNS + EXTRA_COLUMNS
"""Order of :meth:`TelegramMessage.to_full_row`: the generic columns, then the extras."""

TelegramRow = tuple[str, None, int, str, str | None, int, str, int, int | None]
"""One message in :data:`GENERIC_COLUMNS` order; ``row[2]`` is the message id (the seq)."""

MessageKind = Literal[
    "other",
    "text",
    "photo",
    "video",
    "document",
    "sticker",
    "voice",
    "audio",
    "animation",
    "video_note",
    "contact",
    "geo",
    "poll",
    "webpage",
    "service",
]

TYPE_CODES: Final[Mapping[str, int]] = {
    "other": 0,
    "text": 1,
    "photo": 2,
    "video": 3,
    "document": 4,
    "sticker": 5,
    "voice": 6,
    "audio": 7,
    "animation": 8,
    "video_note": 9,
    "contact": 10,
    "geo": 11,
    "poll": 12,
    "webpage": 13,
    "service": 14,
}
"""``kind`` -> the ``message_type`` code stored in the generic column. Stable: stored rows
depend on it, so codes are only ever added, never renumbered."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_DEFAULT_CALL_TIMEOUT: Final = 900.0
_DISCONNECT_TIMEOUT: Final = 30.0
_MIN_SECRET_LEN: Final = 6  # shorter strings are not scrubbed from messages (too many false hits)

# ---------------------------------------------------------------------------- account


@dataclass(frozen=True, slots=True)
class TelegramAccount:
    """How to reach one Telegram account: its app credentials and its session.

    ``api_id``/``api_hash`` come from my.telegram.org; ``session`` is a Telethon
    ``StringSession`` string (see :func:`login`), empty only before logging in. Both
    secrets are left out of ``repr``/``str``. ``flood_wait_max`` (seconds): a FloodWait up
    to this long is slept once and the call retried; a longer one fails the chat as
    transient, naming the wait, instead of blocking a worker for that long.
    """

    api_id: int
    api_hash: str = field(repr=False)
    session: str = field(repr=False)
    flood_wait_max: float = 300.0

    def __post_init__(self) -> None:
        if type(self.api_id) is not int or self.api_id <= 0:
            raise ConfigError(f"telegram api_id must be a positive int, got {type(self.api_id).__name__}")
        if not isinstance(self.api_hash, str) or not self.api_hash:
            raise ConfigError("telegram api_hash must be a non-empty string")
        if not isinstance(self.session, str):
            raise ConfigError("telegram session must be a string (a Telethon StringSession)")
        if not isinstance(self.flood_wait_max, int | float) or not self.flood_wait_max >= 0:
            raise ConfigError(f"telegram flood_wait_max must be >= 0 seconds, got {self.flood_wait_max!r}")

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a message (for :func:`scrub`)."""
        return tuple(s for s in (self.api_hash, self.session) if len(s) >= _MIN_SECRET_LEN)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def default_client_factory(account: TelegramAccount) -> Any:
    """A real ``telethon.TelegramClient`` on the account's ``StringSession``.

    ``flood_sleep_threshold=0`` makes Telethon raise every FloodWait instead of sleeping
    silently, so the connection applies ``flood_wait_max`` itself; ``receive_updates=False``
    because a sync only reads history. Must be called inside the loop that will run it.
    """
    from telethon import TelegramClient
    from telethon.sessions import StringSession

    try:
        session = StringSession(account.session)
    except Exception as exc:  # never echo the string: its decoding error may quote it
        raise ConfigError(f"telegram session string is not a valid StringSession ({type(exc).__name__})") from None
    return TelegramClient(
        session,
        account.api_id,
        account.api_hash,
        flood_sleep_threshold=0,
        receive_updates=False,
    )


# ----------------------------------------------------------------------------- errors

_FLOOD_ERRORS: Final = (
    tg_errors.FloodWaitError,
    tg_errors.FloodPremiumWaitError,
    tg_errors.SlowModeWaitError,
)
_AUTH_ERRORS: Final = (
    tg_errors.AuthKeyUnregisteredError,
    tg_errors.SessionRevokedError,
    tg_errors.SessionExpiredError,
    tg_errors.UserDeactivatedError,
    tg_errors.UserDeactivatedBanError,
    tg_errors.AuthKeyDuplicatedError,
    tg_errors.AuthKeyInvalidError,
    tg_errors.AuthKeyError,
    tg_errors.UnauthorizedError,
)
_CHAT_ERRORS: Final = (
    tg_errors.ChannelPrivateError,
    tg_errors.ChatForbiddenError,
    tg_errors.ChatAdminRequiredError,
    tg_errors.ChannelInvalidError,
    tg_errors.PeerIdInvalidError,
    tg_errors.UserBannedInChannelError,
)
_LOGIN_ERRORS: Final = (
    tg_errors.PhoneCodeInvalidError,
    tg_errors.PhoneCodeExpiredError,
    tg_errors.PhoneCodeEmptyError,
    tg_errors.PasswordHashInvalidError,
    tg_errors.PhoneNumberInvalidError,
    tg_errors.PhoneNumberBannedError,
    tg_errors.ApiIdInvalidError,
)
_TRANSIENT_ERRORS: Final = (
    OSError,  # ConnectionError, TimeoutError (= asyncio.TimeoutError) are OSErrors
    asyncio.TimeoutError,
    asyncio.IncompleteReadError,  # the peer (or a proxy) closed mid-packet: Telethon's own "network error"
    EOFError,
    concurrent.futures.TimeoutError,
    tg_errors.ServerError,
    tg_errors.RpcCallFailError,
    tg_errors.TimedOutError,
    tg_errors.InvalidBufferError,
    tg_errors.InvalidChecksumError,
    tg_errors.SecurityError,
    tg_errors.BadMessageError,
)


def login_hint(account: str) -> str:
    """What the operator must do when the session no longer works."""
    return f"run `syncflow telegram login {account}` again"


def _where(account: str, chat: int | str | None) -> str:
    where = f"telegram account {account!r}"
    return where if chat is None else f"{where}, chat {chat}"


def classify(exc: BaseException, *, chat: int | str | None, account: str) -> SyncflowError:
    """The :mod:`syncflow.errors` exception for a Telethon/transport failure.

    ``chat`` (a marked chat id, or None for account-wide calls) and ``account`` (the
    account key) name the failure in the message; the caller chains ``exc`` with
    ``raise classify(...) from exc``. Flood waits become :class:`RateLimitedError` with
    ``retry_after=exc.seconds`` (the decision to sleep or give up is the connection's).
    An exception that is already a :class:`SyncflowError` is returned unchanged. See the
    module docstring for the whole table.
    """
    if isinstance(exc, SyncflowError):
        return exc
    where = _where(account, chat)
    name = type(exc).__name__
    if isinstance(exc, _FLOOD_ERRORS):
        seconds = int(getattr(exc, "seconds", 0) or 0)
        return RateLimitedError(f"{where}: Telegram asked to wait {seconds}s ({name})", retry_after=float(seconds))
    if isinstance(exc, tg_errors.SessionPasswordNeededError):
        return AuthError(f"{where}: the session needs the two-step verification password; {login_hint(account)}")
    if isinstance(exc, _LOGIN_ERRORS):
        return AuthError(f"{where}: Telegram refused the login or the app credentials ({name}: {exc})")
    if isinstance(exc, _AUTH_ERRORS):
        detail = (
            "the session was used from two places at once and revoked; "
            if isinstance(exc, tg_errors.AuthKeyDuplicatedError)
            else ""
        )
        return AuthError(f"{where}: the session is no longer valid ({name}); {detail}{login_hint(account)}")
    if isinstance(exc, _CHAT_ERRORS):
        return PermanentSyncError(f"{where}: the chat cannot be read ({name}: {exc})")
    if isinstance(exc, ValueError):  # get_entity: "Could not find the input entity for ..."
        return PermanentSyncError(
            f"{where}: the chat is unknown to this account (not among its dialogs, left or deleted): {exc}"
        )
    if isinstance(exc, _TRANSIENT_ERRORS):
        return TransientSyncError(f"{where}: network or server failure ({name}: {exc})")
    if isinstance(exc, tg_errors.TypeNotFoundError):
        return ProtocolError(f"{where}: Telegram sent an object this Telethon does not know; upgrade telethon ({exc})")
    if isinstance(exc, tg_errors.RPCError):
        code = getattr(exc, "code", None)
        if isinstance(code, int) and (code >= 500 or code < 0):
            return TransientSyncError(f"{where}: Telegram server error {code} ({name}: {exc})")
        return PermanentSyncError(f"{where}: Telegram refused the request ({name}: {exc})")
    return PermanentSyncError(f"{where}: unexpected failure ({name}: {exc})")


# ---------------------------------------------------------------------------- mapping


def epoch_ms(value: datetime | None) -> int | None:
    """Milliseconds since the epoch, exactly (naive datetimes are taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


def _plain(value: Any) -> Any:
    """A JSON-able copy of a TL object/value: datetimes -> epoch ms, bytes dropped."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return epoch_ms(value)
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if not isinstance(v, bytes | bytearray)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _plain(to_dict())
    return str(value)


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _peer_id(peer: Any) -> int | None:
    if peer is None:
        return None
    try:
        return int(tg_utils.get_peer_id(peer))
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    """Plain text of a ``str`` or a ``TextWithEntities`` (polls, layer >= 178)."""
    if value is None or isinstance(value, str):
        return value
    text = getattr(value, "text", None)
    return text if isinstance(text, str) else str(value)


def _photo_meta(photo: Any) -> dict[str, Any]:
    width = height = size = None
    for s in getattr(photo, "sizes", None) or ():
        w, h = getattr(s, "w", None), getattr(s, "h", None)
        if not isinstance(w, int) or not isinstance(h, int):
            continue  # stripped/path thumbnails have no dimensions
        if width is not None and height is not None and w * h <= width * height:
            continue
        width, height = w, h
        if isinstance(s, tg.PhotoSizeProgressive):
            size = max(s.sizes) if s.sizes else None
        elif isinstance(s, tg.PhotoCachedSize):
            size = len(s.bytes)
        else:
            size = getattr(s, "size", None)
    return _compact(
        {
            "photo_id": getattr(photo, "id", None),
            "dc_id": getattr(photo, "dc_id", None),
            "width": width,
            "height": height,
            "size": size,
        }
    )


def _document_kind(media: Any, document: Any) -> MessageKind:
    attrs = getattr(document, "attributes", None) or ()
    video = next((a for a in attrs if isinstance(a, tg.DocumentAttributeVideo)), None)
    audio = next((a for a in attrs if isinstance(a, tg.DocumentAttributeAudio)), None)
    if any(isinstance(a, tg.DocumentAttributeSticker | tg.DocumentAttributeCustomEmoji) for a in attrs):
        return "sticker"
    if (video is not None and video.round_message) or getattr(media, "round", None):
        return "video_note"
    if any(isinstance(a, tg.DocumentAttributeAnimated) for a in attrs):
        return "animation"
    if (audio is not None and audio.voice) or getattr(media, "voice", None):
        return "voice"
    if video is not None or getattr(media, "video", None):
        return "video"
    if audio is not None:
        return "audio"
    return "document"


def _document_meta(document: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "document_id": getattr(document, "id", None),
        "dc_id": getattr(document, "dc_id", None),
        "mime_type": getattr(document, "mime_type", None),
        "size": getattr(document, "size", None),
    }
    for a in getattr(document, "attributes", None) or ():
        if isinstance(a, tg.DocumentAttributeFilename):
            meta["file_name"] = a.file_name
        elif isinstance(a, tg.DocumentAttributeVideo):
            meta.update(duration=a.duration, width=a.w, height=a.h)
        elif isinstance(a, tg.DocumentAttributeAudio):
            meta.update(duration=a.duration, title=a.title, performer=a.performer)
        elif isinstance(a, tg.DocumentAttributeImageSize):
            meta.setdefault("width", a.w)
            meta.setdefault("height", a.h)
        elif isinstance(a, tg.DocumentAttributeSticker):
            meta["sticker_alt"] = a.alt
            meta["sticker_set_id"] = getattr(a.stickerset, "id", None)
    return _compact(meta)


def _media(media: Any) -> tuple[MessageKind, dict[str, Any] | None]:
    """The kind of a message with ``media`` and the media's JSON-able metadata (no bytes)."""
    if media is None or isinstance(media, tg.MessageMediaEmpty):
        return "text", None
    if isinstance(media, tg.MessageMediaPhoto):
        meta = _photo_meta(media.photo) if isinstance(media.photo, tg.Photo) else {}
        return "photo", {**meta, **_compact({"spoiler": media.spoiler or None, "ttl_seconds": media.ttl_seconds})}
    if isinstance(media, tg.MessageMediaDocument):
        document = media.document
        if not isinstance(document, tg.Document):  # expired self-destructing media
            return "document", _compact({"ttl_seconds": media.ttl_seconds, "expired": True})
        kind = _document_kind(media, document)
        meta = _document_meta(document)
        return kind, {**meta, **_compact({"spoiler": media.spoiler or None, "ttl_seconds": media.ttl_seconds})}
    if isinstance(media, tg.MessageMediaContact):
        return "contact", _compact(
            {
                "user_id": media.user_id or None,
                "phone_number": media.phone_number,
                "first_name": media.first_name,
                "last_name": media.last_name,
                "vcard": media.vcard or None,
            }
        )
    if isinstance(media, tg.MessageMediaGeo | tg.MessageMediaGeoLive | tg.MessageMediaVenue):
        geo = media.geo
        meta = {"lat": getattr(geo, "lat", None), "long": getattr(geo, "long", None)}
        if isinstance(media, tg.MessageMediaVenue):
            meta.update(title=media.title, address=media.address)
        if isinstance(media, tg.MessageMediaGeoLive):
            meta.update(live_period=media.period)
        return "geo", _compact(meta)
    if isinstance(media, tg.MessageMediaPoll):
        poll, results = media.poll, media.results
        return "poll", _compact(
            {
                "poll_id": poll.id,
                "question": _text(poll.question),
                "answers": [_text(a.text) for a in poll.answers or ()],
                "closed": bool(poll.closed),
                "quiz": bool(poll.quiz),
                "multiple_choice": bool(poll.multiple_choice),
                "total_voters": getattr(results, "total_voters", None),
            }
        )
    if isinstance(media, tg.MessageMediaWebPage):
        page = media.webpage
        return "webpage", _compact(
            {
                "webpage_id": getattr(page, "id", None),
                "url": getattr(page, "url", None),
                "site_name": getattr(page, "site_name", None),
                "title": getattr(page, "title", None),
                "page_type": getattr(page, "type", None),
            }
        )
    return "other", {"media_class": type(media).__name__}


@dataclass(frozen=True, slots=True)
class TelegramMessage:
    """One Telegram message mapped to syncflow's message shape.

    ``id`` is the message id: unique and increasing within a chat, hence the chat's seq
    and cursor. ``chat_id`` and ``sender_id`` are Telethon's *marked* peer ids (users
    positive, basic groups ``-id``, channels/supergroups ``-100id``); ``sender_id`` is
    None when Telegram does not say (outgoing private messages, anonymous admins are
    the chat). Times are epoch milliseconds. ``text`` is the text or the media caption.
    ``forward``, ``media`` and ``action``/``action_data`` are JSON-able dicts/strings.
    """

    id: int
    chat_id: int
    sender_id: int | None
    date: int
    edit_date: int | None
    kind: MessageKind
    text: str
    reply_to: int | None = None
    forward: dict[str, Any] | None = None
    media: dict[str, Any] | None = None
    action: str | None = None
    action_data: dict[str, Any] | None = None
    grouped_id: int | None = None

    @property
    def type_code(self) -> int:
        """The stable ``message_type`` code of :attr:`kind` (see :data:`TYPE_CODES`)."""
        return TYPE_CODES[self.kind]

    def to_row(self) -> TelegramRow:
        """The message in :data:`GENERIC_COLUMNS` order (the generic message store)."""
        return (
            str(self.id),
            None,
            self.id,
            str(self.chat_id),
            None if self.sender_id is None else str(self.sender_id),
            TYPE_CODES[self.kind],
            self.text,
            self.date,
            self.edit_date,
        )

    def extras(self) -> dict[str, Any]:
        """The Telegram-only fields, keyed by :data:`EXTRA_COLUMNS` (JSON-able values)."""
        return {
            "edit_time": self.edit_date,
            "kind": self.kind,
            "reply_to": self.reply_to,
            "extra": self.extra(),
        }

    def extra(self) -> dict[str, Any]:
        """The ``extra`` JSON document: forward origin, media metadata, service action."""
        return _compact(
            {
                "forward": self.forward,
                "media": self.media,
                "action": self.action,
                "action_data": self.action_data,
                "grouped_id": self.grouped_id,
            }
        )

    def to_full_row(self) -> tuple[Any, ...]:
        """The message in :data:`TELEGRAM_COLUMNS` order (generic columns, then extras)."""
        extras = self.extras()
        return (*self.to_row(), *(extras[c] for c in EXTRA_COLUMNS))


def _sender_id(msg: Any) -> int | None:
    """Telethon's own rule (``Message.sender_id``) on the raw fields."""
    sender = _peer_id(getattr(msg, "from_id", None))
    if sender is not None:
        return sender
    peer = getattr(msg, "peer_id", None)
    if getattr(msg, "post", None) or (not getattr(msg, "out", False) and isinstance(peer, tg.PeerUser)):
        return _peer_id(peer)
    return None


def _forward(fwd: Any) -> dict[str, Any] | None:
    if fwd is None:
        return None
    return _compact(
        {
            "from_id": _peer_id(fwd.from_id),
            "from_name": fwd.from_name,
            "channel_post": fwd.channel_post,
            "post_author": fwd.post_author,
            "date": epoch_ms(fwd.date),
            "saved_from_peer": _peer_id(fwd.saved_from_peer),
            "saved_from_msg_id": fwd.saved_from_msg_id,
        }
    )


def _reply_to(reply: Any) -> int | None:
    value = getattr(reply, "reply_to_msg_id", None)  # None for a MessageReplyStoryHeader
    return value if isinstance(value, int) else None


def map_message(msg: Any) -> TelegramMessage:
    """Map a Telethon ``Message`` / ``MessageService`` to a :class:`TelegramMessage`.

    Reads only the raw TL fields (``id``, ``peer_id``, ``from_id``, ``date``,
    ``edit_date``, ``message``, ``media``, ``fwd_from``, ``reply_to``, ``action``), so it
    works on messages straight from the wire as well as on Telethon's patched ones.
    """
    chat_id = _peer_id(msg.peer_id)
    if chat_id is None:
        raise ProtocolError(f"telegram message {msg.id}: no chat peer ({type(msg.peer_id).__name__})")
    common: dict[str, Any] = {
        "id": int(msg.id),
        "chat_id": chat_id,
        "sender_id": _sender_id(msg),
        "date": epoch_ms(msg.date) or 0,
        "edit_date": epoch_ms(getattr(msg, "edit_date", None)),
        "reply_to": _reply_to(getattr(msg, "reply_to", None)),
        "forward": _forward(getattr(msg, "fwd_from", None)),
    }
    if isinstance(msg, tg.MessageService):
        action = msg.action
        data = _plain(action)
        if isinstance(data, dict):
            data.pop("_", None)
        return TelegramMessage(
            **common,
            kind="service",
            text=msg.message or "",
            action=type(action).__name__,
            action_data=data or None,
        )
    kind, media = _media(getattr(msg, "media", None))
    return TelegramMessage(
        **common,
        kind=kind,
        text=msg.message or "",
        media=media,
        grouped_id=getattr(msg, "grouped_id", None),
    )


@dataclass(frozen=True, slots=True)
class ChatInfo:
    """The metadata of one chat (the ``metadata`` category, and discovery).

    ``chat_id`` is the marked peer id (``telethon.utils.get_peer_id``). ``members_count``
    is what the entity carries (``participants_count``: always for basic groups, for
    channels only when Telegram sent it), else None: never an extra request.
    ``avatar_id`` is the ``photo_id`` of the chat/profile photo. ``archived`` is None when
    unknown (from ``get_entity``, not from a dialog). ``left`` says the account is no
    longer in the chat (left, kicked, banned, deactivated group, deleted user).
    ``migrated_to`` is the supergroup a basic group became.
    """

    chat_id: int
    type: ChatType
    title: str
    username: str | None = None
    members_count: int | None = None
    avatar_id: int | None = None
    archived: bool | None = None
    left: bool = False
    migrated_to: int | None = None

    @property
    def conversation_id(self) -> str:
        """The chat id as the store's ``conversation_id``."""
        return str(self.chat_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return dataclasses.asdict(self)


def _username(entity: Any) -> str | None:
    name = getattr(entity, "username", None)
    if name:
        return str(name)
    for u in getattr(entity, "usernames", None) or ():  # collectible usernames
        if getattr(u, "active", False) and u.username:
            return str(u.username)
    return None


def chat_info(entity: Any, *, archived: bool | None = None) -> ChatInfo:
    """Map a Telethon ``User`` / ``Chat`` / ``Channel`` (or their forbidden forms)."""
    chat_id = _peer_id(entity)
    if chat_id is None:
        raise ProtocolError(f"telegram: not a chat entity: {type(entity).__name__}")
    photo = getattr(entity, "photo", None)
    avatar = getattr(photo, "photo_id", None)
    common: dict[str, Any] = {"chat_id": chat_id, "avatar_id": avatar, "archived": archived}
    if isinstance(entity, tg.User):
        title = tg_utils.get_display_name(entity) or ("Deleted Account" if entity.deleted else str(entity.id))
        return ChatInfo(
            **common,
            type="bot" if entity.bot else "user",
            title=title,
            username=_username(entity),
            left=bool(entity.deleted),
        )
    if isinstance(entity, tg.Chat | tg.ChatForbidden | tg.ChatEmpty):
        migrated = getattr(getattr(entity, "migrated_to", None), "channel_id", None)
        return ChatInfo(
            **common,
            type="group",
            title=getattr(entity, "title", None) or "",
            members_count=getattr(entity, "participants_count", None),
            left=not isinstance(entity, tg.Chat) or bool(entity.left or entity.deactivated),
            migrated_to=_peer_id(tg.PeerChannel(migrated)) if migrated is not None else None,
        )
    if isinstance(entity, tg.Channel | tg.ChannelForbidden):
        group = bool(entity.megagroup or getattr(entity, "gigagroup", False))
        return ChatInfo(
            **common,
            type="supergroup" if group else "channel",
            title=entity.title or "",
            username=_username(entity),
            members_count=getattr(entity, "participants_count", None),
            left=isinstance(entity, tg.ChannelForbidden) or bool(entity.left),
        )
    raise ProtocolError(f"telegram chat {chat_id}: unsupported entity type {type(entity).__name__}")


# ------------------------------------------------------------------------------- page


@dataclass(frozen=True, slots=True)
class TelegramPage:
    """One read of a chat's history: the messages after ``after_id``, ascending.

    ``has_more`` is true when Telegram gave as many messages as asked for (and, for a
    range, the last one is still below ``to_id``): read again from :meth:`cursor_after`.
    ``last_id`` is the highest id Telegram returned, even for an object that is not a
    message (so paging always progresses).
    """

    chat_id: int
    after_id: int
    count: int
    to_id: int | None
    messages: tuple[TelegramMessage, ...]
    has_more: bool
    last_id: int | None

    @property
    def rows(self) -> list[TelegramRow]:
        """The messages in :data:`GENERIC_COLUMNS` order."""
        return [m.to_row() for m in self.messages]

    @property
    def ids(self) -> list[int]:
        """The message ids, ascending."""
        return [m.id for m in self.messages]

    def cursor_after(self, last_id: int) -> int:
        """The cursor once this page is stored: its highest id, never below ``last_id``."""
        if self.last_id is None:
            return last_id
        return max(last_id, self.last_id)

    def __len__(self) -> int:
        return len(self.messages)


# ------------------------------------------------------------------------- connection


class _LoopThread:
    """A daemon thread running one asyncio event loop for a connection."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class TelegramConnection:
    """Synchronous access to one Telegram account, safe to share between threads.

    Owns a background event-loop thread and one Telethon client, built lazily by
    ``client_factory`` (inside the loop) on the first call, then connected and checked
    authorised; a connection failure makes the next call connect again. ``key`` is the
    account key (the block name): it names the account in errors and logs and keys
    :meth:`shared`. ``sleep`` is how a FloodWait is waited out (injectable for tests);
    ``call_timeout`` bounds one call (the Telethon client has its own, shorter timeouts).

    Prefer :meth:`shared` so that the chats of one account share one client.
    """

    _registry: ClassVar[dict[str, TelegramConnection]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    _atexit_registered: ClassVar[bool] = False

    def __init__(
        self,
        key: str,
        account: TelegramAccount,
        *,
        client_factory: ClientFactory | None = None,
        sleep: Sleep = time.sleep,
        call_timeout: float = _DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if not key:
            raise ConfigError("telegram account key must be non-empty")
        if not call_timeout > 0:
            raise ConfigError(f"telegram call_timeout must be > 0 seconds, got {call_timeout!r}")
        self.key = key
        self.account = account
        self.call_timeout = call_timeout
        self._factory: ClientFactory = client_factory or default_client_factory
        self._sleep = sleep
        self._loop = _LoopThread(name=f"telegram-{key}")
        self._lock = threading.Lock()
        self._ready_lock: asyncio.Lock | None = None  # created in the loop
        self._client: Any = None
        self._ready = False
        self._closed = False
        self._entities: dict[int, Any] = {}  # marked id -> entity (touched in the loop only)
        self._dialogs_scanned = False
        self._warned_media = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self._ready else "idle")
        return f"TelegramConnection(key={self.key!r}, api_id={self.account.api_id}, {state})"

    # ---------------------------------------------------------------- registry

    @classmethod
    def shared(
        cls,
        key: str,
        account: TelegramAccount,
        *,
        client_factory: ClientFactory | None = None,
        sleep: Sleep = time.sleep,
    ) -> TelegramConnection:
        """The process-wide connection of account ``key``, created on first use.

        Every caller with the same ``key`` gets the same connection (one client, one
        loop thread). If ``account`` differs from the registered one (a new session after
        ``telegram login``), the old connection is closed and replaced. Connections are
        closed at interpreter exit, or by :meth:`close` / :func:`close_all_connections`.
        """
        with cls._registry_lock:
            current = cls._registry.get(key)
            if current is not None and not current._closed and current.account == account:
                return current
            if current is not None:
                logger.info("telegram account %r: credentials changed, replacing its connection", key)
                current._close(unregister=False)
            conn = cls(key, account, client_factory=client_factory, sleep=sleep)
            cls._registry[key] = conn
            if not cls._atexit_registered:
                atexit.register(close_all_connections)
                cls._atexit_registered = True
            return conn

    def close(self) -> None:
        """Disconnect the client, stop the loop thread, leave the registry. Idempotent."""
        self._close(unregister=True)

    def _close(self, *, unregister: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if unregister:
            with TelegramConnection._registry_lock:
                if TelegramConnection._registry.get(self.key) is self:
                    del TelegramConnection._registry[self.key]
        try:
            self._loop.submit(self._shutdown()).result(_DISCONNECT_TIMEOUT)
        except Exception as exc:  # closing must not fail; say why it was unclean
            logger.warning("telegram account %r: disconnect failed (%s)", self.key, type(exc).__name__)
        self._loop.stop()

    async def _shutdown(self) -> None:
        """Disconnect, then cancel what still runs so that no caller waits for a dead loop."""
        client, self._client, self._ready = self._client, None, False
        try:
            if client is not None:
                await _maybe_await(client.disconnect())
        finally:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -------------------------------------------------------------- machinery

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_current:
            coro.close()
            raise ConfigError(f"{_where(self.key, None)}: a sync call from the connection's own loop would deadlock")
        try:
            future = self._loop.submit(coro)
        except RuntimeError:  # the loop is closed: close() won the race
            coro.close()
            raise ConnectionError("the connection is closed") from None
        try:
            return future.result(self.call_timeout)
        except concurrent.futures.CancelledError:
            raise ConnectionError("the connection was closed while the call ran") from None
        except concurrent.futures.TimeoutError:
            if future.done():  # the call itself timed out (TimeoutError is one class since 3.11)
                raise
            future.cancel()
            raise TimeoutError(f"no answer within call_timeout={self.call_timeout:g}s") from None

    async def _ensure_ready(self) -> Any:
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._client is None:
                self._client = self._factory(self.account)
            if not self._ready:
                await self._client.connect()
                if not await self._client.is_user_authorized():
                    raise AuthError(
                        f"{_where(self.key, None)}: the session is not authorised "
                        f"(logged out, revoked or never logged in); {login_hint(self.key)}"
                    )
                self._ready = True
            return self._client

    async def _guarded(self, op: Callable[[Any], Awaitable[T]]) -> T:
        client = await self._ensure_ready()
        try:
            return await op(client)
        except (*_TRANSIENT_ERRORS, *_AUTH_ERRORS):
            self._ready = False  # reconnect / re-check authorisation on the next call
            raise

    def _call(self, chat: int | None, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(client)`` on the loop; wait out one short FloodWait; classify failures."""
        if self._closed:
            raise ConfigError(f"{_where(self.key, chat)}: the connection is closed")
        waited = False
        while True:
            try:
                return self._run(self._guarded(op))
            except _FLOOD_ERRORS as exc:
                seconds = int(exc.seconds)
                if seconds > self.account.flood_wait_max:
                    raise self._scrubbed(
                        TransientSyncError(
                            f"{_where(self.key, chat)}: Telegram asked to wait {seconds}s ({type(exc).__name__}), "
                            f"more than flood_wait_max={self.account.flood_wait_max:g}s; not waiting"
                        )
                    ) from exc
                if waited:
                    raise self._scrubbed(classify(exc, chat=chat, account=self.key)) from exc
                logger.warning(
                    "%s: Telegram asked to wait %ss (%s); waiting once",
                    _where(self.key, chat),
                    seconds,
                    type(exc).__name__,
                )
                self._sleep(float(seconds))
                waited = True
            except Exception as exc:
                raise self._scrubbed(classify(exc, chat=chat, account=self.key)) from exc

    def _scrubbed(self, error: SyncflowError) -> SyncflowError:
        secrets = self.account.secrets()
        error.args = tuple(scrub(a, secrets) if isinstance(a, str) else a for a in error.args)
        return error

    async def _entity(self, client: Any, chat_id: int, *, fresh: bool) -> Any:
        """The chat's entity: cached, else ``get_entity``, else found by listing the dialogs.

        ``fresh`` always asks Telegram (metadata must be current); the cache only spares
        a request per page. A ``ValueError`` ("Could not find the input entity") after
        the dialogs were listed means the account does not know the chat.
        """
        if not fresh and chat_id in self._entities:
            return self._entities[chat_id]
        try:
            entity = await client.get_entity(chat_id)
        except ValueError:
            if self._dialogs_scanned:
                raise
            await self._scan_dialogs(client, archived=None)
            if chat_id not in self._entities:
                raise
            return self._entities[chat_id]  # just listed: as fresh as get_entity's
        self._entities[chat_id] = entity
        return entity

    async def _scan_dialogs(self, client: Any, *, archived: bool | None) -> list[ChatInfo]:
        infos = []
        async for dialog in client.iter_dialogs(archived=archived):
            self._entities[_peer_id(dialog.entity) or dialog.id] = dialog.entity
            try:
                infos.append(chat_info(dialog.entity, archived=bool(dialog.archived)))
            except ProtocolError as exc:  # a newer kind of peer: skip it, list the rest
                logger.warning("%s: dialog %s skipped: %s", _where(self.key, None), dialog.id, exc)
        if archived is None:
            self._dialogs_scanned = True
        return infos

    # ----------------------------------------------------------------- public

    def read_page(
        self,
        chat_id: int,
        after_id: int,
        count: int,
        *,
        to_id: int | None = None,
        skip_media: bool = True,
    ) -> TelegramPage:
        """The messages of ``chat_id`` with ids above ``after_id`` (at most ``count``), ascending.

        One ``iter_messages(entity, min_id=after_id, max_id=to_id+1 or 0, reverse=True,
        limit=count)``; ``after_id`` is exclusive, ``to_id`` inclusive (for a range
        ``from..to`` pass ``after_id=from - 1``). Media bytes are never downloaded (see the
        module docstring): ``skip_media=False`` returns the same metadata-only rows.
        """
        where = _where(self.key, chat_id)
        if type(after_id) is not int or after_id < 0:
            raise ConfigError(f"{where}: after_id must be an int >= 0, got {after_id!r}")
        if type(count) is not int or count < 1:
            raise ConfigError(f"{where}: count must be an int >= 1, got {count!r}")
        if to_id is not None and (type(to_id) is not int or to_id < 0):
            raise ConfigError(f"{where}: to_id must be an int >= 0 or None, got {to_id!r}")
        if not skip_media and not self._warned_media:
            self._warned_media = True
            logger.warning("%s: media download is not implemented; storing media metadata only", self.key)
        if to_id is not None and to_id <= after_id:
            return TelegramPage(chat_id, after_id, count, to_id, (), has_more=False, last_id=None)
        max_id = 0 if to_id is None else to_id + 1

        async def op(client: Any) -> list[Any]:
            entity = await self._entity(client, chat_id, fresh=False)
            iterator = client.iter_messages(entity, min_id=after_id, max_id=max_id, reverse=True, limit=count)
            return [m async for m in iterator]

        raw = self._call(chat_id, op)
        return self._page(chat_id, after_id, count, to_id, raw)

    def _page(self, chat_id: int, after_id: int, count: int, to_id: int | None, raw: list[Any]) -> TelegramPage:
        last_id = max((int(m.id) for m in raw), default=None)
        by_id: dict[int, TelegramMessage] = {}
        for m in raw:
            if not isinstance(m, tg.Message | tg.MessageService):
                continue  # MessageEmpty: a deleted id
            if m.id <= after_id or (to_id is not None and m.id > to_id):
                continue  # Telegram honours min_id/max_id; be safe anyway
            by_id[int(m.id)] = map_message(m)
        messages = tuple(by_id[i] for i in sorted(by_id))
        has_more = len(raw) >= count and last_id is not None and (to_id is None or last_id < to_id)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: page of %d (after %d, count %d, to %s, has_more=%s)",
                _where(self.key, chat_id),
                len(messages),
                after_id,
                count,
                to_id,
                has_more,
            )
        return TelegramPage(chat_id, after_id, count, to_id, messages, has_more=has_more, last_id=last_id)

    def read_chat(self, chat_id: int) -> ChatInfo:
        """The chat's current metadata (one ``get_entity``; see :class:`ChatInfo`)."""

        async def op(client: Any) -> Any:
            return await self._entity(client, chat_id, fresh=True)

        return chat_info(self._call(chat_id, op))

    def list_dialogs(self, types: Collection[str] | None = None, archived: bool = False) -> list[ChatInfo]:
        """The account's chats, for discovery, in Telegram's dialog order.

        ``types`` keeps only those chat types (of :data:`CHAT_TYPES`; exact match, so
        pass ``{"group", "supergroup"}`` for every group), None keeps all. ``archived``
        False lists the main list only (``iter_dialogs(archived=False)``); True lists the
        archived chats too (``iter_dialogs(archived=None)``); each :class:`ChatInfo` says
        whether it is archived.
        """
        wanted = None if types is None else frozenset(types)
        if wanted is not None and not wanted <= CHAT_TYPES:
            raise ConfigError(
                f"{_where(self.key, None)}: unknown chat types {sorted(wanted - CHAT_TYPES)}; "
                f"expected some of {sorted(CHAT_TYPES)}"
            )

        async def op(client: Any) -> list[ChatInfo]:
            return await self._scan_dialogs(client, archived=None if archived else False)

        infos = self._call(None, op)
        return [i for i in infos if wanted is None or i.type in wanted]


def close_all_connections() -> None:
    """Close every registered connection (at exit, and between tests)."""
    with TelegramConnection._registry_lock:
        conns = list(TelegramConnection._registry.values())
    for conn in conns:
        conn.close()


def close_connection(key: str) -> bool:
    """Close the registered connection of account ``key`` (disconnect now), if there is one.

    For the cross-process account limit: a process gives the account's lease back only
    after its client disconnected. Returns whether a connection was closed.
    """
    with TelegramConnection._registry_lock:
        conn = TelegramConnection._registry.get(key)
    if conn is None:
        return False
    conn.close()
    return True


# ------------------------------------------------------------------------------ login

Prompt = Callable[[], str]


def login(
    api_id: int,
    api_hash: str,
    phone: str,
    code_callback: Prompt,
    password_callback: Prompt,
    *,
    account: str = "login",
    client_factory: ClientFactory | None = None,
    attempts: int = 3,
) -> str:
    """Sign in interactively and return the new session string (never printed or logged).

    ``code_callback`` returns the code Telegram sent; ``password_callback`` the two-step
    verification password, asked only when the account has one. Each is asked again on
    a wrong answer, up to ``attempts`` times. The callbacks run in a worker thread so a
    slow human does not stall the client's loop. ``account`` (the key being logged in)
    names the account in errors. Errors are classified like the connection's (a wrong
    code or password is an :class:`AuthError`).
    """
    if attempts < 1:
        raise ConfigError(f"login attempts must be >= 1, got {attempts}")
    creds = TelegramAccount(api_id=api_id, api_hash=api_hash, session="")
    factory = client_factory or default_client_factory
    retry_code = (tg_errors.PhoneCodeInvalidError, tg_errors.PhoneCodeEmptyError)

    async def ask(prompt: Prompt) -> str:
        return str(await asyncio.get_running_loop().run_in_executor(None, prompt)).strip()

    async def run() -> str:
        client = factory(creds)
        try:
            await client.connect()
            await client.send_code_request(phone)
            for attempt in range(1, attempts + 1):
                try:
                    await client.sign_in(phone=phone, code=await ask(code_callback))
                    break
                except retry_code:
                    if attempt == attempts:
                        raise
                    logger.warning("telegram login %r: wrong code, asking again", account)
                except tg_errors.SessionPasswordNeededError:
                    for pw_attempt in range(1, attempts + 1):
                        try:
                            await client.sign_in(password=await ask(password_callback))
                            break
                        except tg_errors.PasswordHashInvalidError:
                            if pw_attempt == attempts:
                                raise
                            logger.warning("telegram login %r: wrong password, asking again", account)
                    break
            session = client.session.save()
            if not isinstance(session, str) or not session:
                raise AuthError(f"{_where(account, None)}: login finished without a session")
            return session
        finally:
            await _maybe_await(client.disconnect())

    try:
        return asyncio.run(run())
    except Exception as exc:
        error = classify(exc, chat=None, account=account)
        error.args = tuple(scrub(a, creds.secrets()) if isinstance(a, str) else a for a in error.args)
        raise error from exc


__all__ = [
    "CHAT_TYPES",
    "EXTRA_COLUMNS",
    "GENERIC_COLUMNS",
    "TELEGRAM_COLUMNS",
    "TYPE_CODES",
    "ChatInfo",
    "ChatType",
    "ClientFactory",
    "MessageKind",
    "TelegramAccount",
    "TelegramConnection",
    "TelegramMessage",
    "TelegramPage",
    "TelegramRow",
    "chat_info",
    "classify",
    "close_all_connections",
    "close_connection",
    "default_client_factory",
    "epoch_ms",
    "login",
    "login_hint",
    "map_message",
    "scrub",
]
