"""The worker's database side while its engine runs: one thread that carries out writes,
lease renewals, releases and claims in the order they were handed to it, so the engine
generates the next batch while the last one is written.

Nothing here decides what is written; a task is a plain callable. A task that fails stops the
thread: the tasks queued behind it are dropped (their requests are still held, under their
lease, and the worker releases them), and the error is raised in the engine's thread at its
next hand-over or at :meth:`StoreThread.flush`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

Task = Callable[[], None]

DEPTH = 1
"""Tasks waiting behind the one running before a hand-over blocks: how far the engine may run
ahead of the database. Bounded, so what is generated but not yet written stays small."""


class StoreThread:
    def __init__(self, name: str, *, depth: int = DEPTH) -> None:
        self._tasks: queue.Queue[Task | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._idle = threading.Condition()
        self._unfinished = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def submit(self, task: Task) -> None:
        """Queue ``task`` (blocks while ``depth`` tasks wait); raises an earlier task's error."""
        self._raise()
        with self._idle:
            self._unfinished += 1
        self._tasks.put(task)

    def offer(self, task: Task) -> bool:
        """Queue ``task`` if that needs no wait; returns whether it was queued."""
        self._raise()
        with self._idle:
            self._unfinished += 1
        try:
            self._tasks.put_nowait(task)
        except queue.Full:
            with self._idle:
                self._unfinished -= 1
                self._idle.notify_all()
            return False
        return True

    def busy(self) -> bool:
        """Whether a task is queued or running."""
        with self._idle:
            return self._unfinished > 0

    def flush(self) -> None:
        """Wait until every task handed over has run; raises the error of one that failed."""
        with self._idle:
            self._idle.wait_for(lambda: self._unfinished == 0)
        self._raise()

    def close(self) -> None:
        """Stop the thread once the tasks handed over have run (or been dropped)."""
        self._tasks.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                if self._error is None:
                    task()
            except BaseException as exc:  # noqa: BLE001 - raised again in the engine's thread
                self._error = exc
            finally:
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()
