"""Who the ClickHouse HTTP interface lets read: decided without a server (the wire is tested in
tests/e2e/test_clickhouse_http.py)."""

import hashlib

import pytest

from storage.clickhouse.http_interface import INTERNAL_USER, Authenticator
from storage.clickhouse.readers import QueryError

KEY = "internal-key"
ANALYSTS = {"ana": hashlib.sha256(b"secret").hexdigest()}


@pytest.mark.parametrize(
    ("users", "user", "password", "peer", "allowed"),
    [
        # No analysts configured: this machine only, whatever the name.
        ({}, None, "", "127.0.0.1", True),
        ({}, "default", "", "::1", True),
        ({}, "anyone", "anything", "127.0.0.5", True),
        ({}, None, "", "192.0.2.10", False),
        ({}, "default", "", "10.0.0.1", False),
        ({}, INTERNAL_USER, KEY, "192.0.2.10", True),
        ({}, INTERNAL_USER, "wrong", "127.0.0.1", False),
        # Analysts configured: every caller names one, loopback included.
        (ANALYSTS, "ana", "secret", "192.0.2.10", True),
        (ANALYSTS, "ana", "secret", "127.0.0.1", True),
        (ANALYSTS, "ana", "wrong", "127.0.0.1", False),
        (ANALYSTS, None, "", "127.0.0.1", False),
        (ANALYSTS, "bob", "secret", "127.0.0.1", False),
        (ANALYSTS, INTERNAL_USER, KEY, "127.0.0.1", True),
        (ANALYSTS, "", "", "not-an-address", False),
    ],
)
def test_who_may_read(users, user, password, peer, allowed):
    auth = Authenticator(users, KEY)
    if allowed:
        auth.check(user, password, peer)
    else:
        with pytest.raises(QueryError) as refused:
            auth.check(user, password, peer)
        assert refused.value.code in (194, 516)  # REQUIRED_PASSWORD, AUTHENTICATION_FAILED
