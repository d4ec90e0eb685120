"""The in-process memory of unknown API keys: bounded, and forgetting after its TTL."""

import time

from app.access.auth import UNKNOWN_KEYS_MAX, UnknownKeys


def test_unknown_key_is_remembered_and_others_are_not():
    unknown = UnknownKeys()
    unknown.add(b"a" * 32)
    assert b"a" * 32 in unknown and b"b" * 32 not in unknown


def test_unknown_keys_stay_bounded_dropping_the_oldest():
    unknown = UnknownKeys()
    for i in range(UNKNOWN_KEYS_MAX + 10):
        unknown.add(i.to_bytes(32, "big"))
    assert len(unknown.until) == UNKNOWN_KEYS_MAX
    assert (0).to_bytes(32, "big") not in unknown
    assert (UNKNOWN_KEYS_MAX + 9).to_bytes(32, "big") in unknown


def test_expired_unknown_key_is_forgotten():
    unknown = UnknownKeys()
    unknown.add(b"a" * 32)
    unknown.until[b"a" * 32] = time.monotonic() - 1  # as it stands once the TTL has passed
    assert b"a" * 32 not in unknown and not unknown.until
