"""Database-instance syncs against the real local servers: read -> apply -> change -> read -> apply.

PostgreSQL (``SYNCFLOW_TEST_PG_ADMIN_URL``, default postgres@127.0.0.1:5432, trust auth) and
MariaDB (``SYNCFLOW_TEST_MYSQL_ADMIN_URL``, default root@127.0.0.1:3306, no password). Every
test works on its own throwaway database/schema and roles/users named ``sfdb<random>_...``
and drops them afterwards, even when it fails. The servers are shared: assertions on
accounts only look at the sandbox's own accounts, and nothing changes a global setting.

The stores are the ``engine`` fixture's (SQLite and PostgreSQL in turn).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql
from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import make_url

from syncflow.engine import InstanceRun, Stored, begin_instance_sync, finish_instance_sync, store_snapshot
from syncflow.errors import AuthError, ConfigError, PermanentSyncError, ProtocolError, TransientSyncError
from syncflow.sources.database import read_accounts, read_capacity, read_settings, read_snapshot
from syncflow.sources.db_connection import DbConnection
from syncflow.sources.db_snapshots import AccountSnapshot, SettingSnapshot, is_sensitive_setting
from syncflow.store import instances as inst_svc
from syncflow.store import sessions as book
from syncflow.store import sync_state
from syncflow.store.db import session_scope
from syncflow.store.models import Account, CapacitySample, Instance, ServerSetting, SyncConfigItem, SyncInstanceRecord
from syncflow.store.sessions import ItemCounts
from syncflow.store.snapshots import (
    DiffResult,
    append_capacity,
    apply_accounts,
    apply_settings,
    capacity_history,
    list_accounts,
)

PG_ADMIN_URL = os.environ.get("SYNCFLOW_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("SYNCFLOW_TEST_MYSQL_ADMIN_URL", "mysql://root@127.0.0.1:3306")

KNOWN_BYTES = 2000 * 1024  # what the "big" tables hold: 2000 rows of 1 KiB


def _pg_admin() -> DbConnection:
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    return DbConnection.from_url(url)


def _my_admin() -> DbConnection:
    return DbConnection.from_url(MYSQL_ADMIN_URL)


def _instance(engine: Engine, name: str, kind: str) -> int:
    with session_scope(engine) as s:
        return inst_svc.add_instance(s, name=name, kind=kind).id


def _accounts(engine: Engine, iid: int, snapshot: list[AccountSnapshot], sid: str) -> DiffResult:
    with session_scope(engine) as s:
        return apply_accounts(s, instance_id=iid, snapshot=snapshot, session_id=sid)


def _settings(engine: Engine, iid: int, snapshot: list[SettingSnapshot], sid: str) -> DiffResult:
    with session_scope(engine) as s:
        return apply_settings(s, instance_id=iid, snapshot=snapshot, session_id=sid)


def _counts(result: DiffResult) -> tuple[int, int, int, int, int]:
    c = result.counts
    return (c.synced, c.created, c.updated, c.deleted, c.unchanged)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (kernel backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


# ============================================================================ PostgreSQL


@dataclass
class PgSandbox:
    """A throwaway database plus roles named ``<prefix>_<name>`` on the test server."""

    prefix: str
    database: str
    admin: DbConnection

    def role(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def conn(self, **overrides: Any) -> DbConnection:
        """As the admin user, connected to the sandbox database."""
        return replace(self.admin, database=self.database, **overrides)

    def run(self, *statements: str, database: str | None = None, **names: str) -> None:
        """Run ``statements`` (``{name}`` placeholders become quoted identifiers) in autocommit."""
        idents = {k: sql.Identifier(v) for k, v in names.items()}
        with psycopg.connect(
            host=self.admin.host,
            port=self.admin.port,
            user=self.admin.user,
            password=self.admin.password,
            dbname=database or self.database,
            autocommit=True,
        ) as conn:
            for stmt in statements:
                conn.execute(sql.SQL(stmt).format(**idents))  # type: ignore[arg-type]

    def mine(self, accounts: list[AccountSnapshot]) -> list[AccountSnapshot]:
        return [a for a in accounts if a.identity.startswith(self.prefix + "_")]


@pytest.fixture
def pg() -> Iterator[PgSandbox]:
    admin = _pg_admin()
    prefix = f"sfdb{uuid.uuid4().hex[:10]}"
    box = PgSandbox(prefix=prefix, database=f"{prefix}_db", admin=admin)
    box.run("CREATE DATABASE {db}", database="postgres", db=box.database)
    try:
        yield box
    finally:
        errors = []
        try:
            box.run("DROP DATABASE IF EXISTS {db} WITH (FORCE)", database="postgres", db=box.database)
        except psycopg.Error as exc:  # pragma: no cover - cleanup trouble must not hide the test's result
            errors.append(exc)
        with psycopg.connect(host=admin.host, port=admin.port, user=admin.user, dbname="postgres") as conn:
            roles = [
                r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,))
            ]
        for role in roles:
            try:
                box.run("DROP OWNED BY {r}", "DROP ROLE IF EXISTS {r}", database="postgres", r=role)
            except psycopg.Error as exc:  # pragma: no cover
                errors.append(exc)
        assert not errors, errors


def test_pg_accounts_read_apply_change_restore(engine: Engine, pg: PgSandbox) -> None:
    r = {n: pg.role(n) for n in ("alice", "bob", "carol", "ops")}
    db = pg.database
    pg.run(
        "CREATE ROLE {ops} NOLOGIN",
        "CREATE ROLE {alice} LOGIN CONNECTION LIMIT 3",
        "CREATE ROLE {bob} LOGIN VALID UNTIL '2030-01-01 00:00:00+00'",
        "GRANT {ops} TO {alice}",
        "ALTER ROLE {alice} SET work_mem = '8MB'",
        "CREATE TABLE public.orders (id int PRIMARY KEY)",
        "CREATE TABLE public.items (id int PRIMARY KEY)",
        "CREATE SCHEMA sales",
        "CREATE TABLE sales.leads (id int)",
        "CREATE TABLE sales.deals (id int)",
        "GRANT CONNECT ON DATABASE {db} TO {alice}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {alice}",
        "GRANT USAGE ON SCHEMA sales TO {bob}",
        "GRANT SELECT ON sales.leads TO {bob} WITH GRANT OPTION",
        "GRANT CREATE ON SCHEMA sales TO {ops}",
        db=db,
        **r,
    )
    first = pg.mine(read_accounts(pg.conn()))
    by_id = {a.identity: a for a in first}
    assert sorted(by_id) == sorted([r["alice"], r["bob"], r["ops"]])
    alice = by_id[r["alice"]]
    assert alice.attributes == {
        "bypassrls": False,
        "config.work_mem": "8MB",
        "connection_limit": 3,
        "createdb": False,
        "createrole": False,
        "inherit": True,
        "login": True,
        "password_type": None,  # readable: the admin is a superuser
        "replication": False,
        "superuser": False,
        "valid_until": None,
    }
    assert alice.privileges == [f"CONNECT on database {db}", "SELECT on public.*"]
    assert alice.memberships == [r["ops"]]
    bob = by_id[r["bob"]]
    assert bob.attributes["valid_until"] == "2030-01-01T00:00:00Z"
    assert bob.privileges == ["SELECT on sales.leads WITH GRANT OPTION", "USAGE on schema sales"]
    assert bob.memberships == []
    ops = by_id[r["ops"]]
    assert (ops.attributes["login"], ops.privileges, ops.memberships) == (False, ["CREATE on schema sales"], [])

    iid = _instance(engine, "pg-main", "postgres")
    created = _accounts(engine, iid, first, "s-1")
    assert _counts(created) == (3, 3, 0, 0, 0)
    assert created.changes == [
        f"{r['alice']}: created (2 privileges, 1 memberships)",
        f"{r['bob']}: created (2 privileges, 0 memberships)",
        f"{r['ops']}: created (1 privileges, 0 memberships)",
    ]
    again = _accounts(engine, iid, pg.mine(read_accounts(pg.conn())), "s-2")
    assert _counts(again) == (3, 0, 0, 0, 3)
    assert again.changes == []

    pg.run(
        "ALTER ROLE {alice} CREATEDB",
        "REVOKE {ops} FROM {alice}",
        "REVOKE SELECT ON public.items FROM {alice}",
        "GRANT INSERT ON public.orders TO {alice}",
        "DROP OWNED BY {bob}",
        "DROP ROLE {bob}",
        "CREATE ROLE {carol} LOGIN",
        **r,
    )
    changed = _accounts(engine, iid, pg.mine(read_accounts(pg.conn())), "s-3")
    assert _counts(changed) == (3, 1, 1, 1, 1)
    assert changed.changes == [
        f"{r['alice']}: +CREATEDB, -member of {r['ops']}, +INSERT on public.orders, "
        "-SELECT on public.*, +SELECT on public.orders",
        f"{r['carol']}: created (0 privileges, 0 memberships)",
        f"{r['bob']}: deleted",
    ]
    assert (changed.created, changed.updated, changed.deleted) == ([r["carol"]], [r["alice"]], [r["bob"]])
    with session_scope(engine) as s:
        gone = s.scalar(select(Account).where(Account.instance_id == iid, Account.identity == r["bob"]))
        assert gone is not None and gone.deleted and gone.deleted_at is not None
        assert gone.last_session_id == "s-3"
        assert gone.privileges == bob.privileges  # kept as last seen
        assert [a.identity for a in list_accounts(s, instance_id=iid)] == sorted([r["alice"], r["carol"], r["ops"]])
        row = s.scalar(select(Account).where(Account.identity == r["ops"]))
        assert row is not None and row.last_session_id == "s-1"  # unchanged rows are not touched

    pg.run("CREATE ROLE {bob} LOGIN", **r)
    restored = _accounts(engine, iid, pg.mine(read_accounts(pg.conn())), "s-4")
    assert _counts(restored) == (4, 0, 1, 0, 3)
    assert restored.changes == [
        f"{r['bob']}: restored, valid_until: 2030-01-01T00:00:00Z -> none, "
        "-SELECT on sales.leads WITH GRANT OPTION, -USAGE on schema sales"
    ]
    with session_scope(engine) as s:
        back = s.scalar(select(Account).where(Account.instance_id == iid, Account.identity == r["bob"]))
        assert back is not None and not back.deleted and back.deleted_at is None
        assert (back.privileges, back.last_session_id) == ([], "s-4")
        assert s.scalar(select(func.count()).select_from(Account).where(Account.instance_id == iid)) == 4


def test_pg_table_grants_summarised_per_schema_or_per_table(pg: PgSandbox) -> None:
    r = {"reader": pg.role("reader"), "owner": pg.role("owner")}
    pg.run(
        "CREATE ROLE {reader} LOGIN",
        "CREATE ROLE {owner} NOLOGIN",
        "CREATE SCHEMA app AUTHORIZATION {owner}",
        "CREATE TABLE app.a (id int)",
        "CREATE TABLE app.b (id int)",
        "CREATE VIEW app.v AS SELECT 1 AS one",
        "ALTER TABLE app.a OWNER TO {owner}",
        "ALTER TABLE app.b OWNER TO {owner}",
        "ALTER VIEW app.v OWNER TO {owner}",
        "GRANT SELECT ON app.a, app.b TO {reader}",
        "GRANT UPDATE ON ALL TABLES IN SCHEMA app TO {reader}",
        "CREATE TABLE app.part (id int) PARTITION BY RANGE (id)",
        "CREATE TABLE app.part_1 PARTITION OF app.part FOR VALUES FROM (0) TO (10)",
        "ALTER TABLE app.part OWNER TO {owner}",
        **r,
    )
    accounts = {a.identity: a for a in pg.mine(read_accounts(pg.conn()))}
    # SELECT on 2 of the 4 relations (a, b, part, v): listed per table; UPDATE was on all but part.
    assert accounts[r["reader"]].privileges == [
        "SELECT on app.a",
        "SELECT on app.b",
        "UPDATE on app.a",
        "UPDATE on app.b",
        "UPDATE on app.v",
    ]
    owner = accounts[r["owner"]].privileges
    assert "OWNER of schema app" in owner and "USAGE on schema app" in owner and "CREATE on schema app" in owner
    # The owner holds every table privilege (and ownership) on every relation of the schema.
    assert {"OWNER of app.*", "SELECT on app.*", "TRUNCATE on app.*", "TRIGGER on app.*"} <= set(owner)
    assert not any("part_1" in p for p in owner), "partitions are covered by their parent"


def test_pg_full_server_snapshot_is_stable(engine: Engine, pg: PgSandbox) -> None:
    snapshot = read_accounts(pg.admin)
    assert pg.admin.user in {a.identity for a in snapshot}
    assert all(not a.identity.startswith("pg_") for a in snapshot)
    assert [a.identity for a in snapshot] == sorted(a.identity for a in snapshot)
    json.dumps([a.to_json() for a in snapshot])  # JSON-able
    assert [AccountSnapshot.from_json(a.to_json()) for a in snapshot] == snapshot
    iid = _instance(engine, "pg-full", "postgres")
    n = len(snapshot)
    assert _counts(_accounts(engine, iid, snapshot, "s-1")) == (n, n, 0, 0, 0)
    assert _counts(_accounts(engine, iid, snapshot, "s-2")) == (n, 0, 0, 0, n)


def test_pg_settings_per_database_and_per_role_changes(engine: Engine, pg: PgSandbox) -> None:
    setter = pg.role("setter")
    pg.run("CREATE ROLE {setter} LOGIN", "GRANT pg_read_all_settings TO {setter}", setter=setter)
    as_setter = pg.conn(user=setter)
    first = read_settings(as_setter)
    names = [s.name for s in first]
    assert names == sorted(names) and "work_mem" in names and "lock_timeout" in names
    before = {s.name: s for s in first}
    iid = _instance(engine, "pg-config", "postgres")
    created = _settings(engine, iid, first, "s-1")
    assert _counts(created) == (len(first), len(first), 0, 0, 0)

    pg.run(
        "ALTER DATABASE {db} SET work_mem = '13MB'",
        "ALTER ROLE {setter} IN DATABASE {db} SET lock_timeout = '3s'",
        db=pg.database,
        setter=setter,
    )
    second = read_settings(as_setter)
    changed = _settings(engine, iid, second, "s-2")
    wm, lt = before["work_mem"], before["lock_timeout"]
    assert changed.changes == [
        f"lock_timeout: {lt.value} -> 3s (source: {lt.attributes['source']} -> database user)",
        f"work_mem: {wm.value} -> 13MB (source: {wm.attributes['source']} -> database)",
    ]
    assert _counts(changed) == (len(second), 0, 2, 0, len(second) - 2)
    with session_scope(engine) as s:
        row = s.scalar(select(ServerSetting).where(ServerSetting.instance_id == iid, ServerSetting.name == "work_mem"))
        assert row is not None
        assert (row.value, row.attributes["setting"], row.attributes["unit"]) == ("13MB", "13312", "kB")

    # A setting the server stops listing is kept as deleted, and restored when it comes back.
    without = [s for s in second if s.name != "work_mem"]
    gone = _settings(engine, iid, without, "s-3")
    assert (_counts(gone), gone.changes) == ((len(without), 0, 0, 1, len(without)), ["-work_mem (was 13MB)"])
    back = _settings(engine, iid, second, "s-4")
    assert (_counts(back)[2], back.changes) == (1, ["+work_mem = 13MB (restored, was 13MB)"])


def test_pg_settings_leave_out_sensitive_and_per_connection_ones(pg: PgSandbox) -> None:
    settings = read_settings(pg.conn())
    names = {s.name for s in settings}
    assert not [n for n in names if is_sensitive_setting(n)]
    assert {"ssl_key_file", "password_encryption", "work_mem", "shared_buffers"} <= names
    assert not names & {"application_name", "transaction_read_only", "transaction_isolation", "is_superuser"}
    assert not names & {"primary_conninfo", "ssl_passphrase_command"}
    assert "statement_timeout" in names
    # Our own connection options do not leak into what is read as the server's settings.
    assert {s.name: s for s in settings}["statement_timeout"].attributes["source"] != "client"


def test_pg_capacity_sizes_and_time_series(engine: Engine, pg: PgSandbox) -> None:
    pg.run(
        "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL)",
        # 1 KiB of hex per row: under the TOAST threshold, so stored as is (no compression).
        "INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 2000) g",
        "CREATE TABLE small (id int)",
        "ANALYZE big",
    )
    sizes = read_capacity(pg.conn(), top_tables=5)
    by_db = {d.database: d for d in sizes}
    mine = by_db[pg.database]
    assert [d.database for d in sizes] == sorted(by_db)
    assert all(d.tables == [] for d in sizes if d.database != pg.database)
    assert all(d.bytes > 0 for d in sizes)
    big = mine.tables[0]
    assert big["name"] == "public.big"
    assert big["table_bytes"] >= KNOWN_BYTES
    assert big["index_bytes"] > 0
    assert big["bytes"] == big["table_bytes"] + big["index_bytes"]
    assert big["rows"] == 2000
    assert mine.bytes >= big["bytes"]
    assert [t["name"] for t in mine.tables] == ["public.big", "public.small"]
    json.dumps([d.to_json() for d in sizes])

    iid = _instance(engine, "pg-cap", "postgres")
    with session_scope(engine) as s:
        first = append_capacity(s, instance_id=iid, session_id="s-1", sizes=sizes)
    assert _counts(first) == (len(sizes), len(sizes), 0, 0, 0)
    assert first.changes[0].startswith("+") and len(first.changes) == len(sizes)

    pg.run("INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(2001, 4000) g", "ANALYZE big")
    later = read_capacity(pg.conn(), top_tables=5)
    grown = {d.database: d for d in later}[pg.database]
    assert grown.tables[0]["table_bytes"] >= 2 * KNOWN_BYTES
    with session_scope(engine) as s:
        second = append_capacity(s, instance_id=iid, session_id="s-2", sizes=later)
    assert second.counts.created == len(later)
    line = next(c for c in second.changes if c.startswith(pg.database + ":"))
    assert re.fullmatch(re.escape(pg.database) + r": [\d.]+ MiB -> [\d.]+ MiB \(\+[\d.]+ MiB\)", line), line

    # A retried task for the same session replaces its samples instead of adding more.
    with session_scope(engine) as s:
        retry = append_capacity(s, instance_id=iid, session_id="s-2", sizes=later)
    assert _counts(retry) == (len(later), 0, len(later), 0, 0)
    assert line in retry.changes  # still compared with the previous session, not with itself
    with session_scope(engine) as s:
        history = capacity_history(s, instance_id=iid, database=pg.database)
        assert [h.session_id for h in history] == ["s-1", "s-2"]
        assert [h.bytes for h in history] == [mine.bytes, grown.bytes]
        assert history[1].tables[0]["name"] == "public.big" and history[1].collected_at >= history[0].collected_at
        total = s.scalar(select(func.count()).select_from(CapacitySample).where(CapacitySample.instance_id == iid))
        assert total == len(sizes) + len(later)


def test_pg_missing_privilege_is_permanent_and_names_it(pg: PgSandbox) -> None:
    nosy = pg.role("nosy")
    pg.run("CREATE ROLE {nosy} LOGIN", "REVOKE CONNECT ON DATABASE {db} FROM PUBLIC", nosy=nosy, db=pg.database)
    as_nosy = replace(pg.admin, user=nosy, database="postgres")
    with pytest.raises(PermanentSyncError) as err:
        read_capacity(as_nosy)
    assert not isinstance(err.value, AuthError)
    msg = str(err.value)
    assert "lacks CONNECT on" in msg and pg.database in msg and "while reading capacity" in msg and nosy in msg
    # Connecting to a database it may not connect to is a refused login.
    with pytest.raises(AuthError, match="permission denied for database"):
        read_accounts(replace(as_nosy, database=pg.database))
    # What needs no privilege still works for it.
    assert nosy in {a.identity for a in read_accounts(as_nosy)}


def test_pg_auth_errors_name_the_server_and_user_never_the_password(pg: PgSandbox) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    ghost = pg.role("ghost")
    conn = replace(pg.admin, user=ghost, password=secret)
    assert secret not in repr(conn)
    with pytest.raises(AuthError) as err:
        read_accounts(conn)
    text = f"{err.value} {err.value!r}"
    assert f"{pg.admin.host}:{pg.admin.port}" in text and ghost in text and "does not exist" in text
    assert secret not in text
    with pytest.raises(AuthError, match=r'database "nosuchdb_\w+" does not exist'):
        read_settings(replace(pg.admin, database=f"nosuchdb_{uuid.uuid4().hex[:6]}"))


@pytest.mark.parametrize("tls_mode", ["require", "verify-full"])
def test_tls_required_but_impossible_is_permanent(tls_mode: str) -> None:
    # Neither local server offers TLS: asking for it cannot succeed, retrying will not help.
    for conn in (_pg_admin(), _my_admin()):
        with pytest.raises(PermanentSyncError, match=rf"tls_mode={tls_mode}\).*(?i:ssl)") as err:
            read_settings(replace(conn, tls_mode=tls_mode))  # type: ignore[arg-type]
        assert not isinstance(err.value, AuthError)
    # "prefer" falls back to a plain connection.
    assert read_settings(replace(_pg_admin(), tls_mode="prefer")) and read_settings(
        replace(_my_admin(), tls_mode="prefer")
    )


def test_pg_unreachable_or_silent_server_is_transient() -> None:
    port = _free_port()
    conn = DbConnection(kind="postgres", host="127.0.0.1", port=port, user="postgres", connect_timeout=2)
    with pytest.raises(TransientSyncError, match=rf"127\.0\.0\.1:{port}.*(refused|could not connect)"):
        read_accounts(conn)
    with _silent_server() as silent:
        started = time.monotonic()
        with pytest.raises(TransientSyncError, match=rf"127\.0\.0\.1:{silent}.*timeout"):
            read_capacity(replace(conn, port=silent))
        assert time.monotonic() - started < 15


# ========================================================================= MariaDB / MySQL


@dataclass
class MySandbox:
    """A throwaway schema plus users/roles named ``<prefix>_<name>`` on the MariaDB/MySQL test server."""

    prefix: str
    schema: str
    admin: DbConnection

    def name(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def conn(self, **overrides: Any) -> DbConnection:
        return replace(self.admin, **overrides)

    def run(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        """Run statements; ``(sql, params)`` pairs use PyMySQL's parameter quoting."""
        with self.connect() as conn, conn.cursor() as cur:
            for stmt in statements:
                if isinstance(stmt, tuple):
                    cur.execute(stmt[0], stmt[1])
                else:
                    cur.execute(stmt)

    def connect(self) -> pymysql.connections.Connection[Any]:
        a = self.admin
        return pymysql.connect(host=a.host, port=a.port, user=a.user, password=a.password or "", autocommit=True)

    def mine(self, accounts: list[AccountSnapshot]) -> list[AccountSnapshot]:
        return [a for a in accounts if a.identity.startswith(self.prefix + "_")]


