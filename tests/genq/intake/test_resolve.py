"""A job body's requests: each request's own params over the job's, all valid or none."""

from __future__ import annotations

from typing import Any

import pytest

from genq.errors import InvalidRequest
from genq.intake import JobCreate, job_requests
from genq.intake.resolve import ParamsResolver
from genq.params import GenerationParams
from genq.settings import Settings

SETTINGS = Settings(max_prompt_chars=50, max_job_requests=5)


def body(*requests: dict[str, Any], **fields: Any) -> JobCreate:
    return JobCreate.model_validate({"requests": list(requests), **fields})


def test_a_requests_params_override_the_jobs_field_by_field() -> None:
    params, requests = job_requests(
        body(
            {"prompt": "a"},
            {"prompt": "b", "params": {"max_new_tokens": 3, "stop": "\n"}},
            {"prompt": "c", "params": {"do_sample": True, "seed": 1}},
            params={"max_new_tokens": 9},
        ),
        settings=SETTINGS,
    )
    assert params == GenerationParams(max_new_tokens=9)
    assert [r.params for r in requests] == [
        GenerationParams(max_new_tokens=9),
        GenerationParams(max_new_tokens=3, stop=("\n",)),
        GenerationParams(max_new_tokens=9, do_sample=True, seed=1),
    ]


@pytest.mark.parametrize(
    ("job", "fields", "field"),
    [
        (
            body({"prompt": "a", "params": {"temperature": 0.5}}),
            {},
            "requests.0.params.temperature",
        ),
        (
            body({"prompt": "a"}, {"prompt": "b", "params": {"do_sample": False}}),
            {"params": {"do_sample": True, "top_k": 3}},
            "requests.1.params.top_k",
        ),
        (body({"prompt": "a"}), {"params": {"top_p": 0}}, "params.top_p"),
        (body({"prompt": "a", "params": {"beams": 1}}), {}, "requests.0.params.beams"),
        (body({"prompt": "a" * 51}), {}, "requests.0.prompt"),
        (
            body({"messages": [{"role": "user", "content": "a" * 51}]}),
            {},
            "requests.0.messages",
        ),
        (
            body({"prompt": "a", "custom_id": "x"}, {"prompt": "b", "custom_id": "x"}),
            {},
            "requests.1.custom_id",
        ),
        (body(*[{"prompt": "a"}] * 6), {}, "requests"),
        (body(), {}, "requests"),
        (body({"custom_id": "lonely"}), {}, "requests.0"),
    ],
)
def test_the_first_problem_is_named_and_nothing_is_returned(
    job: JobCreate, fields: dict[str, Any], field: str
) -> None:
    job = job.model_copy(update=fields)
    with pytest.raises(InvalidRequest) as caught:
        job_requests(job, settings=SETTINGS)
    assert caught.value.field == field


def test_each_distinct_override_is_validated_once() -> None:
    resolver = ParamsResolver({"max_new_tokens": 4})
    own = {"seed": 1, "do_sample": True}
    first = resolver.resolve(own, where="requests.0.params")
    assert resolver.resolve(dict(own), where="requests.1.params") is first
    assert resolver.resolve(None, where="requests.2.params") is resolver.job
