"""Read accounts, capacity and config from a MySQL or MariaDB server (PyMySQL).

The two servers differ; what this module does about it:

==============================  ===================================  ====================================
                                MySQL (5.7, 8.x)                     MariaDB (10.x, 11.x)
==============================  ===================================  ====================================
account lock, password expiry,  ``mysql.user`` columns               ``mysql.user`` is a view without
password lifetime / last                                             ``account_locked``: read from the JSON
change                                                               of ``mysql.global_priv`` (10.4+)
roles                           accounts ``role@host``; granted as   ``mysql.user`` rows with ``is_role``,
                                ``GRANT `r`@`%` TO ...``             no host; ``GRANT `r` TO ...``;
                                                                     default role in ``SET DEFAULT ROLE``
``SHOW GRANTS``                 dynamic privileges (``BACKUP_ADMIN``  adds ``IDENTIFIED BY PASSWORD '<hash>'``
                                ...), partial ``REVOKE`` lines        and resource limits (both dropped)
size statistics                 cached (``information_schema_stats_  live
                                expiry``): set to 0 for the session
where a setting comes from      ``performance_schema.variables_info`` ``information_schema.SYSTEM_VARIABLES``
                                (``VARIABLE_SOURCE``)                (``GLOBAL_VALUE_ORIGIN``)
account locked at login         error 3118                           error 4151
==============================  ===================================  ====================================

**Accounts**: one per ``mysql.user`` row, identity ``user@host`` (a MariaDB role: its bare
name). Attributes (where the server has them): ``plugin``, ``account_locked``,
``password_expired``, ``password_lifetime``, ``password_last_changed`` (ISO UTC),
``max_questions``, ``max_updates``, ``max_connections``, ``max_user_connections``,
``max_statement_time`` (MariaDB), ``ssl_type``, ``is_role`` and ``default_role`` (MariaDB).
Never the password hash: neither ``authentication_string`` nor the ``IDENTIFIED BY
PASSWORD`` of ``SHOW GRANTS`` is kept.

Privileges come from ``SHOW GRANTS FOR``, normalised by :func:`parse_grants` into sorted
``PRIV on OBJECT`` strings: ``SELECT on app.*``, ``RELOAD on *.*``, ``SELECT (id, name) on
app.t1``, ``EXECUTE on PROCEDURE app.p``, ``GRANT OPTION on app.*``, and ``INSERT on mysql.*
(revoked)`` for a MySQL partial revoke. ``USAGE`` (no privilege) is left out. Role grants
become memberships: ``ops`` / ``ops@%`` (MySQL), ``... WITH ADMIN OPTION``.

Reading accounts needs SELECT on ``mysql.user`` (and ``mysql.global_priv`` on MariaDB);
without it the read fails with a :class:`~syncflow.errors.PermanentSyncError` naming the table.

**Capacity**: per schema (except ``information_schema`` and ``performance_schema``) the sum
of ``DATA_LENGTH + INDEX_LENGTH`` of its tables, and its ``top_tables`` largest tables. It
needs ``SHOW DATABASES`` and a table privilege on ``*.*`` (``SHOW VIEW`` reads no data): a user
without them sees only some schemas, and tables it has no privilege on read as missing (a
schema of 10 MiB as 0 B). The read checks the user's grants (``SHOW GRANTS``, with its
current role's) and fails with a :class:`~syncflow.errors.PermanentSyncError` naming what is
missing rather than report a made-up size.

**Config**: ``SHOW GLOBAL VARIABLES`` (names lower case) but the sensitive ones and the
GTID positions that change with every write.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from syncflow.errors import PermanentSyncError
from syncflow.sources.db_connection import DbConnection, open_mysql
from syncflow.sources.db_snapshots import (
    AccountSnapshot,
    DatabaseSize,
    SettingSnapshot,
    TableSize,
    is_sensitive_setting,
)

log = logging.getLogger(__name__)

DEFAULT_TOP_TABLES: Final = 20

# Global variables that move with every write: not configuration.
VOLATILE_SETTINGS: Final = frozenset(
    {
        "gtid_binlog_pos",
        "gtid_binlog_state",
        "gtid_current_pos",
        "gtid_executed",
        "gtid_owned",
        "gtid_purged",
        "gtid_slave_pos",
    }
)
# Schemas that are views over the server's memory, not data.
VIRTUAL_SCHEMAS: Final = ("information_schema", "performance_schema")


def _yes(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip().upper() in {"Y", "YES", "1", "TRUE"}


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None or value == "" else str(value)


def _number(value: Any) -> float | int | None:
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value  # type: ignore[no-any-return]


def _timestamp(value: Any) -> str | None:
    """ISO UTC of a DATETIME (server in UTC) or of epoch seconds; None for NULL / 0."""
    if value is None or value == "" or value == 0 or value == "0":
        return None
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    else:
        stamp = dt.datetime.fromtimestamp(int(value), dt.UTC)
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# mysql.user column -> (attribute, converter); read only when the server has the column.
_USER_COLUMNS: Final = {
    "plugin": ("plugin", _text),
    "account_locked": ("account_locked", _yes),  # MySQL 5.7+
    "password_expired": ("password_expired", _yes),
    "password_lifetime": ("password_lifetime", _int),  # MySQL 5.7+
    "password_last_changed": ("password_last_changed", _timestamp),  # MySQL 5.7+
    "max_questions": ("max_questions", _int),
    "max_updates": ("max_updates", _int),
    "max_connections": ("max_connections", _int),
    "max_user_connections": ("max_user_connections", _int),
    "max_statement_time": ("max_statement_time", _number),  # MariaDB
    "ssl_type": ("ssl_type", _text),
    "is_role": ("is_role", _yes),  # MariaDB
    "default_role": ("default_role", _text),  # MariaDB
}

# MariaDB 10.4+: what the mysql.user view does not show, from the JSON of mysql.global_priv.
# (JSON_VALUE extracts single values on the server: the password hash never leaves it.)
_GLOBAL_PRIV_SQL: Final = (
    "SELECT User, Host, JSON_VALUE(Priv, '$.account_locked'), JSON_VALUE(Priv, '$.password_last_changed'),"
    " JSON_VALUE(Priv, '$.password_lifetime') FROM mysql.global_priv"
)

_CAPACITY_SQL: Final = (
    "SELECT s.SCHEMA_NAME, t.TABLE_NAME, t.DATA_LENGTH, t.INDEX_LENGTH, t.TABLE_ROWS"
    " FROM information_schema.SCHEMATA s"
    " LEFT JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = s.SCHEMA_NAME"
    " AND t.TABLE_TYPE NOT IN ('VIEW', 'SYSTEM VIEW', 'TEMPORARY')"
    " WHERE s.SCHEMA_NAME NOT IN (%s, %s)"
)


@dataclass(frozen=True)
class ServerInfo:
    version: str
    mariadb: bool

    @property
    def major_minor(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.version)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _server_info(cur: Any) -> ServerInfo:
    cur.execute("SELECT VERSION(), @@version_comment")
    version, comment = cur.fetchone()
    return ServerInfo(version=str(version), mariadb="mariadb" in f"{version} {comment}".lower())


# ---------------------------------------------------------------------- SHOW GRANTS parsing


_QUOTED: Final = re.compile(r"'(?:[^'\\]|\\.|'')*'")


def _scan(text: str) -> list[tuple[int, str]]:
    """Positions of the characters of ``text`` outside quotes and parentheses."""
    out = []
    quote: str | None = None
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                if i + 1 < len(text) and text[i + 1] == quote:  # doubled quote inside a name
                    i += 2
                    continue
                quote = None
        elif ch in "`'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append((i, ch))
        i += 1
    return out


def _find_keyword(text: str, keyword: str, start: int = 0) -> int:
    """Index of `` KEYWORD `` (space-delimited, any case) outside quotes/parentheses, or -1."""
    visible = [" "] * len(text)
    for i, ch in _scan(text):
        visible[i] = ch
    flat = "".join(visible).upper()
    return flat.find(f" {keyword.upper()} ", start)


def _split_top(text: str, sep: str = ",") -> list[str]:
    cuts = [i for i, ch in _scan(text) if ch == sep]
    parts, last = [], 0
    for cut in [*cuts, len(text)]:
        parts.append(text[last:cut].strip())
        last = cut + 1
    return [p for p in parts if p]


def _unquote(text: str) -> str:
    """Drop the quoting of identifiers: ```app`.`t``` -> ``app.t``, ```'u'@'%'``` -> ``u@%``."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "`'\"":
            j = i + 1
            buf = []
            while j < len(text):
                if text[j] == ch and j + 1 < len(text) and text[j + 1] == ch:
                    buf.append(ch)
                    j += 2
                    continue
                if text[j] == ch:
                    break
                buf.append(text[j])
                j += 1
            out.append("".join(buf))
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return " ".join("".join(out).split())


def _privilege(item: str) -> str | None:
    """``select (`b`, `a`)`` -> ``SELECT (a, b)``; ``USAGE`` -> None."""
    item = " ".join(item.split())
    name, paren, cols = item.partition("(")
    name = name.strip().upper()
    if name == "USAGE":
        return None
    if paren:
        columns = sorted(_unquote(c) for c in _split_top(cols.rstrip(")")))
        return f"{name} ({', '.join(columns)})"
    return name


@dataclass
class ParsedGrants:
    """What ``SHOW GRANTS FOR`` says about one account."""

    privileges: set[str] = field(default_factory=set)
    memberships: set[str] = field(default_factory=set)
    default_roles: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)


def parse_grants(lines: Iterable[str]) -> ParsedGrants:
    """Normalise the lines of ``SHOW GRANTS FOR`` (MySQL or MariaDB).

    ``GRANT privs ON object TO who [IDENTIFIED ...] [REQUIRE ...] [WITH ... GRANT OPTION ...]``
    gives one ``PRIV on object`` per privilege (and ``GRANT OPTION on object``);
    ``GRANT role[, role] TO who [WITH ADMIN OPTION]`` gives memberships;
    ``REVOKE privs ON object FROM who`` (MySQL partial revokes) ``PRIV on object (revoked)``;
    ``SET DEFAULT ROLE r FOR who`` (MariaDB) the default role. Anything else is kept in
    ``unparsed`` (and logged), never guessed at.
    """
    out = ParsedGrants()
    for raw in lines:
        line = " ".join(str(raw).split()).rstrip(";")
        upper = line.upper()
        if upper.startswith("GRANT "):
            body = line[len("GRANT ") :]
            to = _find_keyword(body, "TO")
            if to < 0:
                out.unparsed.append(line)
                continue
            on = _find_keyword(body[:to], "ON")
            tail = body[to + 4 :]
            tail_upper = "".join(ch for _, ch in _scan(tail)).upper()
            if on >= 0:
                obj = _unquote(body[on + 4 : to])
                for item in _split_top(body[:on]):
                    priv = _privilege(item)
                    if priv is not None:
                        out.privileges.add(f"{priv} on {obj}")
                if "GRANT OPTION" in tail_upper:
                    out.privileges.add(f"GRANT OPTION on {obj}")
            else:
                admin = " WITH ADMIN OPTION" if "ADMIN OPTION" in tail_upper else ""
                for role in _split_top(body[:to]):
                    out.memberships.add(_unquote(role) + admin)
        elif upper.startswith("REVOKE "):
            body = line[len("REVOKE ") :]
            frm = _find_keyword(body, "FROM")
            on = _find_keyword(body[: max(frm, 0)], "ON") if frm >= 0 else -1
            if on < 0:
                out.unparsed.append(line)
                continue
            obj = _unquote(body[on + 4 : frm])
            for item in _split_top(body[:on]):
                priv = _privilege(item)
                if priv is not None:
                    out.privileges.add(f"{priv} on {obj} (revoked)")
        elif upper.startswith("SET DEFAULT ROLE "):
            body = line[len("SET DEFAULT ROLE ") :]
            fr = _find_keyword(body, "FOR")
            roles = body[:fr] if fr >= 0 else body
            out.default_roles.extend(_unquote(r) for r in _split_top(roles) if r.upper() != "NONE")
        else:
            out.unparsed.append(line)
    if out.unparsed:  # quoted strings may hold a password hash: never logged
        log.warning("SHOW GRANTS lines not understood (left out): %s", [_QUOTED.sub("'***'", u) for u in out.unparsed])
    return out


# ----------------------------------------------------------------------------- readers


def _identity(user: str, host: str, is_role: bool) -> str:
    return user if is_role and host == "" else f"{user}@{host}"


def read_accounts(conn: DbConnection) -> list[AccountSnapshot]:
    """Every account (and MariaDB role) of the server with its grants, sorted by identity."""
    import pymysql

    with open_mysql(conn, "reading accounts") as my, my.cursor() as cur:
        info = _server_info(cur)
        cur.execute("SHOW COLUMNS FROM mysql.user")
        present = {str(row[0]).lower(): str(row[0]) for row in cur.fetchall()}
        wanted = [(present[c], attr, conv) for c, (attr, conv) in _USER_COLUMNS.items() if c in present]
        # Column names from the fixed list above (as the server spells them), never from input.
        select_list = ", ".join(["`User`", "`Host`", *(f"`{col}`" for col, _, _ in wanted)])
        cur.execute("SELECT " + select_list + " FROM mysql.user")
        rows = cur.fetchall()

        extra: dict[tuple[str, str], dict[str, Any]] = {}
        if info.mariadb and info.major_minor >= (10, 4):
            cur.execute(_GLOBAL_PRIV_SQL)
            for user, host, locked, changed, lifetime in cur.fetchall():
                values: dict[str, Any] = {"account_locked": _yes(locked) or False}
                values["password_last_changed"] = _timestamp(changed)
                values["password_lifetime"] = _int(lifetime)
                extra[(user, host)] = values

        accounts = []
        for row in rows:
            user, host = str(row[0]), str(row[1])
            attributes: dict[str, Any] = {attr: conv(v) for (_, attr, conv), v in zip(wanted, row[2:], strict=True)}
            attributes.update(extra.get((user, host), {}))
            is_role = bool(attributes.get("is_role"))
            if is_role:
                # A role has no login of its own: no password, limits or lock to report.
                attributes = {"is_role": True}
            try:
                if is_role and host == "":
                    cur.execute("SHOW GRANTS FOR %s", (user,))
                else:
                    cur.execute("SHOW GRANTS FOR %s@%s", (user, host))
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] == 1141:  # ER_NONEXISTING_GRANT: dropped meanwhile
                    log.info("%s: account %s@%s vanished while reading", conn.address, user, host)
                    continue
                raise
            grants = parse_grants(r[0] for r in cur.fetchall())
            if grants.default_roles:
                attributes["default_role"] = ", ".join(sorted(grants.default_roles))
            accounts.append(
                AccountSnapshot(
                    identity=_identity(user, host, is_role),
                    attributes=attributes,
                    privileges=sorted(grants.privileges),
                    memberships=sorted(grants.memberships),
                )
            )
    accounts.sort(key=lambda a: a.identity)
    log.debug("read %d accounts from %s (%s)", len(accounts), conn.address, info.version)
    return accounts


def read_capacity(conn: DbConnection, *, top_tables: int = DEFAULT_TOP_TABLES) -> list[DatabaseSize]:
    """Every schema with its data+index bytes and its ``top_tables`` largest tables, by name."""
    import pymysql

    with open_mysql(conn, "reading capacity") as my, my.cursor() as cur:
        info = _server_info(cur)
        if not info.mariadb and info.major_minor >= (8, 0):
            try:  # MySQL 8 caches table statistics for a day by default.
                cur.execute("SET SESSION information_schema_stats_expiry = 0")
            except pymysql.err.MySQLError:
                log.debug("%s: cannot turn off information_schema_stats_expiry", conn.address, exc_info=True)
        cur.execute(_CAPACITY_SQL, VIRTUAL_SCHEMAS)
        rows = cur.fetchall()
        cur.execute("SHOW GRANTS")  # the current user's, with its current role's (MariaDB)
        grants = parse_grants(str(r[0]) for r in cur.fetchall())
    _check_capacity_visibility(conn, grants, sorted({str(r[0]) for r in rows}))
    totals: dict[str, int] = {}
    tables: dict[str, list[TableSize]] = defaultdict(list)
    for schema, table, data_length, index_length, table_rows in rows:
        schema = str(schema)
        totals.setdefault(schema, 0)
        if table is None:
            continue
        data, index = int(data_length or 0), int(index_length or 0)
        totals[schema] += data + index
        tables[schema].append(
            TableSize(
                name=f"{schema}.{table}",
                bytes=data + index,
                table_bytes=data,
                index_bytes=index,
                rows=_int(table_rows),
            )
        )
    out = []
    for schema in sorted(totals):
        largest = sorted(tables[schema], key=lambda t: (-t.bytes, t.name))[: max(0, top_tables)]
        out.append(DatabaseSize(database=schema, bytes=totals[schema], tables=[t.to_json() for t in largest]))
    return out


# Table privileges: one of them on *.* lets information_schema.TABLES show every table with its
# size; without one, a table the user has no privilege on is missing (or its schema reads 0 B).
TABLE_PRIVILEGES: Final = frozenset(
    {
        "ALL PRIVILEGES",
        "ALTER",
        "CREATE",
        "CREATE VIEW",
        "DELETE",
        "DELETE HISTORY",
        "DROP",
        "INDEX",
        "INSERT",
        "REFERENCES",
        "SELECT",
        "SHOW VIEW",
        "TRIGGER",
        "UPDATE",
    }
)
CAPACITY_GRANT: Final = "GRANT SHOW DATABASES, SHOW VIEW ON *.*"


def _check_capacity_visibility(conn: DbConnection, grants: ParsedGrants, schemas: list[str]) -> None:
    """Refuse a capacity the user cannot see whole: without SHOW DATABASES only the schemas it
    has privileges in are listed, and without a table privilege on ``*.*`` the tables it has none
    on are left out of ``information_schema.TABLES`` (their schema then reads 0 B)."""
    on_all = {p.removesuffix(" on *.*") for p in grants.privileges if p.endswith(" on *.*")}
    lacks = []
    if "SHOW DATABASES" not in on_all and not on_all & TABLE_PRIVILEGES:
        lacks.append("SHOW DATABASES (it sees only the schemas it has privileges in)")
    if not on_all & TABLE_PRIVILEGES:
        lacks.append(
            "a table privilege such as SHOW VIEW on *.* (tables it has no privilege on read as missing or 0 B)"
        )
    if lacks:
        shown = ", ".join(schemas[:5]) + (", ..." if len(schemas) > 5 else "")
        raise PermanentSyncError(
            f"{conn.describe()}: capacity would be incomplete, refusing to report sizes it cannot measure: "
            f"the user sees {len(schemas)} schema(s){f' ({shown})' if schemas else ''} and lacks "
            f"{' and '.join(lacks)} (while reading capacity; {CAPACITY_GRANT} TO the user)"
        )


def read_settings(conn: DbConnection) -> list[SettingSnapshot]:
    """``SHOW GLOBAL VARIABLES`` but the sensitive and volatile ones, with where each comes from."""
    import pymysql

    with open_mysql(conn, "reading settings") as my, my.cursor() as cur:
        info = _server_info(cur)
        cur.execute("SHOW GLOBAL VARIABLES")
        values = {str(name).lower(): _text_value(value) for name, value in cur.fetchall()}
        attributes: dict[str, dict[str, Any]] = {}
        try:
            if info.mariadb:
                cur.execute(
                    "SELECT VARIABLE_NAME, GLOBAL_VALUE_ORIGIN, VARIABLE_TYPE, READ_ONLY"
                    " FROM information_schema.SYSTEM_VARIABLES"
                )
                for name, origin, vtype, read_only in cur.fetchall():
                    attributes[str(name).lower()] = {
                        "source": _lower(origin),
                        "vartype": _lower(vtype),
                        "read_only": _yes(read_only),
                    }
            elif info.major_minor >= (8, 0):
                cur.execute("SELECT VARIABLE_NAME, VARIABLE_SOURCE FROM performance_schema.variables_info")
                for name, source in cur.fetchall():
                    attributes[str(name).lower()] = {"source": _lower(source)}
        except pymysql.err.MySQLError as exc:  # the attributes are a bonus: go on without them
            log.info("%s: no setting sources (%s)", conn.address, exc)
            attributes = {}
    return [
        SettingSnapshot(name=name, value=value, attributes=attributes.get(name, {}))
        for name, value in sorted(values.items())
        if name not in VOLATILE_SETTINGS and not is_sensitive_setting(name)
    ]


def _lower(value: Any) -> str | None:
    text = _text(value)
    return text.lower() if text is not None else None


def _text_value(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


__all__ = [
    "DEFAULT_TOP_TABLES",
    "VIRTUAL_SCHEMAS",
    "VOLATILE_SETTINGS",
    "ParsedGrants",
    "ServerInfo",
    "parse_grants",
    "read_accounts",
    "read_capacity",
    "read_settings",
]
