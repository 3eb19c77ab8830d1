"""Dependencies of the console's routes: the store session, auth, settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from syncflow.api.auth import TokenCheck
from syncflow.api.settings import ApiSettings
from syncflow.errors import ConfigError
from syncflow.store.db import get_engine, session_scope


@dataclass
class Console:
    """What the app holds: its settings, the token check and (optionally) a fixed engine."""

    settings: ApiSettings
    tokens: TokenCheck
    engine: Engine | None = None

    def get_engine(self) -> Engine:
        return self.engine or get_engine()


def console(request: Request) -> Console:
    return request.app.state.console


ConsoleDep = Annotated[Console, Depends(console)]


def db(c: ConsoleDep) -> Iterator[Session]:
    with session_scope(c.get_engine()) as s:
        yield s


DbDep = Annotated[Session, Depends(db)]

_bearer = HTTPBearer(auto_error=False, description="The API token (SYNCFLOW_API_TOKEN / SYNCFLOW_API_TOKEN_HASH).")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check(c: Console, creds: HTTPAuthorizationCredentials | None) -> None:
    if not c.tokens.configured:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "no API token is configured: set SYNCFLOW_API_TOKEN_HASH (syncflow api hash-token) or SYNCFLOW_API_TOKEN",
        )
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not c.tokens.verify(creds.credentials):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def require_write(c: ConsoleDep, creds: BearerDep) -> None:
    """Every write endpoint: a valid bearer token."""
    _check(c, creds)


def require_read(c: ConsoleDep, creds: BearerDep) -> None:
    """Read endpoints: a valid bearer token when SYNCFLOW_API_READ_AUTH is true."""
    if c.settings.read_auth:
        _check(c, creds)


READ = [Depends(require_read)]
WRITE = [Depends(require_write)]

_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


def utc(value: dt.datetime | None, what: str) -> dt.datetime | None:
    """A query datetime as aware UTC (naive means UTC), within 1970..2200."""
    if value is None:
        return None
    try:
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise ConfigError(f"{what}: {value!r} is out of range") from None
    if not _MIN <= value < _MAX:
        raise ConfigError(f"{what} must be between 1970-01-01 and 2200-01-01, not {value.isoformat()}")
    return value
