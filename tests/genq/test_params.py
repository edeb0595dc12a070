from __future__ import annotations

import pytest

from genq.errors import InvalidRequest
from genq.params import parse_params


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"top_p": 0}, "params.top_p", "greater than 0"),
        ({"do_sample": True, "top_p": 1.5}, "params.top_p", "less than or equal to 1"),
        ({"do_sample": True, "temperature": 0}, "params.temperature", "greater than 0"),
        ({"temperature": 0.7}, "params.temperature", "do_sample"),
        ({"max_new_tokens": 0}, "params.max_new_tokens", "greater than or equal to 1"),
        ({"max_length": 20}, "params.max_length", "unknown parameter"),
        ({"min_new_tokens": 9, "max_new_tokens": 8}, "params.min_new_tokens", "exceed"),
        ({"stop": [""]}, "params.stop", "empty"),
        ({"max_new_tokens": "many"}, "params.max_new_tokens", "integer"),
    ],
)
def test_invalid_parameters_name_the_field(raw: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_params(raw)
    assert info.value.field == field
    assert words in info.value.message


def test_params_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest, match="params: must be an object"):
        parse_params([1, 2])


def test_stop_accepts_a_single_string() -> None:
    assert parse_params({"stop": "\n"}).stop == ("\n",)


def test_group_key_ignores_per_row_fields_only() -> None:
    base = parse_params({"do_sample": True, "top_k": 5, "seed": 1, "stop": "x"})
    same = parse_params({"do_sample": True, "top_k": 6, "top_p": 0.5, "seed": 2})
    other = parse_params({"do_sample": True, "top_k": 5, "seed": 1, "num_return_sequences": 2})
    assert base.group_key() == same.group_key()
    assert base.group_key() != other.group_key()
    assert base.group_key() != parse_params({}).group_key()  # greedy
    assert parse_params({}).group_key() != parse_params({"max_new_tokens": 65}).group_key()
