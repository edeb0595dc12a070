"""Claim, run, write: the work every worker does, whether a queue message woke it (Celery) or it
claims straight from the database (embedded). Plain functions over a :class:`Runtime`.

A claim holds a request under a lease and a fence; outcomes are written with the fence, one
transaction per generate call, so a worker whose lease ran out cannot overwrite the result of
the worker that took the request over."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from genq.errors import InvalidRequest
from genq.params import parse_params
from genq.settings import Settings
from genq.store import (
    BatchRecord,
    Choice,
    Claim,
    Outcome,
    any_claimable,
    cancel_claims,
    cancelling_jobs,
    claim,
    complete_many,
    record_batch,
    release_many,
    renew,
    session_factory,
    unstarted_job,
)
from genq.store.db import make_engine as make_db_engine
from genq.store.tables import utcnow
from worker.pipeline import StoreThread
from worker.types import BatchReport, GenRequest, GenResult

log = logging.getLogger(__name__)

GATE_SECONDS = 0.02
"""How often, at most, a worker looks for cancels and arrivals while rows join its batch."""

RENEW_FRACTION = 1 / 3
"""A window's unrun claims get a new lease once this much of the last one has gone by."""


class Generator(Protocol):
    """What a worker runs claims through: :class:`worker.engine.Engine`, or a stand-in."""

    def run(self, requests: Iterable[GenRequest]) -> Iterator[BatchReport]: ...


@dataclass
class Runtime:
    """One worker process's state: where the store is, which model it serves and the engine for
    it (made on first use, once), and a flag that asks it to stop between batches."""

    settings: Settings
    sessions: sessionmaker[Session]
    model: str
    worker_id: str
    make_engine: Callable[[], Generator]
    window: int  # most requests claimed at once: what the engine plans batches from
    claimed_at: datetime | None = None  # when the window in hand was picked
    on_batch: Callable[[BatchReport], None] | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    idle_since: float = field(default_factory=time.monotonic)
    _engine: Generator | None = None

    @property
    def engine(self) -> Generator:
        if self._engine is None:
            self._engine = self.make_engine()
        return self._engine

    def wait_for_company(self) -> None:
        """An idle worker holds a message briefly before claiming, so requests of its
        parameter set submitted with it (other messages, other jobs) share its window. A busy
        worker does not wait: whatever came in meanwhile is already in the database."""
        wait = self.settings.buffer_seconds
        if wait and time.monotonic() - self.idle_since >= wait:
            self.stopping.wait(wait)


def build_runtime(
    settings: Settings,
    *,
    model: str,
    make_engine: Callable[[], Generator] | None = None,
    worker_id: str | None = None,
    window: int | None = None,
) -> Runtime:
    engine = make_db_engine(settings.database_url)
    return Runtime(
        settings=settings,
        sessions=session_factory(engine),
        model=model,
        worker_id=worker_id or default_worker_id(model),
        make_engine=make_engine or model_engine(settings, model),
        window=window or settings.claim_window,
    )


def default_worker_id(model: str) -> str:
    return f"{model}@{socket.gethostname()}:{os.getpid()}"


def model_engine(settings: Settings, model: str) -> Callable[[], Generator]:
    """The real engine for ``model``; torch loads when it is called, not before."""

    def make() -> Generator:
        from worker.engine import Engine
        from worker.models import load_model

        engine = Engine.from_settings(load_model(model, settings), settings)
        # torch, transformers and the model live as long as the process: hundreds of thousands
        # of objects that each full collection would walk again, 100-300 ms with every thread
        # of the process stopped (the embedded API's too). Frozen, the collector skips them.
        # Frozen objects are never collected, so what an earlier freeze kept (an engine dropped
        # after a failure) and the garbage of this load are collected first.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        return engine

    return make


