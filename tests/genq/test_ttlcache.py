from __future__ import annotations

from genq import ttlcache
from genq.ttlcache import TtlCache


def test_a_value_lasts_its_time_and_no_longer() -> None:
    now = [100.0]
    cache: TtlCache[str, int] = TtlCache(2.0, clock=lambda: now[0])
    cache.put("a", 1)
    now[0] += 1.9
    assert cache.get("a") == 1
    now[0] += 0.2
    assert cache.get("a") is None
    assert cache.get("never put") is None


def test_no_time_remembers_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_put_unless_keeps_what_is_to_stay_expired_or_not() -> None:
    now = [100.0]
    cache: TtlCache[str, int] = TtlCache(2.0, clock=lambda: now[0])
    higher = lambda held, new: held > new  # noqa: E731
    cache.put_unless("a", 5, higher)
    cache.put_unless("a", 3, higher)
    assert cache.get("a") == 5
    now[0] += 10  # expired, still not replaced by a lower value...
    cache.put_unless("a", 3, higher)
    assert cache.get("a") is None
    cache.put_unless("a", 7, higher)  # ...but by a higher one, with a fresh time
    assert cache.get("a") == 7


def test_a_full_cache_starts_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ttlcache, "CACHE_SIZE", 3)
    cache: TtlCache[int, int] = TtlCache(60)
    for n in range(3):
        cache.put(n, n)
    cache.put(3, 3)
    assert [cache.get(n) for n in range(4)] == [None, None, None, 3]