def _q(name: str) -> str:
    """A quoted MySQL identifier (our generated names only)."""
    return "`" + name.replace("`", "``") + "`"


@pytest.fixture
def my() -> Iterator[MySandbox]:
    admin = _my_admin()
    prefix = f"sfdb{uuid.uuid4().hex[:10]}"
    box = MySandbox(prefix=prefix, schema=f"{prefix}_db", admin=admin)
    box.run(f"CREATE DATABASE {_q(box.schema)}")
    try:
        yield box
    finally:
        with box.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT User, Host FROM mysql.user WHERE User LIKE %s", (prefix + "\\_%",))
            accounts = cur.fetchall()
            for user, host in accounts:
                if host == "":  # a MariaDB role
                    cur.execute("DROP ROLE IF EXISTS %s", (user,))
                else:  # a user (a MySQL role is one too)
                    cur.execute("DROP USER IF EXISTS %s@%s", (user, host))
            cur.execute(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s", (prefix + "%",)
            )
            for (schema,) in cur.fetchall():
                cur.execute(f"DROP DATABASE IF EXISTS {_q(schema)}")


def _mariadb(box: MySandbox) -> bool:
    with box.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        return "mariadb" in str(cur.fetchone()[0]).lower()


def test_mysql_accounts_read_apply_change(engine: Engine, my: MySandbox) -> None:
    mariadb = _mariadb(my)
    alice, bob, carol, ops = (my.name(n) for n in ("alice", "bob", "carol", "ops"))
    db = my.schema
    my.run(
        f"CREATE TABLE {_q(db)}.t1 (id INT PRIMARY KEY, name VARCHAR(20))",
        f"CREATE ROLE {_q(ops)}",
        f"GRANT SELECT ON {_q(db)}.* TO {_q(ops)}",
        ("CREATE USER %s@'%%' IDENTIFIED BY 'pw-alice' WITH MAX_USER_CONNECTIONS 5", (alice,)),
        (f"GRANT {_q(ops)} TO %s@'%%'", (alice,)),
        (f"GRANT SELECT, INSERT ON {_q(db)}.t1 TO %s@'%%'", (alice,)),
        ("GRANT PROCESS ON *.* TO %s@'%%'", (alice,)),
        ("CREATE USER %s@'127.0.0.1' ACCOUNT LOCK", (bob,)),
        (f"GRANT SELECT (name, id) ON {_q(db)}.t1 TO %s@'127.0.0.1' WITH GRANT OPTION", (bob,)),
    )
    a_id, b_id, c_id = f"{alice}@%", f"{bob}@127.0.0.1", f"{carol}@%"
    ops_id = ops if mariadb else f"{ops}@%"
    first = my.mine(read_accounts(my.conn()))
    by_id = {a.identity: a for a in first}
    assert sorted(by_id) == sorted([a_id, b_id, ops_id])
    a = by_id[a_id]
    assert a.privileges == [f"INSERT on {db}.t1", "PROCESS on *.*", f"SELECT on {db}.t1"]
    assert a.memberships == [ops_id]
    assert {k: a.attributes[k] for k in ("account_locked", "password_expired", "max_user_connections", "plugin")} == {
        "account_locked": False,
        "password_expired": False,
        "max_user_connections": 5,
        "plugin": "mysql_native_password" if mariadb else a.attributes["plugin"],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a.attributes["password_last_changed"])
    b = by_id[b_id]
    assert b.attributes["account_locked"] is True
    assert b.privileges == [f"GRANT OPTION on {db}.t1", f"SELECT (id, name) on {db}.t1"]
    assert by_id[ops_id].privileges == [f"SELECT on {db}.*"]
    if mariadb:
        assert by_id[ops_id].attributes == {"is_role": True}

    # Never the password nor its hash.
    with my.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT authentication_string FROM mysql.user WHERE User = %s", (alice,))
        pw_hash = cur.fetchone()[0]
    dumped = json.dumps([x.to_json() for x in read_accounts(my.conn())])
    assert pw_hash and pw_hash not in dumped and "pw-alice" not in dumped and "IDENTIFIED" not in dumped

    iid = _instance(engine, "maria-main", "mysql")
    created = _accounts(engine, iid, first, "s-1")
    assert _counts(created) == (3, 3, 0, 0, 0)
    assert _counts(_accounts(engine, iid, my.mine(read_accounts(my.conn())), "s-2")) == (3, 0, 0, 0, 3)

    my.run(
        ("ALTER USER %s@'%%' ACCOUNT LOCK", (alice,)),
        (f"REVOKE {_q(ops)} FROM %s@'%%'", (alice,)),
        (f"REVOKE INSERT ON {_q(db)}.t1 FROM %s@'%%'", (alice,)),
        (f"GRANT UPDATE ON {_q(db)}.t1 TO %s@'%%'", (alice,)),
        ("DROP USER %s@'127.0.0.1'", (bob,)),
        ("CREATE USER %s@'%%'", (carol,)),
    )
    changed = _accounts(engine, iid, my.mine(read_accounts(my.conn())), "s-3")
    assert _counts(changed) == (3, 1, 1, 1, 1)
    assert changed.changes == [
        f"{a_id}: +ACCOUNT LOCKED, -member of {ops_id}, -INSERT on {db}.t1, +UPDATE on {db}.t1",
        f"{c_id}: created (0 privileges, 0 memberships)",
        f"{b_id}: deleted",
    ]

    my.run((f"GRANT {_q(ops)} TO %s@'%%'", (carol,)))
    granted = _accounts(engine, iid, my.mine(read_accounts(my.conn())), "s-4")
    assert (_counts(granted), granted.changes) == ((3, 0, 1, 0, 2), [f"{c_id}: +member of {ops_id}"])