def handle_message(rt: Runtime, *, model: str, group_key: str, request_ids: Sequence[str]) -> int:
    """A queue message names requests of one model and parameter set: claim those still
    claimable, fill the window with other claimable requests of the same parameter set (from
    any job), run them, write the outcomes; again until nothing the message names is left.
    A duplicate or stale message claims nothing. Returns how many outcomes were written."""
    if model != rt.model:
        log.error(
            "message for model %s reached a worker of %s; ignored",
            model,
            rt.model,
            extra={"worker_id": rt.worker_id, "request_ids": list(request_ids)},
        )
        return 0
    rt.wait_for_company()

    def next_window() -> list[Claim]:  # claimed while the one before runs
        with rt.sessions.begin() as session:
            if rt.settings.claim_order == "oldest":
                return _claim(rt, session, group_key=group_key)
            return _claim(rt, session)

    written = 0
    try:
        while not rt.stopping.is_set():
            with rt.sessions.begin() as session:
                if rt.settings.claim_order == "oldest":
                    claims = _claim(rt, session, request_ids=request_ids)
                    if claims and len(claims) < rt.window:
                        more = rt.window - len(claims)
                        claims += _claim(rt, session, group_key=group_key, limit=more)
                elif any_claimable(
                    session, request_ids=request_ids, max_attempts=rt.settings.max_attempts
                ):
                    # The message is a hint that there is work; what runs is what the fair
                    # rule picks, so a flood of one job's messages cannot starve another job.
                    claims = _claim(rt, session)
                else:
                    claims = []
            if not claims:
                break
            written += run_claims(rt, claims, share=True, claim_more=next_window)
    finally:
        rt.idle_since = time.monotonic()
    return written


def claim_any(rt: Runtime, *, job_id: str | None = None) -> list[Claim]:
    """A window of whatever is claimable for the runtime's model (of ``job_id`` only, if given),
    shared by the fair rule: the embedded worker's way in."""
    with rt.sessions.begin() as session:
        return _claim(rt, session, job_id=job_id)


def _claim(
    rt: Runtime,
    session: Session,
    *,
    request_ids: Sequence[str] | None = None,
    group_key: str | None = None,
    job_id: str | None = None,
    limit: int | None = None,
) -> list[Claim]:
    rt.claimed_at = utcnow()
    return claim(
        session,
        worker_id=rt.worker_id,
        model=rt.model,
        lease_seconds=rt.settings.lease_seconds,
        request_ids=request_ids,
        group_key=group_key,
        job_id=job_id,
        limit=limit or rt.window,
        max_attempts=rt.settings.max_attempts,
        order=rt.settings.claim_order,
        default_weight=rt.settings.tenant_weight,
    )


def run_claims(
    rt: Runtime,
    claims: Sequence[Claim],
    *,
    share: bool = False,
    claim_more: Callable[[], list[Claim]] | None = None,
) -> int:
    """Run claimed requests and write their outcomes; returns how many were written.

    Between batches the worker drops the claims of jobs cancelled meanwhile that have not
    started, and with ``share`` (a worker serving every job of its model, not one job's run)
    gives back the unstarted rest of its window when a job that no worker has started arrives,
    so the next window is picked fairly with it. With ``claim_more``, the next window is
    claimed while this one runs, and joins the engine's run as its queue runs short.

    A request claimed before by a worker that never reported (attempts > 1) is a suspect: it
    may be what killed that worker. One suspect runs alone, after the others; the rest go back
    to the queue with their attempt returned. So a request that kills its worker every time
    takes no neighbour down with it again and, out of attempts, the reconciler fails it."""
    fresh = [c for c in claims if c.attempts <= 1]
    suspects = [c for c in claims if c.attempts > 1]
    _release(rt, suspects[1:])
    alone = {c.request_id: c for c in suspects[:1]}
    # its lease is kept meanwhile
    written = _Window(rt, waiting=alone, share=share, claim_more=claim_more).run(fresh)
    if rt.stopping.is_set():
        _release(rt, list(alone.values()))
        return written
    return written + _Window(rt).run(list(alone.values()))


REFILL_PAUSE_SECONDS = 0.5
"""After a claim ahead found nothing, the next is tried no sooner than this."""


