"""Fixtures for flow tests: a reference seq server and instances wired to it through blocks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from blocks.connections import forget_sources
from blocks.seq_http import SeqHttpInstance
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.testing.seqserver import SeqServer

TOKEN = "test-token-not-a-secret"


@pytest.fixture
def seq_server() -> Iterator[SeqServer]:
    server = SeqServer(messages=0, token=TOKEN, conversations=3, seed=7)
    server.start()
    yield server
    server.stop()


class Wiring:
    """Registers http-seq instances pointing at a server and opens sessions over them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, name: str, server: SeqServer, *, token: str = TOKEN, **block: Any) -> str:
        block_name = f"t-{uuid.uuid4().hex[:12]}"
        fields = {"max_retries": 3, "base_delay": 0.05, "max_delay": 1.0, "jitter": 0.0, **block}
        SeqHttpInstance(base_url=server.url, token=token, **fields).save(block_name, overwrite=True)
        with session_scope(self.engine) as s:
            inst_svc.add_instance(s, name=name, kind="http-seq", block_name=block_name)
        return block_name

    def open(self, names: list[str], category: str = "messages", **kw: Any) -> tuple[str, dict[str, int]]:
        with session_scope(self.engine) as s:
            row = book.open_session(s, sync_category=category, instances=names, **kw)
            recs = book.records_in_order(s, session_id=row.session_id)
            return row.session_id, {r.instance_name: r.id for r in recs}


@pytest.fixture
def wiring(prefect_harness: None, store_env: str, engine: Engine) -> Iterator[Wiring]:
    forget_sources()
    yield Wiring(engine)
    forget_sources()