def test_mysql_missing_privilege_is_permanent_and_names_it(my: MySandbox) -> None:
    nosy = my.name("nosy")
    my.run(("CREATE USER %s@'%%' IDENTIFIED BY 'pw-nosy'", (nosy,)))
    as_nosy = my.conn(user=nosy, password="pw-nosy")
    with pytest.raises(PermanentSyncError) as err:
        read_accounts(as_nosy)
    assert not isinstance(err.value, AuthError)
    msg = str(err.value)
    assert "denied" in msg and "`mysql`.`user`" in msg and "while reading accounts" in msg and nosy in msg
    assert "pw-nosy" not in msg
    # SHOW GLOBAL VARIABLES needs no privilege.
    assert any(s.name == "max_connections" for s in read_settings(as_nosy))


def test_mysql_wrong_password_unknown_user_unreachable(my: MySandbox) -> None:
    user = my.name("pw")
    my.run(("CREATE USER %s@'%%' IDENTIFIED BY 'right-pw'", (user,)))
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises(AuthError) as err:
        read_accounts(my.conn(user=user, password=wrong))
    text = f"{err.value} {err.value!r}"
    assert f"{my.admin.host}:{my.admin.port}" in text and user in text and "1045" in text
    assert wrong not in text
    assert read_settings(my.conn(user=user, password="right-pw"))  # the right one logs in
    with pytest.raises(AuthError):
        read_settings(my.conn(user=my.name("ghost"), password="x"))
    with pytest.raises(AuthError, match="Unknown database"):
        read_settings(my.conn(database=my.name("nosuchdb")))

    port = _free_port()
    with pytest.raises(TransientSyncError, match=rf"127\.0\.0\.1:{port}.*refused"):
        read_capacity(my.conn(host="127.0.0.1", port=port, connect_timeout=2))
    with _silent_server() as silent:
        started = time.monotonic()
        with pytest.raises(TransientSyncError, match=rf"127\.0\.0\.1:{silent}"):
            read_accounts(my.conn(host="127.0.0.1", port=silent, connect_timeout=2, query_timeout=2))
        assert time.monotonic() - started < 15


