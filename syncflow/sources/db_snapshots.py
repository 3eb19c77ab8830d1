"""What the database-server readers return: plain, frozen, JSON-able snapshots.

One shape for PostgreSQL and MySQL/MariaDB alike, so that the store
(:mod:`syncflow.store.snapshots`) diffs them without knowing the server kind:

* :class:`AccountSnapshot` - one account (PostgreSQL role, MySQL ``user@host``, MariaDB role)
  with its attributes, its privileges as sorted readable strings and the roles it is a
  member of;
* :class:`SettingSnapshot` - one server setting with its value and a few attributes
  (unit, where the value comes from, ...);
* :class:`DatabaseSize` - one database (MySQL: schema) with its size in bytes and its largest
  tables.

``to_json()`` / ``from_json()`` turn each into plain dicts and back (Prefect task results,
``sync_details``, tests); :func:`fingerprint` hashes a JSON value canonically.

Which settings are never read (:func:`is_sensitive_setting`) lives here too, because both
readers share the rule.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "AccountSnapshot",
    "DatabaseSize",
    "SettingSnapshot",
    "TableSize",
    "fingerprint",
    "is_sensitive_setting",
    "sorted_unique",
]


def fingerprint(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sorted_unique(items: Iterable[str]) -> list[str]:
    return sorted(set(items))


@dataclass(frozen=True)
class AccountSnapshot:
    """One account of a database server as read at one moment.

    ``identity`` is what names the account on its server: the role name on PostgreSQL,
    ``user@host`` on MySQL/MariaDB (a MariaDB role: its bare name). ``privileges`` and
    ``memberships`` are sorted and unique (the constructor sorts them).
    """

    identity: str
    attributes: dict[str, Any] = field(default_factory=dict)
    privileges: list[str] = field(default_factory=list)
    memberships: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.identity, str) or not self.identity:
            raise ValueError(f"account identity must be a non-empty string, got {self.identity!r}")
        object.__setattr__(self, "attributes", dict(sorted(self.attributes.items())))
        object.__setattr__(self, "privileges", sorted_unique(self.privileges))
        object.__setattr__(self, "memberships", sorted_unique(self.memberships))

    @property
    def fingerprint(self) -> str:
        return fingerprint([self.attributes, self.privileges, self.memberships])

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "attributes": dict(self.attributes),
            "privileges": list(self.privileges),
            "memberships": list(self.memberships),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccountSnapshot:
        return cls(
            identity=data["identity"],
            attributes=dict(data.get("attributes") or {}),
            privileges=list(data.get("privileges") or []),
            memberships=list(data.get("memberships") or []),
        )


@dataclass(frozen=True)
class SettingSnapshot:
    """One server setting: its value as the server shows it, and how it came to be."""

    name: str
    value: str | None
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"setting name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "attributes", dict(sorted(self.attributes.items())))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "attributes": dict(self.attributes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SettingSnapshot:
        return cls(name=data["name"], value=data.get("value"), attributes=dict(data.get("attributes") or {}))


@dataclass(frozen=True)
class TableSize:
    """One table's size: ``bytes`` = ``table_bytes`` (data, with TOAST on PostgreSQL) + ``index_bytes``.

    ``rows`` is the server's estimate (None when it has none yet).
    """

    name: str
    bytes: int
    table_bytes: int
    index_bytes: int
    rows: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bytes": self.bytes,
            "table_bytes": self.table_bytes,
            "index_bytes": self.index_bytes,
            "rows": self.rows,
        }


@dataclass(frozen=True)
class DatabaseSize:
    """One database (a schema on MySQL/MariaDB) and its largest tables, largest first.

    ``tables`` holds dicts ``{name, bytes, table_bytes, index_bytes, rows}`` (see
    :class:`TableSize`); on PostgreSQL only the connected database lists its tables.
    """

    database: str
    bytes: int
    tables: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        tables = [t.to_json() if isinstance(t, TableSize) else dict(t) for t in self.tables]
        tables.sort(key=lambda t: (-int(t.get("bytes") or 0), str(t.get("name"))))
        object.__setattr__(self, "tables", tables)

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "bytes": self.bytes, "tables": [dict(t) for t in self.tables]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatabaseSize:
        return cls(database=data["database"], bytes=int(data["bytes"]), tables=list(data.get("tables") or []))


# ------------------------------------------------------------------------ sensitive settings

# A setting whose name contains one of these words may hold a secret (or a command/conninfo
# that embeds one): it is never read into a snapshot.
_SENSITIVE = re.compile(r"password|passwd|passphrase|secret|key|token|credential|conninfo", re.IGNORECASE)
# ... except these, which are known to hold only paths, sizes, flags or policy names.
_SAFE = re.compile(
    r"^(?:"
    r"ssl_\w*_file"  # PostgreSQL: ssl_key_file, ssl_cert_file, ... (paths)
    r"|ssl_key"  # MySQL/MariaDB: path of the server key
    r"|key_buffer_size|key_cache_\w+|max_seeks_for_key"  # MyISAM key cache sizes
    r"|password_encryption"  # PostgreSQL: md5 | scram-sha-256
    r"|default_password_lifetime|disconnect_on_expired_password"  # MySQL/MariaDB policy
    r")$",
    re.IGNORECASE,
)


def is_sensitive_setting(name: str) -> bool:
    """True when a setting named ``name`` must not be read (it may hold a secret)."""
    return bool(_SENSITIVE.search(name)) and not _SAFE.match(name)
