"""A seq-protocol server that is not the bottleneck: every page is serialised before it is asked for.

    python -m bench.fastseq --port 0 --messages 1000000 --token T --page-size 500 [--latency 0.05]

The project's reference server (``syncflow.testing.seqserver``) formats each message when a page is
served and parses HTTP with h11: it caps any client at ~40k msg/s, so a baseline read from it
measures the server, not the pipeline. This one, in its own process:

- generates the same messages as the reference server (same template, same splitmix64 content
  from the seed, seqs ``1..N`` without holes) once, at start, and keeps them as one bytes object
  per page of the batch grid (``lastSeq = k * page_size``, ``count = page_size``);
- answers a request on the grid with a pre-built header + that page + a ~60-byte footer
  (``maxSeq``/``hasMore``/``totalCount``, which change when messages are appended); a count that
  is a multiple of the page size, on the grid, joins whole pages; anything else (a cursor between
  pages, another count) is formatted on the fly, correct but slower;
- ``--latency S`` delays every sync answer by S seconds (a remote source's round trip);
- parses HTTP/1.1 itself (request line, headers, Content-Length body, keep-alive): no h11;
- ``POST /_admin/append {"n": k}`` appends k messages (the last partial page and the new pages
  are rebuilt), ``GET /_admin/state`` gives ``{"messages", "maxSeq", "conversations",
  "requests"}``; ``GET /api/v1/conversations`` serves the metadata endpoint.

Only 127.0.0.1. :func:`measure_rate` is the tight client the benchmark uses to print the
server's own rate (httpx, every page read, only the cursor parsed, nothing stored).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
from typing import Any, Final

import orjson

SYNC_PATH: Final = b"/api/v1/messages/sync"
CONVERSATIONS_PATH: Final = b"/api/v1/conversations"
BASE_TIME_MS: Final = 1_700_000_000_000
_MASK64: Final = (1 << 64) - 1
_MAX_BODY: Final = 1 << 20
_MAX_HEAD: Final = 64 * 1024

# The reference server's message shape and content (syncflow.testing.seqserver), byte for byte.
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
_PREFIX: Final = b'{"code":0,"message":"success","data":{"messages":['
_FOOTER: Final = b'],"maxSeq":%d,"hasMore":%s,"totalCount":%d}}'
_HEAD: Final = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


def _mix64(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Store:
    """Messages with seqs ``1..n`` (contiguous), kept as pre-joined pages of ``page_size``."""

    def __init__(self, *, messages: int, seed: int, page_size: int, conversations: int, max_page: int = 10_000):
        self.page_size = page_size
        self.max_page = max_page
        self.start = 1
        self.key = _mix64(seed & _MASK64)
        self.k = max(conversations, 1)
        self.n = 0
        self.pages: list[bytes] = []
        self.conversations = orjson.dumps(
            {
                "code": 0,
                "message": "success",
                "data": {
                    "conversations": [
                        {
                            "conversationID": f"conv-{i}",
                            "title": f"Conversation {i}",
                            "type": 1 if i % 2 == 0 else 2,
                            "avatarUrl": None if i % 2 == 0 else f"https://example.invalid/avatar/{i}.png",
                        }
                        for i in range(conversations)
                    ]
                },
            }
        )
        self.append(messages)

    def blobs(self, first: int, last: int) -> list[bytes]:
        """JSON of the messages with seqs ``first..last`` (the reference server's generator, inlined)."""
        key, start, k, phrases, template = self.key, self.start, self.k, _PHRASES, _MESSAGE_TEMPLATE
        n_phrases = len(phrases)
        out = []
        for seq in range(first, last + 1):
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

    def append(self, count: int) -> None:
        """Add ``count`` messages; the last partial page and every new page are rebuilt."""
        if count <= 0:
            return
        size = self.page_size
        new_n = self.n + count
        first_page = self.n // size  # the partial page (or the next new one)
        del self.pages[first_page:]
        for p in range(first_page, (new_n + size - 1) // size):
            lo, hi = p * size + 1, min(new_n, (p + 1) * size)
            self.pages.append(b",".join(self.blobs(lo, hi)))
        self.n = new_n

    def sync_body(self, last_seq: int, count: int) -> list[bytes]:
        """The answer to ``{lastSeq, count}`` as buffers (prefix, messages, footer)."""
        n = self.n
        i = min(max(last_seq - self.start + 1, 0), n)  # messages at or below last_seq
        size = self.page_size
        if count == size and i % size == 0:
            messages = self.pages[i // size] if i < n else b""
            end = min(n, i + size)
        elif count % size == 0 and i % size == 0 and count <= self.max_page:  # whole grid pages, joined
            first = i // size
            chunks = [p for p in self.pages[first : first + count // size] if p]
            messages = b",".join(chunks)
            end = min(n, i + count)
        else:  # off the grid: format now
            end = min(n, i + min(count, self.max_page))
            messages = b",".join(self.blobs(i + 1, end)) if end > i else b""
        footer = _FOOTER % (n, b"true" if end < n else b"false", n - i)
        return [_PREFIX, messages, footer]


class _Http(asyncio.Protocol):
    """One HTTP/1.1 connection, keep-alive; requests are answered in order."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while self.transport is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._reply(431, b'{"code":431,"message":"headers too large"}', close=True)
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            try:
                method, target, _version = lines[0].split(b" ", 2)
            except ValueError:
                self._reply(400, b'{"code":400,"message":"bad request line"}', close=True)
                return
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                self._reply(411, b'{"code":411,"message":"send a Content-Length"}', close=True)
                return
            length = int(headers.get(b"content-length", b"0") or 0)
            if length > _MAX_BODY:
                self._reply(413, b'{"code":413,"message":"body too large"}', close=True)
                return
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            close = headers.get(b"connection", b"").lower() == b"close"
            status, parts = self.app.handle(method, target, headers, body)
            if self.app.latency > 0 and target.split(b"?", 1)[0] == SYNC_PATH:  # a remote source's round trip
                # clients do not pipeline: the next request on this connection waits for this answer
                asyncio.get_running_loop().call_later(self.app.latency, self._reply, status, parts, close)
            else:
                self._reply(status, parts, close=close)

    def _reply(self, status: int, body: bytes | list[bytes], close: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        parts = [body] if isinstance(body, bytes) else body
        size = sum(len(p) for p in parts)
        transport.writelines([_HEAD % (status, _REASONS.get(status, b"Error"), size), *parts])
        if close:
            transport.close()
            self.transport = None


_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
}


class App:
    def __init__(self, store: Store, token: str, *, latency: float = 0.0) -> None:
        self.store = store
        self.auth = b"Bearer " + token.encode()
        self.requests = 0
        self.latency = latency  # seconds added before every sync answer (--latency)

    def handle(self, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[int, Any]:
        path = target.split(b"?", 1)[0]
        if headers.get(b"authorization") != self.auth:
            return 401, b'{"code":401,"message":"invalid or missing bearer token"}'
        if path == SYNC_PATH and method == b"POST":
            self.requests += 1
            try:
                doc = orjson.loads(body)
                last_seq, count = doc["lastSeq"], doc["count"]
                if type(last_seq) is not int or type(count) is not int or last_seq < 0 or count < 1:
                    raise ValueError
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return 400, b'{"code":400,"message":"body must be {lastSeq: int >= 0, count: int >= 1}"}'
            return 200, self.store.sync_body(last_seq, count)
        if path == CONVERSATIONS_PATH and method == b"GET":
            return 200, self.store.conversations
        if path == b"/_admin/state" and method == b"GET":
            s = self.store
            return 200, orjson.dumps({"messages": s.n, "maxSeq": s.n, "conversations": s.k, "requests": self.requests})
        if path == b"/_admin/append" and method == b"POST":
            n = orjson.loads(body or b"{}").get("n", 1)
            if type(n) is not int or n < 0:
                return 400, b'{"code":400,"message":"n must be an int >= 0"}'
            self.store.append(n)
            return 200, orjson.dumps({"appended": n, "maxSeq": self.store.n})
        return 404, b'{"code":404,"message":"no such path"}'


async def serve(app: App, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(app), "127.0.0.1", port, backlog=128)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fastseq: {app.store.n} messages at http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def measure_rate(base_url: str, token: str, *, page_size: int = 500) -> dict[str, float]:
    """The server's own rate: a tight httpx client reads every page from seq 0 (the cursor is
    parsed from the footer and the last ``"seq":``; nothing decoded, nothing stored)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    last, messages, pages, nbytes = 0, 0, 0, 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
        start = time.perf_counter()
        while True:
            body = b'{"lastSeq":%d,"count":%d,"timestamp":0}' % (last, page_size)
            content = http.post("/api/v1/messages/sync", content=body).content
            pages += 1
            nbytes += len(content)
            tail = content[-120:]
            has_more = b'"hasMore":true' in tail
            at = content.rfind(b'"seq":')
            if at < 0:
                break
            new_last = int(content[at + 6 : content.index(b",", at)])
            messages += new_last - last
            last = new_last
            if not has_more:
                break
        seconds = time.perf_counter() - start
    return {"messages": messages, "pages": pages, "bytes": nbytes, "seconds": seconds, "msgs_per_s": messages / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fastseq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=500, help="the batch grid pages are pre-built on")
    parser.add_argument("--conversations", type=int, default=5)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added before every sync answer (a remote source)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    store = Store(messages=args.messages, seed=args.seed, page_size=args.page_size, conversations=args.conversations)
    print(f"fastseq: {store.n} messages pre-serialised in {time.perf_counter() - started:.2f}s", flush=True)
    asyncio.run(serve(App(store, args.token, latency=args.latency), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
