"""Sessions over database-server instances, through the real parent flow and ``sync-db-instance`` subflows.

Real servers: the local PostgreSQL (``SYNCFLOW_TEST_PG_ADMIN_URL``, default postgres@127.0.0.1:5432)
and MariaDB (``SYNCFLOW_TEST_MYSQL_ADMIN_URL``, default root@127.0.0.1:3306). Each test makes its
own throwaway databases, roles and users named ``sfs<random>_...``, registers instances whose
blocks log in as a throwaway non-superuser reader, and drops everything afterwards (the blocks
too), even when it fails.

The servers are shared with whatever else runs on the machine, and accounts are server-wide:
count assertions are exact for this test's own accounts (``ours``), and anything else a record
counted must be listed by name in its ``sync_details`` (``foreign``), so the totals still add
up exactly. On a quiet machine ``foreign`` is empty and the counts are the sandbox's alone.

The stores are the ``engine`` fixture's (SQLite and PostgreSQL in turn).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from blocks.database import DatabaseInstance
from flows.session_sync import sync_session
from syncflow import cli
from syncflow.sources.db_snapshots import is_sensitive_setting
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store.db import session_scope
from syncflow.store.models import Account, CapacitySample, Instance, ServerSetting, SyncInstanceRecord, SyncSession

PG_ADMIN_URL = os.environ.get("SYNCFLOW_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("SYNCFLOW_TEST_MYSQL_ADMIN_URL", "mysql://root@127.0.0.1:3306")
FAST_RETRIES = {"max_retries": 2, "base_delay": 0.2, "backoff_multiplier": 2.0, "max_delay": 1.0, "jitter": 0.0}
BIG_ROWS = 2000  # rows of 1 KiB in each sandbox's "big" table


# ============================================================================ sandboxes


@dataclass
class PgBox:
    """Two throwaway databases, roles ``<prefix>_<name>`` and a reader role on the local PostgreSQL."""

    prefix: str
    host: str
    port: int
    admin_user: str
    admin_password: str | None
    reader_password: str = field(default_factory=lambda: f"pw-{uuid.uuid4().hex[:12]}")

    @property
    def db_a(self) -> str:
        return f"{self.prefix}_a"

    @property
    def db_b(self) -> str:
        return f"{self.prefix}_b"

    @property
    def reader(self) -> str:
        return self.role("reader")

    def role(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def run(self, *statements: str, database: str = "postgres", **names: str) -> None:
        """``{name}`` placeholders become quoted identifiers; autocommit."""
        idents = {k: sql.Identifier(v) for k, v in names.items()}
        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.admin_user,
            password=self.admin_password,
            dbname=database,
            autocommit=True,
        ) as conn:
            for stmt in statements:
                conn.execute(sql.SQL(stmt).format(**idents))  # type: ignore[arg-type]

    def block(self, database: str, **fields: Any) -> DatabaseInstance:
        values: dict[str, Any] = {
            "kind": "postgres",
            "host": self.host,
            "port": self.port,
            "user": self.reader,
            "password": self.reader_password,
            "database": database,
            "connect_timeout": 3,
            **FAST_RETRIES,
        }
        return DatabaseInstance(**(values | fields))


@pytest.fixture
def pg_box() -> Iterator[PgBox]:
    url = make_url(PG_ADMIN_URL)
    box = PgBox(
        prefix=f"sfs{uuid.uuid4().hex[:10]}",
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        admin_user=url.username or "postgres",
        admin_password=url.password,
    )
    try:
        box.run("CREATE DATABASE {a}", "CREATE DATABASE {b}", a=box.db_a, b=box.db_b)
        box.run(
            "CREATE ROLE {reader} LOGIN PASSWORD " + f"'{box.reader_password}'",
            "GRANT pg_read_all_stats, pg_read_all_settings TO {reader}",
            reader=box.reader,
        )
        for db in (box.db_a, box.db_b):
            box.run(
                "CREATE TABLE public.big (id int PRIMARY KEY, pad text)",
                "CREATE TABLE public.small (id int PRIMARY KEY)",
                f"INSERT INTO public.big SELECT g, repeat('x', 1024) FROM generate_series(1, {BIG_ROWS}) g",
                "ANALYZE public.big",
                database=db,
            )
        yield box
    finally:
        errors: list[Exception] = []
        for db in (box.db_a, box.db_b):
            try:
                box.run("DROP DATABASE IF EXISTS {db} WITH (FORCE)", db=db)
            except psycopg.Error as exc:  # pragma: no cover - cleanup trouble must not hide the result
                errors.append(exc)
        with psycopg.connect(
            host=box.host, port=box.port, user=box.admin_user, password=box.admin_password, dbname="postgres"
        ) as conn:
            roles = [
                r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (box.prefix,))
            ]
        for role in roles:
            try:
                box.run("DROP OWNED BY {r}", "DROP ROLE IF EXISTS {r}", r=role)
            except psycopg.Error as exc:  # pragma: no cover
                errors.append(exc)
        assert not errors, errors


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass
class MyBox:
    """A throwaway schema, users ``<prefix>_<name>@%`` and a reader user (with a password) on MariaDB."""

    prefix: str
    host: str
    port: int
    admin_user: str
    admin_password: str
    reader_password: str = field(default_factory=lambda: f"pw-{uuid.uuid4().hex[:12]}")

    @property
    def schema(self) -> str:
        return f"{self.prefix}_db"

    @property
    def reader(self) -> str:
        return self.user("reader")

    def user(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def ident(self, name: str) -> str:
        """The account's identity as syncflow names it: ``user@host``."""
        return f"{self.user(name)}@%"

    def run(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            for stmt in statements:
                if isinstance(stmt, tuple):
                    cur.execute(stmt[0], stmt[1])
                else:
                    cur.execute(stmt)

    def connect(self) -> Any:
        return pymysql.connect(
            host=self.host, port=self.port, user=self.admin_user, password=self.admin_password, autocommit=True
        )

    def block(self, **fields: Any) -> DatabaseInstance:
        values: dict[str, Any] = {
            "kind": "mysql",
            "host": self.host,
            "port": self.port,
            "user": self.reader,
            "password": self.reader_password,
            "connect_timeout": 3,
            **FAST_RETRIES,
        }
        return DatabaseInstance(**(values | fields))


@pytest.fixture
def my_box() -> Iterator[MyBox]:
    url = make_url(MYSQL_ADMIN_URL)
    box = MyBox(
        prefix=f"sfs{uuid.uuid4().hex[:10]}",
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        admin_user=url.username or "root",
        admin_password=url.password or "",
    )
    try:
        box.run(
            f"CREATE DATABASE {_q(box.schema)}",
            f"CREATE TABLE {_q(box.schema)}.big (id INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB",
            f"INSERT INTO {_q(box.schema)}.big SELECT seq, REPEAT('x', 1024) FROM {_q(box.schema)}.seq_1_to_{BIG_ROWS}",
            f"ANALYZE TABLE {_q(box.schema)}.big",
            ("CREATE USER %s@'%%' IDENTIFIED BY %s", (box.reader, box.reader_password)),
            ("GRANT SELECT, SHOW DATABASES ON *.* TO %s@'%%'", (box.reader,)),
        )
        yield box
    finally:
        with box.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT User, Host FROM mysql.user WHERE User LIKE %s", (box.prefix + "\\_%",))
            for user, host in cur.fetchall():
                if host == "":
                    cur.execute("DROP ROLE IF EXISTS %s", (user,))
                else:
                    cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
            cur.execute(f"DROP DATABASE IF EXISTS {_q(box.schema)}")


# ============================================================================ wiring


class DbWiring:
    """Registers database instances (a block each) and runs sessions through the parent flow."""

    def __init__(self, engine: Engine, prefix: str) -> None:
        self.engine = engine
        self.prefix = prefix
        self.blocks: list[str] = []

    def add(self, label: str, block: DatabaseInstance) -> str:
        name = f"{self.prefix}-{label}"
        block_name = f"t-db-{uuid.uuid4().hex[:12]}"
        block.save(block_name, overwrite=True)
        self.blocks.append(block_name)
        with session_scope(self.engine) as s:
            inst_svc.add_instance(s, name=name, kind=block.kind, block_name=block_name)
        return name

    def session(self, category: str, names: list[str]) -> tuple[Any, SyncSession]:
        session_id = str(uuid.uuid4())
        state = asyncio.run(
            sync_session(
                category=category, instances=names, session_id=session_id, created_by="test", return_state=True
            )
        )
        with session_scope(self.engine) as s:
            row = book.get_session(s, session_id=session_id, with_records=True)
            for rec in row.records:
                s.expunge(rec)
            s.expunge(row)
        return state, row

    def cleanup(self) -> None:
        for name in self.blocks:
            try:
                DatabaseInstance.delete(name)
            except ValueError:  # pragma: no cover - already gone
                pass


@pytest.fixture
def db_wiring(prefect_harness: None, store_env: str, engine: Engine) -> Iterator[DbWiring]:
    wiring = DbWiring(engine, prefix=f"sfs-{uuid.uuid4().hex[:6]}")
    yield wiring
    wiring.cleanup()


def _records(row: SyncSession) -> dict[str, SyncInstanceRecord]:
    return {r.instance_name or "": r for r in row.records}


def _instance_id(engine: Engine, name: str) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(Instance.id).where(Instance.name == name))  # type: ignore[return-value]


