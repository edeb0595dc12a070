"""JSONL files: every line numbered as in the file, a bad line failing alone with its number and
custom_id, native and OpenAI lines becoming the same requests as the API's bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from genq.errors import InvalidRequest, ModelNotFound
from genq.intake import read_file
from genq.params import GenerationParams
from genq.settings import Settings

SETTINGS = Settings(max_prompt_chars=100)


def jsonl(*lines: Any, end: str = "\n") -> bytes:
    return end.join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode() + b"\n"


def chat(custom_id: str, **body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_bom_line_endings_and_blank_lines_keep_file_numbers(end: str) -> None:
    content = b"\xef\xbb\xbf" + jsonl({"prompt": "a"}, "", "   ", {"prompt": "b"}, "{", end=end)
    read = read_file(content, settings=SETTINGS)
    assert [(line.number, line.custom_id) for line in read.lines] == [
        (1, "line-1"),
        (4, "line-4"),
        (5, "line-5"),
    ]
    assert [line.request.prompt for line in read.valid if line.request] == ["a", "b"]
    assert read.lines[2].error_text.startswith("line 5: malformed JSON")


def test_a_line_that_is_not_utf8_fails_alone() -> None:
    content = jsonl({"prompt": "a"}) + b'{"prompt": "\xff"}\n' + jsonl({"prompt": "c"})
    read = read_file(content, settings=SETTINGS)
    assert [line.error is None for line in read.lines] == [True, False, True]
    assert "not UTF-8" in read.lines[1].error_text


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ({"prompt": "x", "custom_id": "c" * 300}, "custom_id", "at most 256"),
        ({"prompt": "x", "params": {"max_new_tokens": "16"}}, "params.max_new_tokens", "integer"),
        ({"prompt": "x", "params": {"max_new_tokens": True}}, "params.max_new_tokens", "integer"),
        ({"prompt": "x" * 101}, "prompt", "longer than 100"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "'user'"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content", "at least 1"),
        ({"prompt": "x", "params": {"stop": ["a"] * 17}}, "params.stop", "at most 16"),
        ({"prompt": "\u0000"}, "prompt", "NUL"),
        ('{"prompt": "\\ud83d"}', "prompt", "surrogate"),
        ('{"prompt": "x", "params": {"seed": 99999999999999999999}}', "params.seed", "64 bits"),
        (chat("a", max_tokens=0), "body.max_tokens", "greater than or equal to 1"),
        (chat("a", max_completion_tokens="5"), "body.max_completion_tokens", "integer"),
        (chat("a", n=99), "body.n", "less than or equal to 16"),
        (chat("a", top_p=2), "body.top_p", "less than or equal to 1"),
        (chat("a", stop=[""]), "body.stop", "empty"),
        (chat("a", logprobs=True), "body.logprobs", "not supported"),
        (chat("a", messages=[{"role": "user", "content": "x" * 101}]), "body.messages", "100"),
        (chat("a", prompt="x"), "body.prompt", "not accepted"),
        ({**chat("a"), "url": "/v1/embeddings"}, "url", "'/v1/completions'"),
    ],
)
def test_a_bad_line_names_the_field_as_written(line: Any, field: str, words: str) -> None:
    read = read_file(jsonl({"prompt": "ok"}, line, {"prompt": "ok"}), settings=SETTINGS)
    bad = read.lines[1]
    assert bad.error is not None and bad.error.field == field, bad.error
    assert words in bad.error.message
    assert bad.error_text.startswith(f"line 2: {field}")
    assert [line.error is None for line in read.lines] == [True, False, True]


def test_an_over_long_custom_id_fails_its_line_and_names_it_by_number() -> None:
    read = read_file(jsonl({"prompt": "x", "custom_id": "c" * 300}), settings=SETTINGS)
    assert read.lines[0].custom_id == "line-1"


def test_duplicate_custom_ids_fail_the_later_lines() -> None:
    read = read_file(
        jsonl({"custom_id": "a", "prompt": "x"}, chat("b"), {"custom_id": "a", "prompt": "y"}),
        settings=SETTINGS,
    )
    error = read.lines[2].error
    assert error is not None and error.field == "custom_id"
    assert error.message == "duplicate of line 1"


def test_native_params_resolve_over_the_defaults_field_by_field() -> None:
    defaults = {"max_new_tokens": 7, "do_sample": True, "temperature": 0.5}
    read = read_file(
        jsonl(
            {"prompt": "a"},
            {"prompt": "b", "params": {"seed": 3}},
            {"prompt": "c", "params": {"do_sample": False, "temperature": None}},
        ),
        settings=SETTINGS,
        defaults=defaults,
    )
    params = [line.request.params for line in read.lines if line.request]
    assert params == [
        GenerationParams(max_new_tokens=7, do_sample=True, temperature=0.5),
        GenerationParams(max_new_tokens=7, do_sample=True, temperature=0.5, seed=3),
        GenerationParams(max_new_tokens=7),
    ]


def test_openai_lines_map_onto_genq_parameters_with_openai_defaults() -> None:
    read = read_file(
        jsonl(
            chat("greedy", temperature=0, max_tokens=5, stop="\n"),
            chat("sampled", seed=4, n=2, top_p=0.5),
            {
                "custom_id": "completion",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"prompt": "x"},
            },
        ),
        settings=SETTINGS,
    )
    greedy, sampled, completion = (line.request for line in read.lines)
    assert greedy is not None and sampled is not None and completion is not None
    assert greedy.params == GenerationParams(max_new_tokens=5, stop=("\n",))
    assert sampled.params == GenerationParams(
        do_sample=True, temperature=1.0, top_p=0.5, seed=4, num_return_sequences=2
    )
    assert completion.params == GenerationParams(max_new_tokens=16, do_sample=True, temperature=1)
    assert [line.form for line in read.lines] == ["chat", "chat", "completions"]


def test_the_lines_model_is_the_jobs_and_another_fails_its_line() -> None:
    content = jsonl(chat("a"), chat("b", model="m1"), chat("c", model="m2"), chat("d", model="m1"))
    read = read_file(content, settings=SETTINGS)
    assert read.model == "m1"
    assert [line.error is None for line in read.lines] == [True, True, False, True]
    asked = read_file(content, settings=SETTINGS, model="m2")
    assert asked.model == "m2"
    assert [line.error is None for line in asked.lines] == [True, False, True, False]
    error = asked.lines[1].error
    assert error is not None and error.field == "body.model"


def test_a_batch_endpoint_fails_lines_of_the_other() -> None:
    completion = {"custom_id": "x", "url": "/v1/completions", "body": {"prompt": "p"}}
    read = read_file(
        jsonl(chat("a"), completion), settings=SETTINGS, endpoint="/v1/chat/completions"
    )
    error = read.lines[1].error
    assert read.lines[0].error is None
    assert error is not None and error.field == "url"


def test_more_lines_than_a_job_takes_is_refused_whole() -> None:
    with pytest.raises(InvalidRequest, match="at most 2 lines"):
        read_file(jsonl(*([{"prompt": "x"}] * 3)), settings=SETTINGS, max_lines=2)


def test_a_line_refused_for_what_it_holds_keeps_its_own_custom_id() -> None:
    read = read_file(
        jsonl('{"custom_id": "mine", "prompt": "a\\u0000"}', '{"custom_id": "x\\u0000"}'),
        settings=SETTINGS,
    )
    assert [(line.custom_id, line.error is not None) for line in read.lines] == [
        ("mine", True),
        ("line-2", True),  # an id that cannot be stored is not the line's name
    ]


def test_only_ids_the_lines_give_must_be_unique() -> None:
    read = read_file(
        jsonl({"custom_id": "line-2", "prompt": "a"}, {"prompt": "b"}), settings=SETTINGS
    )
    assert [line.error for line in read.lines] == [None, None]


def test_native_lines_are_not_a_batchs_lines() -> None:
    read = read_file(jsonl({"prompt": "a"}), settings=SETTINGS, endpoint="/v1/completions")
    error = read.lines[0].error
    assert error is not None and error.field == "url"


def test_an_unknown_model_fails_its_line_and_the_next_known_one_is_the_jobs() -> None:
    def known(name: str) -> None:
        if name != "tiny-gpt2":
            raise ModelNotFound(f"model: unknown model {name!r}")

    read = read_file(
        jsonl(chat("a", model="gpt-4o"), chat("b", model="tiny-gpt2"), chat("c")),
        settings=SETTINGS,
        check_model=known,
    )
    assert read.model == "tiny-gpt2"
    error = read.lines[0].error
    assert error is not None and (error.field, error.message) == (
        "body.model",
        "unknown model 'gpt-4o'",
    )
    assert [line.error is None for line in read.lines] == [False, True, True]


def test_openais_developer_role_is_a_system_message() -> None:
    line = chat("a", messages=[{"role": "developer", "content": "be brief"}])
    read = read_file(jsonl(line), settings=SETTINGS)
    request = read.lines[0].request
    assert request is not None and request.messages == ({"role": "system", "content": "be brief"},)