def test_mysql_capacity_sizes_and_time_series(engine: Engine, my: MySandbox) -> None:
    db, empty = my.schema, my.name("empty")
    my.run(
        f"CREATE DATABASE {_q(empty)}",
        f"CREATE TABLE {_q(db)}.big (id INT PRIMARY KEY, tag VARCHAR(8), payload VARCHAR(1024), KEY (tag))"
        " ENGINE=InnoDB",
        f"CREATE TABLE {_q(db)}.small (id INT PRIMARY KEY) ENGINE=InnoDB",
    )

    def fill(start: int) -> None:
        with my.connect() as conn, conn.cursor() as cur:
            rows = [(i, f"t{i % 7}", (f"{i:08d}" * 128)) for i in range(start, start + 2000)]
            cur.executemany(f"INSERT INTO {_q(db)}.big VALUES (%s, %s, %s)", rows)
            cur.execute(f"ANALYZE TABLE {_q(db)}.big")
            cur.fetchall()

    fill(0)
    sizes = read_capacity(my.conn(), top_tables=5)
    by_db = {d.database: d for d in sizes}
    assert "information_schema" not in by_db and "performance_schema" not in by_db
    assert by_db[empty].bytes == 0 and by_db[empty].tables == []
    mine = by_db[db]
    big = mine.tables[0]
    assert big["name"] == f"{db}.big"
    assert big["table_bytes"] >= KNOWN_BYTES and big["index_bytes"] > 0
    assert big["bytes"] == big["table_bytes"] + big["index_bytes"]
    assert [t["name"] for t in mine.tables] == [f"{db}.big", f"{db}.small"]
    assert mine.bytes == sum(t["bytes"] for t in mine.tables)

    iid = _instance(engine, "maria-cap", "mysql")
    with session_scope(engine) as s:
        first = append_capacity(s, instance_id=iid, session_id="s-1", sizes=sizes)
    assert _counts(first) == (len(sizes), len(sizes), 0, 0, 0)
    fill(5000)
    later = read_capacity(my.conn(), top_tables=1)
    grown = {d.database: d for d in later}[db]
    assert grown.bytes >= 2 * KNOWN_BYTES and len(grown.tables) == 1
    with session_scope(engine) as s:
        second = append_capacity(s, instance_id=iid, session_id="s-2", sizes=later)
    line = next(c for c in second.changes if c.startswith(db + ":"))
    assert re.fullmatch(re.escape(db) + r": [\d.]+ MiB -> [\d.]+ MiB \(\+[\d.]+ MiB\)", line), line
    assert not any(c.startswith(empty) for c in second.changes)  # its size did not move
    with session_scope(engine) as s:
        assert [h.bytes for h in capacity_history(s, instance_id=iid, database=db)] == [mine.bytes, grown.bytes]


