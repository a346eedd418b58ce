"""One-time activation tokens and API keys: random, shown once, stored as hashes."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32


def new_secret(prefix: str = "") -> str:
    """Return a fresh 256-bit URL-safe secret."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def digest(secret: str) -> str:
    """Hash a secret for storage and lookup.

    Secrets are 256-bit random, so SHA-256 suffices (no salt or slow hash needed), and
    looking up by the digest never compares the secret itself byte by byte.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
