"""Each block's retry/page policy is read from its own fields (ReadPolicy.of)."""

from __future__ import annotations

from blocks.database import DatabaseInstance
from blocks.seq_http import SeqHttpInstance
from blocks.telegram import TelegramAccountBlock
from syncflow.sources.base import ReadPolicy

RETRIES = {"max_retries": 7, "base_delay": 0.25, "backoff_multiplier": 3.0, "max_delay": 9.0, "jitter": 0.1}


def test_seq_block_policy_carries_every_field() -> None:
    block = SeqHttpInstance(base_url="http://127.0.0.1:1", token="t", batch_size=123, **RETRIES)
    assert block.read_policy() == ReadPolicy(batch_size=123, **RETRIES)
    assert block.read_policy().delays() == [0.25, 0.75, 2.25, 6.75, 9.0, 9.0, 9.0]


def test_telegram_block_policy_carries_every_field() -> None:
    block = TelegramAccountBlock(api_id=1, api_hash="0" * 32, session="s", batch_size=200, **RETRIES)
    assert block.read_policy() == ReadPolicy(batch_size=200, **RETRIES)


def test_database_block_has_no_page_size() -> None:
    block = DatabaseInstance(kind="postgres", host="127.0.0.1", user="u", **RETRIES)
    assert block.read_policy() == ReadPolicy(batch_size=None, **RETRIES)


def test_defaults_stay_when_the_config_lacks_a_field() -> None:
    class Partial:
        max_retries = 1

    assert ReadPolicy.of(Partial()) == ReadPolicy(max_retries=1)
