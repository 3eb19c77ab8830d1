"""A store that goes away for a moment (a PostgreSQL restart, a failover, a locked SQLite file).

A lost connection is transient: the transaction in flight rolled back, so the unit of work can
simply run again. Two layers use this module:

* every new connection of a PostgreSQL/MySQL engine retries a refused or dropped connect with
  backoff (:func:`install_connect_retry`, installed by :func:`syncflow.store.db.make_engine`),
  so a unit of work that starts during the outage waits for the store instead of failing;
* :func:`retrying` re-runs a whole unit of work that lost its connection mid-flight (the
  engine's page loop, begin and finish of a sync: :mod:`syncflow.engine`).

Both give up after ``SYNCFLOW_STORE_RETRY_SECONDS`` (default 60) with one line:
``store unreachable at <url, no password> for N s: <reason>`` (:class:`StoreUnavailable`).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from syncflow.errors import SyncflowError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# PostgreSQL SQLSTATEs a retry can help: connection exceptions (class 08), the server shutting
# down / starting up / in recovery (57P01-57P03), serialization failure and deadlock.
_PG_TRANSIENT_PREFIXES = ("08",)
_PG_TRANSIENT = {"57P01", "57P02", "57P03", "40001", "40P01", "53300"}
# MySQL/MariaDB client and server codes: can't connect, server gone away, lost connection,
# too many connections, lock wait timeout, deadlock, server shutdown in progress.
_MY_TRANSIENT = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
# A PostgreSQL server refusing a connection says why (FATAL: ...), without a SQLSTATE: these
# reasons pass; a bad password, role or database does not.
_PG_FATAL_TRANSIENT = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "sorry, too many clients already",
    "terminating connection due to administrator command",
)


class StoreUnavailable(SyncflowError):
    """The store stayed unreachable longer than ``SYNCFLOW_STORE_RETRY_SECONDS``."""


_patience: ContextVar[float | None] = ContextVar("syncflow_store_patience", default=None)


def retry_seconds() -> float:
    """How long a unit of work waits for the store: ``SYNCFLOW_STORE_RETRY_SECONDS``, or what
    an enclosing :func:`patience` says."""
    override = _patience.get()
    if override is not None:
        return override
    from syncflow.settings import get_settings

    return float(get_settings().store_retry_seconds)


@contextmanager
def patience(seconds: float) -> Iterator[None]:
    """Wait at most ``seconds`` for the store inside the block (this thread/task only), e.g. a
    health check that must answer quickly."""
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


def safe_url(url: str) -> str:
    """``url`` with its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable store URL>"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split("(Background on this error")[0].split())
    return line[:limit]


def reason_of(exc: BaseException) -> str:
    """The driver's message of ``exc``, on one line."""
    orig = getattr(exc, "orig", None)
    return _one_line(str(orig if orig is not None else exc)) or type(exc).__name__


def _driver_transient(orig: BaseException) -> bool:
    """Whether a DBAPI exception (psycopg, pymysql, sqlite3) is a lost/refused connection or a
    lock a retry can outwait."""
    mod = type(orig).__module__
    if mod.startswith("psycopg"):
        import psycopg

        if not isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
            return False
        state = getattr(orig, "sqlstate", None)
        if state is not None:
            return state.startswith(_PG_TRANSIENT_PREFIXES) or state in _PG_TRANSIENT
        # no SQLSTATE: the client could not reach the server or lost it (refused, reset, EOF),
        # or the server refused the connection (FATAL: ...), which is transient only when the
        # server is restarting
        msg = str(orig)
        return "FATAL:" not in msg or any(m in msg for m in _PG_FATAL_TRANSIENT)
    if mod.startswith("pymysql"):
        args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
        return len(args) > 0 and args[0] in _MY_TRANSIENT
    if mod.startswith("sqlite3"):
        msg = str(orig).lower()
        return "database is locked" in msg or "database table is locked" in msg
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the store going away for a moment (a retry of the unit may succeed)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and _driver_transient(exc.orig)
    if type(exc).__module__.split(".")[0] in ("psycopg", "pymysql", "sqlite3"):
        return _driver_transient(exc)
    return False


def _delay(attempt: int) -> float:
    """Backoff before retry ``attempt`` (0-based): 0.25, 0.5, 1, 2, 4, 5, 5, ... s, +-20 %."""
    return float(min(0.25 * 2.0**attempt, 5.0) * random.uniform(0.8, 1.2))


# When a wait gave up (the store stayed away for the whole budget), the outage is known: later
# units of work of this process try once and fail at once, instead of each waiting the budget
# again (a failing sync's finish, its session's book-keeping, ...); the first connection that
# succeeds ends it.
_outage: dict[str, float] = {}  # "since": monotonic time the known outage began
_outage_lock = threading.Lock()


def _known_outage() -> float | None:
    with _outage_lock:
        return _outage.get("since")


def _gave_up(since: float) -> None:
    with _outage_lock:
        _outage.setdefault("since", since)


def _reached() -> None:
    if _outage:
        with _outage_lock:
            _outage.clear()


def retrying(fn: Callable[[], T], *, what: str, url: str | None = None, seconds: float | None = None) -> T:
    """``fn()``, run again (with backoff) while it fails because the store went away, for at most
    ``seconds`` (default ``SYNCFLOW_STORE_RETRY_SECONDS``); then :class:`StoreUnavailable`.

    ``fn`` must be a unit of work: its transactions rolled back when the connection was lost,
    so running it again loses and duplicates nothing."""
    budget = retry_seconds() if seconds is None else seconds
    failed_at: float | None = None  # the outage is timed from the first failure
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if failed_at is None:
                failed_at = _known_outage() or time.monotonic()
            waited = time.monotonic() - failed_at
            if waited >= budget or _known_outage() is not None:
                _gave_up(failed_at)
                raise unavailable(url, waited, exc) from None
            pause = min(_delay(attempt), max(budget - waited, 0.0))
            attempt += 1
            log.warning("%s: the store went away (%s); retry %d in %.1f s", what, reason_of(exc), attempt, pause)
            time.sleep(pause)


def unavailable(url: str | None, waited: float, exc: BaseException) -> StoreUnavailable:
    if url is None:
        from syncflow.settings import get_settings

        url = get_settings().resolved_database_url()
    return StoreUnavailable(f"store unreachable at {safe_url(url)} for {waited:.0f} s: {reason_of(exc)}")


def store_retrying(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` (a unit of work on the configured store) run through :func:`retrying`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return retrying(lambda: fn(*args, **kwargs), what=fn.__name__)

    return wrapper


def install_connect_retry(engine: Engine, *, seconds: Callable[[], float] = retry_seconds) -> None:
    """Make every new connection of ``engine`` wait (with backoff) for a store that refuses or
    drops connections, for at most ``seconds()``; then :class:`StoreUnavailable`."""
    url = engine.url.render_as_string(hide_password=True)

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _rec: Any, cargs: Any, cparams: Any) -> Any:
        known = _known_outage()
        budget = 0.0 if known is not None else seconds()  # a known outage: one try
        started = known or time.monotonic()
        attempt = 0
        warned = said = False
        while True:
            try:
                connection = dialect.connect(*cargs, **cparams)
            except Exception as exc:
                if not _driver_transient(exc):
                    raise
                waited = time.monotonic() - started
                if known is not None or waited >= budget:
                    _gave_up(started)
                    raise unavailable(url, waited, exc) from None
                pause = min(_delay(attempt), max(budget - waited, 0.0))
                attempt += 1
                # quiet at first (a restart takes a second or two), a warning once it lasts 10 s
                warned = warned or waited >= 10
                level = logging.WARNING if warned and (attempt % 10 == 0 or not said) else logging.INFO
                said = said or level == logging.WARNING
                log.log(
                    level, "cannot connect to the store at %s for %.0f s (%s); retrying", url, waited, reason_of(exc)
                )
                time.sleep(pause)
            else:
                _reached()
                return connection


__all__ = [
    "StoreUnavailable",
    "install_connect_retry",
    "is_transient",
    "patience",
    "reason_of",
    "retry_seconds",
    "retrying",
    "safe_url",
    "store_retrying",
]
