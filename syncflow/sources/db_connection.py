"""Connections to the database servers syncflow reads accounts, capacity and config from.

:class:`DbConnection` is the whole connection description (the password never appears in
its ``repr`` or in any message). :func:`connect_postgres` (psycopg 3) and
:func:`connect_mysql` (PyMySQL, for MySQL and MariaDB) open a connection; every failure
leaves them as a classified :mod:`syncflow.errors` exception naming ``host:port`` and the
user, never the password:

=================================================================  ==========================
what happened                                                      raised
=================================================================  ==========================
bad password, unknown user/role, access denied, unknown database,  :class:`AuthError`
login not allowed, account locked or expired
TLS asked for but impossible (server without TLS, bad certificate)  :class:`PermanentSyncError`
connection refused, timeout, unreachable or unresolvable host,     :class:`TransientSyncError`
connection lost, too many connections, server shutting down
=================================================================  ==========================

While reading, :func:`postgres_errors` / :func:`mysql_errors` map a missing privilege to a
:class:`PermanentSyncError` that says what was denied and what was being read, a lost
connection or a timeout to :class:`TransientSyncError`.

The readers (``read_accounts`` / ``read_capacity`` / ``read_settings`` / ``read_snapshot``) and
the kinds' :class:`~syncflow.sources.database.DatabaseSource` are in :mod:`syncflow.sources.database`
(above this module and the server modules :mod:`syncflow.sources.postgres` / :mod:`syncflow.sources.mysql`).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

from syncflow.errors import AuthError, ConfigError, PermanentSyncError, SyncError, TransientSyncError

if TYPE_CHECKING:
    import psycopg
    import pymysql

log = logging.getLogger(__name__)

Kind = Literal["postgres", "mysql"]
TlsMode = Literal["disable", "prefer", "require", "verify-full"]

KINDS: Final = ("postgres", "mysql")
TLS_MODES: Final = ("disable", "prefer", "require", "verify-full")
DEFAULT_PORTS: Final = {"postgres": 5432, "mysql": 3306}
_URL_SCHEMES: Final = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
APPLICATION_NAME: Final = "syncflow"


@dataclass(frozen=True)
class DbConnection:
    """How to reach one database server (a ``postgres`` or ``mysql`` instance).

    ``password`` is left out of ``repr`` and of every message. ``database`` is the database
    to connect to (PostgreSQL: default ``postgres``; schema and table privileges and the
    largest tables are read in that database); on MySQL it may stay None. ``ca_file`` is the
    CA bundle for ``verify-full`` (default: the system's). ``connect_timeout`` bounds the
    TCP connect and the login, ``query_timeout`` every statement (seconds).
    """

    kind: Kind
    host: str
    port: int | None = None
    user: str = ""
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    tls_mode: TlsMode = "prefer"
    connect_timeout: float = 10.0
    query_timeout: float = 120.0
    ca_file: str | None = None

    def __post_init__(self) -> None:
        reveal = getattr(self.password, "get_secret_value", None)
        if reveal is not None:  # a pydantic SecretStr (Prefect block field)
            object.__setattr__(self, "password", reveal())
        if self.kind not in KINDS:
            raise ConfigError(f"unknown database kind {self.kind!r} (expected one of: {', '.join(KINDS)})")
        if not self.host:
            raise ConfigError(f"{self.kind} connection: host is empty")
        if not self.user:
            raise ConfigError(f"{self.kind} connection to {self.host}: user is empty")
        if self.tls_mode not in TLS_MODES:
            raise ConfigError(f"unknown tls_mode {self.tls_mode!r} (expected one of: {', '.join(TLS_MODES)})")
        port = DEFAULT_PORTS[self.kind] if self.port is None else self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"{self.kind} connection to {self.host}: bad port {self.port!r}")
        object.__setattr__(self, "port", port)
        for name in ("connect_timeout", "query_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{self.kind} connection to {self.host}: {name} must be > 0, got {value!r}")

    # ---------------------------------------------------------------- descriptions

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def describe(self) -> str:
        """``postgres 127.0.0.1:5432 as user 'alice'`` - for messages; never the password."""
        return f"{self.kind} {self.address} as user {self.user!r}"

    def _scrub(self, text: str) -> str:
        """``text`` with the password (if it appears at all) replaced by ``***``."""
        if self.password and len(self.password) >= 3:
            text = text.replace(self.password, "***")
        return text

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> DbConnection:
        """Parse ``postgresql://user:pw@host:port/db?sslmode=require&connect_timeout=5``.

        Schemes: ``postgres``/``postgresql`` (also ``postgresql+psycopg``) and
        ``mysql``/``mariadb`` (also ``mysql+pymysql``). Query options: ``sslmode`` or
        ``tls_mode``, ``connect_timeout``, ``query_timeout``, ``ca_file`` (or ``sslrootcert``).
        """
        parts = urlsplit(url)
        scheme = parts.scheme.split("+", 1)[0].lower()
        kind = _URL_SCHEMES.get(scheme)
        if kind is None:
            raise ConfigError(f"unsupported database URL scheme {parts.scheme!r} (expected postgresql:// or mysql://)")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{kind} URL for {parts.hostname}: bad port") from None
        values: dict[str, Any] = {
            "kind": kind,
            "host": parts.hostname or "",
            "port": port,
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password) if parts.password is not None else None,
            "database": unquote(parts.path.lstrip("/")) or None,
        }
        tls = query.get("tls_mode") or query.get("sslmode")
        if tls:
            values["tls_mode"] = {"allow": "prefer", "verify-ca": "verify-full"}.get(tls, tls)
        for name in ("connect_timeout", "query_timeout"):
            if name in query:
                try:
                    values[name] = float(query[name])
                except ValueError:
                    raise ConfigError(f"{kind} URL: {name} is not a number: {query[name]!r}") from None
        ca = query.get("ca_file") or query.get("sslrootcert")
        if ca:
            values["ca_file"] = ca
        values.update(overrides)
        return cls(**values)

    @classmethod
    def coerce(cls, params: DbConnection | Mapping[str, Any] | str) -> DbConnection:
        """A :class:`DbConnection` from itself, a mapping of its fields, or a URL."""
        if isinstance(params, DbConnection):
            return params
        if isinstance(params, str):
            return cls.from_url(params)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown database connection field(s): {', '.join(unknown)}")
        return cls(**dict(params))


# ========================================================================= PostgreSQL

_PG_SSLMODE: Final = {"disable": "disable", "prefer": "prefer", "require": "require", "verify-full": "verify-full"}

# libpq reports connection failures as text only (no SQLSTATE): classify by message.
_PG_AUTH_MARKERS: Final = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "does not exist",  # role "x" / database "x" does not exist
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "is not permitted to log in",
    "permission denied for database",
    "password has expired",
)
_PG_PERMANENT_MARKERS: Final = (
    "server does not support ssl",
    "certificate verify failed",
    "root certificate file",
    "certificate",
    "sslmode value",
    "invalid connection option",
    "invalid sslmode",
    "ssl error",
)


def _pg_kwargs(conn: DbConnection, *, session_options: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "user": conn.user,
        "dbname": conn.database or "postgres",
        "sslmode": _PG_SSLMODE[conn.tls_mode],
        # libpq takes whole seconds (and treats 1 as 2).
        "connect_timeout": max(2, math.ceil(conn.connect_timeout)),
        "application_name": APPLICATION_NAME,
    }
    if session_options:
        kwargs["options"] = f"-c statement_timeout={int(conn.query_timeout * 1000)}"
    if conn.password is not None:
        kwargs["password"] = conn.password
    if conn.tls_mode == "verify-full":
        kwargs["sslrootcert"] = conn.ca_file or "system"
    return kwargs


def connect_postgres(conn: DbConnection, *, session_options: bool = True) -> psycopg.Connection[Any]:
    """Open a psycopg connection whose transactions are ``REPEATABLE READ, READ ONLY``.

    All the queries of one read therefore see one consistent snapshot of the catalogs.
    ``session_options`` sets ``statement_timeout`` to ``query_timeout`` (off to read
    ``pg_settings`` as the server has them).
    """
    import psycopg

    if conn.kind != "postgres":
        raise ConfigError(f"connect_postgres() got a {conn.kind} connection ({conn.address})")
    try:
        pg = psycopg.connect(**_pg_kwargs(conn, session_options=session_options))
    except psycopg.Error as exc:
        _raise_pg_connect_error(conn, exc)
    except OSError as exc:  # pragma: no cover - psycopg wraps these, but be safe
        raise TransientSyncError(f"cannot connect to {conn.describe()}: {conn._scrub(str(exc))}") from None
    pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    pg.read_only = True
    return pg


def _raise_pg_connect_error(conn: DbConnection, exc: Exception) -> NoReturn:
    text = conn._scrub(" ".join(str(exc).split()))
    low = text.lower()
    reason = text.rsplit("failed: ", 1)[-1]  # libpq: "connection to server at ..., port N failed: <why>"
    if any(m in low for m in _PG_PERMANENT_MARKERS):
        raise PermanentSyncError(f"cannot connect to {conn.describe()} (tls_mode={conn.tls_mode}): {reason}") from None
    if any(m in low for m in _PG_AUTH_MARKERS):
        db = conn.database or "postgres"
        raise AuthError(f"{conn.describe()} refused the login to database {db!r}: {reason}") from None
    raise TransientSyncError(f"cannot connect to {conn.describe()}: {reason}") from None


@contextmanager
def postgres_errors(conn: DbConnection, what: str) -> Iterator[None]:
    """Map psycopg errors raised while ``what`` (e.g. "reading accounts") to syncflow errors."""
    import psycopg
    from psycopg import errors as pge

    try:
        yield
    except SyncError:
        raise
    except pge.InsufficientPrivilege as exc:
        detail = conn._scrub(exc.diag.message_primary or str(exc))
        raise PermanentSyncError(
            f"{conn.describe()}: {detail} (while {what}; grant the privilege or use a user that has it, "
            "e.g. a member of pg_read_all_stats / pg_read_all_settings)"
        ) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        # Lost connection, server shutdown, statement timeout, serialization failure.
        detail = conn._scrub(" ".join(str(exc).split()))
        raise TransientSyncError(f"{conn.describe()}: {detail} (while {what})") from None
    except psycopg.Error as exc:
        detail = conn._scrub(" ".join(str(exc).split()))
        raise PermanentSyncError(f"{conn.describe()}: {detail} (while {what})") from None


@contextmanager
def open_postgres(conn: DbConnection, what: str, *, session_options: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A read-only snapshot connection, errors mapped, closed at the end (never commits)."""
    pg = connect_postgres(conn, session_options=session_options)
    try:
        with postgres_errors(conn, what):
            yield pg
            pg.rollback()
    finally:
        pg.close()


# ====================================================================== MySQL / MariaDB

# Error codes (MySQL and MariaDB share most; the MariaDB-only ones say so).
_MY_AUTH_CODES: Final = frozenset(
    {
        1044,  # ER_DBACCESS_DENIED_ERROR: access denied to the database
        1045,  # ER_ACCESS_DENIED_ERROR: bad password / unknown user
        1049,  # ER_BAD_DB_ERROR: unknown database
        1130,  # ER_HOST_NOT_PRIVILEGED: host not allowed to connect
        1251,  # ER_NOT_SUPPORTED_AUTH_MODE
        1698,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR (MariaDB)
        1862,  # ER_MUST_CHANGE_PASSWORD_LOGIN: password expired
        2059,  # CR_AUTH_PLUGIN_CANNOT_LOAD
        3118,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MySQL)
        4151,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB)
    }
)
_MY_DENIED_CODES: Final = frozenset(
    {
        1044,  # ER_DBACCESS_DENIED_ERROR
        1142,  # ER_TABLEACCESS_DENIED_ERROR: "SELECT command denied to user ... for table 'user'"
        1143,  # ER_COLUMNACCESS_DENIED_ERROR
        1227,  # ER_SPECIFIC_ACCESS_DENIED_ERROR: "you need (at least one of) the X privilege(s)"
        1370,  # ER_PROCACCESS_DENIED_ERROR
        1045,  # access denied (a SHOW needing a global privilege)
        1820,  # ER_MUST_CHANGE_PASSWORD: must reset the password before running statements
    }
)
_MY_TRANSIENT_CODES: Final = frozenset(
    {
        1040,  # ER_CON_COUNT_ERROR: too many connections
        1053,  # ER_SERVER_SHUTDOWN
        1152,  # ER_ABORTING_CONNECTION
        1153,  # ER_NET_PACKET_TOO_LARGE (while the server restarts)
        1158,  # ER_NET_READ_ERROR
        1159,  # ER_NET_READ_INTERRUPTED
        1160,  # ER_NET_ERROR_ON_WRITE
        1161,  # ER_NET_WRITE_INTERRUPTED
        1203,  # ER_TOO_MANY_USER_CONNECTIONS
        1205,  # ER_LOCK_WAIT_TIMEOUT
        1213,  # ER_LOCK_DEADLOCK
        1226,  # ER_USER_LIMIT_REACHED (max_user_connections, max_questions ...)
        1317,  # ER_QUERY_INTERRUPTED
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        1969,  # ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
        2002,  # CR_CONNECTION_ERROR
        2003,  # CR_CONN_HOST_ERROR: refused, timeout, unresolvable host
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST
        2055,  # CR_SERVER_LOST_EXTENDED
        3024,  # ER_QUERY_TIMEOUT (MySQL max_execution_time)
    }
)
_MY_TLS_CODES: Final = frozenset({2026})  # CR_SSL_CONNECTION_ERROR