def _accounts(engine: Engine, name: str) -> dict[str, Account]:
    with session_scope(engine) as s:
        rows = list(s.scalars(select(Account).where(Account.instance_id == _instance_id(engine, name))))
        for row in rows:
            s.expunge(row)
        return {r.identity: r for r in rows}


def _mine(names: list[str], prefix: str) -> list[str]:
    return [n for n in names if n.startswith(prefix)]


def _assert_diff(
    rec: SyncInstanceRecord,
    prefix: str,
    *,
    created: list[str],
    updated: list[str],
    deleted: list[str],
    lines: dict[str, str],
) -> None:
    """Exact for our accounts; whatever else was counted is named in sync_details (see the module doc)."""
    d = rec.sync_details or {}
    assert not d["changes_truncated"], d
    foreign = {k: [n for n in d[k] if not n.startswith(prefix)] for k in ("created", "updated", "deleted")}
    assert _mine(d["created"], prefix) == sorted(created)
    assert _mine(d["updated"], prefix) == sorted(updated)
    assert _mine(d["deleted"], prefix) == sorted(deleted)
    assert rec.items_created == len(created) + len(foreign["created"]), foreign
    assert rec.items_updated == len(updated) + len(foreign["updated"]), foreign
    assert rec.items_deleted == len(deleted) + len(foreign["deleted"]), foreign
    assert rec.items_unchanged == rec.items_synced - rec.items_created - rec.items_updated
    ours = [c for c in d["changes"] if c.startswith(prefix)]
    assert sorted(ours) == sorted(lines.values())
    assert d["changes_total"] == len(d["changes"])


