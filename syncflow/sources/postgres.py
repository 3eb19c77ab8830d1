"""Read accounts, capacity and config from a PostgreSQL server (psycopg 3).

Every read runs in one ``REPEATABLE READ, READ ONLY`` transaction, so its queries see one
consistent snapshot of the catalogs, and needs no privilege beyond what any role has, except:
``pg_database_size`` needs CONNECT on every database (or membership of ``pg_read_all_stats``),
and the config needs superuser or ``pg_read_all_settings`` (some settings are shown only to them).

**Accounts** are the roles of the cluster except the predefined ``pg_*`` ones. Attributes:
``login``, ``superuser``, ``createdb``, ``createrole``, ``replication``, ``bypassrls``,
``inherit``, ``connection_limit`` (-1 = unlimited), ``valid_until`` (ISO UTC, ``infinity`` or
None), ``config.<name>`` for each per-role setting (``ALTER ROLE ... SET``; sensitive names
left out) and, when the connected user may read ``pg_authid``, ``password_type``
(``scram-sha-256`` | ``md5`` | None; never the verifier itself).

Privileges are what was granted to the role itself (the ACLs, owner's implicit rights
included; not what it inherits - memberships are listed apart), as sorted strings:

* ``CONNECT on database app`` / ``CREATE`` / ``TEMP`` - every database of the cluster;
* ``USAGE on schema sales`` / ``CREATE on schema sales`` - schemas of the connected database;
* ``SELECT on public.*`` when the role has it on every table/view of the schema, else one
  ``SELECT on public.orders`` per table (connected database; partitions are left out, their
  parent counts);
* ``OWNER of database app`` / ``OWNER of schema sales`` / ``OWNER of public.orders`` (or ``public.*``);
* a privilege held ``WITH GRANT OPTION`` carries that suffix.

Memberships: ``ops`` or ``ops WITH ADMIN OPTION`` (PostgreSQL 16+: also ``INHERIT FALSE`` /
``SET FALSE`` when so granted).

**Capacity**: ``pg_database_size`` of every database; the connected database also lists its
``top_tables`` largest tables (``pg_total_relation_size`` = ``pg_table_size`` + ``pg_indexes_size``).
A database the user may not measure (no CONNECT, not a member of ``pg_read_all_stats``) fails the
read with a :class:`~syncflow.errors.PermanentSyncError` naming it: never a made-up size.

**Config**: ``pg_settings`` (needs superuser or ``pg_read_all_settings``: without it the
superuser-only settings are hidden and the read fails rather than store a subset); value is
what ``SHOW`` prints (``4MB``), attributes ``setting`` (raw), ``unit``, ``source``,
``context``, ``vartype``, ``pending_restart``. Sensitive names
(:func:`~syncflow.sources.db_snapshots.is_sensitive_setting`) and the per-connection ones
(``application_name``, ``transaction_*``, ...) are left out.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Final

from syncflow.errors import PermanentSyncError
from syncflow.sources.db_connection import DbConnection, open_postgres
from syncflow.sources.db_snapshots import (
    AccountSnapshot,
    DatabaseSize,
    SettingSnapshot,
    TableSize,
    is_sensitive_setting,
)

log = logging.getLogger(__name__)

DEFAULT_TOP_TABLES: Final = 20

# Settings that describe our own connection, not the server.
SESSION_SETTINGS: Final = frozenset(
    {
        "application_name",
        "client_encoding",
        "is_superuser",
        "role",
        "session_authorization",
        "transaction_deferrable",
        "transaction_isolation",
        "transaction_read_only",
    }
)

_PRIVILEGE_NAMES: Final = {"TEMPORARY": "TEMP"}

# The boolean role attributes, in the order _ROLES_SQL selects them.
ROLE_FLAGS: Final = ("login", "superuser", "createdb", "createrole", "replication", "bypassrls", "inherit")

_ROLES_SQL: Final = """
SELECT r.oid, r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
       r.rolreplication, r.rolbypassrls, r.rolinherit, r.rolconnlimit,
       CASE WHEN r.rolvaliduntil IS NULL THEN NULL
            WHEN r.rolvaliduntil = 'infinity' THEN 'infinity'
            WHEN r.rolvaliduntil = '-infinity' THEN '-infinity'
            ELSE to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END,
       r.rolconfig
FROM pg_catalog.pg_roles r
WHERE r.rolname !~ '^pg_'
ORDER BY r.rolname
"""

# Only the kind of the stored verifier, computed by the server: the hash never leaves it.
_PASSWORD_TYPES_SQL: Final = """
SELECT a.oid,
       CASE WHEN a.rolpassword IS NULL THEN NULL
            WHEN a.rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram-sha-256'
            WHEN a.rolpassword LIKE 'md5%' THEN 'md5'
            ELSE 'other' END
