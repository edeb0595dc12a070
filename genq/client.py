"""A small HTTP client of the native API, for the CLI (``GENQ_API_URL``, ``GENQ_API_KEY``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from genq.errors import GenqError
from genq.settings import Settings


class ApiError(GenqError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status_code = status


class Client:
    def __init__(self, settings: Settings, *, timeout: float = 60) -> None:
        self.http = httpx.Client(
            base_url=settings.api_url,
            headers={"Authorization": f"Bearer {settings.api_key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ApiError(response.status_code, message)
        return response.json()

    def submit(self, path: Path, *, model: str | None = None, priority: int = 0) -> dict[str, Any]:
        """A JSONL file (native or OpenAI Batch lines) as one job: uploaded as it is, then
        read by the service line by line (the same reading as ``genq run``)."""
        with path.open("rb") as handle:
            uploaded = self._json(
                self.http.post(
                    "/v1/files",
                    data={"purpose": "batch"},
                    files={"file": (path.name, handle, "application/jsonl")},
                )
            )
        body: dict[str, Any] = {"input_file_id": uploaded["id"]}
        if model:
            body["model"] = model
        if priority:
            body["priority"] = priority
        return self._json(self.http.post("/v1/jobs", json=body))  # type: ignore[no-any-return]

    def status(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/v1/jobs/{job_id}"))  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.post(f"/v1/jobs/{job_id}/cancel"))  # type: ignore[no-any-return]

    def results(self, job_id: str) -> Iterator[bytes]:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/results", params={"format": "jsonl"}) as r:
            if r.status_code >= 400:
                r.read()
                self._json(r)
            yield from r.iter_bytes()
