"""The one way into genq: every request, whether it comes in a ``POST /v1/jobs`` body, a
JSONL file (``genq run``, ``genq submit``, a file job, an OpenAI batch), is read and checked
here, so one input line always becomes the same request, and nothing the store or a response
cannot hold gets past it.

- :mod:`~genq.intake.jsontext`: JSON parsed and every value checked (surrogates, NUL,
  non-finite numbers, 64-bit integers, nesting depth).
- :mod:`~genq.intake.bodies`: the shapes of request, job and batch bodies.
- :mod:`~genq.intake.resolve`: parameters resolved (a request's over its job's), prompt size,
  duplicate ``custom_id``\\ s.
- :mod:`~genq.intake.openai`: OpenAI Batch lines onto genq's parameters.
- :mod:`~genq.intake.lines`: JSONL files, line by line."""

from genq.intake.bodies import BatchCreate, JobCreate, RequestIn
from genq.intake.lines import FileInput, Line, LineReader, check_upload, read_file
from genq.intake.openai import ENDPOINTS, LineForm
from genq.intake.resolve import job_requests

__all__ = [
    "ENDPOINTS",
    "BatchCreate",
    "FileInput",
    "LineForm",
    "JobCreate",
    "Line",
    "LineReader",
    "RequestIn",
    "check_upload",
    "job_requests",
    "read_file",
]
