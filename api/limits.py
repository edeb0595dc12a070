"""The request body limit, counted on the bytes received: a client that sends more than it
declared (or declares nothing, chunked) is cut off at the limit all the same."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        # The body goes on to the app as it arrives (a 200 MB upload is spooled to disk by the
        # form parser, never held here). Past the limit the app is told the client is gone:
        # every route reads its whole body before it acts (JSON parsed whole, a form's files
        # spooled), so it stores nothing, and its answer gives way to the 413.
        size = 0
        refused = False
        answered = False

        async def counted() -> Message:
            nonlocal size, refused
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def answer(message: Message) -> None:
            nonlocal answered
            if refused and not answered:
                return
            answered = True
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except Exception:
            if not refused or answered:
                raise
        if refused and not answered:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        message = f"request body larger than {self.max_bytes} bytes"
        body = json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_too_large",
                }
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