class _Window:
    """The claims held for one engine run, and the database work on them.

    The engine runs in the caller's thread. Outcomes, releases, cancels and claims ahead are
    handed to a :class:`worker.pipeline.StoreThread`, which carries them out in order while
    the engine generates the next batch; ``held`` (a request's claim until its outcome is
    written or it goes back) is shared between the two under ``lock``. What the engine thread
    does with the database itself is reading (cancels, arrivals) and, once a third of the lease
    has gone by, renewing after the writes handed over have landed."""

    def __init__(
        self,
        rt: Runtime,
        *,
        waiting: dict[str, Claim] | None = None,
        share: bool = False,
        claim_more: Callable[[], list[Claim]] | None = None,
    ) -> None:
        self.rt = rt
        self.waiting = waiting or {}  # run later; their leases are renewed with these
        self.share = share
        self.claim_more = claim_more
        self.held: dict[str, Claim] = {}
        self.lock = threading.Lock()
        self.store: StoreThread | None = None
        self.written = 0
        self.ahead: list[Claim] = []  # claimed ahead, not yet handed to the engine
        self.asking = False  # a claim ahead is handed over and has not returned
        self.ask_after = 0.0
        self.looking = False  # a look for cancels and arrivals is handed over
        self.news: tuple[set[str], str | None, bool] | None = None  # what it found

    def run(self, claims: Sequence[Claim]) -> int:
        """Run ``claims`` through the engine, writing batch by batch; returns how many
        outcomes were written."""
        if not claims:
            return 0
        rt = self.rt
        self.store = StoreThread(f"genq-store:{rt.worker_id}")
        try:
            requests = self._take(claims)
            while requests:
                self._generate(requests)
                self.store.flush()
                # The engine ran out while a window was being claimed ahead: run that one.
                with self.lock:
                    ahead, self.ahead = self.ahead, []
                requests = self._take(ahead) if ahead and not rt.stopping.is_set() else []
            self.store.flush()
        finally:
            self.store.close()
            # Stopped between batches, or failed: what did not run goes back, its attempt
            # returned (an outcome handed over but not written, too).
            with self.lock:
                rest = list(self.held.values())
                self.held.clear()
            _release(rt, rest)
        return self.written

    def _generate(self, requests: list[GenRequest]) -> None:
        rt, store = self.rt, self.store
        assert store is not None
        renewed_at = time.monotonic()
        reports = rt.engine.run(requests)
        withdraw: Callable[[Iterable[str]], set[str]] | None = getattr(reports, "withdraw", None)
        # Where the engine calls back as rows are about to join its batch, the worker checks
        # there (often enough that few rows join after a cancel); otherwise after each report.
        gated = False
        if withdraw is not None and hasattr(reports, "before_admit"):
            gated, take_back, checked = True, withdraw, time.monotonic()

            def gate() -> None:
                nonlocal checked
                if time.monotonic() - checked >= GATE_SECONDS:
                    self._between_batches(take_back)
                    checked = time.monotonic()

            reports.before_admit = gate
        extend = getattr(reports, "extend", None)
        if self.claim_more is not None and extend is not None and hasattr(reports, "refill"):
            reports.refill = lambda: self._refill(extend)
            self._ask()  # one window in reserve from the start
        try:
            for report in reports:
                store.submit(partial(self._write, report.results, report))
                if time.monotonic() - renewed_at > rt.settings.lease_seconds * RENEW_FRACTION:
                    store.flush()  # what was generated is written first: not renewed
                    self._renew(self.held)
                    if self.waiting:
                        self._renew(self.waiting)
                    renewed_at = time.monotonic()
                with self.lock:
                    empty = not self.held
                if rt.stopping.is_set() or empty:  # nothing left that is still ours to write
                    break
                if withdraw is not None and not gated:
                    self._between_batches(withdraw)
        finally:
            close = getattr(reports, "close", None)
            if close is not None:
                close()

    def _take(self, claims: Sequence[Claim]) -> list[GenRequest]:
        """``claims`` held, and as the engine's requests; a stored parameter set that no longer
        parses is that request's outcome."""
        requests: list[GenRequest] = []
        invalid: list[GenResult] = []
        with self.lock:
            self.held.update((c.request_id, c) for c in claims)
        for c in claims:
            try:
                params = parse_params(c.params)
            except InvalidRequest as exc:
                invalid.append(GenResult(key=c.request_id, error=str(exc)))
                continue
            messages = tuple(c.messages) if c.messages is not None else None
            requests.append(GenRequest(c.request_id, params, c.prompt, messages))
        if invalid:
            assert self.store is not None
            self.store.submit(partial(self._write, invalid, None))
        return requests

    # -- claiming ahead -----------------------------------------------------------------------

    def _refill(self, extend: Callable[[Iterable[GenRequest]], None]) -> None:
        """The engine's queue runs short: hand it the window claimed ahead, and ask for the
        next one at once, so one is ready before the engine runs out again."""
        assert self.store is not None
        with self.lock:
            ahead, self.ahead = self.ahead, []
        if ahead:
            extend(self._take(ahead))
        self._ask()

    def _ask(self) -> None:
        """Hand the store thread a claim ahead, unless one is out, or the last found nothing
        a moment ago."""
        assert self.store is not None
        if (
            self.asking
            or self.ahead
            or self.claim_more is None
            or self.rt.stopping.is_set()
            or time.monotonic() < self.ask_after
        ):
            return
        self.asking = True
        self.store.submit(self._claim_ahead)

    def _claim_ahead(self) -> None:
        """In the store thread: the next window. A suspect in it stops the claiming ahead: it
        goes back, to run alone at the next claim (see :func:`run_claims`)."""
        assert self.claim_more is not None
        try:
            claims = self.claim_more()
            suspects = [c for c in claims if c.attempts > 1]
            fresh = [c for c in claims if c.attempts <= 1]
            if suspects:
                _release(self.rt, suspects)
                self.claim_more = None
            if not claims:
                self.ask_after = time.monotonic() + REFILL_PAUSE_SECONDS
            with self.lock:
                self.held.update((c.request_id, c) for c in fresh)
                self.ahead.extend(fresh)
        finally:
            self.asking = False

    # -- between batches ----------------------------------------------------------------------

    def _between_batches(self, withdraw: Callable[[Iterable[str]], set[str]]) -> None:
        """Act on what the store thread last found (:meth:`_look`), and have it look again.

        The unstarted claims of cancelled jobs are taken back from the engine (and cancelled);
        with ``share``, when a job that arrived since the window was picked is waiting and no
        worker has started it, every unstarted claim is (released, for the next fair pick).
        Jobs that were there at the pick had their share of it; only arrivals give a window
        back, once."""
        store = self.store
        assert store is not None
        news, self.news = self.news, None
        if news is not None:
            cancelled, newcomer, looked_for_newcomers = news
            if cancelled:
                self._drop_cancelled(withdraw, cancelled)
            if newcomer is not None and self.share:
                self.share = False
                self._give_back(withdraw, newcomer)
            elif newcomer is None:
                self.share = self.share and looked_for_newcomers
        if not self.looking:
            self.looking = True  # before the hand-over: the store thread clears it
            if not store.offer(self._look):
                self.looking = False

    def _look(self) -> None:
        """In the store thread: the held jobs that are being cancelled, and (with ``share``) a
        job that arrived since the last pick and that no worker has started."""
        rt = self.rt
        try:
            with self.lock:
                jobs = sorted({c.job_id for c in self.held.values()})
            since = rt.claimed_at if self.share and rt.settings.claim_order == "fair" else None
            with rt.sessions.begin() as session:
                cancelled = cancelling_jobs(session, jobs)
                newcomer = (
                    None if since is None else unstarted_job(session, model=rt.model, since=since)
                )
            self.news = (cancelled, newcomer, since is not None)
        finally:
            self.looking = False

    def _drop_cancelled(
        self, withdraw: Callable[[Iterable[str]], set[str]], cancelled: set[str]
    ) -> None:
        assert self.store is not None
        with self.lock:
            ahead = {c.request_id for c in self.ahead if c.job_id in cancelled}
            self.ahead = [c for c in self.ahead if c.request_id not in ahead]
            keys = [k for k, c in self.held.items() if c.job_id in cancelled and k not in ahead]
        taken = withdraw(keys) | ahead
        if not taken:
            return
        with self.lock:
            # cancelled, or taken over meanwhile: not ours either way
            items = [(k, self.held.pop(k).fence) for k in sorted(taken) if k in self.held]
        self.store.submit(partial(self._cancel, items))
        log.info(
            "dropped %d unstarted requests of cancelled jobs %s",
            len(taken),
            sorted(cancelled),
            extra={"worker_id": self.rt.worker_id, "job_ids": sorted(cancelled)},
        )

    def _give_back(self, withdraw: Callable[[Iterable[str]], set[str]], newcomer: str) -> None:
        assert self.store is not None
        with self.lock:
            ahead = {c.request_id for c in self.ahead}  # held, not in the engine yet
            self.ahead = []
            keys = [k for k in self.held if k not in ahead]
        taken = withdraw(keys) | ahead
        log.info(
            "job %s is waiting: %d unstarted claims go back for a fair pick",
            newcomer,
            len(taken),
            extra={"worker_id": self.rt.worker_id, "job_id": newcomer},
        )
        with self.lock:
            back = [self.held.pop(key) for key in sorted(taken) if key in self.held]
        self.store.submit(partial(_release, self.rt, back))

    def _cancel(self, items: list[tuple[str, int]]) -> None:
        with self.rt.sessions.begin() as session:
            cancel_claims(session, worker_id=self.rt.worker_id, held=items)

    # -- the store thread's writes ------------------------------------------------------------

    def _write(self, results: Sequence[GenResult], report: BatchReport | None) -> None:
        """One report's outcomes in one transaction, fenced, with the batch's record; then
        the runtime's ``on_batch``."""
        rt = self.rt
        now = utcnow()
        started = now - timedelta(seconds=report.seconds) if report else now
        with self.lock:
            mine = {r.key: self.held[r.key] for r in results if r.key in self.held}
        items = [
            (r.key, mine[r.key].fence, _outcome(r, started=started, finished=now))
            for r in results
            if r.key in mine
        ]
        batch_id = None
        tokens = {r.key: r.completion_tokens for r in results}
        with rt.sessions.begin() as session:
            done = complete_many(session, items=items, now=now)
            jobs: dict[str, tuple[int, int]] = {}
            for (key, _, _), ok in zip(items, done, strict=True):
                if ok:
                    rows, new = jobs.get(mine[key].job_id, (0, 0))
                    jobs[mine[key].job_id] = (rows + 1, new + tokens[key])
            if report is not None and report.rows:
                batch_id = record_batch(
                    session,
                    batch=BatchRecord(
                        worker_id=rt.worker_id,
                        model=rt.model,
                        group_key=report.group,
                        rows=report.rows,
                        padded_length=report.padded_length,
                        prompt_efficiency=report.prompt_efficiency,
                        seconds=report.seconds,
                        request_ids=report.keys,
                        refused=len(results) - sum(done),
                        jobs=jobs,
                    ),
                    now=now,
                )
        written = {key for (key, _, _), ok in zip(items, done, strict=True) if ok}
        _log_outcomes(rt, mine, results, written=written, report=report, batch_id=batch_id)
        with self.lock:
            for key, _, _ in items:
                self.held.pop(key, None)
        self.written += sum(done)
        if not all(done):
            stale = [key for key, _, _ in items if key not in written]
            log.warning(
                "refused %d outcomes of stale claims: %s",
                len(stale),
                stale[:8],
                extra={"worker_id": rt.worker_id, "batch_id": batch_id, "request_ids": stale},
            )
        if report is not None and rt.on_batch is not None:
            rt.on_batch(report)

    def _renew(self, claims: dict[str, Claim]) -> None:
        rt = self.rt
        with self.lock:
            items = [(c.request_id, c.fence) for c in claims.values()]
        with rt.sessions.begin() as session:
            kept = renew(
                session,
                worker_id=rt.worker_id,
                held=items,
                lease_seconds=rt.settings.lease_seconds,
            )
        with self.lock:
            for request_id, _ in items:
                if request_id not in kept:  # taken over, or its job was cancelled
                    claims.pop(request_id, None)


