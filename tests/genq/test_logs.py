"""Log setup: JSON lines carry the ids a log call passes; text stays plain."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest

from genq.logs import IDS_PER_LINE, JsonFormatter, configure_logging, id_chunks
from genq.settings import Settings

UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the process's loggers: put them back afterwards."""
    saved = [
        (logger, logger.handlers[:], logger.level, logger.propagate)
        for logger in [logging.getLogger(), *map(logging.getLogger, (*UVICORN, "py.warnings"))]
    ]
    yield
    logging.captureWarnings(False)
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("genq.test", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_carries_the_ids_the_call_passed() -> None:
    line = json.loads(
        JsonFormatter().format(
            record(
                "batch %s done",
                7,
                batch_id=7,
                worker_id="tiny-gpt2@host:1",
                job_ids=["job_a", "job_b"],
                request_ids=("req_1", "req_2"),
                tenant="kept out",
            )
        )
    )
    assert line.pop("timestamp").endswith("+00:00")
    assert line == {
        "level": "INFO",
        "logger": "genq.test",
        "message": "batch 7 done",
        "batch_id": 7,
        "worker_id": "tiny-gpt2@host:1",
        "job_ids": ["job_a", "job_b"],
        "request_ids": ["req_1", "req_2"],
    }


def test_a_json_line_keeps_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", request_id="req_1")
        failed.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(failed))
    assert (line["request_id"], line["exception"].splitlines()[-1]) == ("req_1", "ValueError: boom")


@pytest.mark.usefixtures("restore_logging")
def test_json_format_sends_every_logger_through_one_json_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(Settings(log_format="json"))
    logging.getLogger("genq.anything").info("job %s submitted", "job_a", extra={"job_id": "job_a"})
    logging.getLogger("uvicorn.access").info("GET /v1/jobs 200")
    logging.getLogger("genq.anything").debug("below the level")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("running as root", UserWarning, stacklevel=1)
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(x["logger"], x["message"], x.get("job_id")) for x in lines[:2]] == [
        ("genq.anything", "job job_a submitted", "job_a"),
        ("uvicorn.access", "GET /v1/jobs 200", None),
    ]
    assert (len(lines), lines[2]["logger"], lines[2]["level"]) == (3, "py.warnings", "WARNING")
    assert "UserWarning: running as root" in lines[2]["message"]


@pytest.mark.usefixtures("restore_logging")
def test_text_format_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings())
    logging.getLogger("genq.anything").warning("a %s line", "plain", extra={"job_id": "job_a"})
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING genq.anything: a plain line")


def test_ids_are_split_into_lines_of_bounded_length() -> None:
    ids = [f"req_{n}" for n in range(2 * IDS_PER_LINE + 1)]
    chunks = list(id_chunks(ids))
    assert [len(c) for c in chunks] == [IDS_PER_LINE, IDS_PER_LINE, 1]
    assert [i for c in chunks for i in c] == ids