def test_mysql_settings_diff_and_sensitive_names(engine: Engine, my: MySandbox) -> None:
    first = read_settings(my.conn())
    names = [s.name for s in first]
    assert names == sorted(names) and "max_connections" in names and "key_buffer_size" in names
    assert not [n for n in names if is_sensitive_setting(n)]
    assert not [n for n in names if n.startswith("gtid_") and n.endswith("_pos")]
    by_name = {s.name: s for s in first}
    if _mariadb(my):
        assert by_name["max_connections"].attributes["source"] in {"compile-time", "config", "command-line", "sql"}

    iid = _instance(engine, "maria-config", "mysql")
    assert _counts(_settings(engine, iid, first, "s-1")) == (len(first), len(first), 0, 0, 0)
    second = read_settings(my.conn())
    assert _counts(_settings(engine, iid, second, "s-2")) == (len(second), 0, 0, 0, len(second))

    # The shared server's globals stay untouched: change a copy of the snapshot instead.
    mc, wt = by_name["max_connections"], by_name["wait_timeout"]
    bumped = SettingSnapshot(
        name="max_connections", value=str(int(mc.value or 0) + 1), attributes={**mc.attributes, "source": "sql"}
    )
    edited = [bumped if s.name == "max_connections" else s for s in second if s.name != "wait_timeout"]
    edited.append(SettingSnapshot(name="zz_syncflow_test", value="on"))
    result = _settings(engine, iid, edited, "s-3")
    src = mc.attributes.get("source")
    assert result.changes == [
        f"max_connections: {mc.value} -> {bumped.value}" + (f" (source: {src} -> sql)" if src != "sql" else ""),
        "+zz_syncflow_test = on",
        f"-wait_timeout (was {wt.value})",
    ]
    assert _counts(result) == (len(edited), 1, 1, 1, len(edited) - 2)