FROM pg_catalog.pg_authid a
"""

_MEMBERSHIPS_SQL_15: Final = """
SELECT m.member, g.rolname, m.admin_option, true, true
FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
"""
_MEMBERSHIPS_SQL_16: Final = """
SELECT m.member, g.rolname, m.admin_option, m.inherit_option, m.set_option
FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
"""

_DATABASE_ACL_SQL: Final = """
SELECT d.datname, a.grantee, a.privilege_type, a.is_grantable
FROM pg_catalog.pg_database d,
     LATERAL aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a
WHERE a.grantee <> 0
UNION ALL
SELECT d.datname, d.datdba, 'OWNER', false FROM pg_catalog.pg_database d
"""

_SCHEMA_ACL_SQL: Final = """
SELECT n.nspname, a.grantee, a.privilege_type, a.is_grantable
FROM pg_catalog.pg_namespace n,
     LATERAL aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
WHERE a.grantee <> 0 AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
UNION ALL
SELECT n.nspname, n.nspowner, 'OWNER', false FROM pg_catalog.pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
"""

# Grants on tables, summarised per (role, schema, privilege) by the server: ``whole`` when the
# role holds it on every table of the schema, else the sorted table names.
_TABLE_ACL_SQL: Final = """
WITH t AS (
    SELECT n.nspname AS schema_name, c.relname AS table_name, c.relowner AS owner,
           COALESCE(c.relacl, acldefault('r', c.relowner)) AS acl
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
      AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
), g AS (
    SELECT t.schema_name, t.table_name, a.grantee, a.privilege_type AS privilege, a.is_grantable AS grantable
    FROM t, LATERAL aclexplode(t.acl) a
    WHERE a.grantee <> 0
    UNION ALL
    SELECT t.schema_name, t.table_name, t.owner, 'OWNER', false FROM t
), n AS (
    SELECT schema_name, count(*) AS total FROM t GROUP BY schema_name
)
SELECT g.grantee, g.schema_name, g.privilege, g.grantable,
       count(DISTINCT g.table_name) = n.total AS whole,
       array_agg(DISTINCT g.table_name ORDER BY g.table_name) AS tables
FROM g JOIN n USING (schema_name)
GROUP BY g.grantee, g.schema_name, g.privilege, g.grantable, n.total
"""

# pg_database_size needs CONNECT on the database or the privileges of pg_read_all_stats: a
# database the user may not measure gives NULL here instead of failing the whole query.
_DATABASE_SIZES_SQL: Final = """
SELECT d.datname,
       CASE WHEN pg_catalog.has_database_privilege(d.oid, 'CONNECT')
                 OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
            THEN pg_catalog.pg_database_size(d.oid) END
FROM pg_catalog.pg_database d
ORDER BY d.datname
"""

_LARGEST_TABLES_SQL: Final = """
SELECT n.nspname, c.relname,
       COALESCE(pg_catalog.pg_total_relation_size(c.oid), 0) AS total,
       COALESCE(pg_catalog.pg_table_size(c.oid), 0),
       COALESCE(pg_catalog.pg_indexes_size(c.oid), 0),
       c.reltuples
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY total DESC, n.nspname, c.relname
LIMIT %(limit)s
"""

_SEES_ALL_SETTINGS_SQL: Final = """
SELECT r.rolsuper OR pg_catalog.pg_has_role('pg_read_all_settings', 'USAGE')
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""

_SETTINGS_SQL: Final = """
SELECT name, current_setting(name), setting, unit, source, context, vartype, pending_restart
FROM pg_catalog.pg_settings
ORDER BY name
"""


def _grant_label(privilege: str, target: str, grantable: bool) -> str:
    if privilege == "OWNER":
        return f"OWNER of {target}"
    label = f"{_PRIVILEGE_NAMES.get(privilege, privilege)} on {target}"
    return label + " WITH GRANT OPTION" if grantable else label


