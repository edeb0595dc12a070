"""The fair rule: how one worker's window is shared between tenants and their jobs. Pure.

Work is measured in tokens times rows (a request's estimated prompt tokens plus its
``max_new_tokens``, times its return sequences), not in requests, so a tenant of long prompts
does not get more of the workers by sending fewer of them.

A window is filled one request at a time, in the spirit of weighted fair queuing:

- **Across tenants**, the next request goes to the tenant whose work in flight (held by any
  worker, plus what this window has given it so far), divided by its weight, is smallest.
  Equal weights give equal shares; a tenant of weight 2 gets twice the work of one of weight 1
  while both have work queued.
- **Within a tenant**, jobs of its highest ``priority`` share its part the same way (equal work
  per job); lower priorities wait for them.
- **No job starves.** Before the shares, each job with queued work gets one request of the
  window, oldest job first, for up to half the window: a low-priority job, or one behind a
  flood of newer jobs, still moves, and a job that waits long enough becomes one of the oldest.

The state is the database's: what is in flight comes from the requests other workers hold, so
several workers picking at once converge on the same shares without talking to each other."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_PRIORITY = -100
MAX_PRIORITY = 100
FLOOR_FRACTION = 0.5
"""At most this share of a window goes to the one-request-per-job floor."""


@dataclass(frozen=True)
class Backlog:
    """One job's claimable work, as the fair rule sees it."""

    job_id: str
    tenant: str
    queued: int  # requests that can be claimed now
    cost: float = 1.0  # work per request: estimated tokens x rows
    priority: int = 0
    running: int = 0  # its requests held by workers now
    age: tuple[object, ...] = ()  # sorts oldest first (created_at, id)


def pick(
    backlogs: Sequence[Backlog],
    *,
    limit: int,
    weights: Mapping[str, float] | None = None,
    default_weight: float = 1.0,
) -> dict[str, int]:
    """How many requests of each job the next window of ``limit`` requests takes. Jobs left
    out take none; a tenant missing from ``weights`` weighs ``default_weight``."""
    weights = weights or {}
    queued = {b.job_id: b.queued for b in backlogs if b.queued > 0}
    jobs = {b.job_id: b for b in backlogs if b.job_id in queued}
    taken = dict.fromkeys(jobs, 0)
    if limit <= 0 or not jobs:
        return {}
    cost = {j: max(b.cost, 1e-9) for j, b in jobs.items()}
    served_job = {j: b.running * cost[j] for j, b in jobs.items()}
    served_tenant: dict[str, float] = {}
    for b in backlogs:  # jobs with nothing queued still count what they hold
        served_tenant[b.tenant] = served_tenant.get(b.tenant, 0.0) + b.running * max(b.cost, 1e-9)
    left = limit

    def take(job_id: str) -> None:
        nonlocal left
        taken[job_id] += 1
        queued[job_id] -= 1
        served_job[job_id] += cost[job_id]
        served_tenant[jobs[job_id].tenant] += cost[job_id]
        left -= 1

    floor = max(1, int(limit * FLOOR_FRACTION))
    for job_id in sorted(jobs, key=lambda j: (jobs[j].age, j))[:floor]:
        take(job_id)

    # Per tenant: its jobs of top priority, by work given so far (then age).
    tiers = {t: _next_tier(jobs, queued, served_job, t) for t in {b.tenant for b in jobs.values()}}
    tenants = [
        (served_tenant[t] / _weight(weights, t, default_weight), t) for t in tiers if tiers[t]
    ]
    heapq.heapify(tenants)
    while left > 0 and tenants:
        _, tenant = heapq.heappop(tenants)
        heap = tiers[tenant]
        _, age, job_id = heapq.heappop(heap)
        take(job_id)
        if queued[job_id] > 0:
            heapq.heappush(heap, (served_job[job_id], age, job_id))
        elif not heap:
            heap.extend(_next_tier(jobs, queued, served_job, tenant))
        if heap:
            heapq.heappush(
                tenants, (served_tenant[tenant] / _weight(weights, tenant, default_weight), tenant)
            )
    return {j: n for j, n in taken.items() if n}


def _next_tier(
    jobs: Mapping[str, Backlog],
    queued: Mapping[str, int],
    served: Mapping[str, float],
    tenant: str,
) -> list[tuple[float, tuple[object, ...], str]]:
    """The tenant's jobs of the highest priority still with work, once a tier is spent."""
    mine = [b for b in jobs.values() if b.tenant == tenant and queued[b.job_id] > 0]
    if not mine:
        return []
    top = max(b.priority for b in mine)
    tier: list[tuple[float, tuple[object, ...], str]] = [
        (served[b.job_id], (b.age, b.job_id), b.job_id) for b in mine if b.priority == top
    ]
    heapq.heapify(tier)
    return tier


def _weight(weights: Mapping[str, float], tenant: str, default: float) -> float:
    return max(float(weights.get(tenant, default)), 1e-9)


BYTES_PER_TOKEN = 4
"""UTF-8 bytes per token in the work estimate: about what BPE tokenizers give on English
text. The API has no tokenizer, so shares and quotas count estimated tokens."""
MESSAGE_TOKENS = 4  # a chat template's tokens around each message


def estimated_tokens(prompt: str | None, messages: Sequence[Mapping[str, object]] | None) -> int:
    """A prompt's tokens, estimated from its length (see :data:`BYTES_PER_TOKEN`)."""
    if prompt is not None:
        return _tokens(prompt)
    return sum(_tokens(str(m.get("content", ""))) + MESSAGE_TOKENS for m in messages or ())


def request_work(prompt_tokens: int, *, max_new_tokens: int, rows: int) -> int:
    """The work of one request: rows (return sequences) times prompt and new tokens."""
    return rows * (prompt_tokens + max_new_tokens)


def _tokens(text: str) -> int:
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)
