"""Bad input answers 4xx with a message naming the field as the client wrote it, the same on
SQLite and PostgreSQL, and stores nothing. One table per class of bad input."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from genq.store.tables import File, Job, Request
from tests.api.conftest import Service

OK_REQUEST = {"prompt": "hello"}
PROMPT_CAP = 64


def job(**fields: Any) -> dict[str, Any]:
    return {"requests": [OK_REQUEST], **fields}


def one(**request: Any) -> dict[str, Any]:
    return {"requests": [OK_REQUEST, request]}


def params(**values: Any) -> dict[str, Any]:
    return job(params=values)


def raw(text: str) -> bytes:
    """A body as JSON text, for what ``json.dumps`` will not write (NaN, lone surrogates)."""
    return text.encode("utf-8", "surrogatepass")


Case = tuple[str, Any, int, str]
# (name, JSON body or raw bytes, status, text the message must hold)

SHAPE: list[Case] = [
    ("malformed json", b'{"requests": [', 400, "body: malformed JSON"),
    ("not an object", [1, 2], 422, "body"),
    ("requests missing", {"params": {}}, 422, "requests: give requests, or input_file_id"),
    ("requests not a list", {"requests": "hello"}, 422, "requests:"),
    ("no requests", {"requests": []}, 422, "requests: a job needs at least one request"),
    ("unknown top field", job(colour="red"), 422, "colour: unknown field"),
    ("unknown request field", one(prompt="x", n=2), 422, "requests.1.n: unknown field"),
    ("prompt wrong type", one(prompt=5), 422, "requests.1.prompt"),
    ("empty prompt", one(prompt=""), 422, "requests.1.prompt"),
    ("neither prompt nor messages", one(custom_id="a"), 422, "requests.1:"),
    (
        "both prompt and messages",
        one(prompt="x", messages=[{"role": "user", "content": "x"}]),
        422,
        "exactly one of prompt or messages",
    ),
    ("empty messages", one(messages=[]), 422, "requests.1.messages"),
    ("message without content", one(messages=[{"role": "user"}]), 422, "messages.0.content"),
    ("custom_id too long", one(prompt="x", custom_id="c" * 300), 422, "requests.1.custom_id"),
    ("params not an object", job(params=[1]), 422, "params:"),
    ("unknown parameter", params(beams=2), 422, "params.beams: unknown parameter"),
    ("negative max_new_tokens", params(max_new_tokens=-1), 422, "params.max_new_tokens"),
    ("top_p out of range", params(do_sample=True, top_p=2), 422, "params.top_p"),
    (
        "sampling knob when greedy",
        params(temperature=0.5),
        422,
        "params.temperature: temperature only applies when do_sample is true",
    ),
    ("min above max", params(max_new_tokens=2, min_new_tokens=5), 422, "params.min_new_tokens"),
    ("metadata wrong type", job(metadata={"k": 1}), 422, "metadata.k"),
    ("metadata too many keys", job(metadata={f"k{i}": "v" for i in range(17)}), 422, "metadata"),
    ("metadata value too long", job(metadata={"k": "v" * 513}), 422, "metadata.k"),
    ("too many requests", {"requests": [OK_REQUEST] * 4}, 422, "requests: at most 3 requests"),
]

TEXT: list[Case] = [
    (
        "surrogate in prompt",
        raw('{"requests": [{"prompt": "a\\ud83d"}]}'),
        422,
        "requests.0.prompt",
    ),
    (
        "surrogate in a message",
        raw('{"requests": [{"messages": [{"role": "user", "content": "\\udc00"}]}]}'),
        422,
        "requests.0.messages.0.content: must not contain lone UTF-16 surrogates",
    ),
    (
        "surrogate in custom_id",
        raw('{"requests": [{"prompt": "a", "custom_id": "\\ud800"}]}'),
        422,
        "requests.0.custom_id",
    ),
    (
        "surrogate in metadata",
        raw('{"requests": [{"prompt": "a"}], "metadata": {"k": "\\ud83d"}}'),
        422,
        "metadata.k",
    ),
    (
        "surrogate in a metadata key",
        raw('{"requests": [{"prompt": "a"}], "metadata": {"\\ud83d": "v"}}'),
        422,
        "surrogate",
    ),
    (
        "surrogate in stop",
        raw('{"requests": [{"prompt": "a"}], "params": {"stop": ["\\ud83d"]}}'),
        422,
        "params.stop.0",
    ),
    (
        "surrogate in model",
        raw('{"requests": [{"prompt": "a"}], "model": "\\ud83d"}'),
        422,
        "model",
    ),
    (
        "raw utf-8 surrogate",
        b'{"requests": [{"prompt": "\xed\xa0\xbd"}]}',
        400,
        "body: not UTF-8",
    ),
    ("utf-16", json.dumps(job()).encode("utf-16"), 400, "body: not UTF-8"),
    ("NUL in prompt", one(prompt="a\x00b"), 422, "requests.1.prompt: must not contain NUL"),
    ("NUL in custom_id", one(prompt="a", custom_id="\x00"), 422, "requests.1.custom_id"),
    ("NUL in a message", one(messages=[{"role": "user", "content": "\x00"}]), 422, "messages.0"),
    ("NUL in metadata", job(metadata={"k": "\x00"}), 422, "metadata.k: must not contain NUL"),
    ("NUL in stop", params(stop="\x00"), 422, "params.stop: must not contain NUL"),
]

NUMBERS: list[Case] = [
    (
        "NaN",
        raw('{"requests": [{"prompt": "a"}], "params": {"do_sample": true, "temperature": NaN}}'),
        422,
        "params.temperature: must be a finite number",
    ),
    (
        "Infinity",
        raw(
            '{"requests": [{"prompt": "a"}],'
            ' "params": {"do_sample": true, "temperature": Infinity}}'
        ),
        422,
        "params.temperature",
    ),
    (
        "overflowing float",
        raw('{"requests": [{"prompt": "a"}], "params": {"do_sample": true, "top_p": 1e999}}'),
        422,
        "params.top_p: must be a finite number",
    ),
    (
        "NaN in a request's params",
        raw('{"requests": [{"prompt": "a", "params": {"repetition_penalty": -Infinity}}]}'),
        422,
        "requests.0.params.repetition_penalty",
    ),
    (
        "string for an integer",
        params(max_new_tokens="16"),
        422,
        "params.max_new_tokens: Input should be a valid integer",
    ),
    ("bool for an integer", params(max_new_tokens=True), 422, "params.max_new_tokens"),
    ("float for an integer", params(max_new_tokens=16.0), 422, "params.max_new_tokens"),
    ("string for a bool", params(do_sample="yes"), 422, "params.do_sample"),
    ("string for a float", params(do_sample=True, temperature="0.5"), 422, "params.temperature"),
    (
        "seed beyond 64 bits",
        params(do_sample=True, seed=2**64),
        422,
        "params.seed: integer out of range",
    ),
    (
        "max_new_tokens beyond 64 bits",
        one(prompt="a", params={"max_new_tokens": 10**30}),
        422,
        "requests.1.params.max_new_tokens",
    ),
    (
        "an integer of 5000 digits",
        raw('{"requests": [{"prompt": "a"}], "params": {"seed": ' + "9" * 5000 + "}}"),
        400,
        "body: malformed JSON: integer too long",
    ),
    ("negative seed", params(do_sample=True, seed=-1), 422, "params.seed"),
]

STRUCTURE: list[Case] = [
    (
        "nested 10,000 deep",
        raw('{"requests": ' + "[" * 10_000 + "]" * 10_000 + "}"),
        422,
        "nested deeper than",
    ),
    (
        "nested 40 deep",
        job(params={"stop": json.loads("[" * 40 + "]" * 40)}),
        422,
        "nested deeper than 32",
    ),
    (
        "duplicate custom_id",
        {"requests": [{"prompt": "a", "custom_id": "x"}, {"prompt": "b", "custom_id": "x"}]},
        422,
        "requests.1.custom_id: duplicate of requests.0.custom_id",
    ),
    (
        "role outside the three",
        one(messages=[{"role": "tool", "content": "x"}]),
        422,
        "requests.1.messages.0.role",
    ),
    (
        "empty content",
        one(messages=[{"role": "user", "content": ""}]),
        422,
        "requests.1.messages.0.content",
    ),
    ("too many stop strings", params(stop=["s"] * 17), 422, "params.stop"),
    (
        "stop string too long",
        params(stop="s" * 257),
        422,
        "params.stop: stop strings must be at most 256",
    ),
    ("empty stop string", params(stop=[""]), 422, "params.stop"),
    (
        "too many sequences",
        params(do_sample=True, num_return_sequences=17),
        422,
        "params.num_return_sequences",
    ),
    (
        "prompt over the cap",
        one(prompt="x" * (PROMPT_CAP + 1)),
        422,
        f"requests.1.prompt: longer than {PROMPT_CAP} characters",
    ),
    (
        "chat over the cap",
        one(
            messages=[
                {"role": "user", "content": "x" * 40},
                {"role": "assistant", "content": "y" * 40},
            ]
        ),
        422,
        "requests.1.messages: longer than",
    ),
]

MODELS: list[Case] = [
    ("unknown model", job(model="no-such-model"), 404, "model: unknown model 'no-such-model'"),
    ("model with spaces", job(model="a b"), 422, "model: must be 1 to 200 printable"),
    ("parent directory", job(model=".."), 404, "unknown model '..'"),
    ("absolute path", job(model="/etc"), 404, "unknown model '/etc'"),
    ("a directory here that is no model root", job(model="tests"), 404, "unknown model 'tests'"),
    ("a path under a root", job(model="tiny-gpt2/../tiny-gpt2"), 404, "unknown model"),
]

CASES = SHAPE + TEXT + NUMBERS + STRUCTURE + MODELS


def _counts(service: Service) -> tuple[int, int]:
    with service.context.sessions.begin() as session:
        return (
            session.scalar(select(func.count()).select_from(Job)) or 0,
            session.scalar(select(func.count()).select_from(Request)) or 0,
        )


@pytest.fixture
def capped(backend_service: Callable[..., Service]) -> Service:
    """A service on each backend, with small limits so they are cheap to cross."""
    return backend_service(max_job_requests=3, max_body_bytes=65536, max_prompt_chars=PROMPT_CAP)


def post(service: Service, body: Any, path: str = "/v1/jobs") -> Any:
    if isinstance(body, bytes):
        headers = {**service.as_("a"), "content-type": "application/json"}
        return service.client.post(path, content=body, headers=headers)
    return service.client.post(path, json=body, headers=service.as_("a"))


@pytest.mark.parametrize(("name", "body", "status", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_job_is_refused_by_field(
    capped: Service, name: str, body: Any, status: int, text: str
) -> None:
    answer = post(capped, body)
    assert answer.status_code == status, answer.text
    assert text in answer.json()["error"]["message"]
    assert _counts(capped) == (0, 0)
    # Nothing broke the reads either.
    assert capped.client.get("/v1/jobs", headers=capped.as_("a")).json()["data"] == []


def test_a_good_job_at_every_limit_passes_the_same_checks(capped: Service) -> None:
    body = {
        "requests": [
            {"prompt": "é😀" + "x" * (PROMPT_CAP - 2), "custom_id": "c" * 256},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
            {"prompt": "p", "params": {"seed": 2**63 - 1}},
        ],
        "params": {"do_sample": True, "temperature": 1e-3, "stop": ["s" * 256] * 16},
        "metadata": {"k" * 64: "v" * 512},
    }
    answer = post(capped, body)
    assert answer.status_code == 202, answer.text
    assert _counts(capped) == (1, 3)
    read = capped.client.get(f"/v1/jobs/{answer.json()['id']}", headers=capped.as_("a"))
    assert read.status_code == 200 and read.json()["metadata"] == body["metadata"]


def test_an_oversize_declared_body_is_413(make_service: Callable[..., Service]) -> None:
    service = make_service(max_body_bytes=4096)
    answer = post(service, {"requests": [{"prompt": "x" * 5000}]})
    assert answer.status_code == 413
    assert "larger than 4096 bytes" in answer.json()["error"]["message"]
    assert _counts(service) == (0, 0)


def test_an_oversize_streamed_body_is_413_whatever_its_header_says(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(max_body_bytes=4096)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"requests": [{"prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    headers = {**service.as_("a"), "content-type": "application/json"}
    answer = service.client.post("/v1/jobs", content=chunks(), headers=headers)
    assert answer.status_code == 413
    assert _counts(service) == (0, 0)


def test_a_20_mb_prompt_is_refused_at_once_by_the_default_cap(
    make_service: Callable[..., Service],
) -> None:
    service = make_service()
    answer = post(service, {"requests": [{"prompt": "x" * 20_000_000}]})
    assert answer.status_code == 422
    assert "requests.0.prompt: longer than 131072 characters" in answer.json()["error"]["message"]
    assert _counts(service) == (0, 0)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=5000", "query.limit"),
        ("after=x", "query.after"),
        ("after=9223372036854775808", "query.after"),
        (f"after={10**30}", "query.after"),
        (f"limit={10**30}", "query.limit"),
        ("format=xml", "query.format"),
    ],
)
def test_bad_query_parameters_are_422_by_name(capped: Service, query: str, field: str) -> None:
    job_id = post(capped, job()).json()["id"]
    answer = capped.client.get(f"/v1/jobs/{job_id}/results?{query}", headers=capped.as_("a"))
    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith(field)


def test_the_largest_cursor_reads_an_empty_page(capped: Service) -> None:
    job_id = post(capped, job()).json()["id"]
    page = capped.client.get(
        f"/v1/jobs/{job_id}/results?after={2**63 - 1}", headers=capped.as_("a")
    )
    assert page.status_code == 200 and page.json()["data"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/job_%00",
        "/v1/jobs/%ED%A0%BD",
        "/v1/jobs/" + "j" * 5000,
        "/v1/jobs?after=job_%00",
        "/v1/jobs/job_%00/results",
        "/v1/files/file_%00",
        "/v1/files/file_%00/content",
        "/v1/batches/batch_%00",
        "/v1/batches?after=%F0%9F%98%80",
    ],
)
def test_ids_that_no_id_can_be_answer_404(capped: Service, path: str) -> None:
    answer = capped.client.get(path, headers=capped.as_("a"))
    assert answer.status_code == 404, answer.text


def test_a_filename_with_nul_is_refused(capped: Service) -> None:
    # Written by hand: clients escape a NUL in a filename, a hostile one need not.
    body = (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--b\r\n"
        b'Content-Disposition: form-data; name="file"; filename="in\x00.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n"
        b'{"prompt": "x"}\n\r\n'
        b"--b--\r\n"
    )
    headers = {**capped.as_("a"), "content-type": "multipart/form-data; boundary=b"}
    answer = capped.client.post("/v1/files", content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["message"].startswith("file.filename")
    with capped.context.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 0


# Files: a bad line is that line's error, and the rest run.

BAD_LINES: list[tuple[str, str]] = [
    # (line, error naming the line and the field)
    ('{"prompt": "a\\ud83d"}', "line 2: prompt: must not contain lone UTF-16 surrogates"),
    ('{"prompt": "a", "custom_id": "\\u0000"}', "line 3: custom_id: must not contain NUL"),
    (
        '{"prompt": "a", "params": {"do_sample": true, "temperature": NaN}}',
        "line 4: params.temperature",
    ),
    ('{"prompt": "a", "params": {"max_new_tokens": "16"}}', "line 5: params.max_new_tokens"),
    (
        '{"prompt": "a", "params": {"seed": 99999999999999999999}}',
        "line 6: params.seed: integer out of range",
    ),
    ("[" * 10_000 + "]" * 10_000, "line 7: nested deeper than"),
    ('{"prompt": "' + "x" * (PROMPT_CAP + 1) + '"}', "line 8: prompt: longer than 64"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "line 9: messages.0.role"),
    ('{"prompt": "a", "custom_id": "' + "c" * 300 + '"}', "line 10: custom_id"),
    ('{"prompt": "a", "custom_id": "first"}', "line 11: custom_id: duplicate of line 1"),
]


def _upload(service: Service, content: bytes) -> str:
    answer = service.client.post(
        "/v1/files",
        headers=service.as_("a"),
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", content)},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def test_a_file_job_fails_each_bad_line_alone_and_runs_the_rest(
    backend_service: Callable[..., Service],
) -> None:
    service = backend_service(max_prompt_chars=PROMPT_CAP)
    lines = ['{"prompt": "a", "custom_id": "first"}'] + [line for line, _ in BAD_LINES]
    lines.append('{"prompt": "b", "params": {"max_new_tokens": 2}}')
    content = "\ufeff" + "\r\n".join(lines) + "\r\n"
    file_id = _upload(service, content.encode("utf-8", "surrogatepass"))
    answer = post(service, {"input_file_id": file_id, "params": {"max_new_tokens": 3}})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["counts"] == {
        "total": 12,
        "succeeded": 0,
        "failed": 10,
        "cancelled": 0,
        "refused": 10,
    }
    service.start_worker()
    from tests.api.support import wait_job

    done = wait_job(service.client, job["id"], service.as_("a"))
    assert done["counts"]["succeeded"] == 2
    page = service.client.get(f"/v1/jobs/{job['id']}/results", headers=service.as_("a")).json()
    rows = page["data"]
    assert [r["idx"] for r in rows] == list(range(12))
    assert [r["status"] for r in rows] == ["succeeded"] + ["failed"] * 10 + ["succeeded"]
    for row, (_, error) in zip(rows[1:11], BAD_LINES, strict=True):
        assert row["error"].startswith(error), (row["error"], error)
        assert row["params"] is None
    assert rows[0]["custom_id"] == "first" and rows[-1]["custom_id"] == "line-12"
    assert rows[0]["params"]["max_new_tokens"] == 3
    assert rows[-1]["params"]["max_new_tokens"] == 2
    assert rows[-1]["usage"]["completion_tokens"] <= 2


def test_a_file_with_no_line_that_can_run_stores_nothing(capped: Service) -> None:
    file_id = _upload(capped, b'{"prompt": ""}\n\n{"nope": 1}\n')
    answer = post(capped, {"input_file_id": file_id})
    assert answer.status_code == 422
    assert "no line can run; line 1: prompt" in answer.json()["error"]["message"]
    assert _counts(capped) == (0, 0)


def test_a_batch_lists_each_bad_line_and_runs_the_rest(
    backend_service: Callable[..., Service],
) -> None:
    capped = backend_service()

    def line(cid: str, **body: Any) -> str:
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        envelope = {"custom_id": cid, "url": "/v1/chat/completions", "body": body}
        return json.dumps(envelope, ensure_ascii=False)

    lines = [
        line("ok", max_tokens=2, temperature=0),
        line("ok"),  # a duplicate
        line("nan", max_tokens=2).replace('"max_tokens": 2', '"max_tokens": NaN'),
        line("long", custom_id="x"),
        line("c" * 300),
        line("role", messages=[{"role": "function", "content": "x"}]),
        line("big", max_tokens=10**20),
    ]
    file_id = _upload(capped, ("\n".join(lines) + "\n").encode())
    answer = post(
        capped,
        {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        path="/v1/batches",
    )
    assert answer.status_code == 200, answer.text
    batch = answer.json()
    errors = {(e["line"], e["param"]) for e in batch["errors"]["data"]}
    assert errors == {
        (2, "custom_id"),
        (3, "body.max_tokens"),
        (4, "body.custom_id"),
        (5, "custom_id"),
        (6, "body.messages.0.role"),
        (7, "body.max_tokens"),
    }
    assert batch["request_counts"] == {"total": 7, "completed": 0, "failed": 6}
    assert _counts(capped) == (1, 1)


def test_a_batch_line_naming_an_unknown_model_fails_alone(capped: Service) -> None:
    def line(cid: str, model: str) -> dict[str, Any]:
        body = {"model": model, "prompt": "x", "max_tokens": 2}
        return {"custom_id": cid, "url": "/v1/completions", "body": body}

    lines = [line("a", "gpt-4o-mini"), line("b", "tiny-gpt2"), line("c", "..")]
    file_id = _upload(capped, "".join(json.dumps(x) + "\n" for x in lines).encode())
    answer = post(
        capped,
        {"input_file_id": file_id, "endpoint": "/v1/completions", "completion_window": "24h"},
        path="/v1/batches",
    )
    assert answer.status_code == 200, answer.text
    first, third = answer.json()["errors"]["data"]
    assert (first["line"], first["param"]) == (1, "body.model")
    assert first["message"].startswith("body.model: unknown model 'gpt-4o-mini'")
    # The job runs the first model a line names that exists; another is a line's error.
    assert (third["line"], third["param"]) == (3, "body.model")
    assert third["message"] == "body.model: one model per job: this one runs tiny-gpt2"
    assert _counts(capped) == (1, 1)
