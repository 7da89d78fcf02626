"""The record kept beside its error in the operation log: recognisable, never bulky."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, strategies as st

from mailconnector.records.excerpt import MAX_CHARS, excerpt


def test_a_small_record_is_kept_as_it_is() -> None:
    record = {"to": ["bob@example.test"], "subject": "Invoice 7", "text": "hello", "priority": 1, "html": None}
    assert excerpt(record) == record


def test_long_values_are_cut_saying_how_long_they_were() -> None:
    record = {"subject": "s" * 1000, "attachments": [{"filename": "a.pdf", "content_base64": "QUFB" * 50_000}],
              "raw": b"\x00" * 10}
    small = excerpt(record)
    assert small["subject"].startswith("s" * 300) and small["subject"].endswith("… (1000 characters)")
    assert small["attachments"][0]["filename"] == "a.pdf"
    assert small["attachments"][0]["content_base64"].endswith("… (200000 characters)")
    assert small["raw"] == "(10 bytes)"


def test_long_lists_and_deep_nesting_are_elided() -> None:
    record = {"to": [f"r{i}@example.test" for i in range(500)], "a": {"b": {"c": {"d": {"e": 1}}}}}
    small = excerpt(record)
    assert len(small["to"]) == 21 and small["to"][-1] == "… 480 more item(s)"
    assert small["a"]["b"]["c"] == {"d": "(1 field(s))"}


def test_a_record_with_many_big_fields_is_cut_to_one_line_each() -> None:
    record = {f"field{i}": "x" * 299 for i in range(20)}
    small = excerpt(record)
    assert len(json.dumps(small, ensure_ascii=False)) <= MAX_CHARS + 200
    assert all(isinstance(v, str) and len(v) <= 80 for k, v in small.items() if k != "…")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=40) | st.dictionaries(st.text(), inner, max_size=40),
                           max_leaves=400)


@given(json_values)
def test_any_record_gives_a_bounded_excerpt_that_is_json(record: Any) -> None:
    text = json.dumps(excerpt(record), ensure_ascii=False)
    assert len(text) <= MAX_CHARS * 2 + 200  # a cut one-line field may hold escapes; bounded all the same
