"""A small in-process cache whose entries expire: what the API remembers between requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CACHE_SIZE = 10_000
"""Most entries a cache holds; past it, it forgets them all and starts again."""


class TtlCache(Generic[K, V]):
    """Values put in the last ``ttl`` seconds, by key; ``ttl`` 0 remembers nothing."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[K, tuple[V, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        found = self.lookup(key)
        return None if found is None or found[1] <= 0 else found[0]

    def lookup(self, key: K) -> tuple[V, float] | None:
        """The value last put for ``key`` and the seconds it has left, below 0 once expired
        (kept until replaced, or until a full cache starts again)."""
        entry = self._entries.get(key)
        return None if entry is None else (entry[0], entry[1] - self.clock())

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= CACHE_SIZE:
            self._entries = {}
        self._entries[key] = (value, self.clock() + self.ttl)

    def put_unless(self, key: K, value: V, keep: Callable[[V, V], bool]) -> None:
        """:meth:`put`, unless ``keep(held, value)`` says the value held (expired or not) is to
        stay: a read that finished late must not replace what a later one stored."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not keep(entry[0], value):
                self.put(key, value)