def _mysql_tls_kwargs(conn: DbConnection) -> dict[str, Any]:
    """PyMySQL (>= 1.2) TLS options: it tries TLS by itself when offered (``prefer``)."""
    if conn.tls_mode == "disable":
        return {"ssl_disabled": True}
    if conn.tls_mode == "prefer":
        return {}
    if conn.tls_mode == "require":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return {"ssl": ctx}
    ctx = ssl.create_default_context(cafile=conn.ca_file)  # verify-full
    return {"ssl": ctx}


def _mysql_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _mysql_text(conn: DbConnection, exc: BaseException) -> str:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 else str(exc)
    return conn._scrub(" ".join(text.split()))


def connect_mysql(conn: DbConnection) -> pymysql.connections.Connection[Any]:
    """Open a PyMySQL connection (MySQL or MariaDB): autocommit, utf8mb4, session time zone UTC."""
    import pymysql

    if conn.kind != "mysql":
        raise ConfigError(f"connect_mysql() got a {conn.kind} connection ({conn.address})")
    try:
        return pymysql.connect(
            host=conn.host,
            port=conn.port or DEFAULT_PORTS["mysql"],  # set by __post_init__
            user=conn.user,
            password=conn.password or "",
            database=conn.database,
            connect_timeout=conn.connect_timeout,
            read_timeout=conn.query_timeout,
            write_timeout=conn.query_timeout,
            charset="utf8mb4",
            autocommit=True,
            init_command="SET time_zone = '+00:00'",
            program_name=APPLICATION_NAME,
            **_mysql_tls_kwargs(conn),
        )
    except pymysql.err.MySQLError as exc:
        code, text = _mysql_code(exc), _mysql_text(conn, exc)
        if code in _MY_AUTH_CODES:
            db = f" to database {conn.database!r}" if conn.database else ""
            raise AuthError(f"{conn.describe()} refused the login{db}: {text} (error {code})") from None
        if code in _MY_TLS_CODES:
            raise PermanentSyncError(
                f"cannot connect to {conn.describe()} (tls_mode={conn.tls_mode}): {text} (error {code})"
            ) from None
        if code in _MY_TRANSIENT_CODES or isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError):
            raise TransientSyncError(f"cannot connect to {conn.describe()}: {text} (error {code})") from None
        raise PermanentSyncError(f"cannot connect to {conn.describe()}: {text} (error {code})") from None
    except ssl.SSLError as exc:
        raise PermanentSyncError(
            f"cannot connect to {conn.describe()} (tls_mode={conn.tls_mode}): TLS failed: {exc}"
        ) from None
    except RuntimeError as exc:  # e.g. "cryptography package is required for caching_sha2_password"
        raise AuthError(f"{conn.describe()}: cannot log in: {conn._scrub(str(exc))}") from None
    except OSError as exc:
        raise TransientSyncError(f"cannot connect to {conn.describe()}: {conn._scrub(str(exc))}") from None


