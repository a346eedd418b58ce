"""Secrets are random, long, and stored only as a digest."""

from authz import tokens


def test_each_secret_is_new_and_long():
    seen = {tokens.new_secret() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(secret) >= 43 for secret in seen)


def test_digest_is_stable_and_hides_the_secret():
    secret = tokens.new_secret("authz_")
    assert tokens.digest(secret) == tokens.digest(secret)
    assert secret not in tokens.digest(secret)
    assert len(tokens.digest(secret)) == 64
