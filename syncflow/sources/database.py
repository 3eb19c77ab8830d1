"""The database server kinds (``postgres``, ``mysql``) as a source: snapshots only.

The readers take a :class:`~syncflow.sources.db_connection.DbConnection` (or a mapping of its
fields, or a URL) and call the module of the server kind: :mod:`syncflow.sources.postgres` or
:mod:`syncflow.sources.mysql`. :class:`DatabaseSource` is what ``blocks/database.py`` opens for
an instance of either kind. This module sits above both server modules, which only import
:mod:`syncflow.sources.db_connection` (no import circle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncflow.errors import ConfigError
from syncflow.sources import mysql, postgres
from syncflow.sources.db_connection import DbConnection
from syncflow.sources.db_snapshots import AccountSnapshot, DatabaseSize, SettingSnapshot


def read_accounts(params: DbConnection | Mapping[str, Any] | str) -> list[AccountSnapshot]:
    """Every account of the server with its privileges and memberships, sorted by identity."""
    conn = DbConnection.coerce(params)
    return postgres.read_accounts(conn) if conn.kind == "postgres" else mysql.read_accounts(conn)


def read_capacity(params: DbConnection | Mapping[str, Any] | str, *, top_tables: int = 20) -> list[DatabaseSize]:
    """The size of every database and its ``top_tables`` largest tables, sorted by database."""
    conn = DbConnection.coerce(params)
    if conn.kind == "postgres":
        return postgres.read_capacity(conn, top_tables=top_tables)
    return mysql.read_capacity(conn, top_tables=top_tables)


def read_settings(params: DbConnection | Mapping[str, Any] | str) -> list[SettingSnapshot]:
    """Every non-sensitive server setting, sorted by name."""
    conn = DbConnection.coerce(params)
    return postgres.read_settings(conn) if conn.kind == "postgres" else mysql.read_settings(conn)


def read_snapshot(
    params: DbConnection | Mapping[str, Any] | str, category: str, *, top_tables: int = 20
) -> list[AccountSnapshot] | list[DatabaseSize] | list[SettingSnapshot]:
    """What a sync of ``category`` (``account`` | ``capacity`` | ``config``) reads."""
    if category == "account":
        return read_accounts(params)
    if category == "capacity":
        return read_capacity(params, top_tables=top_tables)
    if category == "config":
        return read_settings(params)
    raise ConfigError(f"a database server has no {category!r} snapshot (expected account, capacity or config)")


class DatabaseSource:
    """A database server as a :class:`syncflow.sources.base.Source`: snapshots only
    (``account``, ``capacity`` with the ``top_tables`` largest tables, ``config``)."""

    def __init__(self, conn: DbConnection, *, top_tables: int = 20) -> None:
        self.conn = conn
        self.top_tables = top_tables

    def __repr__(self) -> str:
        return f"DatabaseSource({self.conn.describe()})"

    def read_page(self, after: int, count: int) -> Any:
        raise ConfigError(f"{self.conn.describe()}: a database server has no incremental category")

    def read_snapshot(self, category: str) -> list[Any]:
        return list(read_snapshot(self.conn, category, top_tables=self.top_tables))

    def close(self) -> None:  # every read opens and closes its own connection
        return None


__all__ = ["DatabaseSource", "read_accounts", "read_capacity", "read_settings", "read_snapshot"]
