"""Token hashing and checking (no services)."""

from __future__ import annotations

import hashlib

import pytest

from syncflow.api.auth import TokenCheck, hash_token
from tests.integration.api.conftest import TOKEN


def test_token_hashes_are_salted_and_checked_in_constant_time() -> None:
    h1, h2 = hash_token(TOKEN), hash_token(TOKEN)
    assert h1 != h2 and TOKEN not in h1
    for h in (h1, h2):
        check = TokenCheck.from_settings(h, None)
        assert check.verify(TOKEN) and not check.verify(TOKEN + "x") and not check.verify("")

    plain = TokenCheck.from_settings(hashlib.sha256(TOKEN.encode()).hexdigest(), None)
    assert plain.verify(TOKEN) and not plain.verify("other")
    secret = TokenCheck.from_settings(None, TOKEN)
    assert secret.verify(TOKEN) and not secret.verify("other")
    assert not TokenCheck.from_settings(None, None).configured
    with pytest.raises(Exception, match="SYNCFLOW_API_TOKEN_HASH"):
        TokenCheck.from_settings("md5:abc", None)
