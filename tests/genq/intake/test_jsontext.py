"""Every value in client JSON is checked where it sits: the error names the path to it."""

from __future__ import annotations

import json

import pytest

from genq.errors import InvalidRequest, MalformedInput
from genq.intake.jsontext import MAX_DEPTH, check, loads

REFUSED = [
    # (JSON text, field named, words in the message)
    ('{"a": "x\\u0000y"}', "a", "NUL"),
    ('{"a": ["ok", "\\ud83d"]}', "a.1", "surrogate"),
    # A bad key is named escaped, so that the message itself can be sent.
    ('{"a": {"\\udc00": 1}}', "a.'\\udc00'", "surrogate"),
    ('{"a\\u0000": 1}', "'a\\x00'", "NUL"),
    ('{"t": NaN}', "t", "finite"),
    ('{"t": -Infinity}', "t", "finite"),
    ('{"t": 1e999}', "t", "finite"),
    ('{"n": 9223372036854775808}', "n", "64 bits"),
    ('{"n": -9223372036854775809}', "n", "64 bits"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "0." * (MAX_DEPTH - 1) + "0", "nested"),
]


@pytest.mark.parametrize(("text", "field", "words"), REFUSED)
def test_a_refused_value_is_named_by_its_path(text: str, field: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        loads(text)
    assert caught.value.field == field
    assert words in caught.value.message


def test_where_prefixes_the_path() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check({"requests": [{"prompt": "\u0000"}]}, where="file")
    assert caught.value.field == "file.requests.0.prompt"


@pytest.mark.parametrize(
    "text",
    [b'{"a": ', b"\xff\xfe{}", "1" * 5000, b'{"a": "\xed\xa0\xbd"}', '"a"'.encode("utf-16")],
    ids=["truncated", "not utf-8", "huge integer", "encoded surrogate", "utf-16"],
)
def test_what_does_not_parse_is_malformed(text: str | bytes) -> None:
    with pytest.raises(MalformedInput):
        loads(text)


def test_nesting_too_deep_for_the_parser_is_refused_as_nesting() -> None:
    with pytest.raises(InvalidRequest, match="nested deeper than"):
        loads("[" * 100_000)


def test_good_values_pass_unchanged() -> None:
    value = {
        "s": "héllo ✓ 😀",
        "n": [2**63 - 1, -(2**63), 0],
        "f": 0.5,
        "b": True,
        "z": None,
        "deep": [[[[1]]]],
    }
    assert loads(json.dumps(value)) == value
    assert loads(json.dumps(value, ensure_ascii=False).encode()) == value


def test_check_walks_parsed_values_too() -> None:
    with pytest.raises(InvalidRequest, match="x.0: must be a finite number"):
        check({"x": [float("nan")]})
    check({"x": ["fine"]})