# ===================================================================== one transaction


def test_apply_and_record_counts_commit_together_or_not_at_all(engine: Engine, pg: PgSandbox) -> None:
    snapshot = read_accounts(pg.conn())
    iid = _instance(engine, "pg-tx", "postgres")
    with session_scope(engine) as s:
        sess = book.create_session(s, sync_type="manual_batch", sync_category="account")
        (rec,) = book.add_instance_records(s, session_id=sess.session_id, instances=[s.get(Instance, iid)])
        sid, rid = sess.session_id, rec.id

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with session_scope(engine) as s:
            diff = apply_accounts(s, instance_id=iid, snapshot=snapshot, session_id=sid)
            book.add_record_progress(s, record_id=rid, counts=diff.counts, details=diff.details())
            raise Boom
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Account)) == 0
        assert s.get(SyncInstanceRecord, rid).items_created == 0  # type: ignore[union-attr]

    with session_scope(engine) as s:
        diff = apply_accounts(s, instance_id=iid, snapshot=snapshot, session_id=sid)
        book.add_record_progress(s, record_id=rid, counts=diff.counts, details=diff.details(limit=2))
    with session_scope(engine) as s:
        rec = s.get(SyncInstanceRecord, rid)
        assert rec is not None
        assert (rec.items_synced, rec.items_created) == (len(snapshot), len(snapshot))
        details = rec.sync_details or {}
        assert details["changes_total"] == len(snapshot) and len(details["changes"]) == min(2, len(snapshot))
        assert details["changes_truncated"] is (len(snapshot) > 2)
        assert s.scalar(select(func.count()).select_from(Account)) == len(snapshot)


