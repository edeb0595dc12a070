"""SharedReads.cached: what a poll is answered from on a networked database, by the age of the
value held and whether a read of it runs; no database, a clock of the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from api.reads import SharedReads
from genq.ttlcache import TtlCache

TTL = 10.0


class Reads:
    """A read the test lets finish: each call counts, then waits for ``release``."""

    def __init__(self, cache: TtlCache[str, int]) -> None:
        self.cache = cache
        self.calls = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    def of(self, value: int) -> Callable[[], Awaitable[int]]:
        async def read() -> int:
            self.calls += 1
            await self.release.wait()
            if self.fail is not None:
                raise self.fail
            self.cache.put("job", value)
            return value

        return read


def _setup() -> tuple[list[float], TtlCache[str, int], Reads, SharedReads]:
    now = [1000.0]
    cache: TtlCache[str, int] = TtlCache(TTL, clock=lambda: now[0])
    return now, cache, Reads(cache), SharedReads()


async def _now(answer: Awaitable[int]) -> int:
    """An answer that must come without waiting for a read (a wait fails, never hangs)."""
    return await asyncio.wait_for(answer, timeout=1.0)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_callers_that_miss_together_share_one_read() -> None:
    async def main() -> None:
        _now, _cache, reads, shared = _setup()
        callers = [
            asyncio.ensure_future(shared.cached(_cache, "job", reads.of(7))) for _ in range(50)
        ]
        await _settle()
        assert reads.calls == 1
        reads.release.set()
        assert await asyncio.gather(*callers) == [7] * 50
        assert reads.calls == 1

    asyncio.run(main())


def test_a_value_in_its_first_half_is_the_answer_and_reads_nothing() -> None:
    async def main() -> None:
        now, cache, reads, shared = _setup()
        cache.put("job", 1)
        now[0] += TTL / 2 - 0.1
        assert await _now(shared.cached(cache, "job", reads.of(2))) == 1
        await _settle()
        assert reads.calls == 0

    asyncio.run(main())


def test_in_its_second_half_it_is_the_answer_while_one_read_runs_ahead() -> None:
    async def main() -> None:
        now, cache, reads, shared = _setup()
        cache.put("job", 1)
        now[0] += TTL / 2 + 0.1
        # No caller waits: each is answered at once, and only the first starts a read.
        assert [await _now(shared.cached(cache, "job", reads.of(2))) for _ in range(20)] == [1] * 20
        await _settle()
        assert reads.calls == 1
        reads.release.set()
        await _settle()
        assert cache.get("job") == 2
        assert await shared.cached(cache, "job", reads.of(3)) == 2
        assert reads.calls == 1

    asyncio.run(main())


def test_expired_it_is_the_answer_only_while_its_read_runs_and_for_one_more_ttl() -> None:
    async def main() -> None:
        now, cache, reads, shared = _setup()
        cache.put("job", 1)
        now[0] += TTL / 2 + 0.1
        assert await _now(shared.cached(cache, "job", reads.of(2))) == 1  # a read ahead starts
        now[0] += TTL  # expired, and its read still runs: still the answer
        assert await _now(shared.cached(cache, "job", reads.of(2))) == 1
        now[0] += TTL  # twice the time old: the caller waits for the read
        waiting = asyncio.ensure_future(shared.cached(cache, "job", reads.of(2)))
        await _settle()
        assert not waiting.done()
        reads.release.set()
        assert await waiting == 2
        assert reads.calls == 1

    asyncio.run(main())


def test_expired_with_no_read_running_the_caller_waits_for_a_new_one() -> None:
    async def main() -> None:
        now, cache, reads, shared = _setup()
        cache.put("job", 1)
        now[0] += TTL + 0.1
        waiting = asyncio.ensure_future(shared.cached(cache, "job", reads.of(2)))
        await _settle()
        assert not waiting.done() and reads.calls == 1
        reads.release.set()
        assert await waiting == 2

    asyncio.run(main())


def test_a_caller_that_goes_away_does_not_cancel_the_read_for_the_others() -> None:
    async def main() -> None:
        _now, cache, reads, shared = _setup()
        first = asyncio.ensure_future(shared.cached(cache, "job", reads.of(5)))
        second = asyncio.ensure_future(shared.cached(cache, "job", reads.of(5)))
        await _settle()
        first.cancel()
        await _settle()
        reads.release.set()
        assert await second == 5
        assert first.cancelled() and reads.calls == 1

    asyncio.run(main())


def test_a_failed_read_fails_every_caller_of_it_and_the_next_call_reads_again() -> None:
    async def main() -> None:
        _now, cache, reads, shared = _setup()
        reads.fail = RuntimeError("database down")
        callers = [
            asyncio.ensure_future(shared.cached(cache, "job", reads.of(1))) for _ in range(3)
        ]
        await _settle()
        reads.release.set()
        for caller in callers:
            with pytest.raises(RuntimeError, match="database down"):
                await caller
        reads.fail = None
        assert await shared.cached(cache, "job", reads.of(4)) == 4
        assert reads.calls == 2

    asyncio.run(main())
