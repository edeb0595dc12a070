"""``genq run``: a JSONL file of prompts through the job store and the embedded worker, with no
services. The file becomes one job in the embedded database, tagged with the output path, the
input's hash and the model; a run that stopped (interrupted, killed) resumes from the store,
and the output is written in input order once every line has ended."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from genq.errors import Conflict
from genq.intake import FileInput, Line, read_file
from genq.intake.tabular import input_bytes
from genq.modelnames import check_model
from genq.outputs import render
from genq.settings import Settings, get_settings
from genq.store import (
    DEFAULT_TENANT,
    JobInfo,
    RequestStatus,
    ResultRow,
    cancel_job,
    create_job,
    find_job,
    list_results,
    release_orphans,
    session_factory,
    upgrade,
)
from genq.store.db import make_engine as make_db_engine
from worker.embedded import drain
from worker.service import Generator, Runtime
from worker.types import BatchReport

RUN_TAG = "genq_run_output"
"""Job metadata key holding the output path a ``genq run`` job writes."""

BULK_WINDOW = 4096
"""Requests claimed at once by ``genq run``: a wide window lets the engine sort more prompts by
length and pad less; it is still bounded, so progress is written as it goes."""

LOST = "worker lost: an earlier genq run stopped while running it"


@dataclass
class RunSummary:
    lines: int = 0
    resumed: int = 0
    ok: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed: float = 0.0
    batches: list[BatchReport] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.elapsed if self.elapsed else 0.0

    @property
    def rows_per_step(self) -> float | None:
        """Rows in the decode batch at a step, on average over the run (time-weighted);
        None when nothing was generated."""
        timed = [(b.rows, b.seconds) for b in self.batches if b.seconds > 0]
        seconds = sum(s for _, s in timed)
        return sum(r * s for r, s in timed) / seconds if seconds else None

    def text(self) -> str:
        rows = self.rows_per_step
        return (
            f"requests: {self.ok} ok, {self.failed} failed ({self.resumed} resumed from an "
            f"earlier run) | tokens: {self.prompt_tokens} prompt, {self.completion_tokens} "
            f"completion | elapsed {self.elapsed:.1f} s | {self.tokens_per_second:.1f} "
            "completion tokens/s" + (f" | {rows:.1f} rows per decode step" if rows else "")
        )

    def add_batch(self, report: BatchReport) -> None:
        self.batches.append(report)


@dataclass(frozen=True)
class RunInput:
    """An input file as ``genq run`` reads it: its bytes (their hash tags the job), its lines,
    and the model they run on."""

    raw: bytes
    read: FileInput
    model: str


def read_input(path: Path, *, model: str | None, settings: Settings) -> RunInput:
    """``path``'s lines; the model is ``model``, else the first the lines name (OpenAI lines'
    ``body.model``) that this machine has, else the default. A line naming an unknown model, or
    another than the run's, fails alone."""
    raw = input_bytes(path)  # CSV and Parquet rows as JSONL lines
    known = partial(check_model, settings=settings)
    read = read_file(raw, settings=settings, model=model, check_model=known)
    return RunInput(raw, read, read.model or settings.default_model)


