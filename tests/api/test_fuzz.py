"""Property-based fuzzing of what clients send, on SQLite and PostgreSQL: a job body, or the
lines of an uploaded file. Whatever comes in, the answer is never a 5xx; a refused body stores
nothing; an accepted job reads back whole, and so do its results and the job list."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from genq.params import GenerationParams
from genq.store.tables import Job, Request
from tests.api.conftest import Service

EXAMPLES = 100

NASTY = ["\ud83d", "a\udc00b", "\x00", "é😀", "", " ", "\n", "..", "/etc", "tiny-gpt2"]
text = st.one_of(st.text(max_size=20), st.sampled_from(NASTY))
number = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
)
atom = st.one_of(st.none(), st.booleans(), number, text)
json_value = st.recursive(
    atom,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
# Deep, but within what json.dumps can write; deeper still comes as text (see DEEP_TEXT).
deep = st.integers(min_value=20, max_value=800).map(lambda n: json.loads("[" * n + "]" * n))
DEEP_TEXT = st.integers(min_value=1000, max_value=20_000).map(lambda n: "[" * n + "]" * n)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` four times in five: enough bodies get through to test what is stored."""
    return st.one_of(good, good, good, good, bad)


clean = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    min_size=1,
    max_size=30,
)
param_names = st.sampled_from([*GenerationParams.model_fields, "bogus"])
param_value = st.one_of(atom, st.lists(text, max_size=20), deep)
good_params = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"max_new_tokens": st.integers(1, 64)}),
    st.fixed_dictionaries(
        {"do_sample": st.just(True)},
        optional={
            "temperature": st.floats(0.05, 2),
            "top_p": st.floats(0.05, 1),
            "seed": st.integers(0, 2**63 - 1),
            "stop": st.lists(clean, max_size=3),
        },
    ),
)
params = mostly(
    good_params, st.one_of(st.dictionaries(param_names, param_value, max_size=4), json_value)
)
message = st.fixed_dictionaries(
    {
        "role": mostly(
            st.sampled_from(["system", "user", "assistant"]), st.sampled_from(["tool", ""])
        ),
        "content": mostly(clean, text),
    }
)
request = st.one_of(
    st.fixed_dictionaries(
        {"prompt": mostly(clean, st.one_of(text, json_value))},
        optional={"custom_id": mostly(clean, text), "params": params},
    ),
    st.fixed_dictionaries(
        {"messages": mostly(st.lists(message, min_size=1, max_size=3), json_value)},
        optional={"custom_id": mostly(clean, text), "params": params},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "custom_id": st.one_of(text, st.text(min_size=250)),
            "prompt": json_value,
            "messages": json_value,
            "extra": json_value,
        },
    ),
)
body = st.fixed_dictionaries(
    {"requests": mostly(st.lists(request, min_size=1, max_size=5), json_value)},
    optional={
        "model": mostly(st.just("tiny-gpt2"), st.one_of(text, json_value)),
        "params": params,
        "metadata": mostly(
            st.dictionaries(clean, clean, max_size=4),
            st.one_of(st.dictionaries(text, text, max_size=20), json_value),
        ),
    },
)
good_request = st.one_of(
    st.fixed_dictionaries({"prompt": clean}, optional={"custom_id": clean, "params": good_params}),
    st.fixed_dictionaries(
        {"messages": st.lists(message, min_size=1, max_size=3)}, optional={"params": good_params}
    ),
)
good_body = st.fixed_dictionaries(
    {"requests": st.lists(good_request, min_size=1, max_size=5)},
    optional={"params": good_params, "metadata": st.dictionaries(clean, clean, max_size=4)},
)
body = st.one_of(
    good_body,
    good_body,
    body,
    st.fixed_dictionaries({"input_file_id": text}, optional={"requests": json_value, "deep": deep}),
)


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def native_line() -> st.SearchStrategy[Any]:
    return request