async def _read_task_runs(flow_run_id: str, *, timeout: float = 20.0) -> list[Any]:
    """The subflow's read task runs once Prefect recorded them as finished (it records task runs
    from events, a moment after they ran)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            reads = [r for r in runs if r.name.startswith("read-snapshot")]
            if (reads and all(r.state and r.state.is_final() for r in reads)) or time.monotonic() > deadline:
                return reads
            await asyncio.sleep(0.2)


async def _flow_run_state(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).state


# ============================================================================ account


def test_account_session_over_two_postgres_databases_and_mariadb(
    db_wiring: DbWiring, engine: Engine, pg_box: PgBox, my_box: MyBox
) -> None:
    p, m = pg_box, my_box
    alice, bob, carol, dave, ops = (p.role(n) for n in ("alice", "bob", "carol", "dave", "ops"))
    p.run(
        "CREATE ROLE {ops} NOLOGIN",
        "CREATE ROLE {alice} LOGIN CONNECTION LIMIT 3",
        "CREATE ROLE {bob} LOGIN",
        "CREATE ROLE {carol} NOLOGIN",
        "GRANT {ops} TO {alice}",
        "GRANT {ops} TO {carol}",
        ops=ops,
        alice=alice,
        bob=bob,
        carol=carol,
    )
    p.run("GRANT SELECT ON public.big TO {alice}", database=p.db_a, alice=alice)
    p.run("GRANT SELECT ON public.big TO {bob}", database=p.db_b, bob=bob)
    my_alice, my_bob, my_carol, my_dave = (m.user(n) for n in ("alice", "bob", "carol", "dave"))
    m.run(
        ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-alice' WITH MAX_USER_CONNECTIONS 5", (my_alice,)),
        ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-bob'", (my_bob,)),
        ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-carol'", (my_carol,)),
        (f"GRANT SELECT ON {_q(m.schema)}.* TO %s@'%%'", (my_alice,)),
        (f"GRANT SELECT ON {_q(m.schema)}.big TO %s@'%%'", (my_carol,)),
    )
    pg_a = db_wiring.add("pg-a", p.block(p.db_a))
    pg_b = db_wiring.add("pg-b", p.block(p.db_b))
    my_1 = db_wiring.add("my-1", m.block())
    names = [pg_a, pg_b, my_1]

    # ---- first sync: everything is new
    state, row = db_wiring.session("account", names)
    assert state.is_completed(), state
    assert (row.status, row.total_instances, row.successful_instances, row.failed_instances) == ("completed", 3, 3, 0)
    recs = _records(row)
    for name in names:
        rec = recs[name]
        stored = _accounts(engine, name)
        assert rec.status == "completed", rec.error_message
        assert rec.items_synced == rec.items_created == len(stored) > 0
        assert (rec.items_updated, rec.items_deleted, rec.items_unchanged) == (0, 0, 0)
        assert rec.sync_details["attempts"] == 1 and rec.sync_details["duration_s"] >= 0
        assert rec.flow_run_id
    for name in (pg_a, pg_b):
        stored = _accounts(engine, name)
        assert {alice, bob, carol, ops, p.reader} <= set(stored)
        assert stored[alice].memberships == [ops]
        assert stored[alice].attributes["connection_limit"] == 3
    # schema/table privileges are those of the database each instance connects to
    assert "SELECT on public.big" in _accounts(engine, pg_a)[alice].privileges
    assert "SELECT on public.big" not in _accounts(engine, pg_b)[alice].privileges
    assert "SELECT on public.big" in _accounts(engine, pg_b)[bob].privileges
    my_stored = _accounts(engine, my_1)
    assert {m.ident("alice"), m.ident("bob"), m.ident("carol"), m.ident("reader")} <= set(my_stored)
    assert my_stored[m.ident("alice")].attributes["max_user_connections"] == 5

    # ---- alter / grant / revoke / drop / create, then sync again
    p.run(
        "ALTER ROLE {alice} CREATEDB",
        "GRANT {ops} TO {bob}",
        "DROP ROLE {carol}",
        "CREATE ROLE {dave} LOGIN",
        ops=ops,
        alice=alice,
        bob=bob,
        carol=carol,
        dave=dave,
    )
    p.run("REVOKE SELECT ON public.big FROM {alice}", database=p.db_a, alice=alice)
    m.run(
        ("ALTER USER %s@'%%' WITH MAX_USER_CONNECTIONS 7", (my_alice,)),
        (f"GRANT INSERT ON {_q(m.schema)}.* TO %s@'%%'", (my_bob,)),
        ("DROP USER %s@'%%'", (my_carol,)),
        ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-dave'", (my_dave,)),
    )
    state, row = db_wiring.session("account", names)
    assert state.is_completed(), state
    assert (row.status, row.total_instances, row.successful_instances, row.failed_instances) == ("completed", 3, 3, 0)
    recs = _records(row)
    _assert_diff(
        recs[pg_a],
        p.prefix,
        created=[dave],
        updated=[alice, bob],
        deleted=[carol],
        lines={
            alice: f"{alice}: +CREATEDB, -SELECT on public.big",
            bob: f"{bob}: +member of {ops}",
            carol: f"{carol}: deleted",
            dave: f"{dave}: created (0 privileges, 0 memberships)",
        },
    )
    _assert_diff(
        recs[pg_b],
        p.prefix,
        created=[dave],
        updated=[alice, bob],
        deleted=[carol],
        lines={
            alice: f"{alice}: +CREATEDB",
            bob: f"{bob}: +member of {ops}",
            carol: f"{carol}: deleted",
            dave: f"{dave}: created (0 privileges, 0 memberships)",
        },
    )
    _assert_diff(
        recs[my_1],
        m.prefix,
        created=[m.ident("dave")],
        updated=[m.ident("alice"), m.ident("bob")],
        deleted=[m.ident("carol")],
        lines={
            "alice": f"{m.ident('alice')}: max_user_connections: 5 -> 7",
            "bob": f"{m.ident('bob')}: +INSERT on {m.schema}.*",
            "carol": f"{m.ident('carol')}: deleted",
            "dave": f"{m.ident('dave')}: created (0 privileges, 0 memberships)",
        },
    )
    # a dropped account is kept, marked deleted with when
    gone = _accounts(engine, pg_a)[carol]
    assert gone.deleted and gone.deleted_at is not None
    assert _accounts(engine, my_1)[m.ident("carol")].deleted


def test_wrong_mariadb_password_fails_only_that_instance_without_retry(
    db_wiring: DbWiring, engine: Engine, pg_box: PgBox, my_box: MyBox
) -> None:
    pg_a = db_wiring.add("pg-a", pg_box.block(pg_box.db_a))
    pg_b = db_wiring.add("pg-b", pg_box.block(pg_box.db_b))
    # the reader exists WITH a password; the block has another one; retries would be allowed
    my_bad = db_wiring.add("my-bad", my_box.block(password="not-the-password", max_retries=3, base_delay=3.0))
    state, row = db_wiring.session("account", [pg_a, pg_b, my_bad])
    assert state.is_failed()
    assert (row.status, row.total_instances, row.successful_instances, row.failed_instances) == ("failed", 3, 2, 1)
    recs = _records(row)
    assert recs[pg_a].status == recs[pg_b].status == "completed"
    assert recs[pg_a].items_created > 0 and recs[pg_b].items_created > 0
    bad = recs[my_bad]
    assert bad.status == "failed"
    assert bad.error_message.startswith(f"{my_bad}: ")
    assert "access denied" in bad.error_message.lower()
    assert "not retried" in bad.error_message
    assert "not-the-password" not in bad.error_message
    assert bad.items_synced == 0
    assert bad.sync_details["attempts"] == 1 and bad.sync_details["retries"] == 0  # no retry, no delay slept
    # Prefect's own record: the read task ran once, and the subflow run failed
    runs = asyncio.run(_read_task_runs(bad.flow_run_id))
    assert [(r.run_count, r.state_type.value) for r in runs] == [(1, "FAILED")]
    assert asyncio.run(_flow_run_state(bad.flow_run_id)).is_failed()
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Account).where(Account.instance_id == bad.instance_id)) == 0


def test_unreachable_port_is_retried_then_fails(
    db_wiring: DbWiring, engine: Engine, pg_box: PgBox, my_box: MyBox
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    pg_down = db_wiring.add("pg-down", pg_box.block(pg_box.db_a, port=closed_port))
    my_1 = db_wiring.add("my-1", my_box.block())
    state, row = db_wiring.session("account", [pg_down, my_1])
    assert state.is_failed()
    assert (row.status, row.successful_instances, row.failed_instances) == ("failed", 1, 1)
    recs = _records(row)
    assert recs[my_1].status == "completed"
    down = recs[pg_down]
    assert down.status == "failed"
    assert down.error_message.startswith(f"{pg_down}: cannot connect to postgres 127.0.0.1:{closed_port}")
    assert "refused" in down.error_message.lower()
    assert "gave up after 3 attempts" in down.error_message
    assert down.sync_details["attempts"] == 3 and down.sync_details["retries"] == 2
    assert down.sync_details["duration_s"] >= 0.2 + 0.4  # the policy's delays were slept
    runs = asyncio.run(_read_task_runs(down.flow_run_id))
    assert [(r.run_count, r.state_type.value) for r in runs] == [(3, "FAILED")]
    assert asyncio.run(_flow_run_state(down.flow_run_id)).is_failed()


# ============================================================================ capacity, config


def test_capacity_and_config_sessions_write_rows(
    db_wiring: DbWiring, engine: Engine, pg_box: PgBox, my_box: MyBox
) -> None:
    p, m = pg_box, my_box
    pg_a = db_wiring.add("pg-a", p.block(p.db_a))
    pg_b = db_wiring.add("pg-b", p.block(p.db_b))
    my_1 = db_wiring.add("my-1", m.block())
    names = [pg_a, pg_b, my_1]

    for run_no in (1, 2):
        state, row = db_wiring.session("capacity", names)
        assert state.is_completed(), state
        assert (row.status, row.successful_instances, row.failed_instances) == ("completed", 3, 0)
        for rec in row.records:
            with session_scope(engine) as s:
                samples = list(
                    s.scalars(
                        select(CapacitySample).where(
                            CapacitySample.instance_id == rec.instance_id, CapacitySample.session_id == row.session_id
                        )
                    )
                )
                by_db = {smp.database: (smp.bytes, smp.tables) for smp in samples}
                own = {pg_a: p.db_a, pg_b: p.db_b, my_1: m.schema}[rec.instance_name or ""]
                history = s.scalar(
                    select(func.count())
                    .select_from(CapacitySample)
                    .where(CapacitySample.instance_id == rec.instance_id, CapacitySample.database == own)
                )
            assert rec.status == "completed", rec.error_message
            assert rec.items_synced == rec.items_created == len(samples) > 0
            assert history == run_no  # a time series: one more sample per session
            if rec.instance_name in (pg_a, pg_b):
                other = p.db_b if own == p.db_a else p.db_a
                size, tables = by_db[own]
                assert size > BIG_ROWS * 1024
                big = next(t for t in tables if t["name"] == "public.big")
                assert big["bytes"] > BIG_ROWS * 1024 and big["rows"] == BIG_ROWS
                assert by_db[other][0] > 0 and by_db[other][1] == []  # other databases: size only
            else:
                size, tables = by_db[m.schema]
                assert size > BIG_ROWS * 1024
                big = next(t for t in tables if t["name"] == f"{m.schema}.big")
                assert big["bytes"] > BIG_ROWS * 1024

    state, row = db_wiring.session("config", names)
    assert state.is_completed(), state
    assert (row.status, row.successful_instances, row.failed_instances) == ("completed", 3, 0)
    for rec in row.records:
        with session_scope(engine) as s:
            stored = list(s.scalars(select(ServerSetting).where(ServerSetting.instance_id == rec.instance_id)))
            settings = {x.name: x.value for x in stored}
        assert rec.status == "completed", rec.error_message
        assert rec.items_synced == rec.items_created == len(settings) > 50
        assert not [n for n in settings if is_sensitive_setting(n)]
        assert ("work_mem" in settings) if rec.instance_name != my_1 else ("max_connections" in settings)
    state, row = db_wiring.session("config", names)
    assert state.is_completed(), state
    for rec in row.records:
        assert (rec.items_created, rec.items_deleted) == (0, 0), rec.sync_details
        assert rec.items_unchanged + rec.items_updated == rec.items_synced


# ============================================================================ CLI


def test_cli_adds_database_instances_and_runs_an_account_session(
    db_wiring: DbWiring, engine: Engine, pg_box: PgBox, my_box: MyBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what `syncflow sync ...` sets for its own display; restored after the test
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "CRITICAL")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("SF_TEST_PG_PASSWORD", pg_box.reader_password)
    monkeypatch.setenv("SF_TEST_MY_PASSWORD", my_box.reader_password)
    runner = CliRunner()
    pg_name, my_name = f"{db_wiring.prefix}-pg-1", f"{db_wiring.prefix}-my-1"
    blocks = []

    def ok(*args: str) -> Any:
        result = runner.invoke(cli.app, list(args))
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    try:
        ok(
            "instances", "add", pg_name, "--kind", "postgres", "--host", pg_box.host, "--port", str(pg_box.port),
            "--user", pg_box.reader, "--password-env", "SF_TEST_PG_PASSWORD", "--database", pg_box.db_a,
            "--tls-mode", "disable", "--connect-timeout", "4",
        )  # fmt: skip
        ok(
            "instances", "add", my_name, "--kind", "mysql", "--host", my_box.host, "--port", str(my_box.port),
            "--user", my_box.reader, "--password-env", "SF_TEST_MY_PASSWORD",
        )  # fmt: skip
        with session_scope(engine) as s:
            blocks = [inst_svc.get_instance(s, name=n).block_name for n in (pg_name, my_name)]
        pg_block = DatabaseInstance.load(blocks[0])
        assert (pg_block.kind, pg_block.user, pg_block.database, pg_block.tls_mode) == (
            "postgres",
            pg_box.reader,
            pg_box.db_a,
            "disable",
        )
        assert pg_block.connect_timeout == 4 and pg_block.password.get_secret_value() == pg_box.reader_password
        assert DatabaseInstance.load(blocks[1]).password.get_secret_value() == my_box.reader_password

        # the password is never taken from the command line, and the options fit the kind
        for args, fragment in [
            (["--kind", "postgres", "--host", "h", "--user", "u", "--password-env", "SF_TEST_UNSET"], "SF_TEST_UNSET"),
            (["--kind", "http-seq", "--host", "h", "--user", "u"], "are for postgres and mysql"),
            (["--kind", "postgres", "--user", "u"], "needs --host and --user"),
            (["--kind", "mysql", "--host", "h", "--user", "u", "--tls-mode", "sometimes"], "tls_mode"),
        ]:
            result = runner.invoke(cli.app, ["instances", "add", f"{db_wiring.prefix}-bad", *args])
            assert result.exit_code == 1 and fragment in result.stderr, (args, result.stderr)
        result = runner.invoke(cli.app, ["instances", "add", "x", "--kind", "postgres", "--password", "secret"])
        assert result.exit_code == 2  # no such option

        result = runner.invoke(
            cli.app, ["sync", "run", "--category", "account", "--instance", pg_name, "--instance", my_name, "--json"]
        )
        assert result.exit_code == 0, (result.stdout, result.stderr)
        payload = json.loads(result.stdout)
        assert (payload["status"], payload["total_instances"], payload["successful_instances"]) == ("completed", 2, 2)
        assert {r["instance_name"]: r["status"] for r in payload["records"]} == {
            pg_name: "completed",
            my_name: "completed",
        }
        assert all(r["items_created"] == r["items_synced"] > 0 for r in payload["records"])

        # `sync instance` on a database instance defaults to its first category (account)
        result = runner.invoke(cli.app, ["sync", "instance", pg_name, "--json"])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        payload = json.loads(result.stdout)
        assert (payload["sync_category"], payload["status"]) == ("account", "completed")
        assert payload["records"][0]["items_unchanged"] > 0  # ours did not change (others on the server may have)
    finally:
        for name in blocks:
            if name:
                DatabaseInstance.delete(name)
