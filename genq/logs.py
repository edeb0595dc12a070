"""Logging for the long-running commands (``genq worker``, ``serve``, ``api``, ``reconcile``):
text lines by default, or one JSON object per line with ``GENQ_LOG_FORMAT=json``.

A log call names what it is about through ``extra=``, with the keys in :data:`ID_FIELDS`
(``log.info("...", extra={"job_id": job_id})``); JSON lines carry them as fields, so a log
store can find every line of a job, request, batch or worker."""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from genq.settings import Settings

ID_FIELDS = (
    "job_id",
    "job_ids",
    "request_id",
    "request_ids",
    "batch_id",
    "worker_id",
    "model",
)
"""``extra=`` keys that JSON lines carry as fields; any other extra key is left out."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

IDS_PER_LINE = 100
"""Most ids one log line lists, so that it stays short enough for log shippers (Docker splits
lines over 16 KiB)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message, the ids
    of :data:`ID_FIELDS` the call passed, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = list(value) if isinstance(value, tuple | set | frozenset) else value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` schema: every record through one stderr handler in
    the configured format. uvicorn takes it as ``log_config``, so that its own loggers and
    every API process it spawns log the same way."""
    formatter: dict[str, Any] = {"format": TEXT_FORMAT}
    if settings.log_format == "json":
        formatter = {"()": f"{__name__}.JsonFormatter"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"genq": formatter},
        "handlers": {
            "genq": {
                "class": "logging.StreamHandler",
                "formatter": "genq",
                "stream": "ext://sys.stderr",
            }
        },
        # uvicorn's loggers keep their own handlers and levels unless told otherwise: send
        # them to ours, at the root's level (a uvicorn run earlier in the process may have
        # left its own).
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": "NOTSET"}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
        "root": {"handlers": ["genq"], "level": settings.log_level},
    }


def configure_logging(settings: Settings) -> None:
    """Replace the root logger's handlers with genq's, and log Python warnings through them
    (as JSON too); calling it again changes nothing more."""
    logging.config.dictConfig(logging_config(settings))
    logging.captureWarnings(True)


def id_chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """``ids`` in runs of at most :data:`IDS_PER_LINE`: one log line each."""
    for start in range(0, len(ids), IDS_PER_LINE):
        yield ids[start : start + IDS_PER_LINE]
