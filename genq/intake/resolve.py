"""From what a client sent to the requests genq stores: each request's parameters resolved
against its job's, its prompt held to the size cap, its ``custom_id`` unique in the job."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from genq.errors import InvalidRequest
from genq.intake.bodies import JobCreate, Message, RequestIn
from genq.intake.openai import OpenAIBody, OpenAIMessage
from genq.params import GenerationParams, merged, parse_params
from genq.settings import Settings
from genq.store import NewRequest


class ParamsResolver:
    """Each request's parameters: its own over the job's (``defaults``), validated once per
    distinct set of its own, so a 50,000-request job with one override costs two checks."""

    def __init__(self, defaults: Mapping[str, Any] | None) -> None:
        self.defaults = dict(defaults or {})
        self.job = parse_params(merged(self.defaults, None))
        self._seen: dict[str, GenerationParams] = {}

    def resolve(self, own: Mapping[str, Any] | None, *, where: str) -> GenerationParams:
        if not own:
            return self.job
        key = json.dumps(own, sort_keys=True)
        params = self._seen.get(key)
        if params is None:
            params = parse_params(merged(self.defaults, own), field=where)
            self._seen[key] = params
        return params


def new_request(
    request: RequestIn,
    params: GenerationParams,
    *,
    settings: Settings,
    where: str = "",
    custom_id: str | None = None,
) -> NewRequest:
    """``request`` as stored, with its resolved ``params`` (and ``custom_id`` for its own,
    when given); ``where`` prefixes field names."""
    if (request.prompt is None) == (request.messages is None):
        raise InvalidRequest(where or "prompt", "give exactly one of prompt or messages")
    check_size(request.prompt, request.messages, settings=settings, where=where)
    return NewRequest(
        custom_id=request.custom_id if custom_id is None else custom_id,
        prompt=request.prompt,
        messages=messages_of(request),
        params=params,
    )


def messages_of(request: RequestIn | OpenAIBody) -> tuple[dict[str, Any], ...] | None:
    if request.messages is None:
        return None
    return tuple({"role": m.role, "content": m.content} for m in request.messages)


def check_size(
    prompt: str | None,
    messages: Sequence[Message | OpenAIMessage] | None,
    *,
    settings: Settings,
    where: str = "",
) -> None:
    """Refuse a prompt (or chat) longer than ``GENQ_MAX_PROMPT_CHARS``: no model served takes
    it, and it would only fail at the worker. Longer than the model's context once tokenized,
    but under this cap, is the worker's per-request error."""
    cap = settings.max_prompt_chars
    if prompt is not None and len(prompt) > cap:
        field = f"{where}.prompt" if where else "prompt"
        raise InvalidRequest(field, f"longer than {cap} characters ({len(prompt)})")
    if messages is not None:
        size = sum(len(m.content) for m in messages)
        if size > cap:
            field = f"{where}.messages" if where else "messages"
            raise InvalidRequest(field, f"longer than {cap} characters in all ({size})")


def job_requests(
    body: JobCreate, *, settings: Settings
) -> tuple[GenerationParams, list[NewRequest]]:
    """The job's parameters and its requests, from a body that lists them: all valid, or the
    first problem raised, naming ``requests.N.field``."""
    if body.requests is None:
        raise InvalidRequest("requests", "give requests, or input_file_id for an uploaded file")
    if not body.requests:
        raise InvalidRequest("requests", "a job needs at least one request")
    cap = min(settings.max_job_requests, settings.max_body_requests)
    if len(body.requests) > cap:
        raise InvalidRequest(
            "requests",
            f"at most {cap} requests per job in a body, got {len(body.requests)}; a larger"
            " job comes as an uploaded file (input_file_id)",
        )
    resolver = ParamsResolver(body.params)
    seen: dict[str, int] = {}
    out = []
    for i, request in enumerate(body.requests):
        where = f"requests.{i}"
        if request.custom_id is not None:
            first = seen.setdefault(request.custom_id, i)
            if first != i:
                raise InvalidRequest(
                    f"{where}.custom_id", f"duplicate of requests.{first}.custom_id"
                )
        params = resolver.resolve(request.params, where=f"{where}.params")
        out.append(new_request(request, params, settings=settings, where=where))
    return resolver.job, out
