"""JSONL files of requests, in genq's native form or OpenAI's Batch form, read one way for
``genq run``, ``genq submit``, file jobs and OpenAI batches.

Native:  {"custom_id": "a", "prompt": "...", "params": {...}}   (or "messages")
OpenAI:  {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {...}}

UTF-8, with or without a byte order mark; lines end in LF, CRLF or CR. Blank lines are
skipped, but every line keeps its number in the file. A line's problem is that line's error,
with its number and ``custom_id``; the other lines are unaffected."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from genq.errors import GenqError, InvalidRequest
from genq.intake import jsontext
from genq.intake.bodies import RequestIn, validated
from genq.intake.openai import ENDPOINTS, LineForm, read_openai
from genq.intake.resolve import ParamsResolver, check_size, messages_of, new_request
from genq.params import GenerationParams
from genq.settings import Settings
from genq.store import NewRequest
from genq.store.tables import MAX_CUSTOM_ID_LENGTH

BOM = b"\xef\xbb\xbf"
OPENAI_KEYS = frozenset({"method", "url", "body"})


@dataclass(frozen=True)
class Line:
    """One non-blank input line: the request it makes, or why it makes none."""

    number: int  # in the file, from 1
    custom_id: str  # as the line gives it, else line-N
    form: LineForm
    request: NewRequest | None = None
    error: InvalidRequest | None = None
    model: str | None = None  # what an OpenAI line's body names
    named: bool = False  # the line gave its custom_id

    @property
    def error_text(self) -> str:
        assert self.error is not None
        return f"line {self.number}: {self.error}"


@dataclass(frozen=True)
class FileInput:
    lines: list[Line]
    model: str | None
    """The job's model: the one asked for, else the first an OpenAI line names, else None."""
    params: GenerationParams
    """The job's parameters: the defaults native lines' own override."""

    @property
    def valid(self) -> list[Line]:
        return [line for line in self.lines if line.error is None]


def check_upload(*, purpose: str, filename: str | None, content: bytes) -> str:
    """An upload as the files API takes it: purpose ``batch``, some content, a filename that
    can be stored (``input.jsonl`` when none is given). Returns the filename."""
    if purpose != "batch":
        raise InvalidRequest("purpose", "only 'batch' is supported")
    if not content:
        raise InvalidRequest("file", "the file is empty")
    filename = filename or "input.jsonl"
    jsontext.check(filename, where="file.filename")
    return filename[:MAX_CUSTOM_ID_LENGTH]


def read_file(
    content: bytes,
    *,
    settings: Settings,
    defaults: Mapping[str, Any] | None = None,
    model: str | None = None,
    check_model: Callable[[str], None] | None = None,
    endpoint: str | None = None,
    max_lines: int | None = None,
) -> FileInput:
    """Every non-blank line of ``content``. ``defaults`` are parameters under native lines'
    own. ``model``, when given, is the job's; otherwise the first model a line names that
    ``check_model`` accepts (it raises for an unknown one) is. A line naming an unknown model,
    or another than the job's, fails. ``endpoint`` (an OpenAI batch's) is the one form lines
    may take."""
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
        if line.error is None and endpoint is not None and line.form != ENDPOINTS.get(endpoint):
            line = _failed(line, "url", f"must be the batch's endpoint {endpoint}")
        if line.error is None and line.model is not None and line.model != model:
            line = _check_model(line, job_model=model, check_model=check_model)
            model = model or line.model
        if line.named:
            first = first_line.setdefault(line.custom_id, number)
            if first != number and line.error is None:
                line = _failed(line, "custom_id", f"duplicate of line {first}")
        lines.append(line)
    return FileInput(lines, model, resolver.job)


def _read_line(raw: bytes, number: int, resolver: ParamsResolver, *, settings: Settings) -> Line:
    custom_id, named = f"line-{number}", False
    form: LineForm = "native"
    try:
        value = jsontext.parse(raw)
        if not isinstance(value, dict):
            raise InvalidRequest("", "a line must be a JSON object")
        # The line's own id, if it is one, names even a line refused for what else it holds.
        given = value.get("custom_id")
        if isinstance(given, str) and 0 < len(given) <= MAX_CUSTOM_ID_LENGTH:
            with contextlib.suppress(InvalidRequest):
                jsontext.check(given)
                custom_id, named = given, True
        if OPENAI_KEYS & value.keys():
            url = value.get("url")
            form = ENDPOINTS.get(url, "completions") if isinstance(url, str) else "completions"
        jsontext.check(value)
        if form != "native":
            body, params = read_openai(value)
            check_size(body.prompt, body.messages, settings=settings, where="body")
            request = NewRequest(
                custom_id=custom_id, prompt=body.prompt, messages=messages_of(body), params=params
            )
            return Line(number, custom_id, form, request, model=body.model, named=named)
        native: RequestIn = validated(RequestIn, value)
        params = resolver.resolve(native.params, where="params")
        request = new_request(native, params, settings=settings)
        return Line(number, custom_id, form, replace(request, custom_id=custom_id), named=named)
    except InvalidRequest as exc:
        return Line(number, custom_id, form, error=exc, named=named)


def _check_model(
    line: Line, *, job_model: str | None, check_model: Callable[[str], None] | None
) -> Line:
    assert line.model is not None
    if job_model is not None:
        return _failed(line, "body.model", f"one model per job: this one runs {job_model}")
    if check_model is not None:
        try:
            check_model(line.model)
        except GenqError as exc:
            return _failed(line, "body.model", str(exc).removeprefix("model: "))
    return line


def _failed(line: Line, field: str, message: str) -> Line:
    return replace(line, request=None, error=InvalidRequest(field, message), model=None)
