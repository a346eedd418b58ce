"""A batch item loads from memory exactly as the schema loads it: the same entities, or
the same refusal, for any JSON an item may hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from service.authzen import EVALUATION, _load_item

# Lengths around the schema's bounds (1..64 for types and names, 1..512 for ids).
TEXT = st.one_of(
    st.sampled_from(["", "user", "company", "compte", "a@x.example", "73282932000074"]),
    st.text(max_size=3),
    st.integers(min_value=62, max_value=66).map(lambda n: "t" * n),
    st.integers(min_value=510, max_value=514).map(lambda n: "i" * n),
)
VALUE = st.one_of(TEXT, st.none(), st.integers(), st.booleans(), st.just({}), st.just(["x"]))
KEY = st.one_of(st.sampled_from(["type", "id", "name", "properties"]), st.text(max_size=2))
FLAT = st.dictionaries(KEY, TEXT, max_size=4)  # what portals send: the memory's case
ENTITY = st.one_of(st.dictionaries(KEY, VALUE, max_size=4), FLAT, VALUE)
ITEM = st.one_of(
    st.fixed_dictionaries({"subject": FLAT, "action": FLAT, "resource": FLAT}),
    st.fixed_dictionaries({}, optional={"subject": ENTITY, "action": ENTITY, "resource": ENTITY, "x": VALUE}),
)


def _schema_load(item: dict):
    try:
        return EVALUATION.load(item)
    except ValidationError as exc:
        return ("refused", exc.messages)


def _memory_load(item: dict):
    try:
        return _load_item(item)
    except ValidationError as exc:
        return ("refused", exc.messages)


@settings(max_examples=600, deadline=None)
@given(ITEM)
def test_an_item_loads_from_memory_as_the_schema_loads_it(item):
    expected = _schema_load(item)
    assert _memory_load(item) == expected
    assert _memory_load(item) == expected  # and again, now that it may be remembered
