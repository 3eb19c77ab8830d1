"""Issue 9 defect 6: a database user that cannot see what a category measures never gets a
made-up zero: the read fails, naming what the user lacks, and works once the documented
minimal grants (README, "Grants per kind and category") are given.

Real low-privilege roles/users on the local PostgreSQL and MariaDB servers, created with
unique names by the sandboxes of ``test_db_sources`` and dropped at the end.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from syncflow.errors import AuthError, PermanentSyncError
from syncflow.sources.database import read_accounts, read_capacity, read_settings
from tests.integration.syncflow.test_db_sources import KNOWN_BYTES, MySandbox, PgSandbox, _q
from tests.integration.syncflow.test_db_sources import my as my
from tests.integration.syncflow.test_db_sources import pg as pg

# ---------------------------------------------------------------------------- PostgreSQL


def test_pg_capacity_refuses_databases_the_role_cannot_measure_then_pg_read_all_stats_suffices(
    pg: PgSandbox,
) -> None:
    watcher = pg.role("watcher")
    pg.run(
        "CREATE ROLE {watcher} LOGIN",
        "REVOKE CONNECT ON DATABASE {db} FROM PUBLIC",
        "CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 32) AS pad FROM generate_series(1, 2000) g",
        watcher=watcher,
        db=pg.database,
    )
    as_watcher = replace(pg.admin, user=watcher, database="postgres")
    with pytest.raises(PermanentSyncError) as err:
        read_capacity(as_watcher)
    assert not isinstance(err.value, AuthError)
    msg = str(err.value)
    assert "lacks CONNECT on" in msg and pg.database in msg and "pg_read_all_stats" in msg and watcher in msg
    assert "refusing to report sizes it cannot measure" in msg

    # accounts need no privilege
    assert watcher in {a.identity for a in read_accounts(as_watcher)}
    # config: pg_settings hides the superuser-only settings from it -> refused, not a subset
    with pytest.raises(PermanentSyncError) as err:
        read_settings(as_watcher)
    msg = str(err.value)
    assert "config would be incomplete" in msg and "GRANT pg_read_all_settings" in msg and watcher in msg
    pg.run("GRANT pg_read_all_settings TO {watcher}", watcher=watcher, database="postgres")
    assert {s.name for s in read_settings(as_watcher)} == {s.name for s in read_settings(pg.admin)}

    # the documented minimal grant for capacity: pg_read_all_stats (no CONNECT needed)
    pg.run("GRANT pg_read_all_stats TO {watcher}", watcher=watcher, database="postgres")
    sizes = {d.database: d.bytes for d in read_capacity(as_watcher)}
    truth = {d.database: d.bytes for d in read_capacity(pg.admin)}
    assert sizes[pg.database] == truth[pg.database] >= KNOWN_BYTES // 2


# ------------------------------------------------------------------------- MariaDB/MySQL


def _user(my: MySandbox, label: str, *grants: str) -> str:
    user = my.name(label)
    my.run((f"CREATE USER %s@'%%' IDENTIFIED BY 'pw-{label}'", (user,)))
    for grant in grants:
        my.run((f"{grant} TO %s@'%%'", (user,)))
    return user


def _fill(my: MySandbox) -> None:
    db = _q(my.schema)
    my.run(
        f"CREATE TABLE {db}.big (id INT PRIMARY KEY, payload VARCHAR(1024)) ENGINE=InnoDB",
        f"CREATE TABLE {db}.small (id INT PRIMARY KEY) ENGINE=InnoDB",
    )
    with my.connect() as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {db}.big VALUES (%s, %s)", [(i, f"{i:08d}" * 128) for i in range(2000)])
        cur.execute(f"ANALYZE TABLE {db}.big")
        cur.fetchall()


@pytest.mark.parametrize(
    ("label", "grants", "lacks"),
    [
        # USAGE only: it saw no schema at all -> "completed, 0 databases" before
        ("bare", (), ["SHOW DATABASES", "table privilege"]),
        # SHOW DATABASES only: every schema listed, every table hidden -> 10 MiB read as 0 B before
        ("listonly", ("GRANT SHOW DATABASES ON *.*",), ["table privilege"]),
        # a table of one schema: that schema only, its other tables hidden
        ("onetable", ("GRANT SELECT ON {schema}.small",), ["SHOW DATABASES", "table privilege"]),
    ],
)
def test_mysql_capacity_refuses_what_the_user_cannot_see(
    my: MySandbox,
    label: str,
    grants: tuple[str, ...],
    lacks: list[str],
) -> None:
    _fill(my)
    user = _user(my, label, *(g.format(schema=_q(my.schema)) for g in grants))
    with pytest.raises(PermanentSyncError) as err:
        read_capacity(my.conn(user=user, password=f"pw-{label}"))
    msg = str(err.value)
    assert "capacity would be incomplete" in msg and user in msg and "GRANT SHOW DATABASES, SHOW VIEW ON *.*" in msg
    assert "while reading capacity" in msg and f"pw-{label}" not in msg
    for what in lacks:
        assert what in msg, msg
    if "SHOW DATABASES" not in lacks:
        assert "SHOW DATABASES (" not in msg


def test_mysql_capacity_with_the_documented_grants_equals_the_admins(my: MySandbox) -> None:
    _fill(my)
    truth = {d.database: d for d in read_capacity(my.conn())}
    direct = _user(my, "direct", "GRANT SHOW DATABASES, SHOW VIEW ON *.*")
    sizes = {d.database: d for d in read_capacity(my.conn(user=direct, password="pw-direct"))}
    assert set(sizes) == set(truth)
    assert sizes[my.schema].bytes == truth[my.schema].bytes >= KNOWN_BYTES
    assert sizes[my.schema].tables == truth[my.schema].tables

    # the same grants through a (MariaDB default) role count too
    with my.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        mariadb = "mariadb" in str(cur.fetchone()[0]).lower()  # type: ignore[index]
    if mariadb:
        role = my.name("capacity_role")
        my.run(f"CREATE ROLE {_q(role)}", f"GRANT SHOW DATABASES, SHOW VIEW ON *.* TO {_q(role)}")
        viaro = _user(my, "viarole", f"GRANT {_q(role)}")
        my.run((f"SET DEFAULT ROLE {_q(role)} FOR %s@'%%'", (viaro,)))
        via_role = {d.database: d for d in read_capacity(my.conn(user=viaro, password="pw-viarole"))}
        assert via_role[my.schema].bytes == truth[my.schema].bytes