def run_file(
    source: RunInput,
    out_path: Path,
    *,
    engine: Generator,
    settings: Settings | None = None,
    progress: bool = True,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> RunSummary:
    """Generate for every line of ``source`` into ``out_path``; resumes the job an earlier run
    of the same input, output and model left unfinished. The database is
    ``settings.database_url`` (upgraded first)."""
    settings = settings or get_settings()
    model = source.model
    lines = source.read.lines
    valid = source.read.valid
    upgrade(settings.database_url)
    db = make_db_engine(settings.database_url)
    try:
        sessions = session_factory(db)
        tag = {
            RUN_TAG: str(out_path.resolve()),
            "input_sha256": hashlib.sha256(source.raw).hexdigest(),
            "model": model,
        }
        job_id = _job_for(sessions, out_path, tag, valid)
        before = _finished(sessions, job_id)
        summary = RunSummary(lines=len(lines), resumed=len(before))
        started = time.perf_counter()
        bar = tqdm(
            total=len(valid) - len(before), unit="req", disable=not progress, file=sys.stderr
        )

        def batch_done(report: BatchReport) -> None:
            summary.add_batch(report)
            bar.update(len(report.results))
            bar.set_postfix_str(f"{summary.tokens_per_second:.1f} tok/s")
            summary.completion_tokens += sum(r.completion_tokens for r in report.results)
            summary.elapsed = time.perf_counter() - started
            if on_batch is not None:
                on_batch(report)

        rt = Runtime(
            settings=settings,
            sessions=sessions,
            model=model,
            worker_id=f"genq-run@{socket.gethostname()}:{os.getpid()}",
            make_engine=lambda: engine,
            window=BULK_WINDOW,
            on_batch=batch_done,
        )
        try:
            drain(rt, job_id=job_id)
        finally:
            bar.close()
        rows = _finished(sessions, job_id)
        summary.elapsed = time.perf_counter() - started
        fresh = set(rows) - set(before)
        outputs = _render(lines, valid, rows, model=model, fresh=fresh, summary=summary)
        _write_output(out_path, outputs)
    finally:
        db.dispose()
    return summary


def _job_for(
    sessions: sessionmaker[Session], out_path: Path, tag: dict[str, str], valid: Sequence[Line]
) -> str:
    """The job an earlier run of this input, output and model left (its dead claims released),
    or a new one. An output written from another input or model is refused, not overwritten."""
    with sessions.begin() as session:
        job = find_job(session, tenant=DEFAULT_TENANT, key=RUN_TAG, value=tag[RUN_TAG])
        if job is not None and _same_run(job, tag):
            release_orphans(session, job_id=job.id, error=LOST)
            return job.id
        if out_path.exists():
            raise Conflict(
                f"{out_path} holds results of a different input or model, or of a run this "
                "database does not know; choose another output path or delete it"
            )
        if job is not None and not job.status.is_terminal:
            cancel_job(session, tenant=DEFAULT_TENANT, job_id=job.id)  # its input changed
        if not valid:
            return ""
        requests = [line.request for line in valid if line.request is not None]
        common = Counter(request.params for request in requests).most_common(1)[0][0]
        assert common is not None
        return create_job(
            session,
            tenant=DEFAULT_TENANT,
            model=tag["model"],
            params=common,
            requests=requests,
            metadata=tag,
        )


def _same_run(job: JobInfo, tag: dict[str, str]) -> bool:
    return job.metadata is not None and all(job.metadata.get(k) == v for k, v in tag.items())


def _finished(sessions: sessionmaker[Session], job_id: str) -> dict[int, ResultRow]:
    """The job's ended requests by position among the valid lines."""
    rows: dict[int, ResultRow] = {}
    if not job_id:
        return rows
    with sessions.begin() as session:
        while page := list_results(session, job_id=job_id, after_idx=max(rows, default=-1)):
            rows.update((row.idx, row) for row in page)
    return rows


def _render(
    lines: Sequence[Line],
    valid: Sequence[Line],
    rows: dict[int, ResultRow],
    *,
    model: str,
    fresh: set[int],
    summary: RunSummary,
) -> list[dict[str, Any]]:
    """Output lines in input order: a bad line's error, else its stored outcome. Counts the
    lines this run finished into ``summary``."""
    position = {line.number: idx for idx, line in enumerate(valid)}
    missing = len(valid) - len(rows)
    if missing:
        raise Conflict(f"{missing} lines are still held by another process; run again later")
    summary.ok = summary.failed = summary.prompt_tokens = summary.completion_tokens = 0
    outputs = []
    for line in lines:
        if line.error is not None:
            summary.failed += 1
            error, param = line.error_text, line.error.field
            outputs.append(render(line.custom_id, line.form, model=model, error=error, param=param))
            continue
        idx = position[line.number]
        row = rows[idx]
        ok = row.status is RequestStatus.SUCCEEDED
        if idx in fresh:
            summary.ok += ok
            summary.failed += not ok
            if ok:
                summary.prompt_tokens += row.prompt_tokens
                summary.completion_tokens += row.completion_tokens
        if ok:
            choices = [c.__dict__ for c in row.choices]
            outputs.append(
                render(
                    line.custom_id,
                    line.form,
                    model=model,
                    choices=choices,
                    prompt_tokens=row.prompt_tokens,
                )
            )
        else:
            error = row.error or f"request {row.status}"
            outputs.append(render(line.custom_id, line.form, model=model, error=error))
    return outputs


def _write_output(out_path: Path, outputs: list[dict[str, Any]]) -> None:
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as sink:
        for out in outputs:
            sink.write(json.dumps(out, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
