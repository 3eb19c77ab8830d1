"""syncflow's exceptions, one flat module.

Every error says whether a retry can help: :class:`TransientSyncError` (a retry may
succeed: 5xx, timeouts, dropped connections, truncated pages) or
:class:`PermanentSyncError` (a retry cannot help: bad credentials, invalid pages, bad
input). Messages carry their context (instance, request) so a log line alone explains
what went wrong.
"""

from __future__ import annotations


class SyncflowError(Exception):
    """Base class of every error syncflow raises on purpose."""


class ConfigError(SyncflowError):
    """The configuration or a parameter is wrong (unknown kind, bad category, ...)."""


class NotFoundError(SyncflowError):
    """A named object (instance, session, record) does not exist."""


class AlreadyExistsError(SyncflowError):
    """An object with that identity exists already (duplicate instance name, ...)."""


class IllegalTransitionError(SyncflowError):
    """A state change that the session/record life cycle does not allow."""


class PrefectUnavailable(SyncflowError):
    """The Prefect API could not be reached, did not answer in time, or refused a request."""


class SlotError(SyncflowError):
    """A slot of a Prefect concurrency limit could not be taken (the limit is missing or refuses
    one) or kept (its lease could not be renewed: the holder stops, so the cap is not exceeded)."""


class DeploymentMissing(SyncflowError):
    """The deployment to run does not exist on the Prefect API (``prefect deploy --all`` first)."""


class SyncError(SyncflowError):
    """A sync of one instance failed."""

    retryable: bool = False


class TransientSyncError(SyncError):
    """A retry may succeed: 5xx, timeouts, dropped connections, truncated JSON."""

    retryable = True


class RateLimitedError(TransientSyncError):
    """The source answered 429; ``retry_after`` is how long it asked us to wait (s)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSyncError(SyncError):
    """A retry cannot help: the input or the configuration is wrong."""


class AuthError(PermanentSyncError):
    """The source refused our credentials (401/403, bad password)."""


class ProtocolError(PermanentSyncError):
    """The source answered something the protocol does not allow (bad page, code != 0)."""


class LockedError(SyncflowError):
    """Another sync of the same (instance, category) holds the single-flight lock."""


# pydantic prefixes the message of a ValueError/AssertionError raised in a validator with these.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def clean_message(msg: str) -> str:
    """A pydantic error message without its "Value error, " prefix (the validator's own words)."""
    for prefix in _PYDANTIC_PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


__all__ = [
    "AlreadyExistsError",
    "AuthError",
    "ConfigError",
    "DeploymentMissing",
    "IllegalTransitionError",
    "LockedError",
    "NotFoundError",
    "PermanentSyncError",
    "PrefectUnavailable",
    "ProtocolError",
    "RateLimitedError",
    "SlotError",
    "SyncError",
    "SyncflowError",
    "TransientSyncError",
    "clean_message",
]
