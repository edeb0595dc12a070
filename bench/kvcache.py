"""Slot-cache copies side by side: the cache's own writes and moves against plain indexing of
``(slots, :, columns)``, on a warm cache, and what the first write of fresh pages costs.

    python bench/kvcache.py [--threads 2]

Shapes are a decode batch of SmolLM2-135M's (3 key/value heads of 64) with 128 slots of 344
columns; each way runs 20 times, twice in alternating order.
"""

from __future__ import annotations

import argparse
import time

import torch

from worker.kvslots import SlotCache, Write, zeros

SLOTS, HEADS, COLUMNS, DIM = 128, 3, 344, 64


def timed(fn, reps: int = 20) -> float:  # type: ignore[no-untyped-def]
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    cache = SlotCache(1, SLOTS, COLUMNS, cpu)
    cache.write = Write(slots=torch.arange(SLOTS), column=0)
    cache.update(torch.zeros(SLOTS, HEADS, 1, DIM), torch.zeros(SLOTS, HEADS, 1, DIM), 0)
    keys, values = cache.keys[0], cache.values[0]
    assert keys is not None and values is not None
    keys.fill_(1.0)  # every page mapped: a warm cache
    values.fill_(1.0)

    source, target, first, end = torch.arange(30, 56), torch.arange(4, 30), 100, 326

    def move_indexed() -> None:
        keys[target, :, first:end] = keys[source, :, first:end]
        values[target, :, first:end] = values[source, :, first:end]

    tokens = 900
    slots, columns = torch.randint(0, SLOTS, (tokens,)), torch.randint(0, COLUMNS, (tokens,))
    k, v = torch.randn(1, HEADS, tokens, DIM), torch.randn(1, HEADS, tokens, DIM)

    def prefill_indexed() -> None:
        keys[slots, :, columns] = k[0].transpose(0, 1)
        values[slots, :, columns] = v[0].transpose(0, 1)

    def prefill_cache() -> None:
        cache.write = Write(slots=slots, columns=columns)
        cache.update(k, v, 0)

    ways = [
        ("move 26 rows x 226 columns: indexed", move_indexed),
        (
            "move 26 rows x 226 columns: SlotCache.move",
            lambda: cache.move(source, target, first, end),
        ),
        ("prefill write of 900 tokens: indexed", prefill_indexed),
        ("prefill write of 900 tokens: SlotCache.update", prefill_cache),
    ]
    for passes in (ways, ways[::-1]):
        for name, fn in passes:
            print(f"{name:48s} {timed(fn):8.0f} us")
    fresh = zeros((SLOTS, HEADS, COLUMNS, DIM), torch.float32, cpu)
    start = time.perf_counter()
    fresh.fill_(1.0)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    fresh.fill_(2.0)
    warm = time.perf_counter() - start
    size = fresh.numel() * 4 / 1e6
    print(
        f"one {size:.0f} MB layer buffer, filled: fresh pages {cold * 1e3:.1f} ms, "
        f"mapped {warm * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