def _log_outcomes(
    rt: Runtime,
    held: dict[str, Claim],
    results: Sequence[GenResult],
    *,
    written: set[str],
    report: BatchReport | None,
    batch_id: int | None,
) -> None:
    """A line per generate call, with its request and job ids, and one per failure written."""
    ids = {"worker_id": rt.worker_id, "batch_id": batch_id}
    if report is not None and report.rows:
        jobs = sorted({held[k].job_id for k in report.keys if k in held})
        log.info(
            "batch %s: %d rows of %d requests from %d jobs in %.2f s, padding efficiency %.2f",
            batch_id,
            report.rows,
            len(report.keys),
            len(jobs),
            report.seconds,
            report.prompt_efficiency,
            extra=ids | {"request_ids": list(report.keys), "job_ids": jobs, "model": rt.model},
        )
    for r in results:
        error = _error_of(r)
        if error is not None and r.key in written:
            # INFO: a request's failure is its outcome, kept with it; `genq run` shows none.
            log.info(
                "request %s failed: %s",
                r.key,
                error,
                extra=ids | {"request_id": r.key, "job_id": held[r.key].job_id},
            )


def _error_of(result: GenResult) -> str | None:
    if result.error is not None or not result.choices:
        return result.error or "generation returned nothing"
    return None


def _outcome(result: GenResult, *, started: datetime, finished: datetime) -> Outcome:
    error = _error_of(result)
    if error is not None:
        return Outcome(
            error=error,
            prompt_tokens=result.prompt_tokens,
            started_at=started,
            finished_at=finished,
        )
    return Outcome(
        choices=tuple(Choice(c.text, c.finish_reason, c.completion_tokens) for c in result.choices),
        prompt_tokens=result.prompt_tokens,
        started_at=started,
        finished_at=finished,
    )


def _release(rt: Runtime, claims: Sequence[Claim]) -> None:
    if not claims:
        return
    try:
        with rt.sessions.begin() as session:
            release_many(session, items=[(c.request_id, c.fence) for c in claims])
    except Exception:  # noqa: BLE001 - the leases expire and the reconciler takes over
        ids = [c.request_id for c in claims]
        extra = {"worker_id": rt.worker_id, "request_ids": ids}
        log.exception("could not release %d claims", len(claims), extra=extra)
