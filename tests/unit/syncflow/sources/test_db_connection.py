"""DbConnection: parsing, validation, and that the password never shows."""

from __future__ import annotations

import pytest

from syncflow.errors import ConfigError
from syncflow.sources.db_connection import DbConnection
from syncflow.sources.db_snapshots import AccountSnapshot, DatabaseSize, is_sensitive_setting


def test_from_url_and_defaults() -> None:
    c = DbConnection.from_url("postgresql+psycopg://alice:p%40ss@db.example:6432/app?sslmode=require&connect_timeout=3")
    assert (c.kind, c.host, c.port, c.user, c.password, c.database) == (
        "postgres",
        "db.example",
        6432,
        "alice",
        "p@ss",
        "app",
    )
    assert (c.tls_mode, c.connect_timeout) == ("require", 3.0)
    m = DbConnection.from_url("mariadb://root@127.0.0.1")
    assert (m.kind, m.port, m.database, m.password, m.tls_mode) == ("mysql", 3306, None, None, "prefer")
    assert DbConnection.coerce({"kind": "postgres", "host": "h", "user": "u"}).port == 5432


def test_a_secret_str_password_is_unwrapped() -> None:
    from pydantic import SecretStr

    c = DbConnection(kind="postgres", host="h", user="u", password=SecretStr("s3"))  # type: ignore[arg-type]
    assert c.password == "s3"


def test_password_is_never_in_repr_or_descriptions() -> None:
    c = DbConnection(kind="mysql", host="h", user="u", password="hunter2-secret")
    assert "hunter2" not in repr(c) and "hunter2" not in c.describe() and "hunter2" not in str(c)
    assert c._scrub("login failed with hunter2-secret") == "login failed with ***"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "oracle", "host": "h", "user": "u"},
        {"kind": "postgres", "host": "", "user": "u"},
        {"kind": "postgres", "host": "h", "user": ""},
        {"kind": "postgres", "host": "h", "user": "u", "port": 70000},
        {"kind": "postgres", "host": "h", "user": "u", "tls_mode": "sometimes"},
        {"kind": "postgres", "host": "h", "user": "u", "connect_timeout": 0},
    ],
)
def test_bad_connections_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        DbConnection(**kwargs)


def test_unknown_fields_and_schemes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="passwd"):
        DbConnection.coerce({"kind": "postgres", "host": "h", "user": "u", "passwd": "x"})
    with pytest.raises(ConfigError, match="scheme"):
        DbConnection.from_url("oracle://u@h/db")


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("work_mem", False),
        ("ssl_key_file", False),
        ("ssl_cert_file", False),
        ("ssl_key", False),
        ("key_buffer_size", False),
        ("password_encryption", False),
        ("ssl_passphrase_command", True),
        ("primary_conninfo", True),
        ("krb_server_keyfile", True),
        ("caching_sha2_password_private_key_path", True),
        ("some_api_token", True),
        ("app.SECRET", True),
        ("keyring_vault_config", True),
    ],
)
def test_sensitive_settings(name: str, sensitive: bool) -> None:
    assert is_sensitive_setting(name) is sensitive


def test_snapshots_are_sorted_and_round_trip() -> None:
    a = AccountSnapshot(identity="x", attributes={"b": 1, "a": 2}, privileges=["z", "a", "z"], memberships=["m"])
    assert a.privileges == ["a", "z"] and list(a.attributes) == ["a", "b"]
    assert (
        AccountSnapshot.from_json(a.to_json()) == a
        and a.fingerprint == AccountSnapshot.from_json(a.to_json()).fingerprint
    )
    d = DatabaseSize(database="app", bytes=10, tables=[{"name": "s.b", "bytes": 1}, {"name": "s.a", "bytes": 5}])
    assert [t["name"] for t in d.tables] == ["s.a", "s.b"]
    assert DatabaseSize.from_json(d.to_json()) == d
