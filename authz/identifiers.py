"""Identifier formats: SIRET (14 digits, Luhn) and e-mail addresses."""

from __future__ import annotations

import re

# Deliberately strict: one @, no spaces or control characters, a dotted domain.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+\Z")


def luhn_valid(digits: str) -> bool:
    """Return True when ``digits`` passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def is_siret(value: object) -> bool:
    """Return True for a 14-digit ASCII string with a valid Luhn checksum."""
    return (
        isinstance(value, str)
        and len(value) == 14
        and value.isascii()
        and value.isdigit()
        and luhn_valid(value)
    )


def with_luhn_digit(prefix13: str) -> str:
    """Complete 13 digits into a valid SIRET (used by demo data and tests)."""
    for last in "0123456789":
        if luhn_valid(prefix13 + last):
            return prefix13 + last
    raise AssertionError("unreachable: one check digit always fits")


def normalize_email(value: str) -> str:
    """Return the canonical (lower-cased, trimmed) form used as the user id."""
    return value.strip().lower()


def is_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 254 and bool(_EMAIL.match(value))
