"""The fair rule's properties, on the pure function: shares follow the weights in work, no job
starves, priorities order a tenant's jobs, and a window is never over- or under-filled."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from genq.fairshare import Backlog, estimated_tokens, pick, request_work


def job(job_id: str, tenant: str, queued: int, *, age: int, **kw: object) -> Backlog:
    return Backlog(job_id=job_id, tenant=tenant, queued=queued, age=(age,), **kw)  # type: ignore[arg-type]


def serve(
    jobs: list[Backlog],
    *,
    windows: int,
    limit: int,
    weights: dict[str, float] | None = None,
    workers: int = 1,
) -> tuple[Counter[str], list[dict[str, int]]]:
    """Run the rule for ``windows`` windows of ``workers`` workers that each hold a window
    while the next worker picks (so work in flight counts); returns work done per tenant and
    each window's pick."""
    state = {b.job_id: b for b in jobs}
    done: Counter[str] = Counter()
    picks = []
    in_flight: list[dict[str, int]] = []
    for _ in range(windows):
        if len(in_flight) == workers:  # the oldest window finishes
            for job_id, n in in_flight.pop(0).items():
                b = state[job_id]
                state[job_id] = replace(b, running=b.running - n)
                done[b.tenant] += round(n * b.cost)
        got = pick(list(state.values()), limit=limit, weights=weights)
        for job_id, n in got.items():
            b = state[job_id]
            state[job_id] = replace(b, queued=b.queued - n, running=b.running + n)
        in_flight.append(got)
        picks.append(got)
    return done, picks


def test_equal_tenants_get_equal_work_whatever_their_request_sizes() -> None:
    # Tenant a sends requests ten times the size of b's: equal shares are in work, not count.
    jobs = [job("a1", "a", 10**6, cost=100.0, age=0), job("b1", "b", 10**6, cost=10.0, age=1)]
    done, picks = serve(jobs, windows=200, limit=256)
    assert abs(done["a"] / done["b"] - 1) < 0.05
    assert picks[-1]["b1"] > 8 * picks[-1]["a1"]


def test_shares_converge_to_the_weights_with_work_in_flight() -> None:
    jobs = [
        job("a1", "a", 10**6, age=0),
        job("b1", "b", 10**6, age=1),
        job("c1", "c", 10**6, age=2),
    ]
    weights = {"a": 1.0, "b": 2.0, "c": 5.0}
    done, _ = serve(jobs, windows=300, limit=64, weights=weights, workers=3)
    total = sum(done.values())
    for tenant, weight in weights.items():
        assert abs(done[tenant] / total - weight / 8) < 0.02, (tenant, done)


def test_a_small_job_is_taken_whole_in_the_first_window_beside_a_large_one() -> None:
    jobs = [job("big", "a", 10_000, age=0), job("small", "b", 5, age=1)]
    assert pick(jobs, limit=256) == {"big": 251, "small": 5}
    # The same within one tenant: its jobs share its part equally.
    same = [job("big", "a", 10_000, age=0), job("small", "a", 5, age=1)]
    assert pick(same, limit=256)["small"] == 5


def test_a_higher_priority_runs_first_within_its_tenant_and_the_lower_still_moves() -> None:
    jobs = [
        job("low", "a", 1000, priority=0, age=0),
        job("high", "a", 1000, priority=2, age=1),
        job("other", "b", 1000, priority=0, age=2),
    ]
    got = pick(jobs, limit=100)
    assert got["low"] == 1  # the floor: it moves, but only that
    assert got["high"] + got["low"] == 50  # tenant a still gets only its half
    assert got["other"] == 50
    # Once the higher priority is done, the lower takes the tenant's whole part.
    _, picks = serve(jobs, windows=40, limit=100)
    low = [p.get("low", 0) for p in picks]
    high_done = next(i for i, p in enumerate(picks) if "high" not in p)
    assert all(n == 1 for n in low[: high_done - 1])
    assert low[high_done] > 1


def test_no_job_starves_behind_a_flood_of_jobs() -> None:
    # 400 one-tenant jobs of 3 requests each and windows of 16: the oldest move first, every
    # job finishes, and none waits for younger ones.
    jobs = [job(f"j{n:03}", "a", 3, age=n) for n in range(400)]
    _, picks = serve(jobs, windows=200, limit=16)
    finished = {}
    left = {b.job_id: 3 for b in jobs}
    for window, got in enumerate(picks):
        for job_id, n in got.items():
            left[job_id] -= n
            if left[job_id] == 0:
                finished[job_id] = window
    assert len(finished) == 400
    order = [finished[f"j{n:03}"] for n in range(400)]
    assert order == sorted(order)


def test_every_backlogged_job_moves_in_every_window_while_there_is_room() -> None:
    jobs = [job("huge", "a", 10**6, priority=5, age=0)]
    jobs += [job(f"low{n}", "a", 100, priority=-5, age=n + 1) for n in range(10)]
    jobs += [job("b", "b", 10**6, age=20)]
    got = pick(jobs, limit=64)
    assert all(got[f"low{n}"] >= 1 for n in range(10))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.integers(0, 50),
            st.floats(1, 1000),
            st.integers(-2, 2),
            st.integers(0, 20),
        ),
        max_size=12,
    ),
    st.integers(0, 80),
)
def test_a_window_is_filled_exactly_and_never_past_a_backlog(
    specs: list[tuple[str, int, float, int, int]], limit: int
) -> None:
    jobs = [
        job(f"j{i}", tenant, queued, cost=cost, priority=priority, running=running, age=i)
        for i, (tenant, queued, cost, priority, running) in enumerate(specs)
    ]
    got = pick(jobs, limit=limit)
    queued = {b.job_id: b.queued for b in jobs}
    assert all(0 < n <= queued[j] for j, n in got.items())
    assert sum(got.values()) == min(limit, sum(queued.values()))
    waiting = [b for b in jobs if b.queued]
    if 0 < len(waiting) <= limit // 2:
        assert {b.job_id for b in waiting} <= set(got)


def test_work_is_estimated_from_the_prompt_bytes_and_the_new_tokens() -> None:
    assert estimated_tokens("abcd" * 10, None) == 10
    assert estimated_tokens("abcde", None) == 2
    chat = [{"role": "user", "content": "abcd" * 5}, {"role": "system", "content": ""}]
    assert estimated_tokens(None, chat) == 5 + 4 + 0 + 4
    assert request_work(10, max_new_tokens=6, rows=3) == 48
