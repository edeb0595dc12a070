"""A task that runs every few seconds in a daemon thread until stopped."""

from __future__ import annotations

import threading


class Periodic:
    """Calls :meth:`tick` every ``every`` seconds in a daemon thread, from :meth:`start` until
    :meth:`stop`; with ``at_once`` the first call comes at start rather than after a wait."""

    def __init__(self, *, every: float, name: str, at_once: bool = False) -> None:
        self.every = every
        self.at_once = at_once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        if self.at_once:
            self.tick()
        while not self._stop.wait(self.every):
            self.tick()
