from __future__ import annotations

from worker.planner import Batch, PlanItem, estimated_work, plan, split


def item(key: str, length: int, group: str = "g", new: int = 10, rows: int = 1) -> PlanItem:
    return PlanItem(key=key, group=group, prompt_tokens=length, max_new_tokens=new, rows=rows)


def test_groups_never_share_a_batch() -> None:
    items = [item("a", 5, "g1"), item("b", 5, "g2"), item("c", 6, "g1")]
    batches = plan(items, max_batch_tokens=10_000, max_batch_size=64)
    assert sorted((b.group, [i.key for i in b.items]) for b in batches) == [
        ("g1", ["a", "c"]),
        ("g2", ["b"]),
    ]


def test_sorted_by_length_within_a_group() -> None:
    items = [item("long", 50), item("short", 3), item("mid", 20)]
    (batch,) = plan(items, max_batch_tokens=10_000, max_batch_size=64)
    assert [i.key for i in batch.items] == ["short", "mid", "long"]
    assert batch.padded_length == 50
    assert batch.cost == 3 * (50 + 10)


def test_token_budget_cuts_batches() -> None:
    items = [item(str(n), 10) for n in range(10)]  # each row costs 10 + 10 = 20
    batches = plan(items, max_batch_tokens=60, max_batch_size=64)
    assert [len(b.items) for b in batches] == [3, 3, 3, 1]
    assert all(b.cost <= 60 for b in batches)


def test_budget_counts_padding_to_the_longest() -> None:
    items = [item("a", 10), item("b", 10), item("c", 40)]
    batches = plan(items, max_batch_tokens=60, max_batch_size=64)
    # a+b cost 2 x 20 = 40; adding c would cost 3 x 50 = 150
    assert [[i.key for i in b.items] for b in batches] == [["a", "b"], ["c"]]


def test_row_cap_counts_return_sequences() -> None:
    items = [item(str(n), 1, rows=3) for n in range(5)]
    batches = plan(items, max_batch_tokens=10_000, max_batch_size=7)
    assert [b.rows for b in batches] == [6, 6, 3]


def test_an_item_over_budget_still_gets_its_own_batch() -> None:
    batches = plan([item("huge", 1000), item("small", 1)], max_batch_tokens=50, max_batch_size=8)
    assert [[i.key for i in b.items] for b in batches] == [["small"], ["huge"]]


def test_every_item_planned_exactly_once() -> None:
    items = [item(f"k{n}", (n * 37) % 101 + 1, f"g{n % 3}") for n in range(500)]
    batches = plan(items, max_batch_tokens=2_000, max_batch_size=16)
    keys = [i.key for b in batches for i in b.items]
    assert sorted(keys) == sorted(i.key for i in items)
    assert all(b.rows <= 16 for b in batches)
    assert all(b.cost <= 2_000 for b in batches if len(b.items) > 1)


def test_prompt_efficiency_and_split() -> None:
    batch = Batch("g", (item("a", 2), item("b", 4), item("c", 6), item("d", 8)))
    assert batch.prompt_efficiency == (2 + 4 + 6 + 8) / (4 * 8)
    first, second = split(batch)
    assert [i.key for i in first.items] == ["a", "b"]
    assert [i.key for i in second.items] == ["c", "d"]


def test_long_prompts_are_not_padded_into_short_ones() -> None:
    items = [item(f"s{n}", 10) for n in range(16)] + [item("l1", 2000), item("l2", 1900)]
    batches = plan(items, max_batch_tokens=1_000_000, max_batch_size=64, step_cost=16)
    assert sorted(sorted(i.key for i in b.items) for b in batches) == [
        ["l1", "l2"],
        [f"s{n}" for n in sorted(range(16), key=str)],
    ]


def test_a_high_step_cost_packs_everything_that_fits() -> None:
    items = [item(f"s{n}", 10) for n in range(16)] + [item("l1", 500)]
    (batch,) = plan(items, max_batch_tokens=1_000_000, max_batch_size=64, step_cost=100_000)
    assert batch.rows == 17


def test_plan_work_is_no_worse_than_greedy_packing() -> None:
    items = [item(f"k{n}", (n * 37) % 211 + 5, new=32) for n in range(200)]
    planned = plan(items, max_batch_tokens=20_000, max_batch_size=32, step_cost=16)
    greedy = [sorted(items, key=lambda i: i.prompt_tokens)[n : n + 32] for n in range(0, 200, 32)]

    def work(batches: list[list[PlanItem]]) -> int:
        return sum(estimated_work(len(b), max(i.prompt_tokens for i in b), 32, 16) for b in batches)

    assert work([list(b.items) for b in planned]) < work(greedy)