def openai_line() -> st.SearchStrategy[Any]:
    openai_body = st.fixed_dictionaries(
        {},
        optional={
            "model": st.one_of(st.just("tiny-gpt2"), text),
            "prompt": text,
            "messages": st.lists(message, max_size=3),
            "max_tokens": number,
            "max_completion_tokens": number,
            "temperature": number,
            "top_p": number,
            "n": number,
            "stop": st.one_of(text, st.lists(text, max_size=6)),
            "seed": number,
            "logprobs": atom,
        },
    )
    return st.fixed_dictionaries(
        {
            "custom_id": st.one_of(text, st.sampled_from(["a", "b"])),
            "url": st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/x"]),
            "body": st.one_of(openai_body, json_value),
        },
        optional={"method": st.sampled_from(["POST", "GET"])},
    )


line = st.one_of(
    native_line().map(_dumps),
    openai_line().map(_dumps),
    json_value.map(_dumps),
    st.text(max_size=30),
    DEEP_TEXT,
    st.sampled_from(["", "   ", "{", '{"prompt": "x"} trailing', "[" * 5000]),
)


def _jobs(service: Service) -> tuple[int, int]:
    with service.context.sessions.begin() as session:
        return (
            session.scalar(select(func.count()).select_from(Job)) or 0,
            session.scalar(select(func.count()).select_from(Request)) or 0,
        )


def _reads_back(service: Service, job_id: str, total: int) -> None:
    headers = service.as_("a")
    job = service.client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert job.status_code == 200, job.text
    assert job.json()["counts"]["total"] == total
    for path in (f"/v1/jobs/{job_id}/results", f"/v1/jobs/{job_id}/results?format=jsonl"):
        page = service.client.get(path, headers=headers)
        assert page.status_code == 200, page.text
    listed = service.client.get("/v1/jobs?limit=100", headers=headers)
    assert listed.status_code == 200, listed.text


@pytest.fixture
def fuzzed(backend_service: Callable[..., Service]) -> Service:
    return backend_service(max_job_requests=20, max_prompt_chars=500)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(payload=st.one_of(st.one_of(body, json_value, deep).map(_dumps), DEEP_TEXT))
def test_a_fuzzed_job_body_never_fails_the_server(fuzzed: Service, payload: str) -> None:
    before = _jobs(fuzzed)
    content = payload.encode()
    headers = {**fuzzed.as_("a"), "content-type": "application/json"}
    answer = fuzzed.client.post("/v1/jobs", content=content, headers=headers)
    event(f"job body: {answer.status_code}")
    assert answer.status_code < 500, answer.text
    if answer.status_code != 202:
        assert _jobs(fuzzed) == before, answer.text
        return
    total = answer.json()["counts"]["total"]
    assert _jobs(fuzzed) == (before[0] + 1, before[1] + total)
    _reads_back(fuzzed, answer.json()["id"], total)


@FUZZ
@given(
    lines=st.lists(line, min_size=1, max_size=8),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
)
def test_fuzzed_file_lines_never_fail_the_server(
    fuzzed: Service, lines: list[str], end: str, bom: bool
) -> None:
    content = ("\ufeff" if bom else "") + end.join(lines) + end
    data = content.encode("utf-8", "surrogatepass")
    headers = fuzzed.as_("a")
    uploaded = fuzzed.client.post(
        "/v1/files", headers=headers, data={"purpose": "batch"}, files={"file": ("f.jsonl", data)}
    )
    assert uploaded.status_code < 500, uploaded.text
    if uploaded.status_code != 200:
        return
    file_id = uploaded.json()["id"]
    non_blank = sum(1 for raw in data.removeprefix(b"\xef\xbb\xbf").splitlines() if raw.strip())
    before = _jobs(fuzzed)
    answer = fuzzed.client.post("/v1/jobs", json={"input_file_id": file_id}, headers=headers)
    event(f"file job: {answer.status_code}")
    assert answer.status_code < 500, answer.text
    if answer.status_code == 202:
        # One request per line, the bad ones failed from the start.
        assert answer.json()["counts"]["total"] == non_blank
        _reads_back(fuzzed, answer.json()["id"], non_blank)
    else:
        assert _jobs(fuzzed) == before, answer.text
    for endpoint in ("/v1/completions", "/v1/chat/completions"):
        batch = fuzzed.client.post(
            "/v1/batches",
            json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"},
            headers=headers,
        )
        assert batch.status_code < 500, batch.text
        if batch.status_code == 200:
            assert batch.json()["request_counts"]["total"] == non_blank
            again = fuzzed.client.get(f"/v1/batches/{batch.json()['id']}", headers=headers)
            assert again.status_code == 200, again.text
