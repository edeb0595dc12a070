from __future__ import annotations

from worker.planner import chunk_size, layout, shared_prefixes, should_admit


def test_layout_fits_the_longest_prompt_and_the_live_rows_within_the_budget() -> None:
    shape = layout(
        live_lengths=[], longest_prompt=100, max_new_tokens=50, max_rows=64, max_tokens=10_000
    )
    assert (shape.column, shape.capacity) == (100, 200)
    assert shape.slots == 10_000 // 201  # the token budget, not the row cap, binds here
    roomy = layout(
        live_lengths=[150, 20], longest_prompt=100, max_new_tokens=50, max_rows=8, max_tokens=10**6
    )
    assert (roomy.column, roomy.capacity, roomy.slots) == (150, 250, 8)
    tight = layout(
        live_lengths=[10] * 5, longest_prompt=10, max_new_tokens=10, max_rows=64, max_tokens=60
    )
    assert tight.slots == 6  # never fewer slots than live rows and the next one
    sequences = layout(
        live_lengths=[], longest_prompt=10, max_new_tokens=10, max_rows=2, max_tokens=60, min_rows=4
    )
    assert sequences.slots == 4  # a request's return sequences join together


def test_a_running_batch_admits_once_enough_slots_are_free() -> None:
    assert should_admit(free=8, slots=8, live=0)
    assert should_admit(free=1, slots=8, live=7)  # 1/8 free
    assert not should_admit(free=1, slots=64, live=63)
    assert should_admit(free=8, slots=64, live=56)
    assert not should_admit(free=0, slots=8, live=8)


def test_a_prefill_takes_what_the_free_slots_and_the_token_budget_allow() -> None:
    assert chunk_size([10, 10, 10, 10], free=3, max_tokens=1000) == 3
    assert chunk_size([10, 20, 30, 40], free=10, max_tokens=60) == 3
    assert chunk_size([500, 10], free=10, max_tokens=100) == 1  # a long prompt goes alone
    assert chunk_size([10], free=0, max_tokens=100) == 0
    assert chunk_size([], free=4, max_tokens=100) == 0


def test_shared_prefixes_are_whole_blocks_that_two_prompts_or_a_kept_one_share() -> None:
    template = list(range(100))
    prompts = [template + [1000 + i, 7] for i in range(3)] + [list(range(500, 600))]
    lengths = shared_prefixes(prompts, block=16, min_tokens=32)
    assert lengths == [96, 96, 96, 0]  # 6 whole blocks of the 100 shared tokens; 0 for the odd one
    assert shared_prefixes([template + [5]], block=16, min_tokens=32) == [0]  # alone: nothing
    kept = frozenset({tuple(template[:64])})
    assert shared_prefixes([template + [5]], known=kept, block=16, min_tokens=32) == [64]
    # At least one token is left to prefill; a short shared part is not worth it.
    assert shared_prefixes([template[:32]] * 2, block=16, min_tokens=16) == [16, 16]
    assert shared_prefixes([template[:40]] * 2, block=16, min_tokens=64) == [0, 0]
