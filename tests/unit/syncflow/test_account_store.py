"""How account and setting changes are put in words (no database needed)."""

from __future__ import annotations

from syncflow.sources.db_snapshots import AccountSnapshot, SettingSnapshot
from syncflow.store.sessions import ItemCounts
from syncflow.store.snapshots import DiffResult, account_changes, human_bytes, setting_change


def test_account_changes_attributes_then_memberships_then_privileges() -> None:
    old = AccountSnapshot(
        identity="alice",
        attributes={"login": True, "createdb": False, "connection_limit": -1, "valid_until": None},
        privileges=["CONNECT on database app", "SELECT on public.*"],
        memberships=["ops"],
    )
    new = AccountSnapshot(
        identity="alice",
        attributes={"login": True, "createdb": True, "connection_limit": 5, "config.work_mem": "8MB"},
        privileges=["CONNECT on database app", "SELECT on public.orders"],
        memberships=["dev"],
    )
    assert account_changes(old, new) == [
        "config.work_mem: (none) -> 8MB",
        "connection_limit: -1 -> 5",
        "+CREATEDB",
        "valid_until: none -> (gone)",
        "+member of dev",
        "-member of ops",
        "-SELECT on public.*",
        "+SELECT on public.orders",
    ]
    assert account_changes(new, new) == []


def test_flags_read_as_words() -> None:
    old = AccountSnapshot(identity="u@%", attributes={"account_locked": False})
    new = AccountSnapshot(identity="u@%", attributes={"account_locked": True, "password_expired": True})
    assert account_changes(old, new) == ["+ACCOUNT LOCKED", "+PASSWORD EXPIRED"]
    assert account_changes(new, old) == ["-ACCOUNT LOCKED", "password_expired: True -> (gone)"]


def test_setting_change_words() -> None:
    a = SettingSnapshot("work_mem", "4MB", {"setting": "4096", "unit": "kB", "source": "default"})
    b = SettingSnapshot("work_mem", "8MB", {"setting": "8192", "unit": "kB", "source": "database"})
    assert setting_change(a, b) == "work_mem: 4MB -> 8MB (source: default -> database)"
    c = SettingSnapshot("work_mem", "4MB", {"setting": "4096", "unit": "kB", "source": "user"})
    assert setting_change(a, c) == "work_mem: source: default -> user"


def test_human_bytes_and_capped_details() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 TiB",
    ]
    r = DiffResult(counts=ItemCounts(), changes=[f"c{i}" for i in range(5)], created=["a", "b", "c"])
    assert r.details(limit=2) == {
        "changes": ["c0", "c1"],
        "changes_total": 5,
        "changes_truncated": True,
        "created": ["a", "b"],
        "updated": [],
        "deleted": [],
    }
