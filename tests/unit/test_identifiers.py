"""SIRET and e-mail formats: what the API accepts as identifiers."""

from hypothesis import given
from hypothesis import strategies as st

from authz.identifiers import is_email, is_siret, luhn_valid, normalize_email, with_luhn_digit


def test_known_valid_siret_passes_and_one_digit_off_fails():
    assert is_siret("73282932000074")
    assert not is_siret("73282932000075")


def test_siret_needs_exactly_fourteen_ascii_digits():
    for bad in ["7328293200007", "732829320000740", "7328293200007a", "７３２８２９３２００００７４", "", None, 73282932000074]:
        assert not is_siret(bad), bad


@given(st.from_regex(r"\A[0-9]{13}\Z"))
def test_completing_thirteen_digits_always_gives_a_valid_siret(prefix):
    assert is_siret(with_luhn_digit(prefix))


@given(st.from_regex(r"\A[0-9]{14}\Z"), st.integers(min_value=0, max_value=13), st.integers(min_value=1, max_value=9))
def test_changing_one_digit_breaks_the_checksum(number, position, delta):
    valid = with_luhn_digit(number[:13])
    changed = valid[:position] + str((int(valid[position]) + delta) % 10) + valid[position + 1 :]
    assert luhn_valid(valid)
    assert not luhn_valid(changed)


def test_emails_compare_case_insensitively():
    assert normalize_email("  Chloe.Martin@Legrand.Example ") == "chloe.martin@legrand.example"


def test_email_format_accepts_usual_addresses_and_refuses_the_rest():
    for good in ["a@b.fr", "chloe.martin+paie@legrand.example", "X_Y@sub.domain.example"]:
        assert is_email(good), good
    for bad in ["", "no-at-sign", "two@@at.fr", "a@b", "a b@c.fr", "a@-b.fr", "a@b.fr\n", "é@b.fr", "x" * 65 + "@b.fr", None]:
        assert not is_email(bad), bad