def test_a_snapshot_listing_one_identity_twice_changes_nothing(engine: Engine) -> None:
    iid = _instance(engine, "pg-dup", "postgres")
    twice = [AccountSnapshot(identity="alice"), AccountSnapshot(identity="alice", attributes={"login": True})]
    with pytest.raises(ProtocolError, match=r"pg-dup.*'alice' listed twice"):
        with session_scope(engine) as s:
            apply_accounts(s, instance_id=iid, snapshot=twice, instance_name="pg-dup")
    with pytest.raises(ProtocolError, match="setting 'x' listed twice"):
        with session_scope(engine) as s:
            apply_settings(s, instance_id=iid, snapshot=[SettingSnapshot("x", "1"), SettingSnapshot("x", "2")])
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Account)) == 0
    # Dicts (to_json() of a Prefect task result) are accepted as well.
    with session_scope(engine) as s:
        result = apply_accounts(s, instance_id=iid, snapshot=[AccountSnapshot("bob").to_json()])
    assert result.counts == ItemCounts(synced=1, created=1)


def test_a_deleted_account_that_comes_back_unchanged_is_restored(engine: Engine) -> None:
    iid = _instance(engine, "pg-restore", "postgres")
    alice = AccountSnapshot(identity="alice", attributes={"login": True}, privileges=["CONNECT on database app"])
    bob = AccountSnapshot(identity="bob")
    assert _counts(_accounts(engine, iid, [alice, bob], "s-1")) == (2, 2, 0, 0, 0)
    gone = _accounts(engine, iid, [bob], "s-2")
    assert (_counts(gone), gone.changes) == ((1, 0, 0, 1, 1), ["alice: deleted"])
    assert _counts(_accounts(engine, iid, [bob], "s-3")) == (1, 0, 0, 0, 1)  # deleted once, not again
    back = _accounts(engine, iid, [alice, bob], "s-4")
    assert (_counts(back), back.changes) == ((2, 0, 1, 0, 1), ["alice: restored"])
    with session_scope(engine) as s:
        row = s.scalar(select(Account).where(Account.instance_id == iid, Account.identity == "alice"))
        assert row is not None and not row.deleted and row.deleted_at is None and row.last_session_id == "s-4"


