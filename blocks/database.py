"""Prefect block holding a database-server instance's connection (postgres | mysql) and retry policy.

The password is a ``SecretStr``: Prefect encrypts it in its database and never shows it; tasks
get the block's *name* and turn it into a :class:`~syncflow.sources.db_connection.DbConnection`
themselves (``DatabaseInstance.aload(name).connection()``).

Register the type with ``python -m blocks.register`` (or ``prefect block register -m blocks.database``).
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from syncflow.sources.base import ReadPolicy
from syncflow.sources.database import DatabaseSource
from syncflow.sources.db_connection import DbConnection


class DatabaseInstance(Block):
    """Connection of one PostgreSQL or MySQL/MariaDB server: where it is, who logs in, retries."""

    _block_type_name = "syncflow database instance"
    _block_type_slug = "syncflow-database"
    _description = (
        "A PostgreSQL or MySQL/MariaDB server whose accounts, capacity and configuration syncflow reads "
        "(psycopg 3 / PyMySQL)."
    )

    kind: Literal["postgres", "mysql"] = Field(description="Server kind: postgres, or mysql (MySQL and MariaDB).")
    host: str = Field(description="Host name or address of the server.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="TCP port (default: 5432 for postgres, 3306 for mysql)."
    )
    user: str = Field(description="The user syncflow logs in as (read-only needs; see the README).")
    password: SecretStr | None = Field(default=None, description="The user's password (none: trust/peer auth).")
    database: str | None = Field(
        default=None,
        description="Database to connect to (postgres default: postgres; its schemas and tables are the ones read).",
    )
    tls_mode: Literal["disable", "prefer", "require", "verify-full"] = Field(
        default="prefer", description="disable | prefer | require | verify-full (verify-full checks the certificate)."
    )
    ca_file: str | None = Field(default=None, description="CA bundle for verify-full (default: the system's).")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds allowed for the connect and the login.")
    query_timeout: float = Field(default=120.0, gt=0, description="Seconds allowed for each statement.")
    top_tables: int = Field(default=20, ge=0, le=1000, description="capacity: largest tables listed per database.")
    max_retries: int = Field(default=3, ge=0, le=20, description="Retries after the first attempt (transient errors).")
    base_delay: float = Field(default=1.0, ge=0, description="Seconds before the first retry.")
    backoff_multiplier: float = Field(default=2.0, ge=1, description="Each retry waits this much longer.")
    max_delay: float = Field(default=60.0, ge=0, description="No wait is longer than this.")
    jitter: float = Field(default=0.5, ge=0, le=1, description="Random spread, as a fraction of the delay.")
    binding: str | None = Field(
        default=None,
        description="Set by syncflow: the key of the instance this block was made for. A sync refuses "
        "a block whose key is not its instance's (keep it when editing the block).",
    )

    @field_validator("host", "user")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    def connection(self) -> DbConnection:
        """The connection description (with the password) for the source readers."""
        return DbConnection(
            kind=self.kind,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password.get_secret_value() if self.password is not None else None,
            database=self.database,
            tls_mode=self.tls_mode,
            connect_timeout=self.connect_timeout,
            query_timeout=self.query_timeout,
            ca_file=self.ca_file,
        )

    def describe(self) -> str:
        """``postgres 127.0.0.1:5432/app as user 'alice'`` (never the password)."""
        conn = self.connection()
        db = f"/{self.database}" if self.database else ""
        return f"{self.kind} {conn.address}{db} as user {self.user!r}"

    def read_policy(self) -> ReadPolicy:
        return ReadPolicy.of(self)

    def open_source(self, instance: str) -> DatabaseSource:
        return DatabaseSource(self.connection(), top_tables=self.top_tables)
