"""API key material: generation with a CSPRNG, the display prefix and the stored hash."""

import hashlib
import re
import secrets
import string

KEY_PREFIX = "sk_live_"
# 40 base62 characters ≈ 238 bits of entropy: far past brute force, still easy to copy.
SECRET_LENGTH = 40
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 4
ALPHABET = string.ascii_letters + string.digits
KEY_SHAPE = re.compile(rb"^sk_live_[A-Za-z0-9]{20,100}$")


def generate_key() -> tuple[str, str, bytes]:
    """A new key: (the key shown once, its display prefix, its SHA-256 hash to store)."""
    key = KEY_PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    return key, key[:DISPLAY_PREFIX_LENGTH], hash_key(key.encode())


def hash_key(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def looks_like_key(key: bytes) -> bool:
    return KEY_SHAPE.match(key) is not None
