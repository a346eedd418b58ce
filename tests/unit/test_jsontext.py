"""Responses and log lines are written by orjson (service/jsontext.py): the text must be
what the standard library writes, or mean the same where only number spelling differs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from service import jsontext

_keys = st.text(max_size=6)
_leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
                       max_leaves=20)
# Any code point, lone surrogates included (which orjson refuses and responses cannot carry).
_any_text = st.text(st.characters(exclude_categories=()), max_size=12)
_any_values = st.recursive(_leaves | _any_text,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_any_text, inner, max_size=4),
                           max_leaves=20)


def standard(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


@settings(max_examples=500, deadline=None)
@given(_any_values)
def test_the_text_is_the_standard_librarys(value):
    """Any text (lone surrogates, control characters), integers of any size, nesting."""
    assert jsontext.dumps(value, str) == standard(value)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.floats(allow_nan=False, allow_infinity=False), lambda inner: st.lists(inner, max_size=3),
                    max_leaves=6))
def test_numbers_with_a_fraction_mean_the_same(value):
    assert json.loads(jsontext.dumps(value, str)) == value


def test_deep_nesting_is_written_as_the_standard_library_writes_it():
    deep: list = []
    for _ in range(400):  # beyond orjson's 254 levels
        deep = [deep]
    assert jsontext.dumps(deep, str) == standard(deep)


@dataclass
class Point:
    x: int


def test_what_json_cannot_hold_goes_to_default():
    at = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    value = {"at": at, "point": Point(1), "id": UUID(int=7), "amount": Decimal("1.10"), 3: "three"}
    assert jsontext.dumps(value, str) == standard(value)


def _apps() -> tuple[Flask, Flask]:
    ours, flasks = Flask("ours"), Flask("flasks")
    ours.json = jsontext.Provider(ours)
    for app in (ours, flasks):
        app.json.sort_keys = False  # type: ignore[attr-defined]
        app.json.ensure_ascii = False  # type: ignore[attr-defined]
    return ours, flasks


@settings(max_examples=200, deadline=None)
@given(_values)
def test_a_response_has_the_body_flask_writes(value):
    ours, flasks = _apps()
    with ours.app_context():
        mine = ours.json.response(value)
    with flasks.app_context():
        theirs = flasks.json.response(value)
    assert mine.get_data() == theirs.get_data()
    assert mine.mimetype == theirs.mimetype == "application/json"


def test_a_response_writes_dates_and_dataclasses_as_flask_does():
    ours, flasks = _apps()
    value = {"at": datetime(2026, 3, 2, 8, 30, tzinfo=UTC), "point": Point(1), "id": UUID(int=7)}
    assert ours.json.response(value).get_data() == flasks.json.response(value).get_data()


def test_indented_or_sorted_text_is_left_to_flask():
    ours, flasks = _apps()
    value = {"b": 1, "a": [1, 2]}
    ours.debug = flasks.debug = True  # debug mode indents
    assert ours.json.response(value).get_data() == flasks.json.response(value).get_data()
    ours.debug = flasks.debug = False
    ours.json.sort_keys = flasks.json.sort_keys = True  # type: ignore[attr-defined]
    assert ours.json.response(value).get_data() == flasks.json.response(value).get_data() == b'{"a":[1,2],"b":1}\n'
    ours.json.sort_keys = flasks.json.sort_keys = False  # type: ignore[attr-defined]
    ours.json.ensure_ascii = flasks.json.ensure_ascii = True  # type: ignore[attr-defined]
    assert ours.json.response({"é": 1}).get_data() == flasks.json.response({"é": 1}).get_data() == b'{"\\u00e9":1}\n'


def test_the_service_app_writes_with_it():
    from service.app import _App

    assert isinstance(_App("probe").json, jsontext.Provider)
