"""Request schemas: the fast path of an ``evaluations`` body loads exactly as the schema it
stands for, refusals and their messages included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, fields

from service import schemas


class PlainEvaluationsRequestSchema(schemas.EvaluationsRequestSchema):
    evaluations = fields.List(fields.Nested(schemas.EvaluationItemSchema))


FAST = schemas.EvaluationsRequestSchema()
PLAIN = PlainEvaluationsRequestSchema()

KEYS = st.sampled_from(["subject", "action", "resource", "context", "type", "id", "name", "other"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=16,
)


def _load(schema, body):
    try:
        return "loaded", schema.load(body)
    except ValidationError as exc:
        return "refused", exc.messages


@settings(max_examples=1000, deadline=None)
@given(items=JSON)
def test_evaluations_load_as_the_plain_nested_schema(items):
    body = {"evaluations": items}

    assert _load(FAST, body) == _load(PLAIN, body)


def test_a_usual_batch_loads_each_item_less_its_unknown_fields():
    item = {"subject": {"type": "user", "id": "a@x.example"}, "action": {"name": "compte"},
            "resource": {"type": "company", "id": "73282932000074"}, "unknown": 1}

    loaded = FAST.load({"evaluations": [item, item]})["evaluations"]

    assert loaded == [{key: value for key, value in item.items() if key != "unknown"}] * 2
    assert loaded[0]["subject"] is not item["subject"]  # a copy: the body is left as it was
