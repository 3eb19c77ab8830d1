"""A fake Telethon client over an in-memory Telegram, for tests (no network).

:class:`FakeTelegramClient` implements exactly the client calls that
:mod:`syncflow.sources.telegram` makes, with Telethon's signatures and async-ness
(``iter_messages``/``iter_dialogs`` are plain methods returning async iterators, the rest
are coroutines), returns **Telethon's own types** (``telethon.tl.types.Message``,
``MessageService``, ``User``/``Chat``/``Channel``, peers, media, and real
``telethon.tl.custom.Dialog`` objects) and raises **Telethon's own errors**, built the way
Telethon builds them (``FloodWaitError(request=None, capture=seconds)``). So the mapping is
tested against the real shapes; only the transport is fake.

The world (:class:`FakeTelegram`) holds accounts (keyed by session string), each with its
chats and messages; tests add, edit and delete messages, restrict or remove chats, revoke
sessions, queue faults (:meth:`FakeTelegram.fail_next`, :meth:`~FakeTelegram.flood_wait`,
:meth:`~FakeTelegram.network_error`), and read the call log (:attr:`FakeTelegram.calls`,
and each client's ``calls``): ``(name, kwargs)`` with entity arguments logged as their
marked peer id, e.g. ``("iter_messages", {"entity": -1001, "min_id": 5, "max_id": 0,
"reverse": True, "limit": 100})``.

Across processes (the flows' subprocess tests): :meth:`FakeTelegram.save` pickles the
world to a file; a process whose ``SYNCFLOW_TELEGRAM_CLIENT_FACTORY`` is
``syncflow.testing.telegram_fake:env_client_factory`` builds its clients on the world
:meth:`installed <FakeTelegram.install>` in it, else on the one saved at
``$SYNCFLOW_TELEGRAM_FAKE_WORLD``. Every call is also stamped (wall time, pid) in
:attr:`FakeTelegram.timeline` and, when :attr:`FakeTelegram.log_path` is set, appended to
that file as a JSON line, so a test reads what several processes did and when.
:attr:`FakeTelegram.latency` delays every ``iter_messages`` page (a slow network).

Faithful details: message ids are allocated like Telegram's (one counter per account for
private chats and basic groups, one per channel); ``min_id``/``max_id`` are exclusive; a
fault on an iterator is raised when it is first iterated (Telethon sends the request
lazily); with ``cold_cache=True`` an account behaves like a fresh ``StringSession``:
``get_entity(id)`` raises Telethon's ``ValueError`` until ``iter_dialogs`` has listed the
chat on that client.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import json
import os
import pickle
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from telethon import errors as tg_errors
from telethon import utils as tg_utils
from telethon.tl import types as tg
from telethon.tl.custom import Dialog

BASE_DATE = datetime(2024, 1, 1, tzinfo=UTC)
"""Default date of message ``n`` is ``BASE_DATE + n`` seconds."""

ErrorSpec = BaseException | Callable[[], BaseException]
"""An exception to raise, or a factory of fresh ones."""

_hashes = itertools.count(0x5EED0001)


# ------------------------------------------------------------------------ media builders


def photo_media(photo_id: int = 1, *, width: int = 1280, height: int = 720, size: int = 123_456) -> Any:
    """A ``MessageMediaPhoto`` with a thumbnail, a stripped preview and one full size."""
    sizes = [
        tg.PhotoStrippedSize(type="i", bytes=b"\x01\x02\x03"),
        tg.PhotoSize(type="m", w=320, h=180, size=9_000),
        tg.PhotoSizeProgressive(type="y", w=width, h=height, sizes=[10_000, 50_000, size]),
    ]
    photo = tg.Photo(
        id=photo_id,
        access_hash=next(_hashes),
        file_reference=b"ref",
        date=BASE_DATE,
        sizes=sizes,
        dc_id=2,
    )
    return tg.MessageMediaPhoto(photo=photo)


def document_media(
    mime_type: str,
    attributes: Iterable[Any] = (),
    *,
    document_id: int = 1,
    size: int = 4_096,
    **flags: Any,
) -> Any:
    """A ``MessageMediaDocument`` of a ``Document`` with these attributes (``flags``: voice/round/video...)."""
    document = tg.Document(
        id=document_id,
        access_hash=next(_hashes),
        file_reference=b"ref",
        date=BASE_DATE,
        mime_type=mime_type,
        size=size,
        dc_id=2,
        attributes=list(attributes),
    )
    return tg.MessageMediaDocument(document=document, **flags)


def file_media(file_name: str = "report.pdf", mime_type: str = "application/pdf", **kw: Any) -> Any:
    """A plain file (document)."""
    return document_media(mime_type, [tg.DocumentAttributeFilename(file_name=file_name)], **kw)


def video_media(duration: float = 12.5, width: int = 1920, height: int = 1080, **kw: Any) -> Any:
    """A video file."""
    attrs = [
        tg.DocumentAttributeVideo(duration=duration, w=width, h=height, supports_streaming=True),
        tg.DocumentAttributeFilename(file_name="clip.mp4"),
    ]
    return document_media("video/mp4", attrs, video=True, **kw)


def video_note_media(duration: float = 8.0, side: int = 384, **kw: Any) -> Any:
    """A round video message."""
    attrs = [tg.DocumentAttributeVideo(duration=duration, w=side, h=side, round_message=True)]
    return document_media("video/mp4", attrs, round=True, **kw)


def animation_media(**kw: Any) -> Any:
    """A GIF, as Telegram sends it: an mp4 with the Animated and Video attributes."""
    attrs = [
        tg.DocumentAttributeVideo(duration=2.0, w=480, h=270, nosound=True),
        tg.DocumentAttributeAnimated(),
        tg.DocumentAttributeFilename(file_name="funny.gif.mp4"),
    ]
    return document_media("video/mp4", attrs, **kw)


def voice_media(duration: int = 7, **kw: Any) -> Any:
    """A voice message (the waveform bytes must never reach a row)."""
    attrs = [tg.DocumentAttributeAudio(duration=duration, voice=True, waveform=b"\x00\x1f\x3e")]
    return document_media("audio/ogg", attrs, voice=True, **kw)


def audio_media(duration: int = 215, title: str = "Song", performer: str = "Band", **kw: Any) -> Any:
    """A music file."""
    attrs = [
        tg.DocumentAttributeAudio(duration=duration, title=title, performer=performer),
        tg.DocumentAttributeFilename(file_name="song.mp3"),
    ]
    return document_media("audio/mpeg", attrs, **kw)


def sticker_media(alt: str = "\U0001f600", set_id: int = 77, **kw: Any) -> Any:
    """A sticker (webp with the Sticker and ImageSize attributes)."""
    attrs = [
        tg.DocumentAttributeImageSize(w=512, h=512),
        tg.DocumentAttributeSticker(alt=alt, stickerset=tg.InputStickerSetID(id=set_id, access_hash=1)),
        tg.DocumentAttributeFilename(file_name="sticker.webp"),
    ]
    return document_media("image/webp", attrs, **kw)


# ------------------------------------------------------------------------------ the world


@dataclass(eq=False)
class FakeChat:
    """One chat of an account: its entity, messages by id, and its state."""

    chat_id: int
    entity: Any
    peer: Any
    archived: bool = False
    messages: dict[int, Any] = field(default_factory=dict)
    restricted: BaseException | None = None
    restricted_calls: frozenset[str] = frozenset()
    removed: bool = False
    next_id: int = 1  # channels only; other chats use the account's counter

    @property
    def is_channel(self) -> bool:
        return isinstance(self.peer, tg.PeerChannel)


@dataclass(eq=False)
class FakeAccount:
    """A Telegram account: a logged-in user, its session string and its chats."""

    world: FakeTelegram
    session: str
    user: Any
    phone: str | None = None
    code: str = "12345"
    password: str | None = None
    cold_cache: bool = False
    chats: dict[int, FakeChat] = field(default_factory=dict)
    revoked: Callable[..., BaseException] | None = None
    next_id: int = 1

    # ---------------------------------------------------------------- chats

    def _add_chat(self, entity: Any, peer: Any, archived: bool) -> int:
        chat_id = int(tg_utils.get_peer_id(peer))
        self.chats[chat_id] = FakeChat(chat_id=chat_id, entity=entity, peer=peer, archived=archived)
        return chat_id

    def add_user(
        self,
        user_id: int,
        first_name: str = "Ann",
        last_name: str | None = None,
        *,
        username: str | None = None,
        bot: bool = False,
        photo_id: int | None = None,
        deleted: bool = False,
        archived: bool = False,
    ) -> int:
        """A private chat with a user (or bot); returns its chat id (= the user id)."""
        entity = tg.User(
            id=user_id,
            access_hash=next(_hashes),
            first_name=None if deleted else first_name,
            last_name=None if deleted else last_name,
            username=username,
            bot=bot,
            deleted=deleted,
            photo=tg.UserProfilePhoto(photo_id=photo_id, dc_id=2) if photo_id else None,
        )
        return self._add_chat(entity, tg.PeerUser(user_id), archived)

    def add_group(
        self,
        group_id: int,
        title: str,
        *,
        members: int = 3,
        photo_id: int | None = None,
        archived: bool = False,
    ) -> int:
        """A basic group; returns its chat id (``-group_id``)."""
        entity = tg.Chat(
            id=group_id,
            title=title,
            photo=tg.ChatPhoto(photo_id=photo_id, dc_id=2) if photo_id else tg.ChatPhotoEmpty(),
            participants_count=members,
            date=BASE_DATE,
            version=1,
        )
        return self._add_chat(entity, tg.PeerChat(group_id), archived)

    def add_channel(
        self,
        channel_id: int,
        title: str,
        *,
        megagroup: bool = False,
        username: str | None = None,
        members: int | None = None,
        photo_id: int | None = None,
        archived: bool = False,
    ) -> int:
        """A broadcast channel, or a supergroup with ``megagroup=True``; returns ``-100…id``."""
        entity = tg.Channel(
            id=channel_id,
            title=title,
            photo=tg.ChatPhoto(photo_id=photo_id, dc_id=2) if photo_id else tg.ChatPhotoEmpty(),
            date=BASE_DATE,
            access_hash=next(_hashes),
            broadcast=not megagroup,
            megagroup=megagroup,
            username=username,
            participants_count=members,
        )
        return self._add_chat(entity, tg.PeerChannel(channel_id), archived)

    def chat(self, chat_id: int) -> FakeChat:
        """The chat (KeyError when the account has no such chat)."""
        return self.chats[chat_id]

    def restrict(
        self,
        chat_id: int,
        error: Callable[..., BaseException] = tg_errors.ChannelPrivateError,
        *,
        calls: Iterable[str] = ("get_entity", "iter_messages"),
    ) -> None:
        """Make the chat unreadable: ``calls`` on it raise ``error(request=None)`` (private, forbidden...)."""
        chat = self.chats[chat_id]
        chat.restricted = error(request=None)
        chat.restricted_calls = frozenset(calls)

    def remove(self, chat_id: int) -> None:
        """The account left the chat / it was deleted: gone from the dialogs, unknown to get_entity."""
        self.chats[chat_id].removed = True

    def revoke(self, error: Callable[..., BaseException] = tg_errors.SessionRevokedError) -> None:
        """Revoke the session: ``is_user_authorized()`` is False, every other call raises ``error``."""
        self.revoked = error

    # ------------------------------------------------------------- messages

    def _allocate(self, chat: FakeChat) -> int:
        if chat.is_channel:
            msg_id, chat.next_id = chat.next_id, chat.next_id + 1
        else:
            msg_id, self.next_id = self.next_id, self.next_id + 1
        return msg_id

    def add_message(
        self,
        chat_id: int,
        text: str = "",
        *,
        from_id: int | None = None,
        out: bool = False,
        post: bool | None = None,
        date: datetime | None = None,
        edit_date: datetime | None = None,
        media: Any = None,
        reply_to: int | None = None,
        fwd_from: Any = None,
        grouped_id: int | None = None,
        msg_id: int | None = None,
    ) -> Any:
        """Append a ``telethon.tl.types.Message`` to the chat; ``from_id`` is a marked peer id.

        Broadcast channel posts default to ``post=True`` without ``from_id``, as Telegram
        sends them. ``msg_id`` forces an id (for holes and huge ids).
        """
        chat = self.chats[chat_id]
        mid = msg_id if msg_id is not None else self._allocate(chat)
        if post is None:
            post = chat.is_channel and not getattr(chat.entity, "megagroup", False)
        msg = tg.Message(
            id=mid,
            peer_id=chat.peer,
            date=date or BASE_DATE + timedelta(seconds=mid),
            message=text,
            out=out,
            post=post,
            from_id=_peer(from_id),
            fwd_from=fwd_from,
            reply_to=tg.MessageReplyHeader(reply_to_msg_id=reply_to) if reply_to is not None else None,
            media=media,
            edit_date=edit_date,
            grouped_id=grouped_id,
        )
        chat.messages[mid] = msg
        return msg

    def add_service(
        self,
        chat_id: int,
        action: Any,
        *,
        from_id: int | None = None,
        date: datetime | None = None,
    ) -> Any:
        """Append a ``telethon.tl.types.MessageService`` with ``action`` to the chat."""
        chat = self.chats[chat_id]
        mid = self._allocate(chat)
        msg = tg.MessageService(
            id=mid,
            peer_id=chat.peer,
            date=date or BASE_DATE + timedelta(seconds=mid),
            action=action,
            from_id=_peer(from_id),
        )
        chat.messages[mid] = msg
        return msg

    def edit_message(self, chat_id: int, msg_id: int, text: str, *, date: datetime | None = None) -> Any:
        """Edit a message's text: a new object with ``edit_date`` set (default: date + 1 h)."""
        chat = self.chats[chat_id]
        old = chat.messages[msg_id]
        new = copy.copy(old)
        new.message = text
        new.edit_date = date or old.date + timedelta(hours=1)
        chat.messages[msg_id] = new
        return new

    def delete_message(self, chat_id: int, msg_id: int) -> None:
        """Delete a message (its id becomes a hole)."""
        del self.chats[chat_id].messages[msg_id]


