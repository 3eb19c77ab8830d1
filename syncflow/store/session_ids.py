"""Short session ids: the shortest unique prefix of a session id (8 characters or more), and
the way back from a prefix an operator typed to the one session it names.

Read-only functions that take a SQLAlchemy ``Session``; they never write.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syncflow.errors import ConfigError, NotFoundError
from syncflow.store.models import SyncSession

MIN_LEN = 8  # the console's short ids are at least this long (syncflow.schemas.SHORT_ID_LEN)
AMBIGUOUS_LISTED = 5


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _shortest(sid: str, others: Iterable[str], min_len: int) -> str:
    """The shortest prefix of ``sid`` (at least ``min_len``) that no id of ``others`` starts with."""
    n = min_len
    for other in others:
        if other == sid:
            continue
        common = 0
        for a, b in zip(sid, other, strict=False):
            if a != b:
                break
            common += 1
        n = max(n, common + 1)
    return sid[: min(n, len(sid))]


def short_ids(session: Session, session_ids: Iterable[str], *, min_len: int = MIN_LEN) -> dict[str, str]:
    """Per session id: its shortest unique prefix among every session in the store (one query:
    the sessions sharing the first ``min_len`` characters with any of ``session_ids``)."""
    ids = list(dict.fromkeys(session_ids))
    if not ids:
        return {}
    heads = sorted({sid[:min_len] for sid in ids})
    head = func.substr(SyncSession.session_id, 1, min_len)
    clash: dict[str, list[str]] = {}
    for chunk in range(0, len(heads), 500):
        rows = session.scalars(select(SyncSession.session_id).where(head.in_(heads[chunk : chunk + 500])))
        for other in rows:
            clash.setdefault(other[:min_len], []).append(other)
    return {sid: _shortest(sid, clash.get(sid[:min_len], ()), min_len) for sid in ids}


def resolve_session_id(session: Session, prefix: str) -> str:
    """The full id of the one session whose id starts with ``prefix`` (a whole id is returned
    as is when it exists). :class:`NotFoundError` when none does, :class:`ConfigError` naming
    the candidates when several do."""
    text = prefix.strip()
    if not text:
        raise ConfigError("a session id (or a unique prefix of one) is required")
    exact = session.scalar(select(SyncSession.session_id).where(SyncSession.session_id == text))
    if exact is not None:
        return exact
    found = list(
        session.scalars(
            select(SyncSession.session_id)
            .where(SyncSession.session_id.like(_escape_like(text) + "%", escape="\\"))
            .order_by(SyncSession.created_at.desc())
            .limit(AMBIGUOUS_LISTED + 1)
        )
    )
    if not found:
        raise NotFoundError(f"unknown session {text!r}")
    if len(found) > 1:
        listed = ", ".join(found[:AMBIGUOUS_LISTED]) + (", ..." if len(found) > AMBIGUOUS_LISTED else "")
        raise ConfigError(f"session id prefix {text!r} is ambiguous: it matches {listed}; give more characters")
    return found[0]


__all__ = ["MIN_LEN", "resolve_session_id", "short_ids"]
