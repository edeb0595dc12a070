"""JSONL files of requests, in genq's native form or OpenAI's Batch form, read one way for
``genq run``, ``genq submit``, file jobs and OpenAI batches.

Native:  {"custom_id": "a", "prompt": "...", "params": {...}}   (or "messages")
OpenAI:  {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {...}}

UTF-8, with or without a byte order mark; lines end in LF, CRLF or CR. Blank lines are
skipped, but every line keeps its number in the file. A line's problem is that line's error,
with its number and ``custom_id``; the other lines are unaffected."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Any

import numpy as np

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
    """Every non-blank line of ``content``, read as :class:`LineReader` reads (which see)."""
    reader = LineReader(
        settings=settings,
        defaults=defaults,
        model=model,
        check_model=check_model,
        endpoint=endpoint,
        max_lines=max_lines,
    )
    lines = list(reader.lines([content]))
    return FileInput(lines, reader.model, reader.params)


class LineReader:
    """The lines of a file that comes in chunks (a stored file's parts), one at a time: memory
    holds a chunk of lines and, for the duplicate check, 24 bytes per ``custom_id`` given.

    ``defaults`` are parameters under native lines' own. ``model``, when given, is the job's;
    otherwise the first model a line names that ``check_model`` accepts (it raises for an
    unknown one) is, from that line on (:attr:`model`). A line naming an unknown model, or
    another than the job's, fails. ``endpoint`` (an OpenAI batch's) is the one form lines may
    take. More than ``max_lines`` non-blank lines raise :class:`InvalidRequest`."""

    CHUNK_LINES = 8192
    """Lines read before their ``custom_id``\\ s are checked together."""

    def __init__(
        self,
        *,
        settings: Settings,
        defaults: Mapping[str, Any] | None = None,
        model: str | None = None,
        check_model: Callable[[str], None] | None = None,
        endpoint: str | None = None,
        max_lines: int | None = None,
    ) -> None:
        self.settings = settings
        self.resolver = ParamsResolver(defaults)
        self.model = model
        self.check_model = check_model
        self.endpoint = endpoint
        self.max_lines = max_lines
        self.count = 0
        """Non-blank lines read so far."""
        self._firsts = FirstLines()

    @property
    def params(self) -> GenerationParams:
        """The job's parameters: the defaults native lines' own override."""
        return self.resolver.job

    def lines(self, chunks: Iterable[bytes]) -> Iterator[Line]:
        batch: list[Line] = []
        for number, raw in numbered_lines(chunks):
            if not raw.strip():
                continue
            if self.max_lines is not None and self.count >= self.max_lines:
                raise InvalidRequest("input_file_id", f"at most {self.max_lines} lines per job")
            self.count += 1
            batch.append(self._line(raw, number))
            if len(batch) >= self.CHUNK_LINES:
                yield from self._deduplicated(batch)
                batch = []
        yield from self._deduplicated(batch)

    def _line(self, raw: bytes, number: int) -> Line:
        line = _read_line(raw, number, self.resolver, settings=self.settings)
        endpoint = self.endpoint
        if line.error is None and endpoint is not None and line.form != ENDPOINTS.get(endpoint):
            line = _failed(line, "url", f"must be the batch's endpoint {endpoint}")
        if line.error is None and line.model is not None and line.model != self.model:
            line = _check_model(line, job_model=self.model, check_model=self.check_model)
            self.model = self.model or line.model
        return line

    def _deduplicated(self, batch: list[Line]) -> list[Line]:
        """``batch`` with each line that repeats an earlier line's ``custom_id`` failed (the
        first keeps it; a line already failed keeps its own error)."""
        named = [i for i, line in enumerate(batch) if line.named]
        firsts = self._firsts.of(
            [batch[i].custom_id for i in named], [batch[i].number for i in named]
        )
        for i, first in zip(named, firsts, strict=True):
            line = batch[i]
            if first != line.number and line.error is None:
                batch[i] = _failed(line, "custom_id", f"duplicate of line {first}")
        return batch


def numbered_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """The lines of the bytes ``chunks`` make together, each with its number (from 1, blank
    lines counted), ends (LF, CRLF or CR) and a leading byte order mark removed, as
    ``bytes.splitlines`` would split the whole."""
    number = 0
    rest = b""
    started = False
    for chunk in chunks:
        data = rest + chunk
        if not started:
            if len(data) < len(BOM) and BOM.startswith(data):
                rest = data
                continue
            data, started = data.removeprefix(BOM), True
        parts = data.splitlines(keepends=True)
        # The last part may go on in the next chunk; so may a CR (a CRLF split in two).
        rest = parts.pop() if parts and not parts[-1].endswith(b"\n") else b""
        for part in parts:
            number += 1
            yield number, _unended(part)
    if not started:
        rest = rest.removeprefix(BOM)
    for part in rest.splitlines(keepends=True):
        number += 1
        yield number, _unended(part)


def _unended(part: bytes) -> bytes:
    if part.endswith(b"\r\n"):
        return part[:-2]
    return part[:-1] if part.endswith((b"\n", b"\r")) else part


class FirstLines:
    """The line where each ``custom_id`` first appeared, in 24 bytes an id (a 128-bit digest
    and a line number, in sorted arrays), so that a million-line file is checked for
    duplicates without a million strings in memory. Ids are added a chunk at a time."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype="S16")
        self._lines = np.empty(0, dtype=np.int64)

    def of(self, ids: Sequence[str], numbers: Sequence[int]) -> list[int]:
        """For each id (of line ``numbers``, ascending and past every line seen so far), the
        number of the first line that gave it: its own for the first."""
        if not ids:
            return []
        keys = np.array(
            [blake2b(i.encode("utf-8", "surrogatepass"), digest_size=16).digest() for i in ids],
            dtype="S16",
        )
        lines = np.asarray(numbers, dtype=np.int64)
        # Within the chunk: a stable sort puts each id's first line first among its equals.
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.ones(len(ordered), dtype=bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        group = np.maximum.accumulate(np.where(starts, np.arange(len(ordered)), 0))
        firsts = np.empty_like(lines)
        firsts[order] = lines[order][group]
        # Before the chunk: an earlier line wins.
        if len(self._keys):
            at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            earlier = self._keys[at] == keys
            firsts = np.where(earlier, self._lines[at], firsts)
        else:
            earlier = np.zeros(len(keys), dtype=bool)
        new = starts & ~earlier[order]
        where = np.searchsorted(self._keys, ordered[new])
        self._keys = np.insert(self._keys, where, ordered[new])
        self._lines = np.insert(self._lines, where, lines[order][new])
        found: list[int] = firsts.tolist()
        return found


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
        request = new_request(native, params, settings=settings, custom_id=custom_id)
        return Line(number, custom_id, form, request, named=named)
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
