"""JSON request bodies read by genq's intake rather than FastAPI's plain ``json.loads``: a lone
surrogate, a NUL, a non-finite number, an integer beyond 64 bits or nesting past the limit is a
4xx naming the field, before any model validation or route code sees the body."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from genq.errors import InvalidRequest
from genq.intake import jsontext


class CheckedRequest(Request):
    """A request whose ``json()`` is the body as the intake parsed and checked it."""

    async def json(self) -> Any:
        if not hasattr(self, "_checked_json"):
            try:
                self._checked_json = jsontext.loads(await self.body())
            except InvalidRequest as exc:
                if exc.field:
                    raise
                raise type(exc)("body", exc.message) from None
        return self._checked_json


class CheckedJsonRoute(APIRoute):
    """Parses a JSON body up front, so that what the intake refuses answers through the app's
    error handlers (FastAPI answers any other error while parsing with a bare 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            request = CheckedRequest(request.scope, request.receive)
            if _is_json(request.headers.get("content-type")) and await request.body():
                await request.json()
            return await handler(request)

        return checked


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
