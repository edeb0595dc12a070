"""JSON as genq reads it from clients: parsed by the standard library, then walked once so that
no value the database or a JSON response cannot hold gets any further.

Refused, each naming where it sits (``requests.3.prompt``): lone UTF-16 surrogates and NUL
characters in any string or key (PostgreSQL refuses NUL, and a lone surrogate cannot be encoded
as UTF-8 to store or to answer), non-finite numbers (``NaN``, ``Infinity``, ``1e999``),
integers outside 64 bits, and nesting deeper than :data:`MAX_DEPTH`."""

from __future__ import annotations

import json
import math
from typing import Any

from genq.errors import InvalidRequest, MalformedInput

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted; genq's own forms need six."""

INT_LIMIT = 2**63
"""Integers must lie in [-INT_LIMIT, INT_LIMIT): what a 64-bit column or parameter holds."""


class _Bad(Exception):
    """A refused value; the walk adds the path on its way out."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str | int] = []


def loads(text: str | bytes) -> Any:
    """Parse ``text`` (UTF-8, when bytes) and check every value in it (see the module
    docstring); a problem raises :class:`InvalidRequest` naming the path to the value."""
    value = parse(text)
    check(value)
    return value


def parse(text: str | bytes) -> Any:
    """``text`` parsed, not yet checked: :class:`MalformedInput` unless it is UTF-8 JSON."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")  # strictly: JSON between systems is UTF-8 (RFC 8259)
        # NaN, Infinity and overflowing literals (1e999) parse to non-finite floats, refused by
        # check(), which knows where they sit.
        return json.loads(text)
    except RecursionError:
        raise InvalidRequest("", f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise MalformedInput("", "not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, and integers of more than 4300 digits
        raise MalformedInput("", f"malformed JSON: {_reason(exc)}") from None


def check(value: Any, *, where: str = "") -> None:
    """Check an already parsed value as :func:`loads` does."""
    try:
        _walk(value, 0)
    except _Bad as bad:
        raise InvalidRequest(field_path(where, *reversed(bad.path)), bad.message) from None


def _walk(value: Any, depth: int) -> None:
    if isinstance(value, str):
        _text(value)
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            try:
                _text(key)
                _walk(item, depth + 1)
            except _Bad as bad:
                bad.path.append(key if _printable(key) else ascii(key))
                raise
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
        for i, item in enumerate(value):
            try:
                _walk(item, depth + 1)
            except _Bad as bad:
                bad.path.append(i)
                raise
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad("must be a finite number")
    elif isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
        raise _Bad("integer out of range (64 bits)")


def _text(value: str) -> None:
    if "\x00" in value:
        raise _Bad("must not contain NUL (\\u0000) characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("must not contain lone UTF-16 surrogates (invalid Unicode)") from None


def _printable(key: str) -> bool:
    return key.isprintable() and "." not in key


def field_path(*parts: str | int) -> str:
    """``("requests", 3, "prompt")`` -> ``requests.3.prompt``; empty parts are skipped."""
    return ".".join(str(p) for p in parts if p != "")


def _reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno} column {exc.colno})"
    return "integer too long" if "digits" in str(exc) else str(exc)