def test_an_empty_snapshot_never_marks_everything_deleted(engine: Engine) -> None:
    iid = _instance(engine, "pg-empty", "postgres")
    assert _counts(_accounts(engine, iid, [AccountSnapshot("alice"), AccountSnapshot("bob")], "s-1"))[1] == 2
    with pytest.raises(ProtocolError, match=r"pg-empty: the server listed no accounts while 2 are stored"):
        with session_scope(engine) as s:
            apply_accounts(s, instance_id=iid, snapshot=[], instance_name="pg-empty")
    with session_scope(engine) as s:
        apply_settings(s, instance_id=iid, snapshot=[SettingSnapshot("work_mem", "4MB")])
    with pytest.raises(ProtocolError, match=r"no settings while 1 are stored"):
        with session_scope(engine) as s:
            apply_settings(s, instance_id=iid, snapshot=[], instance_name="pg-empty")
    with session_scope(engine) as s:  # nothing changed
        assert s.scalar(select(func.count()).select_from(Account).where(Account.deleted.is_(True))) == 0
    # one account gone is a normal deletion; an empty store accepts an empty snapshot
    assert _accounts(engine, iid, [AccountSnapshot("bob")], "s-2").changes == ["alice: deleted"]
    other = _instance(engine, "pg-fresh", "postgres")
    assert _counts(_accounts(engine, other, [], "s-3")) == (0, 0, 0, 0, 0)


# ============================================================ the instance-sync step, end to end


def _begin(engine: Engine, iid: int, category: str) -> InstanceRun:
    with session_scope(engine) as s:
        sess = book.create_session(s, sync_type="scheduled", sync_category=category)
        (rec,) = book.add_instance_records(s, session_id=sess.session_id, instances=[s.get(Instance, iid)])
        rid = rec.id
    run = begin_instance_sync(record_id=rid, owner=f"test-{uuid.uuid4().hex[:6]}", lease_seconds=60, engine=engine)
    assert isinstance(run, InstanceRun)
    return run


@pytest.mark.parametrize("category", ["account", "capacity", "config"])
def test_store_snapshot_counts_the_record_in_the_same_transaction(engine: Engine, my: MySandbox, category: str) -> None:
    my.run(("CREATE USER %s@'%%'", (my.name("u"),)))
    iid = _instance(engine, "maria-e2e", "mysql")

    def sync() -> tuple[Stored, int, SyncInstanceRecord, int]:
        run = _begin(engine, iid, category)
        snapshot: list[Any] = read_snapshot(my.conn(), category, top_tables=3)
        if category == "account":
            snapshot = my.mine(snapshot)
        result = store_snapshot(run, snapshot, engine=engine)
        assert finish_instance_sync(run, outcome="completed", engine=engine) == "completed"
        with session_scope(engine) as s:
            rec = s.get(SyncInstanceRecord, run.record_id)
            assert rec is not None
            version = sync_state.get_state(s, instance_id=iid, category=category).metadata_version
        return result, len(snapshot), rec, version

    first, n, rec, version = sync()
    assert (rec.status, rec.items_synced, rec.items_created, rec.items_updated) == ("completed", n, n, 0)
    assert n > 0 and first.counts["created"] == n
    assert rec.sync_details is not None and rec.sync_details["changes_total"] == first.changes_total
    assert version == (0 if category == "capacity" else 1)

    second, n2, rec2, version2 = sync()
    if category == "capacity":  # a new sample per database and session
        assert (rec2.items_created, second.counts["created"]) == (n2, n2)
    else:
        assert (rec2.items_synced, rec2.items_unchanged, rec2.items_created) == (n2, n2, 0)
        assert version2 == 1  # nothing changed: no new version
    with session_scope(engine) as s:
        stored = {
            "account": select(func.count()).select_from(Account),
            "config": select(func.count()).select_from(ServerSetting),
            "capacity": select(func.count()).select_from(CapacitySample),
        }[category]
        assert s.scalar(stored) == (n + n2 if category == "capacity" else n2)


def test_store_snapshot_stores_nothing_once_the_lease_is_lost(engine: Engine) -> None:
    iid = _instance(engine, "pg-lease", "postgres")
    run = _begin(engine, iid, "account")
    with session_scope(engine) as s:  # another worker took the (instance, category) over
        s.execute(
            update(SyncConfigItem)
            .where(SyncConfigItem.instance_id == iid, SyncConfigItem.category == "account")
            .values(lock_owner="someone-else")
        )
    with pytest.raises(sync_state.LeaseLostError):
        store_snapshot(run, [AccountSnapshot("alice")], engine=engine)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Account)) == 0
        rec = s.get(SyncInstanceRecord, run.record_id)
        assert rec is not None and rec.items_synced == 0


def test_store_snapshot_refuses_other_categories(engine: Engine) -> None:
    iid = _instance(engine, "pg-cat", "postgres")
    run = replace(_begin(engine, iid, "account"), category="messages")
    with pytest.raises(ConfigError, match="messages"):
        store_snapshot(run, [], engine=engine)
    with pytest.raises(ConfigError, match="messages"):
        read_snapshot(_pg_admin(), "messages")
