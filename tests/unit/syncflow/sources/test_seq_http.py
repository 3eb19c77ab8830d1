"""SeqHttpClient against httpx.MockTransport: request shape, error classes, page rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest

from syncflow.errors import (
    AuthError,
    ConfigError,
    PermanentSyncError,
    ProtocolError,
    RateLimitedError,
    SyncError,
    TransientSyncError,
)
from syncflow.sources.http_seq import (
    MESSAGE_COLUMNS,
    SEQ_MAX,
    Conversation,
    Message,
    Page,
    SeqHttpClient,
    decode_page,
    parse_retry_after,
    validate_page,
)

BASE = "http://seq.test"
TOKEN = "s3cret"

Handler = Callable[[httpx.Request], httpx.Response]


def wire_message(seq: int, /, **override: Any) -> dict[str, Any]:
    message = {
        "messageID": f"msg-{seq}",
        "serverMsgID": f"srv-{seq}",
        "seq": seq,
        "conversationID": "conv-1",
        "senderID": "user-1",
        "messageType": 1,
        "content": f"hello {seq} 你好",
        "createTime": 1_700_000_000_000 + seq % 1_000_000,
        "serverTime": 1_700_000_000_500 + seq % 1_000_000,
    }
    message.update(override)
    return message


def sync_body(
    messages: list[dict[str, Any]],
    *,
    max_seq: int | None = None,
    has_more: bool = False,
    total: int | None = None,
    code: int = 0,
) -> dict[str, Any]:
    if max_seq is None:
        max_seq = max((m["seq"] for m in messages), default=0)
    return {
        "code": code,
        "message": "success",
        "data": {
            "messages": messages,
            "maxSeq": max_seq,
            "hasMore": has_more,
            "totalCount": len(messages) if total is None else total,
        },
    }


def answer(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    content = orjson.dumps(doc)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return handler


def raw_answer(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return handler


def client(handler: Handler, **kwargs: Any) -> SeqHttpClient:
    return SeqHttpClient(BASE, TOKEN, instance="im-test", transport=httpx.MockTransport(handler), **kwargs)


def fetch(handler: Handler, last_seq: int = 100, count: int = 500) -> Page:
    with client(handler) as c:
        return c.fetch_page(last_seq, count)


# --------------------------------------------------------------------- the request


def test_fetch_page_sends_the_protocol_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=orjson.dumps(sync_body([])))

    before = time.time() * 1000
    fetch(handler, last_seq=1000, count=250)
    after = time.time() * 1000

    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/api/v1/messages/sync"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.content)
    assert set(body) == {"lastSeq", "count", "timestamp"}
    assert body["lastSeq"] == 1000
    assert body["count"] == 250
    assert before - 1 <= body["timestamp"] <= after + 1


def test_base_url_with_a_path_prefix_is_kept() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=orjson.dumps(sync_body([])))

    with SeqHttpClient("http://seq.test/im/", TOKEN, transport=httpx.MockTransport(handler)) as c:
        c.fetch_page(0, 10)
    assert seen == ["http://seq.test/im/api/v1/messages/sync"]


def test_fetch_conversations_sends_get_with_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=orjson.dumps({"code": 0, "data": {"conversations": []}}))

    with client(handler) as c:
        assert c.fetch_conversations() == []
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/api/v1/conversations"
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("last_seq", "count"),
    [(-1, 10), (SEQ_MAX + 1, 10), (0, 0), (0, -5), (True, 10), (0, 1.5)],
)
def test_bad_request_parameters_raise_config_error_without_a_request(last_seq: Any, count: Any) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=orjson.dumps(sync_body([])))

    with client(handler) as c, pytest.raises(ConfigError):
        c.fetch_page(last_seq, count)
    assert calls == []


def test_client_rejects_empty_token_and_bad_timeout() -> None:
    with pytest.raises(ConfigError):
        SeqHttpClient(BASE, "")
    with pytest.raises(ConfigError):
        SeqHttpClient(BASE, TOKEN, timeout=0)


def test_context_manager_closes_the_http_client() -> None:
    with client(answer(sync_body([]))) as c:
        pass
    with pytest.raises(RuntimeError):
        c.fetch_page(0, 10)


def test_repr_does_not_leak_the_token() -> None:
    with client(answer(sync_body([]))) as c:
        assert TOKEN not in repr(c)
        assert "im-test" in repr(c)


# ------------------------------------------------------------------- a good page


def test_page_rows_are_tuples_in_column_order() -> None:
    messages = [wire_message(s) for s in (101, 102, 105)]
    page = fetch(answer(sync_body(messages, max_seq=900, has_more=True, total=800)))

    assert page.max_seq == 900
    assert page.has_more is True
    assert page.total_count == 800
    assert len(page) == 3
    assert page.seqs == [101, 102, 105]
    assert page.rows[0] == tuple(
        wire_message(101)[k]
        for k in (
            "messageID",
            "serverMsgID",
            "seq",
            "conversationID",
            "senderID",
            "messageType",
            "content",
            "createTime",
            "serverTime",
        )
    )
    assert MESSAGE_COLUMNS[2] == "seq"
    assert page.cursor_after(100) == 105


def test_page_messages_are_models_with_snake_case_attributes() -> None:
    page = fetch(answer(sync_body([wire_message(101)])))
    (message,) = page.messages
    assert isinstance(message, Message)
    assert message.message_id == "msg-101"
    assert message.server_msg_id == "srv-101"
    assert message.conversation_id == "conv-1"
    assert message.create_time == 1_700_000_000_101
    assert message.model_dump(by_alias=True) == wire_message(101)


def test_server_msg_id_may_be_missing_or_null() -> None:
    missing = wire_message(101)
    del missing["serverMsgID"]
    page = fetch(answer(sync_body([missing, wire_message(102, serverMsgID=None)])))
    assert [row[1] for row in page.rows] == [None, None]


def test_unknown_fields_are_ignored() -> None:
    doc = sync_body([wire_message(101, extra="x")])
    doc["data"]["cursor"] = "abc"
    doc["traceId"] = "t-1"
    assert fetch(answer(doc)).seqs == [101]


def test_nbytes_and_bytes_received_count_the_response() -> None:
    content = orjson.dumps(sync_body([wire_message(101), wire_message(102)]))
    with client(raw_answer(content)) as c:
        page = c.fetch_page(100, 10)
        c.fetch_page(100, 10)
        assert page.nbytes == len(content)
        assert c.bytes_received == 2 * len(content)
        assert c.requests_sent == 2


def test_seqs_up_to_int64_max_round_trip() -> None:
    top = SEQ_MAX
    messages = [wire_message(s) for s in range(top - 4, top + 1)]
    page = fetch(answer(sync_body(messages, max_seq=top)), last_seq=top - 5, count=5)
    assert page.seqs == list(range(top - 4, top + 1))
    assert page.max_seq == top
    assert page.cursor_after(top - 5) == top


@pytest.mark.parametrize("max_seq", [SEQ_MAX, SEQ_MAX + 1])
def test_seq_above_int64_is_a_protocol_error(max_seq: int) -> None:
    doc = sync_body([wire_message(SEQ_MAX + 1)], max_seq=max_seq)
    with pytest.raises(ProtocolError, match=r"data\.messages\.0\.seq: Input should be less than or equal"):
        fetch(answer(doc), last_seq=SEQ_MAX - 5)


def test_int64_seq_sent_as_a_string_is_accepted() -> None:
    # protobuf's JSON mapping writes int64 as strings
    doc = sync_body([wire_message(101, seq="101")], max_seq=101)
    doc["data"]["maxSeq"] = "101"
    assert fetch(answer(doc)).seqs == [101]


def test_seq_beyond_64_bits_is_a_protocol_error_not_invalid_json() -> None:
    content = orjson.dumps(sync_body([wire_message(101)])).replace(b'"seq":101', b'"seq":18446744073709551617')
    with pytest.raises(ProtocolError, match="seq"):
        fetch(raw_answer(content))


def test_lax_values_decode_to_the_same_rows_as_canonical_ones() -> None:
    canonical = sync_body([wire_message(101), wire_message(102)], max_seq=300, has_more=True, total=200)
    lax = sync_body(
        [wire_message(101, seq="101", createTime=float(wire_message(101)["createTime"])), wire_message(102)],
        max_seq=300,
        has_more=True,
        total=200,
    )
    lax["code"] = 0.0
    lax["data"]["totalCount"] = "200"
    assert fetch(answer(lax)).rows == fetch(answer(canonical)).rows
    assert fetch(answer(lax)).total_count == 200


def test_empty_page_without_more_is_the_end() -> None:
    page = fetch(answer(sync_body([], max_seq=100)))
    assert len(page) == 0
    assert page.has_more is False
    assert page.cursor_after(100) == 100


# ----------------------------------------------------------------- HTTP statuses


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_are_auth_errors(status: int) -> None:
    with pytest.raises(AuthError) as info:
        fetch(answer({"code": status, "message": "token expired"}, status=status))
    assert not info.value.retryable
    assert isinstance(info.value, PermanentSyncError)
    assert "im-test" in str(info.value)
    assert str(status) in str(info.value)
    assert "token expired" in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_5xx_are_transient(status: int) -> None:
    with pytest.raises(TransientSyncError) as info:
        fetch(answer({"code": status}, status=status))
    assert type(info.value) is TransientSyncError
    assert info.value.retryable
    assert f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize("status", [400, 404, 405, 409, 410, 422])
def test_other_4xx_are_permanent(status: int) -> None:
    with pytest.raises(PermanentSyncError) as info:
        fetch(answer({"code": status}, status=status))
    assert type(info.value) is PermanentSyncError
    assert not info.value.retryable


def test_redirect_is_permanent_and_names_the_target() -> None:
    handler = raw_answer(b"", status=302, headers={"Location": "http://elsewhere/login"})
    with pytest.raises(PermanentSyncError, match="elsewhere/login"):
        fetch(handler)


def test_429_with_numeric_retry_after() -> None:
    with pytest.raises(RateLimitedError) as info:
        fetch(answer({"code": 429}, status=429, headers={"Retry-After": "7"}))
    assert info.value.retry_after == 7.0
    assert info.value.retryable
    assert isinstance(info.value, TransientSyncError)
    assert "7s" in str(info.value)


def test_429_with_http_date_retry_after() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    headers = {"Retry-After": format_datetime(when, usegmt=True)}
    with pytest.raises(RateLimitedError) as info:
        fetch(answer({"code": 429}, status=429, headers=headers))
    assert info.value.retry_after is not None
    assert 110 <= info.value.retry_after <= 121


def test_429_without_retry_after() -> None:
    with pytest.raises(RateLimitedError) as info:
        fetch(answer({"code": 429}, status=429))
    assert info.value.retry_after is None


NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Sun, 22 Nov 2026 12:00:30 GMT", 30.0),
        ("Sunday, 22-Nov-26 12:01:00 GMT", 60.0),
        ("Sun Nov 22 12:00:05 2026", 5.0),
        ("Sun, 22 Nov 2026 11:00:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


# ------------------------------------------------------------- transport errors


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.WriteError("broken pipe"),
        httpx.PoolTimeout("pool timeout"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_are_transient_and_name_the_request(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(TransientSyncError) as info:
        fetch(handler, last_seq=4242, count=321)
    message = str(info.value)
    assert type(info.value) is TransientSyncError
    assert "im-test" in message
    assert "lastSeq=4242" in message
    assert "count=321" in message
    assert info.value.__cause__ is exc


def test_unsupported_url_scheme_is_permanent() -> None:
    with SeqHttpClient("ftp://seq.test", TOKEN) as c, pytest.raises(PermanentSyncError):
        c.fetch_page(0, 10)


# --------------------------------------------------------------------- bad bodies


def test_truncated_json_is_transient() -> None:
    content = orjson.dumps(sync_body([wire_message(s) for s in range(101, 151)]))
    with pytest.raises(TransientSyncError, match="truncated JSON") as info:
        fetch(raw_answer(content[: len(content) // 2]))
    assert type(info.value) is TransientSyncError
    assert "lastSeq=100" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"<html>Bad Gateway</html>", b"{'code': 0}"])
def test_invalid_json_is_transient(content: bytes) -> None:
    with pytest.raises(TransientSyncError):
        fetch(raw_answer(content))


def test_code_not_zero_is_a_protocol_error_with_the_server_message() -> None:
    doc = {"code": 10001, "message": "database busy", "data": None}
    with pytest.raises(ProtocolError) as info:
        fetch(answer(doc))
    assert "code=10001" in str(info.value)
    assert "database busy" in str(info.value)
    assert "im-test" in str(info.value)


def test_code_not_zero_with_a_well_formed_page_is_still_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="code=3"):
        fetch(answer(sync_body([wire_message(101)], code=3)))


def test_code_not_zero_with_garbage_data_reports_the_code() -> None:
    doc = {"code": 7, "message": "no such user", "data": "nope"}
    with pytest.raises(ProtocolError, match="code=7: no such user"):
        fetch(answer(doc))


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "(root)"),
        ({"message": "success"}, "code"),
        ({"code": 0, "message": "success"}, "no data"),
        ({"code": 0, "data": {"items": []}}, "data.messages"),
        ({"code": 0, "data": {**sync_body([])["data"], "messages": "x"}}, "data.messages"),
        (sync_body([{k: v for k, v in wire_message(101).items() if k != "seq"}], max_seq=101), "seq"),
        (sync_body([wire_message(101, seq=-1)], max_seq=101), "seq"),
        (sync_body([wire_message(101, seq=1.5)], max_seq=101), "seq"),
        (sync_body([wire_message(101, messageID=101)]), "messageID"),
        (sync_body([wire_message(101, content=None)]), "content"),
        (sync_body([wire_message(101, messageType="text")]), "messageType"),
        (sync_body([wire_message(101, createTime=2**63)]), "createTime"),
        ({"code": 0, "data": {**sync_body([])["data"], "hasMore": "maybe"}}, "hasMore"),
        ({"code": 0, "data": {**sync_body([])["data"], "totalCount": -1}}, "totalCount"),
    ],
)
def test_valid_json_of_the_wrong_shape_is_a_protocol_error(doc: Any, where: str) -> None:
    with pytest.raises(ProtocolError) as info:
        fetch(answer(doc))
    assert where in str(info.value)
    assert "lastSeq=100" in str(info.value)


# ---------------------------------------------------------------- page validation


def test_more_messages_than_count_is_a_protocol_error() -> None:
    messages = [wire_message(s) for s in range(101, 112)]
    with pytest.raises(ProtocolError, match="11 messages, more than the 10 asked for"):
        fetch(answer(sync_body(messages)), count=10)


def test_descending_seq_is_a_protocol_error() -> None:
    messages = [wire_message(s) for s in (101, 103, 102)]
    with pytest.raises(ProtocolError, match=r"seq 102 at index 2 is below seq 103 at index 1"):
        fetch(answer(sync_body(messages, max_seq=103)))


def test_repeated_seq_is_a_protocol_error() -> None:
    messages = [wire_message(101), wire_message(102), wire_message(102, messageID="other")]
    with pytest.raises(ProtocolError, match=r"seq 102 at index 2 repeats"):
        fetch(answer(sync_body(messages)))


def test_duplicate_message_id_is_a_protocol_error() -> None:
    messages = [wire_message(101), wire_message(102), wire_message(103, messageID="msg-101")]
    with pytest.raises(ProtocolError, match=r"duplicate messageID 'msg-101' at index 0 and 2"):
        fetch(answer(sync_body(messages)))


def test_seq_above_max_seq_is_a_protocol_error() -> None:
    messages = [wire_message(s) for s in (101, 102)]
    with pytest.raises(ProtocolError, match=r"seq 102 .* above maxSeq=101"):
        fetch(answer(sync_body(messages, max_seq=101)))


def test_has_more_with_an_empty_page_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"hasMore=true.*empty page"):
        fetch(answer(sync_body([], max_seq=500, has_more=True)))


def test_has_more_with_only_old_messages_is_a_protocol_error() -> None:
    messages = [wire_message(s) for s in (98, 99, 100)]
    with pytest.raises(ProtocolError, match=r"hasMore=true.*highest seq 100 <= lastSeq"):
        fetch(answer(sync_body(messages, max_seq=500, has_more=True)), last_seq=100)


def test_messages_at_or_below_last_seq_are_tolerated() -> None:
    messages = [wire_message(s) for s in (98, 99, 100, 101, 102)]
    page = fetch(answer(sync_body(messages, max_seq=500, has_more=True)), last_seq=100)
    assert page.seqs == [98, 99, 100, 101, 102]
    assert page.cursor_after(100) == 102


def test_only_old_messages_without_more_are_tolerated() -> None:
    page = fetch(answer(sync_body([wire_message(99), wire_message(100)])), last_seq=100)
    assert page.cursor_after(100) == 100


def test_validation_errors_name_instance_and_request() -> None:
    messages = [wire_message(s) for s in (102, 101)]
    with pytest.raises(ProtocolError) as info:
        fetch(answer(sync_body(messages, max_seq=102)), last_seq=77, count=9)
    message = str(info.value)
    assert message.startswith("im-test: invalid page")
    assert "lastSeq=77" in message
    assert "count=9" in message


def test_validate_page_on_a_hand_built_page() -> None:
    page = Page.model_validate(
        {"messages": [wire_message(5), wire_message(6)], "maxSeq": 6, "hasMore": False, "totalCount": 2}
    )
    validate_page(page, 4, 2, instance="x")
    with pytest.raises(ProtocolError, match="x: invalid page"):
        validate_page(page, 4, 1, instance="x")


def test_page_accepts_models_and_rows() -> None:
    message = Message.model_validate(wire_message(7))
    page = Page(rows=[message, message.to_row()], max_seq=7, has_more=False, total_count=1)
    assert page.rows == [message.to_row(), message.to_row()]
    assert Message.from_row(page.rows[0]) == message


def test_decode_page_is_usable_on_raw_bytes() -> None:
    content = orjson.dumps(sync_body([wire_message(3)], max_seq=9, has_more=True, total=4))
    page = decode_page(content)
    assert (page.seqs, page.max_seq, page.has_more, page.total_count, page.nbytes) == ([3], 9, True, 4, len(content))


# ------------------------------------------------------------------ conversations


def test_conversations_are_parsed_with_nulls() -> None:
    doc = {
        "code": 0,
        "data": {
            "conversations": [
                {"conversationID": "c1", "title": "Team", "type": 2, "avatarUrl": "http://a/1.png"},
                {"conversationID": "c2", "title": None, "type": 1, "avatarUrl": None},
                {"conversationID": "c3", "type": 1},
            ]
        },
    }
    with client(answer(doc)) as c:
        conversations = c.fetch_conversations()
    assert conversations == [
        Conversation(conversation_id="c1", title="Team", type=2, avatar_url="http://a/1.png"),
        Conversation(conversation_id="c2", title=None, type=1, avatar_url=None),
        Conversation(conversation_id="c3", title=None, type=1, avatar_url=None),
    ]


def test_conversation_type_is_kept_as_the_server_sends_it() -> None:
    """Servers differ: a number or a word ("group", "private"); both are descriptive text."""
    body = {
        "code": 0,
        "data": {
            "conversations": [
                {"conversationID": "c1", "title": "Team", "type": "group"},
                {"conversationID": "c2", "type": "private"},
                {"conversationID": "c3", "type": 3},
                {"conversationID": "c4"},
            ]
        },
    }
    with client(answer(body)) as c:
        rows = c.read_snapshot("metadata")
    got = [(r.conversation_id, r.type) for r in rows]
    assert got == [("c1", "group"), ("c2", "private"), ("c3", "3"), ("c4", None)]


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (answer({"code": 0, "data": {"conversations": [{"title": "no id", "type": 1}]}}), ProtocolError),
        (answer({"code": 0, "data": {"conversations": [{"conversationID": "c", "type": [1]}]}}), ProtocolError),
        (answer({"code": 9, "message": "nope"}), ProtocolError),
        (answer({"code": 401}, status=401), AuthError),
        (answer({"code": 503}, status=503), TransientSyncError),
        (raw_answer(b'{"code":0,"data":{"conv'), TransientSyncError),
    ],
)
def test_conversation_errors_are_classified(handler: Handler, error: type[SyncError]) -> None:
    with client(handler) as c, pytest.raises(error) as info:
        c.fetch_conversations()
    assert type(info.value) is error
    assert "im-test: GET /api/v1/conversations" in str(info.value)
