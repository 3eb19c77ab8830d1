"""Clients of the source kinds syncflow pulls from (one module per kind)."""

from syncflow.sources.http_seq import (
    CONVERSATIONS_PATH,
    MESSAGE_COLUMNS,
    SEQ_MAX,
    SYNC_PATH,
    Conversation,
    Message,
    MessageRow,
    Page,
    SeqHttpClient,
    decode_conversations,
    decode_page,
    parse_retry_after,
    validate_page,
)

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
