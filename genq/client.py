"""A small HTTP client of the native API, for the CLI (``GENQ_API_URL``, ``GENQ_API_KEY``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from genq.errors import GenqError
from genq.intake.tabular import is_tabular, table_jsonl
from genq.settings import Settings


class ApiError(GenqError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status_code = status


class Client:
    """Every failure is a :class:`GenqError` with a sentence for the user: a missing key, a
    server that does not answer, or the API's own error message."""

    def __init__(self, settings: Settings, *, timeout: float = 60) -> None:
        key = settings.api_key.strip()
        if not key:
            raise GenqError(
                "GENQ_API_KEY is not set: export the key `genq serve` printed, or make one "
                "with `genq keys create --tenant NAME`"
            )
        if not key.isprintable() or not key.isascii():
            raise GenqError("GENQ_API_KEY holds characters no key has; check what was exported")
        self.url = settings.api_url
        self.http = httpx.Client(
            base_url=settings.api_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Transport failures as one sentence each, not a traceback."""
        try:
            yield
        except httpx.ConnectError as exc:
            raise GenqError(
                f"cannot reach genq at {self.url} ({exc}): is `genq serve` or `genq api` "
                "running there? GENQ_API_URL names it"
            ) from None
        except httpx.TimeoutException:
            raise GenqError(f"genq at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise GenqError(f"talking to genq at {self.url} failed: {exc}") from None

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise ApiError(response.status_code, message)
        return response.json()

    def submit(self, path: Path, *, model: str | None = None, priority: int = 0) -> dict[str, Any]:
        """A JSONL file (native or OpenAI Batch lines), or a CSV or Parquet file (its rows),
        as one job: uploaded, then read by the service line by line (the same reading as
        ``genq run``)."""
        # A CSV or Parquet file goes up as the JSONL lines its rows make.
        name, content = (
            (path.with_suffix(".jsonl").name, table_jsonl(path))
            if is_tabular(path)
            else (path.name, None)
        )
        with path.open("rb") as handle, self._reaching():
            uploaded = self._json(
                self.http.post(
                    "/v1/files",
                    data={"purpose": "batch"},
                    files={
                        "file": (
                            name,
                            content if content is not None else handle,
                            "application/jsonl",
                        )
                    },
                )
            )
        body: dict[str, Any] = {"input_file_id": uploaded["id"]}
        if model:
            body["model"] = model
        if priority:
            body["priority"] = priority
        with self._reaching():
            return self._json(self.http.post("/v1/jobs", json=body))  # type: ignore[no-any-return]

    def jobs(self, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        with self._reaching():
            return self._json(self.http.get("/v1/jobs", params=params))  # type: ignore[no-any-return]

    def status(self, job_id: str) -> dict[str, Any]:
        with self._reaching():
            return self._json(self.http.get(f"/v1/jobs/{job_id}"))  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._reaching():
            return self._json(self.http.post(f"/v1/jobs/{job_id}/cancel"))  # type: ignore[no-any-return]

    def retry(self, job_id: str) -> dict[str, Any]:
        with self._reaching():
            return self._json(self.http.post(f"/v1/jobs/{job_id}/retry"))  # type: ignore[no-any-return]

    def results(self, job_id: str) -> Iterator[bytes]:
        url = f"/v1/jobs/{job_id}/results"
        with (
            self._reaching(),
            self.http.stream("GET", url, params={"format": "jsonl"}) as r,
        ):
            if r.status_code >= 400:
                r.read()
                self._json(r)
            yield from r.iter_bytes()