def _peer(marked: int | None) -> Any:
    if marked is None:
        return None
    real, cls = tg_utils.resolve_id(marked)
    return cls(real)


@dataclass
class _Fault:
    error: ErrorSpec
    remaining: int
    calls: frozenset[str] | None
    chat: int | None

    def matches(self, name: str, chat: int | None) -> bool:
        if self.remaining <= 0:
            return False
        if self.calls is not None and name not in self.calls:
            return False
        return self.chat is None or self.chat == chat


class FakeTelegram:
    """The in-memory Telegram: accounts, the fault queue, the call log, the client factory.

    Pass :meth:`client_factory` as ``client_factory`` to ``TelegramConnection`` (or
    ``login``); :attr:`factory_calls` counts how many clients were built.
    """

    installed: ClassVar[FakeTelegram | None] = None
    """The world :func:`env_client_factory` uses in this process (see :meth:`install`)."""

    def __init__(self) -> None:
        self.accounts: dict[str, FakeAccount] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.timeline: list[tuple[float, int, str, dict[str, Any]]] = []
        self.clients: list[FakeTelegramClient] = []
        self._faults: list[_Fault] = []
        self._user_ids = itertools.count(1000)
        self.latency = 0.0
        self.log_path: str | None = None

    # ------------------------------------------------------------ processes

    def install(self) -> FakeTelegram:
        """Make this the world :func:`env_client_factory` builds clients on, in this process."""
        FakeTelegram.installed = self
        return self

    @classmethod
    def uninstall(cls) -> None:
        cls.installed = None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Pickle the world (accounts, chats, messages, queued faults; not the logs) to ``path``."""
        tmp = Path(f"{path}.tmp")
        tmp.write_bytes(pickle.dumps(self))
        tmp.replace(path)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> FakeTelegram:
        world = pickle.loads(Path(path).read_bytes())
        assert isinstance(world, FakeTelegram)
        return world

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(calls=[], timeline=[], clients=[], _user_ids=next(self._user_ids))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_user_ids"] = itertools.count(state["_user_ids"])
        self.__dict__.update(state)

    def record(self, name: str, kwargs: dict[str, Any]) -> None:
        """Log one call: :attr:`calls`, :attr:`timeline` and the :attr:`log_path` file."""
        entry = (time.time(), os.getpid(), name, kwargs)
        self.calls.append((name, kwargs))
        self.timeline.append(entry)
        if self.log_path:
            line = json.dumps({"t": entry[0], "pid": entry[1], "call": name, "kwargs": kwargs}, default=str) + "\n"
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(line)

    @property
    def factory_calls(self) -> int:
        """How many clients :meth:`client_factory` built."""
        return len(self.clients)

    def add_account(
        self,
        session: str,
        *,
        first_name: str = "Me",
        user_id: int | None = None,
        phone: str | None = None,
        code: str = "12345",
        password: str | None = None,
        cold_cache: bool = False,
    ) -> FakeAccount:
        """An account reachable with ``session`` (and, for login, ``phone``/``code``/``password``)."""
        uid = user_id if user_id is not None else next(self._user_ids)
        user = tg.User(id=uid, is_self=True, access_hash=next(_hashes), first_name=first_name, phone=phone)
        account = FakeAccount(
            world=self,
            session=session,
            user=user,
            phone=phone,
            code=code,
            password=password,
            cold_cache=cold_cache,
        )
        self.accounts[session] = account
        return account

    def client_factory(self, account: Any) -> FakeTelegramClient:
        """The ``client_factory``: a client on ``account.session`` (any object with ``.session``)."""
        client = FakeTelegramClient(self, account.session)
        self.clients.append(client)
        return client

    # --------------------------------------------------------------- faults

    def fail_next(
        self,
        error: ErrorSpec,
        *,
        times: int = 1,
        calls: Iterable[str] | None = None,
        chat: int | None = None,
    ) -> None:
        """Raise ``error`` on the next ``times`` calls named in ``calls`` (None: any) on ``chat`` (None: any)."""
        self._faults.append(_Fault(error, times, None if calls is None else frozenset(calls), chat))

    def flood_wait(
        self,
        seconds: int,
        *,
        times: int = 1,
        calls: Iterable[str] = ("iter_messages",),
        error: Callable[..., BaseException] = tg_errors.FloodWaitError,
    ) -> None:
        """A FloodWait (or FloodPremiumWait / SlowModeWait) of ``seconds`` on the next ``times`` calls."""
        self.fail_next(functools.partial(error, request=None, capture=seconds), times=times, calls=calls)

    def network_error(self, *, times: int = 1, calls: Iterable[str] | None = None) -> None:
        """A dropped connection (``ConnectionError``) on the next ``times`` calls."""
        self.fail_next(functools.partial(ConnectionError, "Connection reset by peer"), times=times, calls=calls)

    def pending_faults(self) -> int:
        """How many fault occurrences are still queued."""
        return sum(f.remaining for f in self._faults)

    def _take_fault(self, name: str, chat: int | None) -> BaseException | None:
        for fault in self._faults:
            if fault.matches(name, chat):
                fault.remaining -= 1
                error = fault.error
                return error() if callable(error) and not isinstance(error, BaseException) else error
        return None


class FakeSession:
    """The ``client.session`` of a fake client: ``save()`` gives the session string."""

    def __init__(self, string: str) -> None:
        self._string = string

    def save(self) -> str:
        return self._string


class FakeTelegramClient:
    """A Telethon ``TelegramClient`` look-alike over a :class:`FakeTelegram` world."""

    def __init__(self, world: FakeTelegram, session: str) -> None:
        self.world = world
        self.session = FakeSession(session if session in world.accounts else "")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.connected = False
        self._account: FakeAccount | None = world.accounts.get(session)
        self._known: set[int] = set()  # entity cache of a cold session
        self._login_phone: str | None = None
        self._code_ok = False

    # ---------------------------------------------------------------- plumbing

    def _log(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        self.world.record(name, kwargs)

    def _enter(self, name: str, chat: int | None = None, *, needs_auth: bool = True) -> FakeAccount | None:
        """Checks every call goes through, in Telethon's order: fault, connection, authorisation."""
        fault = self.world._take_fault(name, chat)
        if fault is not None:
            raise fault
        if name != "connect" and not self.connected:
            raise ConnectionError("Cannot send requests while disconnected")
        account = self._account
        if needs_auth:
            if account is None:
                raise tg_errors.AuthKeyUnregisteredError(request=None)
            if account.revoked is not None:
                raise account.revoked(request=None)
        return account

    def _chat(self, account: FakeAccount, chat_id: int, call: str) -> FakeChat:
        chat = account.chats.get(chat_id)
        if chat is None or chat.removed:
            if call == "get_entity":
                raise _not_found(chat_id)
            raise tg_errors.PeerIdInvalidError(request=None)
        if chat.restricted is not None and call in chat.restricted_calls:
            raise chat.restricted
        if call == "get_entity" and account.cold_cache and chat_id not in self._known:
            raise _not_found(chat_id)
        return chat

    # ---------------------------------------------------------- Telethon calls

    async def connect(self) -> None:
        self._log("connect")
        self._enter("connect", needs_auth=False)
        for _ in range(3):  # a real connect suspends (socket, handshake): let other tasks interleave
            await asyncio.sleep(0)
        self.connected = True

    async def is_user_authorized(self) -> bool:
        self._log("is_user_authorized")
        account = self._enter("is_user_authorized", needs_auth=False)
        return account is not None and account.revoked is None

    async def disconnect(self) -> None:
        self._log("disconnect")
        self.connected = False

    async def get_entity(self, entity: Any) -> Any:
        chat_id = int(tg_utils.get_peer_id(entity))
        self._log("get_entity", entity=chat_id)
        account = self._enter("get_entity", chat_id)
        assert account is not None
        return self._chat(account, chat_id, "get_entity").entity

    def iter_dialogs(self, *, archived: bool | None = None) -> AsyncIterator[Any]:
        self._log("iter_dialogs", archived=archived)
        return self._dialogs(archived)

    async def _dialogs(self, archived: bool | None) -> AsyncIterator[Any]:
        account = self._enter("iter_dialogs")
        assert account is not None
        chats = [c for c in account.chats.values() if not c.removed and (archived is None or c.archived == archived)]
        chats.sort(key=lambda c: max((m.date for m in c.messages.values()), default=BASE_DATE), reverse=True)
        for chat in chats:
            top = max(chat.messages, default=0)
            raw = tg.Dialog(
                peer=chat.peer,
                top_message=top,
                read_inbox_max_id=top,
                read_outbox_max_id=top,
                unread_count=0,
                unread_mentions_count=0,
                unread_reactions_count=0,
                unread_poll_votes_count=0,
                notify_settings=tg.PeerNotifySettings(),
                folder_id=1 if chat.archived else None,
            )
            self._known.add(chat.chat_id)
            yield Dialog(self, raw, {chat.chat_id: chat.entity}, chat.messages.get(top))

    def iter_messages(
        self,
        entity: Any,
        *,
        min_id: int = 0,
        max_id: int = 0,
        reverse: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Any]:
        chat_id = int(tg_utils.get_peer_id(entity))
        self._log("iter_messages", entity=chat_id, min_id=min_id, max_id=max_id, reverse=reverse, limit=limit)
        return self._messages(chat_id, min_id, max_id, reverse, limit)

    async def _messages(
        self, chat_id: int, min_id: int, max_id: int, reverse: bool, limit: int | None
    ) -> AsyncIterator[Any]:
        account = self._enter("iter_messages", chat_id)
        assert account is not None
        chat = self._chat(account, chat_id, "iter_messages")
        if self.world.latency:
            await asyncio.sleep(self.world.latency)
        ids = sorted((i for i in chat.messages if i > min_id and (not max_id or i < max_id)), reverse=not reverse)
        for i in ids if limit is None else ids[:limit]:
            yield chat.messages[i]

    # ------------------------------------------------------------------ login

    async def send_code_request(self, phone: str) -> Any:
        self._log("send_code_request", phone=phone)
        self._enter("send_code_request", needs_auth=False)
        if not any(a.phone == phone for a in self.world.accounts.values()):
            raise tg_errors.PhoneNumberInvalidError(request=None)
        self._login_phone = phone
        return tg.auth.SentCode(type=tg.auth.SentCodeTypeApp(length=5), phone_code_hash="hash")

    async def sign_in(
        self, phone: str | None = None, code: str | int | None = None, *, password: str | None = None
    ) -> Any:
        self._log(
            "sign_in",
            phone=phone,
            code="<code>" if code is not None else None,
            password="<password>" if password else None,
        )
        self._enter("sign_in", needs_auth=False)
        account = next((a for a in self.world.accounts.values() if a.phone == self._login_phone), None)
        if account is None:
            raise tg_errors.PhoneNumberInvalidError(request=None)
        if password is None:
            if str(code) != account.code:
                raise tg_errors.PhoneCodeInvalidError(request=None)
            self._code_ok = True
            if account.password is not None:
                raise tg_errors.SessionPasswordNeededError(request=None)
        else:
            if not self._code_ok:
                raise tg_errors.PhoneCodeEmptyError(request=None)
            if password != account.password:
                raise tg_errors.PasswordHashInvalidError(request=None)
        self._account = account
        self.session = FakeSession(account.session)
        return account.user


