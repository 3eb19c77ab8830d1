"""Shared fixtures: a migrated store on SQLite and on a throwaway PostgreSQL database.

Each pytest run creates its own PostgreSQL database (``syncflow_test_<random>``) on the
server named by ``SYNCFLOW_TEST_PG_ADMIN_URL`` (default: the local server) and drops it at
the end, so runs never collide. The server must be reachable: these tests fail, they do not
skip, when it is not.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.engine import make_url

from syncflow.store.db import make_engine
from syncflow.store.migrations import upgrade
from syncflow.store.models import Base

PG_ADMIN_URL = os.environ.get("SYNCFLOW_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgDatabases:
    """Creates throwaway databases on the test server and drops them at the end of the run."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []
        self.run_id = uuid.uuid4().hex[:8]

    def create(self, label: str) -> str:
        name = f"syncflow_test_{self.run_id}_{label}"
        with psycopg.connect(_pg_conninfo(self.admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with psycopg.connect(_pg_conninfo(self.admin_url), autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    try:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}", pytrace=False)
    dbs = PgDatabases(PG_ADMIN_URL)
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def pg_url(pg_databases: PgDatabases) -> str:
    """A migrated PostgreSQL store shared by the run's PostgreSQL store tests."""
    url = pg_databases.create("store")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("store") / "syncflow.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def _wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty store URL on each backend in turn."""
    return request.getfixturevalue(f"{'pg' if request.param == 'postgres' else 'sqlite'}_url")


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """An engine on an empty migrated store (SQLite and PostgreSQL in turn); wiped after."""
    eng = make_engine(store_url)
    _wipe(eng)
    yield eng
    _wipe(eng)
    eng.dispose()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server (temporary SQLite DB) for the whole run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def store_env(store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point SYNCFLOW_DATABASE_URL (what flows and tasks use) at the test store."""
    from syncflow.settings import reset_settings
    from syncflow.store.db import dispose_engines

    monkeypatch.setenv("SYNCFLOW_DATABASE_URL", store_url)
    reset_settings()
    yield store_url
    dispose_engines()
    reset_settings()


@pytest.fixture(scope="session")
def local_prefect(pg_databases: PgDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real ``prefect server start`` on 127.0.0.1 (its own PostgreSQL database), set up
    (``syncflow setup``) and deployed (``prefect deploy --all``), with its own migrated
    PostgreSQL store. Workers are started by the tests that need them
    (``local_prefect.start_worker(name)``) and stopped with the server at the end."""
    from tests.support.prefect_server import BIN, LocalPrefect

    server_db = make_url(pg_databases.create("prefect")).set(drivername="postgresql+asyncpg")
    store = pg_databases.create("deploy")
    eng = make_engine(store)
    upgrade(eng)
    eng.dispose()
    lp = LocalPrefect(tmp_path_factory.mktemp("prefect-home"), server_db.render_as_string(hide_password=False), store)
    try:
        lp.start()
        lp.run([str(BIN / "syncflow"), "setup"])
        lp.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], timeout=300)
        yield lp
    finally:
        lp.stop()
