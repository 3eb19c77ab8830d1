"""Checks of operator input shared by the CLI, the API and the blocks: each raises
:class:`~syncflow.errors.ConfigError` with one line naming the field that is wrong."""

from __future__ import annotations

from urllib.parse import urlsplit

from syncflow.errors import ConfigError

SEQ_MAX = 2**63 - 1  # seqs and cursors are signed 64-bit (BIGINT)
PORT_MAX = 65535


def check_port(port: int | None, *, field: str = "--port") -> int | None:
    if port is not None and not 1 <= port <= PORT_MAX:
        raise ConfigError(f"{field}: port {port} is out of range (1..{PORT_MAX})")
    return port


def check_url(url: str, *, field: str = "--url") -> str:
    """An http(s) URL with a host and, when given, a port in 1..65535; returned without a
    trailing slash."""
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"{field}: {text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{field}: {text!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"{field}: {text!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{field}: {text!r} has a port out of range (1..{PORT_MAX})") from None
    if port is not None:
        check_port(port, field=field)
    if parts.query or parts.fragment:
        raise ConfigError(f"{field}: {text!r} must be a base URL (no query or fragment)")
    return text.rstrip("/")


def check_seq(value: int | None, *, field: str) -> int | None:
    """A seq bound: a non-negative integer within the signed 64-bit range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{field} must be a non-negative integer, not {value!r}")
    if value > SEQ_MAX:
        raise ConfigError(f"{field} {value} is beyond the signed 64-bit range (at most {SEQ_MAX})")
    return value


__all__ = ["PORT_MAX", "SEQ_MAX", "check_port", "check_seq", "check_url"]