_env_world: tuple[str, int, FakeTelegram] | None = None


def env_client_factory(account: Any) -> FakeTelegramClient:
    """A ``client_factory`` for ``SYNCFLOW_TELEGRAM_CLIENT_FACTORY``: a client on the world
    installed in this process, else on the one saved at ``$SYNCFLOW_TELEGRAM_FAKE_WORLD``
    (reloaded when the file changes)."""
    global _env_world
    world = FakeTelegram.installed
    if world is None:
        path = os.environ.get("SYNCFLOW_TELEGRAM_FAKE_WORLD")
        if not path:
            raise RuntimeError("no fake Telegram world: install one or set SYNCFLOW_TELEGRAM_FAKE_WORLD")
        mtime = os.stat(path).st_mtime_ns
        if _env_world is None or _env_world[:2] != (path, mtime):
            _env_world = (path, mtime, FakeTelegram.load(path))
        world = _env_world[2]
    return world.client_factory(account)


def _not_found(chat_id: int) -> ValueError:
    real, cls = tg_utils.resolve_id(chat_id)
    peer = cls(real)
    return ValueError(
        f"Could not find the input entity for {peer!r} ({type(peer).__name__}). Please read https://"
        "docs.telethon.dev/en/stable/concepts/entities.html to find out more details."
    )


__all__ = [
    "BASE_DATE",
    "FakeAccount",
    "FakeChat",
    "FakeSession",
    "FakeTelegram",
    "FakeTelegramClient",
    "animation_media",
    "audio_media",
    "document_media",
    "env_client_factory",
    "file_media",
    "photo_media",
    "sticker_media",
    "video_media",
    "video_note_media",
    "voice_media",
]
