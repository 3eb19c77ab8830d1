"""SHOW GRANTS normalisation for MySQL and MariaDB (no server needed)."""

from __future__ import annotations

import logging

import pytest

from syncflow.sources.mysql import parse_grants


def test_mariadb_lines_drop_the_password_hash_and_limits() -> None:
    g = parse_grants(
        [
            "GRANT `tx_r` TO `tx_a`@`%` WITH ADMIN OPTION",
            "GRANT RELOAD, PROCESS ON *.* TO `tx_a`@`%`"
            " IDENTIFIED BY PASSWORD '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3' WITH MAX_USER_CONNECTIONS 3",
            "GRANT SELECT (`na me`, `id`), UPDATE (`id`) ON `tx_db`.`t1` TO `tx_a`@`%`",
            "SET DEFAULT ROLE `tx_r` FOR `tx_a`@`%`",
            "GRANT USAGE ON *.* TO `tx_a`@`%`",
        ]
    )
    assert sorted(g.privileges) == [
        "PROCESS on *.*",
        "RELOAD on *.*",
        "SELECT (id, na me) on tx_db.t1",
        "UPDATE (id) on tx_db.t1",
    ]
    assert g.memberships == {"tx_r WITH ADMIN OPTION"}
    assert g.default_roles == ["tx_r"]
    assert g.unparsed == []
    assert not any("2B60" in p or "IDENTIFIED" in p for p in g.privileges)


def test_mariadb_grant_option_in_a_with_clause_full_of_limits() -> None:
    g = parse_grants(
        [
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED VIA unix_socket OR mysql_native_password"
            " USING 'invalid' WITH GRANT OPTION",
            "GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION",
            "GRANT SELECT ON `db`.* TO `u`@`%` WITH MAX_QUERIES_PER_HOUR 10 MAX_USER_CONNECTIONS 2",
        ]
    )
    assert sorted(g.privileges) == [
        "ALL PRIVILEGES on *.*",
        "GRANT OPTION on *.*",
        "GRANT OPTION on @%",
        "PROXY on @%",
        "SELECT on db.*",
    ]


def test_mysql8_lines_dynamic_privileges_roles_and_partial_revokes() -> None:
    g = parse_grants(
        [
            "GRANT SELECT, INSERT ON *.* TO `app`@`%`",
            "GRANT BACKUP_ADMIN,BINLOG_ADMIN,CONNECTION_ADMIN ON *.* TO `app`@`%` WITH GRANT OPTION",
            "GRANT EXECUTE ON PROCEDURE `shop`.`refund` TO `app`@`%`",
            "REVOKE INSERT ON `mysql`.* FROM `app`@`%`",
            "GRANT `reader`@`%`,`writer`@`localhost` TO `app`@`%`",
            "GRANT `admin`@`%` TO `app`@`%` WITH ADMIN OPTION",
        ]
    )
    assert sorted(g.privileges) == [
        "BACKUP_ADMIN on *.*",
        "BINLOG_ADMIN on *.*",
        "CONNECTION_ADMIN on *.*",
        "EXECUTE on PROCEDURE shop.refund",
        "GRANT OPTION on *.*",
        "INSERT on *.*",
        "INSERT on mysql.* (revoked)",
        "SELECT on *.*",
    ]
    assert g.memberships == {"reader@%", "writer@localhost", "admin@% WITH ADMIN OPTION"}


def test_keywords_inside_quoted_names_are_not_keywords() -> None:
    g = parse_grants(["GRANT SELECT (`to do`, `on`) ON `my db`.` TO t` TO `we ird`@`%`"])
    assert g.privileges == {"SELECT (on, to do) on my db. TO t"}


def test_unknown_lines_are_kept_apart_not_guessed() -> None:
    g = parse_grants(["GRANT SELECT ON db.*", "SOMETHING NEW"])
    assert g.privileges == set() and g.unparsed == ["GRANT SELECT ON db.*", "SOMETHING NEW"]


def test_unknown_lines_are_logged_without_quoted_strings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        parse_grants(["ALTER SOMETHING IDENTIFIED BY PASSWORD '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3'"])
    assert "2B602296" not in caplog.text and "'***'" in caplog.text
