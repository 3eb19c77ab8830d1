"""Reference seq-protocol server: a real HTTP server for the demo, the tests and the benchmark.

It serves ``POST /api/v1/messages/sync`` and ``GET /api/v1/conversations`` (DESIGN.md, "seq
protocol") from an in-memory store, on 127.0.0.1 only, from a background thread::

    with SeqServer(messages=10_000, token="t") as server:   # port 0: a free port
        SeqHttpClient(server.url, server.token).fetch_page(0, 500)
        server.append(100)                                   # new messages while running
        server.set_faults(error_next=2)                      # the next 2 requests get 503
        server.requests                                      # what was asked, and answered

Misbehaviour is switchable at run time from Python (:meth:`SeqServer.set_faults`) and over
HTTP (``POST /_admin/faults`` with the same fields as JSON replaces them, ``PATCH`` merges,
``GET`` shows, ``DELETE`` clears); see :class:`Faults`. Also under ``/_admin/`` (bearer token
required): ``GET|DELETE requests`` (the log), ``POST append`` ``{"n": 100, "holeRate": 0.1}``, ``GET state``.
Rates are reproducible when ``Faults.seed`` is set.

**Late mode** (seq allocated first, visible later, as on a source whose transactions commit out
of seq order): ``late_rate`` hides each generated message with that probability, and
:meth:`SeqServer.hide_messages` hides chosen ones; a hidden message's seq is taken (messages
after it are served, leaving a hole) but it is not served, not counted in ``totalCount`` and
not in ``maxSeq`` until it is released: after ``late_reads`` more sync requests (0: never by
itself), or by :meth:`SeqServer.release_late` / ``POST /_admin/release`` ``{"seqs": [..]}``
(no body: all). ``GET /_admin/state`` shows how many are hidden (``late``, while any are or ``late_rate`` is set).

The server is an asyncio protocol around ``h11`` (which httpx already depends on) rather than
an ASGI app: it is about as fast, and it owns the socket, so it can drop a connection before
answering or in the middle of a body. Generated messages are not kept in memory: a message is
a pure function of (seed, seq) formatted straight into JSON bytes when a page is served, so a
1M-message store costs only its seq array (8 MB).

``python -m syncflow.testing.seqserver --port 8765 --messages 10000 --token demo-token`` runs one in
the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import socket
import sys
import threading
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Literal, Self

import h11
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

logger = logging.getLogger(__name__)

SEQ_MAX: Final = 2**63 - 1
SYNC_PATH: Final = "/api/v1/messages/sync"
CONVERSATIONS_PATH: Final = "/api/v1/conversations"
ADMIN_PREFIX: Final = "/_admin/"

BASE_TIME_MS: Final = 1_700_000_000_000
"""createTime of the message at ``start_seq``; each later seq is 1 s later."""

_MASK64: Final = (1 << 64) - 1
_MAX_BODY: Final = 1 << 20
_MAX_HEADER: Final = 64 * 1024

InvalidKind = Literal["descending", "duplicate_ids", "has_more_empty", "seq_above_max", "too_many", "bad_shape"]
FaultScope = Literal["all", "sync", "conversations"]


class Faults(BaseModel):
    """What the server does wrong; all off by default. Also the JSON of ``/_admin/faults``.

    Most faults come as a pair: ``X_next`` (the next N requests get it) and ``X_rate``
    (each request gets it with that probability, drawn from ``seed``). Faults apply to the
    protocol endpoints selected by ``scope``, never to ``/_admin``. When several fire on one
    request the answer is, by precedence: error status, 429, (then the token check), code
    error, invalid page, truncation; ``latency``/slow delay it and a drop cuts it.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(default=None, description="seed of the rate draws (None: random)")
    scope: FaultScope = Field(default="all", description="which endpoints the faults hit")
    latency: float = Field(default=0.0, ge=0, description="seconds added to every answer")

    slow_next: int = Field(default=0, ge=0)
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_seconds: float = Field(default=1.0, ge=0, description="delay of a slow answer")

    drop_next: int = Field(default=0, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    drop_mode: Literal["before", "mid"] = Field(
        default="mid", description="close before answering, or after half of the body"
    )

    error_next: int = Field(default=0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=503, ge=400, le=599)

    rate_limit_next: int = Field(default=0, ge=0)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after: str | None = Field(
        default="1", description="Retry-After header of a 429 (seconds or HTTP-date; None: no header)"
    )

    code_error_next: int = Field(default=0, ge=0)
    code_error_rate: float = Field(default=0.0, ge=0, le=1)
    code_error_code: int = Field(default=10001, description="the non-zero code answered")
    code_error_message: str = "injected server error"

    truncate_next: int = Field(default=0, ge=0)
    truncate_rate: float = Field(default=0.0, ge=0, le=1)

    invalid_next: int = Field(default=0, ge=0)
    invalid_rate: float = Field(default=0.0, ge=0, le=1)
    invalid_kind: InvalidKind = "descending"

    overlap: int = Field(default=0, ge=0, description="every sync page starts with the last K messages <= lastSeq")

    def is_active(self) -> bool:
        """Whether any fault can fire."""
        return self != _NO_FAULTS


_NO_FAULTS: Final = Faults()
_FAULT_KINDS: Final = ("slow", "drop", "error", "rate_limit", "code_error", "truncate", "invalid")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the server received, as the tests see it."""

    method: str
    path: str
    last_seq: int | None
    count: int | None
    status: int | None
    """HTTP status answered; None when the connection was dropped."""
    faults: tuple[str, ...] = ()
    """Faults that fired on this request (``"error"``, ``"drop"``, ``"overlap"`` ...)."""


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    delay: float = 0.0
    drop: Literal["before", "mid"] | None = None


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a bijection on 64-bit integers that looks random."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_PHRASES: Final = tuple(
    orjson.dumps(text)[1:-1]
    for text in (
        "hello",
        "你好，今天同步了吗？",  # noqa: RUF001 - real chat text has fullwidth punctuation
        "meeting at 10:00",
        'she said "ok" \\ fine',
        "see attachment",
        "🎉 shipped",
        "line one\nline two",
        "lorem ipsum dolor sit amet, consectetur adipiscing elit",
    )
)
_MESSAGE_TEMPLATE: Final = (
    b'{"messageID":"msg-%016x","serverMsgID":"srv-%d","seq":%d,"conversationID":"conv-%d",'
    b'"senderID":"user-%d","messageType":%d,"content":"%s #%d","createTime":%d,"serverTime":%d}'
)


class SeqServer:
    """An in-memory seq-protocol server on 127.0.0.1, run by a background thread.

    ``messages`` generated messages spread over ``conversations`` conversations get seqs from
    ``start_seq`` up (each seq skipped with probability ``hole_rate``, which leaves seq
    holes); content is deterministic from ``seed``. Pages hold at most
    ``min(count, max_page_size)`` messages. Thread-safe: the store, the faults and the request
    log can be changed from any thread while the server runs.
    """

    def __init__(
        self,
        *,
        messages: int = 0,
        conversations: int = 3,
        token: str = "test-token",
        start_seq: int = 1,
        seed: int = 0,
        hole_rate: float = 0.0,
        port: int = 0,
        max_page_size: int = 10_000,
        request_log_size: int = 100_000,
        late_rate: float = 0.0,
        late_reads: int = 0,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        if not 0 <= start_seq <= SEQ_MAX:
            raise ValueError(f"start_seq must be in [0, 2^63-1], got {start_seq}")
        if not 0.0 <= hole_rate < 1.0:
            raise ValueError(f"hole_rate must be in [0, 1), got {hole_rate}")
        if not 0.0 <= late_rate < 1.0:
            raise ValueError(f"late_rate must be in [0, 1), got {late_rate}")
        if late_reads < 0:
            raise ValueError(f"late_reads must be >= 0, got {late_reads}")
        if messages < 0 or conversations < 0 or max_page_size < 1:
            raise ValueError("messages and conversations must be >= 0, max_page_size >= 1")
        self.token = token
        self.seed = seed
        self.hole_rate = hole_rate
        self.max_page_size = max_page_size
        self._start_seq = start_seq
        self._key = _mix64(seed & _MASK64)
        self._hole_rng = random.Random(seed)
        self.late_rate = late_rate
        self.late_reads = late_reads
        self._late_rng = random.Random(seed + 1)
        self._late: dict[int, int] = {}  # hidden seq -> sync requests left before it shows (0: until released)
        self._lock = threading.Lock()
        self._seqs: array[int] = array("q")
        self._custom: dict[int, bytes] = {}
        self._conversations: dict[str, dict[str, Any]] = {}
        self._n_generated_conversations = max(conversations, 1)
        self._faults = Faults()
        self._rng = random.Random()
        self._requests: deque[RequestRecord] = deque(maxlen=request_log_size)
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocols: set[_HttpProtocol] = set()
        for i in range(conversations):
            self._conversations[f"conv-{i}"] = {
                "conversationID": f"conv-{i}",
                "title": f"Conversation {i}",
                "type": 1 if i % 2 == 0 else 2,
                "avatarUrl": None if i % 2 == 0 else f"https://example.invalid/avatar/{i}.png",
            }
        self._generate(messages, start_seq)

    # ------------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``); the port is known once started."""
        if self._thread is None:
            raise RuntimeError("SeqServer is not running: call start() first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> str:
        """Bind 127.0.0.1 (port 0: a free one; after a stop: the same port again), serve
        from a daemon thread, and return the base URL."""
        if self._thread is not None:
            raise RuntimeError("SeqServer is running already")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve, args=(loop, sock, ready, failure), name=f"seqserver-{self._port}", daemon=True
        )
        self._loop = loop
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._thread = None
            self._loop = None
            raise RuntimeError(f"SeqServer failed to start on port {self._port}") from failure[0]
        logger.info("seq server listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(loop.create_server(lambda: _HttpProtocol(self), sock=sock))
        except BaseException as exc:  # reported to start()
            failure.append(exc)
            sock.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for protocol in list(self._protocols):
                protocol.abort()
            loop.run_until_complete(server.wait_closed())
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    # ---------------------------------------------------------------------- store

    def _generate(self, n: int, first_seq: int, hole_rate: float | None = None, late_rate: float | None = None) -> None:
        before = len(self._seqs)
        self._generate_seqs(n, first_seq, hole_rate)
        late = self.late_rate if late_rate is None else late_rate
        if late > 0.0:
            rng = self._late_rng
            hidden = [s for s in self._seqs[before:] if rng.random() < late]
            self._hide(hidden, self.late_reads)

    def _generate_seqs(self, n: int, first_seq: int, hole_rate: float | None = None) -> None:
        rate = self.hole_rate if hole_rate is None else hole_rate
        if n == 0:
            return
        if rate == 0.0:
            last = first_seq + n - 1
            if last > SEQ_MAX:
                raise ValueError(f"{n} messages from seq {first_seq} would pass 2^63-1")
            self._seqs.extend(range(first_seq, last + 1))
            return
        seq, rng = first_seq, self._hole_rng
        new: list[int] = []
        while len(new) < n:
            if seq > SEQ_MAX:
                raise ValueError(f"{n} messages from seq {first_seq} with holes would pass 2^63-1")
            if rng.random() >= rate:
                new.append(seq)
            seq += 1
        self._seqs.extend(new)

    def append(self, n: int, *, hole_rate: float | None = None, late_rate: float | None = None) -> list[int]:
        """Generate ``n`` new messages after the highest seq allocated; returns their seqs
        (the late ones among them included).

        ``hole_rate`` / ``late_rate`` override the server's for these messages.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if hole_rate is not None and not 0.0 <= hole_rate < 1.0:
            raise ValueError(f"hole_rate must be in [0, 1), got {hole_rate}")
        if late_rate is not None and not 0.0 <= late_rate < 1.0:
            raise ValueError(f"late_rate must be in [0, 1), got {late_rate}")
        with self._lock:
            top = max(self._seqs[-1] if self._seqs else -1, max(self._late, default=-1))
            first = top + 1 if top >= 0 else self._start_seq
            known = set(self._late)
            before = len(self._seqs)
            self._generate(n, first, hole_rate, late_rate)
            return sorted([*self._seqs[before:].tolist(), *(s for s in self._late if s not in known)])

    # ---------------------------------------------------------------- late mode

    def _hide(self, seqs: Iterable[int], reads: int) -> int:
        """Take these visible seqs out of what is served (caller holds the lock)."""
        hidden = 0
        for seq in seqs:
            index = bisect_right(self._seqs, seq) - 1
            if index >= 0 and self._seqs[index] == seq:
                del self._seqs[index]
                self._late[seq] = reads
                hidden += 1
        return hidden

    def hide_messages(self, seqs: Iterable[int], *, reads: int | None = None) -> int:
        """Make these messages late: their seqs stay taken but they are not served until
        released (after ``reads`` more sync requests; default the server's ``late_reads``,
        0: only by :meth:`release_late`). Returns how many were hidden."""
        with self._lock:
            return self._hide(seqs, self.late_reads if reads is None else reads)

    def release_late(self, seqs: Iterable[int] | None = None) -> list[int]:
        """Make late messages visible (all, or these seqs); returns the seqs released."""
        with self._lock:
            chosen = sorted(self._late) if seqs is None else sorted(s for s in set(seqs) if s in self._late)
            for seq in chosen:
                del self._late[seq]
                self._seqs.insert(bisect_right(self._seqs, seq), seq)
            return chosen

    def late_seqs(self) -> list[int]:
        """The seqs allocated but not visible yet, ascending."""
        with self._lock:
            return sorted(self._late)

    def _tick_late(self) -> None:
        """One sync request was served: late messages with a countdown come closer to showing
        (caller holds the lock)."""
        due = []
        for seq, left in self._late.items():
            if left > 0:
                if left == 1:
                    due.append(seq)
                else:
                    self._late[seq] = left - 1
        for seq in due:
            del self._late[seq]
            self._seqs.insert(bisect_right(self._seqs, seq), seq)

    def remove_messages(self, seqs: Iterable[int]) -> int:
        """Delete the messages with these seqs (makes seq holes); returns how many existed."""
        removed = 0
        with self._lock:
            for seq in seqs:
                index = bisect_right(self._seqs, seq) - 1
                if index >= 0 and self._seqs[index] == seq:
                    del self._seqs[index]
                    self._custom.pop(seq, None)
                    removed += 1
                elif self._late.pop(seq, None) is not None:
                    self._custom.pop(seq, None)
                    removed += 1
        return removed

    def add_messages(self, messages: Iterable[Mapping[str, Any]]) -> list[int]:
        """Add (or replace) messages given in wire form (camelCase keys).

        A message without ``seq`` gets the next one after the current max; an existing seq
        is replaced (a server-side edit: visible to clients through ``overlap``). Missing
        fields are filled as for a generated message. Returns the seqs.
        """
        added: list[int] = []
        with self._lock:
            for given in messages:
                seq = given.get("seq")
                if seq is None:
                    seq = self._seqs[-1] + 1 if self._seqs else self._start_seq
                if type(seq) is not int or not 0 <= seq <= SEQ_MAX:
                    raise ValueError(f"seq must be an int in [0, 2^63-1], got {seq!r}")
                wire = orjson.loads(self._generated(seq))
                wire.update(given)
                wire["seq"] = seq
                index = bisect_right(self._seqs, seq)
                if not (index and self._seqs[index - 1] == seq):
                    self._seqs.insert(index, seq)
                self._custom[seq] = orjson.dumps(wire)
                added.append(seq)
        return added

    def _generated(self, seq: int) -> bytes:
        h = _mix64((seq + self._key) & _MASK64)
        created = BASE_TIME_MS + ((seq - self._start_seq) % 1_000_000_000) * 1000
        return _MESSAGE_TEMPLATE % (
            h,
            seq,
            seq,
            h % self._n_generated_conversations,
            (h >> 20) % 50,
            1 + (h >> 40) % 3,
            _PHRASES[(h >> 8) % len(_PHRASES)],
            seq,
            created,
            created + (h >> 48) % 1000,
        )

    def _blobs(self, seqs: Sequence[int]) -> list[bytes]:
        """JSON of the messages with these seqs (caller holds the lock)."""
        custom = self._custom
        if not custom:
            return self._generated_blobs(seqs)
        generated = self._generated
        return [custom.get(s) or generated(s) for s in seqs]

    def _generated_blobs(self, seqs: Sequence[int]) -> list[bytes]:
        # _generated inlined: this loop is the server's hot path.
        key, start, k, phrases, template = (
            self._key,
            self._start_seq,
            self._n_generated_conversations,
            _PHRASES,
            _MESSAGE_TEMPLATE,
        )
        n_phrases = len(phrases)
        out = []
        for seq in seqs:
            h = (seq + key) & _MASK64
            h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
            h ^= h >> 31
            created = BASE_TIME_MS + ((seq - start) % 1_000_000_000) * 1000
            out.append(
                template
                % (
                    h,
                    seq,
                    seq,
                    h % k,
                    (h >> 20) % 50,
                    1 + (h >> 40) % 3,
                    phrases[(h >> 8) % n_phrases],
                    seq,
                    created,
                    created + (h >> 48) % 1000,
                )
            )
        return out

    def messages_after(self, last_seq: int = -1, limit: int | None = None) -> list[dict[str, Any]]:
        """The stored messages with seq > ``last_seq`` in wire form (what a client should get)."""
        with self._lock:
            i = bisect_right(self._seqs, last_seq)
            j = len(self._seqs) if limit is None else min(len(self._seqs), i + limit)
            blobs = self._blobs(self._seqs[i:j])
        return [orjson.loads(blob) for blob in blobs]

    def seqs(self) -> list[int]:
        """All stored seqs, ascending."""
        with self._lock:
            return self._seqs.tolist()

    @property
    def message_count(self) -> int:
        with self._lock:
            return len(self._seqs)

    @property
    def max_seq(self) -> int:
        """Highest stored seq (0 for an empty store)."""
        with self._lock:
            return self._seqs[-1] if self._seqs else 0

    # -------------------------------------------------------------- conversations

    @property
    def conversations(self) -> list[dict[str, Any]]:
        """The conversations in wire form (camelCase)."""
        with self._lock:
            return [dict(c) for c in self._conversations.values()]

    def add_conversation(
        self, conversation_id: str, title: str | None = None, type: int = 1, avatar_url: str | None = None
    ) -> None:
        """Add or replace a conversation."""
        with self._lock:
            self._conversations[conversation_id] = {
                "conversationID": conversation_id,
                "title": title,
                "type": type,
                "avatarUrl": avatar_url,
            }

    def rename_conversation(self, conversation_id: str, title: str | None) -> None:
        with self._lock:
            self._conversations[conversation_id]["title"] = title

    def remove_conversation(self, conversation_id: str) -> None:
        with self._lock:
            del self._conversations[conversation_id]

    # ----------------------------------------------------------- faults and log

    @property
    def faults(self) -> Faults:
        """A copy of the current faults (with the ``*_next`` counters left)."""
        with self._lock:
            return self._faults.model_copy()

    def set_faults(self, faults: Faults | None = None, /, **fields: Any) -> Faults:
        """Replace the faults: ``set_faults(error_next=2)`` or ``set_faults(Faults(...))``."""
        new = faults.model_copy(update=fields) if faults is not None else Faults(**fields)
        new = Faults.model_validate(new.model_dump())
        with self._lock:
            self._faults = new
            self._rng = random.Random(new.seed)
        return new

    def clear_faults(self) -> None:
        self.set_faults()

    @property
    def requests(self) -> list[RequestRecord]:
        """The request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ----------------------------------------------------------------- handling

    def _handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> _Reply:
        path = target.split("?", 1)[0]
        if path.startswith(ADMIN_PREFIX):
            reply = self._handle_admin(method, path, headers, body)
            self._log(RequestRecord(method, path, None, count=None, status=reply.status))
            return reply
        last_seq: int | None = None
        count: int | None = None
        request_error: str | None = None
        if path == SYNC_PATH:
            last_seq, count, request_error = _parse_sync_body(body)
        with self._lock:
            fired = self._decide_faults(path)
            reply = self._answer(method, path, headers, fired, last_seq, count, request_error)
            if path == SYNC_PATH and self._late:
                self._tick_late()
            names = tuple(name for name in (*_FAULT_KINDS, "overlap") if name in fired)
            self._requests.append(
                RequestRecord(method, path, last_seq, count, None if reply.drop else reply.status, names)
            )
        return reply

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _decide_faults(self, path: str) -> dict[str, Any]:
        """Which faults fire on this request (caller holds the lock); consumes ``*_next``."""
        f = self._faults
        if not f.is_active():
            return {}
        if path not in (SYNC_PATH, CONVERSATIONS_PATH):
            return {}
        if (f.scope == "sync" and path != SYNC_PATH) or (f.scope == "conversations" and path != CONVERSATIONS_PATH):
            return {}
        fired: dict[str, Any] = {}
        for kind in _FAULT_KINDS:
            left: int = getattr(f, f"{kind}_next")
            if left > 0:
                setattr(f, f"{kind}_next", left - 1)
                fired[kind] = True
            else:
                rate: float = getattr(f, f"{kind}_rate")
                if rate > 0.0 and self._rng.random() < rate:
                    fired[kind] = True
        if f.overlap and path == SYNC_PATH:
            fired["overlap"] = f.overlap
        return fired

    def _answer(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        fired: dict[str, Any],
        last_seq: int | None,
        count: int | None,
        request_error: str | None,
    ) -> _Reply:
        """Build the reply (caller holds the lock)."""
        f = self._faults
        if path == SYNC_PATH:
            allowed = b"POST"
        elif path == CONVERSATIONS_PATH:
            allowed = b"GET"
        else:
            return _json_reply(404, {"code": 404, "message": f"no such path: {path}"})
        if method.encode() != allowed:
            reply = _json_reply(405, {"code": 405, "message": f"{path} takes {allowed.decode()}"})
            reply.headers.append((b"allow", allowed))
            return reply
        if "error" in fired:
            reply = _json_reply(f.error_status, {"code": f.error_status, "message": "injected error"})
        elif "rate_limit" in fired:
            reply = _json_reply(429, {"code": 429, "message": "too many requests (injected)"})
            if f.retry_after is not None:
                reply.headers.append((b"retry-after", f.retry_after.encode()))
        elif not self._authorized(headers):
            reply = _json_reply(401, {"code": 401, "message": "invalid or missing bearer token"})
        elif request_error is not None:
            reply = _json_reply(400, {"code": 400, "message": request_error})
        elif "code_error" in fired:
            reply = _json_reply(200, {"code": f.code_error_code, "message": f.code_error_message, "data": None})
        elif path == SYNC_PATH:
            assert last_seq is not None and count is not None
            invalid = f.invalid_kind if "invalid" in fired else None
            reply = _Reply(200, self._sync_body(last_seq, count, fired.get("overlap", 0), invalid))
        else:
            invalid = "bad_shape" if "invalid" in fired else None
            reply = _Reply(200, self._conversations_body(invalid))
        if "truncate" in fired and reply.status == 200:
            reply.body = reply.body[: max(1, len(reply.body) // 2)]
        reply.delay = f.latency + (f.slow_seconds if "slow" in fired else 0.0)
        if "drop" in fired:
            reply.drop = f.drop_mode
        return reply

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        expected = b"Bearer " + self.token.encode()
        return any(name == b"authorization" and value == expected for name, value in headers)

    def _sync_body(self, last_seq: int, count: int, overlap: int, invalid: InvalidKind | None) -> bytes:
        seqs = self._seqs
        n = len(seqs)
        i = bisect_right(seqs, last_seq)
        start = max(0, i - overlap)
        end = min(n, start + min(count, self.max_page_size))
        blobs = self._blobs(seqs[start:end])
        max_seq = seqs[-1] if n else 0
        has_more = end < n
        total = n - i
        if invalid is not None:
            if invalid == "bad_shape":
                return orjson.dumps({"code": 0, "message": "success", "data": {"items": []}})
            blobs, max_seq, has_more = self._break_page(blobs, invalid, max_seq, has_more)
        return b"".join(
            (
                b'{"code":0,"message":"success","data":{"messages":[',
                b",".join(blobs),
                b'],"maxSeq":%d,"hasMore":%s,"totalCount":%d}}' % (max_seq, b"true" if has_more else b"false", total),
            )
        )

    def _break_page(
        self, blobs: list[bytes], invalid: InvalidKind, max_seq: int, has_more: bool
    ) -> tuple[list[bytes], int, bool]:
        """Make a page break one protocol rule (some rules need messages in the page)."""
        messages = [orjson.loads(blob) for blob in blobs]
        if invalid == "has_more_empty":
            return [], max_seq, True
        if invalid == "descending" and len(messages) >= 2:
            messages[-1], messages[-2] = messages[-2], messages[-1]
        elif invalid == "duplicate_ids" and len(messages) >= 2:
            messages[1]["messageID"] = messages[0]["messageID"]
        elif invalid == "seq_above_max" and messages:
            max_seq = messages[-1]["seq"] - 1
        elif invalid == "too_many":
            last = messages[-1]["seq"] if messages else self._start_seq - 1
            messages.append(orjson.loads(self._generated(last + 1)))
        return [orjson.dumps(m) for m in messages], max_seq, has_more

    def _conversations_body(self, invalid: str | None) -> bytes:
        if invalid is not None:
            return orjson.dumps({"code": 0, "message": "success", "data": {"conversations": "?"}})
        data = {"conversations": list(self._conversations.values())}
        return orjson.dumps({"code": 0, "message": "success", "data": data})

    def _handle_admin(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> _Reply:
        if not self._authorized(headers):
            return _json_reply(401, {"code": 401, "message": "invalid or missing bearer token"})
        try:
            if path == "/_admin/faults":
                if method == "GET":
                    return _json_reply(200, self.faults.model_dump())
                if method == "DELETE":
                    self.clear_faults()
                    return _json_reply(200, self.faults.model_dump())
                if method == "POST":
                    faults = self.set_faults(Faults.model_validate_json(body or b"{}"))
                    return _json_reply(200, faults.model_dump())
                if method == "PATCH":
                    update = orjson.loads(body or b"{}")
                    faults = self.set_faults(Faults.model_validate({**self.faults.model_dump(), **update}))
                    return _json_reply(200, faults.model_dump())
            elif path == "/_admin/requests":
                if method == "GET":
                    return _json_reply(200, {"requests": [_record_json(r) for r in self.requests]})
                if method == "DELETE":
                    self.reset_requests()
                    return _json_reply(200, {"requests": []})
            elif path == "/_admin/append" and method == "POST":
                request = orjson.loads(body or b"{}")
                n, hole_rate = request.get("n", 1), request.get("holeRate")
                if type(n) is not int or n < 0:
                    return _json_reply(400, {"code": 400, "message": "n must be an int >= 0"})
                seqs = self.append(n, hole_rate=hole_rate, late_rate=request.get("lateRate"))
                return _json_reply(200, {"appended": len(seqs), "maxSeq": self.max_seq})
            elif path == "/_admin/release" and method == "POST":
                request = orjson.loads(body or b"{}") if body else {}
                to_release = request.get("seqs")
                if to_release is not None and (
                    not isinstance(to_release, list) or not all(type(x) is int for x in to_release)
                ):
                    return _json_reply(400, {"code": 400, "message": "seqs must be a list of ints"})
                released = self.release_late(to_release)
                return _json_reply(200, {"released": released, "late": len(self.late_seqs())})
            elif path == "/_admin/state" and method == "GET":
                return _json_reply(
                    200,
                    {
                        "messages": self.message_count,
                        "maxSeq": self.max_seq,
                        "conversations": len(self.conversations),
                        # late mode only: how many messages are allocated but not visible yet
                        **({"late": len(self.late_seqs())} if self.late_rate or self._late else {}),
                    },
                )
            else:
                return _json_reply(404, {"code": 404, "message": f"no such admin path: {path}"})
        except ValidationError as exc:
            return _json_reply(422, {"code": 422, "message": str(exc)})
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            return _json_reply(400, {"code": 400, "message": f"bad request: {exc}"})
        return _json_reply(405, {"code": 405, "message": f"{method} not allowed on {path}"})


def _parse_sync_body(body: bytes) -> tuple[int | None, int | None, str | None]:
    """``(lastSeq, count, error)`` from a sync request body; error is None when valid."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, "request body is not JSON"
    if not isinstance(doc, dict):
        return None, None, "request body is not a JSON object"
    last_seq, count = doc.get("lastSeq"), doc.get("count")
    seq_ok = type(last_seq) is int and 0 <= last_seq <= SEQ_MAX
    count_ok = type(count) is int and count >= 1
    if not seq_ok:
        return None, count if count_ok else None, f"lastSeq must be an int in [0, 2^63-1], got {last_seq!r}"
    if not count_ok:
        return last_seq, None, f"count must be an int >= 1, got {count!r}"
    return last_seq, count, None


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _json_reply(status: int, doc: Any) -> _Reply:
    return _Reply(status, orjson.dumps(doc))


def _record_json(record: RequestRecord) -> dict[str, Any]:
    return {
        "method": record.method,
        "path": record.path,
        "lastSeq": record.last_seq,
        "count": record.count,
        "status": record.status,
        "faults": list(record.faults),
    }


class _HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: h11 parses, :meth:`SeqServer._handle` answers."""

    def __init__(self, server: SeqServer) -> None:
        self._server = server
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER)
        self._transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # without it a small answer waits ~40 ms for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server._protocols.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._protocols.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._process()
        return None

    def _process(self) -> None:
        while not self._busy and self._transport is not None:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request = event
                self._body.clear()
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > _MAX_BODY:
                    self._fail(413, "request body too large")
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _dispatch(self) -> None:
        request = self._request
        assert request is not None
        self._busy = True
        if self._transport is not None:
            self._transport.pause_reading()
        try:
            reply = self._server._handle(
                request.method.decode("ascii", "replace"),
                request.target.decode("ascii", "replace"),
                list(request.headers),
                bytes(self._body),
            )
        except Exception:
            logger.exception("seq server: error handling %s %r", request.method, request.target)
            reply = _json_reply(500, {"code": 500, "message": "internal error"})
        if reply.delay > 0:
            self._timer = asyncio.get_running_loop().call_later(reply.delay, self._send, reply)
        else:
            self._send(reply)

    def _send(self, reply: _Reply) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if reply.drop == "before":
            transport.close()
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(reply.body)).encode()),
            *reply.headers,
        ]
        head = self._conn.send(h11.Response(status_code=reply.status, headers=headers, reason=_reason(reply.status)))
        if reply.drop == "mid":
            transport.write(head or b"")
            transport.write(reply.body[: len(reply.body) // 2])
            transport.close()
            return
        chunks = self._conn.send_with_data_passthrough(h11.Data(data=reply.body)) or []
        transport.writelines([head or b"", *chunks])
        transport.write(self._conn.send(h11.EndOfMessage()) or b"")
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            transport.close()
            return
        try:
            self._conn.start_next_cycle()
        except h11.LocalProtocolError:
            transport.close()
            return
        self._busy = False
        transport.resume_reading()
        self._process()

    def _fail(self, status: int, message: str) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = orjson.dumps({"code": status, "message": message})
            try:
                transport.write(
                    self._conn.send(
                        h11.Response(
                            status_code=status,
                            headers=[
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"),
                            ],
                        )
                    )
                    or b""
                )
                transport.write(body)
            except h11.LocalProtocolError:
                pass
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a seq server in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m syncflow.testing.seqserver", description="Run a reference seq-protocol server."
    )
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--messages", type=int, default=10_000, help="generated messages")
    parser.add_argument("--conversations", type=int, default=5, help="generated conversations")
    parser.add_argument("--token", required=True, help="the bearer token clients must send")
    parser.add_argument("--start-seq", type=int, default=1, help="seq of the first message")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated content")
    parser.add_argument("--hole-rate", type=float, default=0.0, help="probability of a seq hole")
    parser.add_argument("--max-page-size", type=int, default=10_000, help="cap on a page's size")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument(
        "--late-rate",
        type=float,
        default=0.0,
        help="late mode: probability that a message's seq is allocated but the message is served "
        "only later (after --late-reads sync requests, or POST /_admin/release)",
    )
    parser.add_argument(
        "--late-reads", type=int, default=0, help="sync requests before a late message shows (0: only on release)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = SeqServer(
            messages=args.messages,
            conversations=args.conversations,
            token=args.token,
            start_seq=args.start_seq,
            seed=args.seed,
            hole_rate=args.hole_rate,
            port=args.port,
            max_page_size=args.max_page_size,
            late_rate=args.late_rate,
            late_reads=args.late_reads,
        )
        if args.latency:
            server.set_faults(latency=args.latency)
        server.start()
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"seqserver: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"seqserver: {server.message_count} messages (max seq {server.max_seq}) in "
        f"{len(server.conversations)} conversations at {server.url}"
        + (f", {len(server.late_seqs())} late" if server.late_seqs() else "")
        + " "
        f"(admin: {server.url}{ADMIN_PREFIX}faults); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(1.0):
        pass
    server.stop()
    print("seqserver: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
