"""JSONL files of requests, in genq's native form or OpenAI's Batch form, read one way for
``genq run``, ``genq submit``, file jobs and OpenAI batches.

Native:  {"custom_id": "a", "prompt": "...", "params": {...}}   (or "messages")
OpenAI:  {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {...}}

UTF-8, with or without a byte order mark; lines end in LF, CRLF or CR. Blank lines are
skipped, but every line keeps its number in the file. A line's problem is that line's error,
with its number and ``custom_id``; the other lines are unaffected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from genq.errors import InvalidRequest
from genq.intake import jsontext
from genq.intake.bodies import RequestIn, validated
from genq.intake.openai import ENDPOINTS, Form, read_openai
from genq.intake.requests import ParamsResolver, check_size, messages_of, new_request
from genq.settings import Settings
from genq.store import NewRequest
from genq.store.tables import MAX_CUSTOM_ID_LENGTH

BOM = b"\xef\xbb\xbf"
OPENAI_KEYS = frozenset({"method", "url", "body"})


@dataclass(frozen=True)
class Line:
    """One non-blank input line: the request it makes, or why it makes none."""

    number: int  # in the file, from 1
    custom_id: str
    form: Form
    request: NewRequest | None = None
    error: InvalidRequest | None = None
    model: str | None = None  # what an OpenAI line's body names

    @property
    def error_text(self) -> str:
        assert self.error is not None
        return f"line {self.number}: {self.error}"


@dataclass(frozen=True)
class FileInput:
    lines: list[Line]
    model: str | None
    """The job's model: the one asked for, else the first an OpenAI line names, else None."""

    @property
    def valid(self) -> list[Line]:
        return [line for line in self.lines if line.error is None]


def read_file(
    content: bytes,
    *,
    settings: Settings,
    defaults: Mapping[str, Any] | None = None,
    model: str | None = None,
    endpoint: str | None = None,
    max_lines: int | None = None,
) -> FileInput:
    """Every non-blank line of ``content``. ``defaults`` are parameters under native lines'
    own; ``model``, when given, is the job's, and a line naming another is that line's error;
    ``endpoint`` (an OpenAI batch's) is the only ``url`` lines may name."""
    resolver = ParamsResolver(defaults)
    content = content.removeprefix(BOM)
    lines: list[Line] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        if max_lines is not None and len(lines) >= max_lines:
            raise InvalidRequest("input_file_id", f"at most {max_lines} lines per job")
        line = _read_line(raw, number, resolver, settings=settings)
        if line.error is None and endpoint is not None and line.form != "native":
            line = _check_endpoint(line, endpoint)
        if line.error is None and line.model is not None:
            model = model or line.model
            if line.model != model:
                line = _failed(line, "body.model", f"one model per job: this one runs {model}")
        first = first_line.setdefault(line.custom_id, number)
        if first != number and line.error is None:
            line = _failed(line, "custom_id", f"duplicate of line {first}")
        lines.append(line)
    return FileInput(lines, model)


def _read_line(raw: bytes, number: int, resolver: ParamsResolver, *, settings: Settings) -> Line:
    custom_id, form = f"line-{number}", cast(Form, "native")
    try:
        value = jsontext.loads(raw)
        if not isinstance(value, dict):
            raise InvalidRequest("", "a line must be a JSON object")
        given = value.get("custom_id")
        if isinstance(given, str) and 0 < len(given) <= MAX_CUSTOM_ID_LENGTH:
            custom_id = given
        if OPENAI_KEYS & value.keys():
            url = value.get("url")
            form = ENDPOINTS.get(url, "completions") if isinstance(url, str) else "completions"
            body, params = read_openai(value)
            check_size(body.prompt, body.messages, settings=settings, where="body")
            request = NewRequest(
                custom_id=custom_id, prompt=body.prompt, messages=messages_of(body), params=params
            )
            return Line(number, custom_id, form, request, model=body.model)
        native: RequestIn = validated(RequestIn, value)
        params = resolver.resolve(native.params, where="params")
        request = new_request(native, params, settings=settings)
        return Line(number, custom_id, form, replace(request, custom_id=custom_id))
    except InvalidRequest as exc:
        return Line(number, custom_id, form, error=exc)


def _check_endpoint(line: Line, endpoint: str) -> Line:
    if line.form != ENDPOINTS.get(endpoint):
        return _failed(line, "url", f"must be the batch's endpoint {endpoint}")
    return line


def _failed(line: Line, field: str, message: str) -> Line:
    return Line(line.number, line.custom_id, line.form, error=InvalidRequest(field, message))