def _role_config(config: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in config or []:
        name, _, value = item.partition("=")
        if not is_sensitive_setting(name):
            out[f"config.{name}"] = value
    return out


def read_accounts(conn: DbConnection) -> list[AccountSnapshot]:
    """Every role of the cluster (but the predefined ``pg_*`` ones), sorted by name."""
    with open_postgres(conn, "reading accounts") as pg:
        roles = pg.execute(_ROLES_SQL).fetchall()
        password_types: dict[int, str | None] = {}
        if pg.execute("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')").fetchone()[0]:  # type: ignore[index]
            password_types = dict(pg.execute(_PASSWORD_TYPES_SQL).fetchall())

        memberships: dict[int, set[str]] = defaultdict(set)
        sql = _MEMBERSHIPS_SQL_16 if pg.info.server_version >= 160000 else _MEMBERSHIPS_SQL_15
        for member, group, admin, inherit, set_ in pg.execute(sql):
            flags = (("ADMIN OPTION", admin), ("INHERIT FALSE", not inherit), ("SET FALSE", not set_))
            options = [option for option, on in flags if on]
            memberships[member].add(f"{group} WITH {', '.join(options)}" if options else group)

        privileges: dict[int, set[str]] = defaultdict(set)
        for datname, grantee, privilege, grantable in pg.execute(_DATABASE_ACL_SQL):
            privileges[grantee].add(_grant_label(privilege, f"database {datname}", grantable))
        for nspname, grantee, privilege, grantable in pg.execute(_SCHEMA_ACL_SQL):
            privileges[grantee].add(_grant_label(privilege, f"schema {nspname}", grantable))
        for grantee, schema, privilege, grantable, whole, tables in pg.execute(_TABLE_ACL_SQL):
            targets = [f"{schema}.*"] if whole else [f"{schema}.{t}" for t in tables]
            privileges[grantee].update(_grant_label(privilege, target, grantable) for target in targets)

    accounts = []
    for oid, name, *flags, connlimit, valid, config in roles:
        attributes: dict[str, Any] = dict(zip(ROLE_FLAGS, flags, strict=True))
        attributes.update(connection_limit=connlimit, valid_until=valid, **_role_config(config))
        if password_types:
            attributes["password_type"] = password_types.get(oid)
        accounts.append(
            AccountSnapshot(
                identity=name,
                attributes=attributes,
                privileges=sorted(privileges.get(oid, ())),
                memberships=sorted(memberships.get(oid, ())),
            )
        )
    log.debug("read %d roles from %s", len(accounts), conn.address)
    return accounts


def read_capacity(conn: DbConnection, *, top_tables: int = DEFAULT_TOP_TABLES) -> list[DatabaseSize]:
    """The size of every database; the connected one with its ``top_tables`` largest tables."""
    with open_postgres(conn, "reading capacity") as pg:
        current = pg.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        sizes = pg.execute(_DATABASE_SIZES_SQL).fetchall()
        tables = []
        if top_tables > 0:
            for schema, name, total, table_bytes, index_bytes, reltuples in pg.execute(
                _LARGEST_TABLES_SQL, {"limit": top_tables}
            ):
                rows = int(reltuples) if reltuples is not None and reltuples >= 0 else None
                tables.append(
                    TableSize(
                        name=f"{schema}.{name}",
                        bytes=int(total),
                        table_bytes=int(table_bytes),
                        index_bytes=int(index_bytes),
                        rows=rows,
                    )
                )
    hidden = [datname for datname, size in sizes if size is None]
    if hidden:
        raise PermanentSyncError(
            f"{conn.describe()}: capacity would be incomplete, refusing to report sizes it cannot measure: "
            f"the user may measure {len(sizes) - len(hidden)} of {len(sizes)} databases, it lacks CONNECT on "
            f"{', '.join(hidden)} (while reading capacity; GRANT pg_read_all_stats TO the user, or GRANT CONNECT "
            "ON DATABASE ... TO it)"
        )
    return [
        DatabaseSize(
            database=datname, bytes=int(size or 0), tables=[t.to_json() for t in tables] if datname == current else []
        )
        for datname, size in sizes
    ]


def read_settings(conn: DbConnection) -> list[SettingSnapshot]:
    """Every setting of the server (but sensitive and per-connection ones), by name.

    pg_settings hides the superuser-only settings (``data_directory``, ``hba_file``, ...) from a
    role that is neither superuser nor a member of ``pg_read_all_settings``: such a read would
    be a silent subset (and a later diff would call those settings deleted), so it fails."""
    out = []
    # No session options here: pg_settings must show the server's values, not ours.
    with open_postgres(conn, "reading settings", session_options=False) as pg:
        if not pg.execute(_SEES_ALL_SETTINGS_SQL).fetchone()[0]:  # type: ignore[index]
            raise PermanentSyncError(
                f"{conn.describe()}: config would be incomplete, refusing to report a part as the whole: the "
                "user cannot see the superuser-only settings (data_directory, config_file, hba_file, ...) "
                "(while reading settings; GRANT pg_read_all_settings TO the user)"
            )
        for name, shown, setting, unit, source, context, vartype, pending in pg.execute(_SETTINGS_SQL):
            if name.lower() in SESSION_SETTINGS or is_sensitive_setting(name):
                continue
            out.append(
                SettingSnapshot(
                    name=name,
                    value=shown,
                    attributes={
                        "setting": setting,
                        "unit": unit,
                        "source": source,
                        "context": context,
                        "vartype": vartype,
                        "pending_restart": bool(pending),
                    },
                )
            )
    return out


__all__ = ["DEFAULT_TOP_TABLES", "ROLE_FLAGS", "SESSION_SETTINGS", "read_accounts", "read_capacity", "read_settings"]
