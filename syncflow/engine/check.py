"""Is an instance ready to sync? One list of checks, each ``{check, ok, detail}``.

The order is the order a sync needs them: ``block`` (its connection block exists on this
Prefect server: the caller's part, it is outside the core), ``connection`` (the server is
reachable), ``credentials`` (the login/token is accepted) and one ``privileges: <category>``
per category the instance syncs (that category can actually be read: a one-row page of
messages, a full snapshot of accounts/capacity/config or the conversations). A check that
cannot be tried because an earlier one failed says so and counts as failed.

Used by ``syncflow instances check``, ``instances add`` (connection and credentials before
registering) and ``POST /sync_sessions/api/instances/{name}/check``. Nothing secret goes into a
detail: the sources' errors never carry passwords or tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncflow.errors import AuthError, SyncError, SyncflowError, TransientSyncError
from syncflow.sources.base import INCREMENTAL_CATEGORIES, Source
from syncflow.sources.database import DatabaseSource
from syncflow.sources.db_connection import connect_mysql, connect_postgres

BLOCK = "block"
CONNECTION = "connection"
CREDENTIALS = "credentials"


def privileges(category: str) -> str:
    """The name of the check that ``category`` can be read."""
    return f"privileges: {category}"


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, and what was seen (or what to do)."""

    check: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail}


@dataclass
class InstanceCheck:
    """Every check of one instance; ``ok`` when all passed."""

    instance: str
    kind: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "ok": self.ok, "checks": [c.as_dict() for c in self.checks]}


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.0f} ms"


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _login_database(source: DatabaseSource) -> None:
    conn = source.conn
    if conn.kind == "postgres":
        connect_postgres(conn, session_options=False).close()
    else:
        connect_mysql(conn).close()


def _probe(source: Source, category: str) -> str:
    """Read a little of ``category``; what was read, in words (raises the source's error)."""
    if category in INCREMENTAL_CATEGORIES:
        page = source.read_page(0, 1)
        total = page.total_count
        return f"can read {category}" + (f" ({total:,} on the server)" if total is not None else "")
    rows = source.read_snapshot(category)
    return f"can read {category} ({len(rows):,} item(s))"


_FIX_OPTIONS: dict[str, dict[str, str]] = {
    "postgres": {CONNECTION: "--host HOST --port PORT", CREDENTIALS: "--user USER --password-env VAR"},
    "mysql": {CONNECTION: "--host HOST --port PORT", CREDENTIALS: "--user USER --password-env VAR"},
    "http-seq": {CONNECTION: "--url URL", CREDENTIALS: "--token-env VAR"},
}


def _fix(instance: str, kind: str, what: str) -> str:
    options = _FIX_OPTIONS.get(kind, {}).get(what)
    return f" (fix: syncflow instances update {instance} {options})" if options else ""


def check_source(
    source: Source,
    *,
    instance: str,
    kind: str,
    categories: Sequence[str],
    describe: str = "",
    login_only: bool = False,
) -> list[Check]:
    """Connection, credentials and (unless ``login_only``) one privilege check per category.

    Database servers: a login (psycopg / PyMySQL) tells the connection from the credentials.
    Other sources: the first category's read does, by the error it raises
    (:class:`TransientSyncError`: not reached; :class:`AuthError`: reached, login refused)."""
    where = f" ({describe})" if describe else ""
    checks: list[Check] = []
    done: dict[str, str] = {}
    start = time.perf_counter()
    try:
        if isinstance(source, DatabaseSource):
            _login_database(source)
            login = f"logged in as {source.conn.user!r}"
        else:
            first = categories[0] if categories else "messages"
            done[first] = _probe(source, first)
            login = "accepted"
    except AuthError as exc:
        checks.append(Check(CONNECTION, True, f"reached{where}"))
        checks.append(Check(CREDENTIALS, False, _one_line(str(exc)) + _fix(instance, kind, "credentials")))
    except (TransientSyncError, SyncError) as exc:
        checks.append(Check(CONNECTION, False, _one_line(str(exc)) + _fix(instance, kind, "connection")))
        checks.append(Check(CREDENTIALS, False, "not tried: no connection"))
    except SyncflowError as exc:  # e.g. a ConfigError of the source
        checks.append(Check(CONNECTION, False, _one_line(str(exc))))
        checks.append(Check(CREDENTIALS, False, "not tried: no connection"))
    else:
        checks.append(Check(CONNECTION, True, f"reached{where} in {_ms(start)}"))
        checks.append(Check(CREDENTIALS, True, login))
    if login_only:
        return checks
    logged_in = all(c.ok for c in checks)
    for category in categories:
        name = privileges(category)
        if not logged_in:
            checks.append(Check(name, False, "not tried: no login"))
            continue
        if category in done:
            checks.append(Check(name, True, done[category]))
            continue
        try:
            checks.append(Check(name, True, _probe(source, category)))
        except SyncflowError as exc:
            checks.append(Check(name, False, _one_line(str(exc))))
    return checks


def run_checks(
    instance: str,
    kind: str,
    categories: Sequence[str],
    *,
    block: Check,
    open_source: Callable[[], tuple[Source, str]] | None,
    login_only: bool = False,
) -> InstanceCheck:
    """The checks of one instance: ``block`` (the caller looked for it), then, when the block
    is there, :func:`check_source` over the source ``open_source()`` opens (with its
    description); the source is closed afterwards."""
    result = InstanceCheck(instance, kind, [block])
    if not block.ok or open_source is None:
        result.checks.append(Check(CONNECTION, False, "not tried: no connection block"))
        result.checks.append(Check(CREDENTIALS, False, "not tried: no connection block"))
        if not login_only:
            result.checks.extend(Check(privileges(c), False, "not tried: no connection block") for c in categories)
        return result
    try:
        source, describe = open_source()
    except SyncflowError as exc:
        result.checks.append(Check(CONNECTION, False, _one_line(str(exc))))
        result.checks.append(Check(CREDENTIALS, False, "not tried: no connection"))
        return result
    try:
        result.checks.extend(
            check_source(
                source, instance=instance, kind=kind, categories=categories, describe=describe, login_only=login_only
            )
        )
    finally:
        try:
            source.close()
        except Exception:  # closing must not hide the checks
            pass
    return result


__all__ = [
    "BLOCK",
    "CONNECTION",
    "CREDENTIALS",
    "Check",
    "InstanceCheck",
    "check_source",
    "privileges",
    "run_checks",
]
