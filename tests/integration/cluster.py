"""A small genq deployment for tests: a real redis-server, a PostgreSQL database, and real
``genq worker`` processes, with a client that submits jobs and reads the store back. Every wait
is bounded; :meth:`Cluster.close` kills whatever is still running."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select

from genq.params import GenerationParams
from genq.producer import CeleryPublisher, submit_job
from genq.settings import Settings
from genq.store import (
    BatchRecord,
    JobInfo,
    NewRequest,
    ResultRow,
    get_job,
    list_batches,
    list_results,
    session_factory,
)
from genq.store.db import make_engine
from genq.store.tables import Job, Request, Result, WorkerHeartbeat, utcnow
from genq.store.views import live_workers
from genq.uploads import LIVE_SECONDS
from worker.celery_app import make_celery

MODEL = "tiny-gpt2"
TENANT = "it"
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, with nothing kept on disk: a restart loses
    every message, which is the point of restarting it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10, what="redis-server to accept connections")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, *, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@dataclass
class WorkerProcess:
    name: str
    model: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def worker_id(self) -> str:
        """The id its claims and batches carry (see worker.service.default_worker_id)."""
        return f"{self.model}@{socket.gethostname()}:{self.proc.pid}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class Cluster:
    """Workers on one Redis and one database, and a client of both."""

    def __init__(
        self,
        *,
        database_url: str,
        redis: RedisServer,
        model_cache: Path,
        logs: Path,
        model: str = MODEL,
    ) -> None:
        self.redis = redis
        self.model = model
        self.logs = logs
        self.env: dict[str, str] = {
            "GENQ_DATABASE_URL": database_url,
            "GENQ_REDIS_URL": redis.url,
            "GENQ_MODEL_CACHE": str(model_cache),
            "GENQ_DEVICE": "cpu",
            "GENQ_LEASE_SECONDS": "3",
            "GENQ_RECONCILE_SECONDS": "0.5",
            "GENQ_REANNOUNCE_SECONDS": "3",
            "GENQ_BUFFER_SECONDS": "0.5",
            "GENQ_VISIBILITY_TIMEOUT": "60",
            "GENQ_MAX_ATTEMPTS": "3",
            # Several workers share two cores: one thread each keeps them from thrashing.
            "OMP_NUM_THREADS": "1",
        }
        self.workers: list[WorkerProcess] = []
        self._db = make_engine(database_url)
        self.sessions = session_factory(self._db)
        self._publisher: CeleryPublisher | None = None

    @property
    def settings(self) -> Settings:
        prefix = "GENQ_"
        env = {
            k.removeprefix(prefix).lower(): v for k, v in self.env.items() if k.startswith(prefix)
        }
        return Settings.model_validate(env)

    def configure(self, **settings: Any) -> None:
        """Set ``GENQ_*`` for workers started from now on, and for the client."""
        for name, value in settings.items():
            self.env[f"GENQ_{name.upper()}"] = str(value)
        self._close_publisher()

    def start_worker(
        self,
        *,
        faults: Mapping[str, str] | None = None,
        wait: bool = True,
        command: Sequence[str] | None = None,
    ) -> WorkerProcess:
        """``python -m genq worker`` (the fault-injecting wrapper given ``faults``, or
        ``command``), started and, with ``wait``, ready to take messages."""
        name = f"worker-{len(self.workers)}"
        log = self.logs / f"{name}.log"
        if command is None and faults:
            command = [sys.executable, "-m", "tests.integration.fault_worker", self.model]
        elif command is None:
            command = [sys.executable, "-m", "genq", "worker", "--model", self.model]
        env = {**os.environ, **self.env, **(faults or {}), "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(name, self.model, proc, log)
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: WorkerProcess) -> None:
        def ready() -> bool:
            if not worker.alive():
                raise AssertionError(f"{worker.name} exited early:\n{worker.text()[-3000:]}")
            return " ready." in worker.text()

        wait_for(ready, timeout=START_TIMEOUT_S, what=f"{worker.name} to be ready", every=0.2)

    @property
    def publisher(self) -> CeleryPublisher:
        if self._publisher is None:
            self._publisher = CeleryPublisher(make_celery(self.settings))
        return self._publisher

    def submit(
        self, prompts: Sequence[str], params: GenerationParams, *, tenant: str = TENANT
    ) -> str:
        return submit_job(
            self.sessions,
            self.publisher,
            tenant=tenant,
            model=self.model,
            params=params,
            requests=[NewRequest(custom_id=f"c{i}", prompt=p) for i, p in enumerate(prompts)],
            settings=self.settings,
        )

    def job(self, job_id: str) -> JobInfo:
        with self.sessions.begin() as session:
            tenant = session.scalar(select(Job.tenant).where(Job.id == job_id))
            return get_job(session, tenant=tenant or TENANT, job_id=job_id)

    def wait_jobs(
        self, job_ids: Sequence[str], *, timeout: float, every: float = 0.2
    ) -> list[JobInfo]:
        def done() -> list[JobInfo] | None:
            jobs = [self.job(j) for j in job_ids]
            return jobs if all(j.status.is_terminal for j in jobs) else None

        return wait_for(done, timeout=timeout, what=f"jobs {list(job_ids)} to end", every=every)

    def results(self, job_id: str) -> list[ResultRow]:
        with self.sessions.begin() as session:
            return list_results(session, job_id=job_id)

    def batches(self) -> list[BatchRecord]:
        with self.sessions.begin() as session:
            return list_batches(session)

    def requests(self, job_id: str) -> list[Any]:
        """(id, status, attempts, lease_owner, error, result rows) per request, input order."""
        results = (
            select(func.count())
            .select_from(Result)
            .where(Result.request_id == Request.id)
            .scalar_subquery()
        )
        with self.sessions.begin() as session:
            return list(
                session.execute(
                    select(
                        Request.id,
                        Request.status,
                        Request.attempts,
                        Request.lease_owner,
                        Request.error,
                        results.label("results"),
                    )
                    .where(Request.job_id == job_id)
                    .order_by(Request.idx)
                ).all()
            )

    def heartbeats(self) -> dict[str, str]:
        """Model per worker id, of the workers whose last heartbeat is recent."""
        since = utcnow() - timedelta(seconds=LIVE_SECONDS)
        query = select(WorkerHeartbeat.worker_id, WorkerHeartbeat.model).where(
            WorkerHeartbeat.seen_at >= since
        )
        with self.sessions.begin() as session:
            return {worker_id: model for worker_id, model in session.execute(query)}

    def live_workers(self) -> dict[str, int]:
        """What /metrics reports as ``genq_live_workers``."""
        with self.sessions.begin() as session:
            return live_workers(session, within_seconds=LIVE_SECONDS)

    def result_worker(self, request_id: str) -> str | None:
        with self.sessions.begin() as session:
            return session.scalar(select(Result.worker_id).where(Result.request_id == request_id))

    def _close_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self._close_publisher()
        self._db.dispose()