@contextmanager
def mysql_errors(conn: DbConnection, what: str) -> Iterator[None]:
    """Map PyMySQL errors raised while ``what`` to syncflow errors."""
    import pymysql

    try:
        yield
    except SyncError:
        raise
    except pymysql.err.MySQLError as exc:
        code, text = _mysql_code(exc), _mysql_text(conn, exc)
        if code in _MY_DENIED_CODES:
            raise PermanentSyncError(
                f"{conn.describe()}: {text} (error {code}, while {what}; grant the privilege or use a user that has it)"
            ) from None
        if code in _MY_TRANSIENT_CODES or isinstance(exc, pymysql.err.InterfaceError):
            raise TransientSyncError(f"{conn.describe()}: {text} (error {code}, while {what})") from None
        raise PermanentSyncError(f"{conn.describe()}: {text} (error {code}, while {what})") from None
    except OSError as exc:
        raise TransientSyncError(f"{conn.describe()}: {conn._scrub(str(exc))} (while {what})") from None


@contextmanager
def open_mysql(conn: DbConnection, what: str) -> Iterator[pymysql.connections.Connection[Any]]:
    """A connection with errors mapped, closed at the end."""
    my = connect_mysql(conn)
    try:
        with mysql_errors(conn, what):
            yield my
    finally:
        try:
            my.close()
        except Exception:  # already gone: nothing to close
            log.debug("closing the connection to %s failed", conn.address, exc_info=True)


__all__ = [
    "DEFAULT_PORTS",
    "KINDS",
    "TLS_MODES",
    "DbConnection",
    "connect_mysql",
    "connect_postgres",
    "mysql_errors",
    "open_mysql",
    "open_postgres",
    "postgres_errors",
]
