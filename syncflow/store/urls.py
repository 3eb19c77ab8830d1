"""Store URLs syncflow supports, and one clear line for the ones it does not."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from syncflow.errors import ConfigError

SUPPORTED = "sqlite:///path/syncflow.db or postgresql+psycopg://user@host/db"


def check_store_url(url: str) -> None:
    """ConfigError for a store URL syncflow cannot use, naming the one to write instead:
    ``postgres://`` / ``postgresql://`` (SQLAlchemy's default driver is psycopg2, not
    installed) -> ``postgresql+psycopg://``; MySQL/MariaDB are sources, not a store."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # the engine's own error says what is wrong with it
    shown = parsed.render_as_string(hide_password=True)
    scheme = parsed.drivername.lower()
    backend, _, driver = scheme.partition("+")
    if backend in ("postgres", "postgresql") and driver != "psycopg":
        fixed = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=True)
        raise ConfigError(f"store URL {shown}: write it as {fixed} (syncflow talks to PostgreSQL with psycopg 3)")
    if backend in ("mysql", "mariadb"):
        raise ConfigError(
            f"store URL {shown}: MySQL/MariaDB is not a supported store (use {SUPPORTED}); "
            "a MySQL server can be a source instead: syncflow instances add NAME --kind mysql --host ..."
        )


__all__ = ["check_store_url"]
