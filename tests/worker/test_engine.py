from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from genq.params import parse_params
from worker.engine import Engine
from worker.models import LoadedModel
from worker.types import GenRequest

from .conftest import request, run_all, varied_prompts

EngineFactory = Callable[..., Engine]


def alone(engine: Engine, req: GenRequest) -> Any:
    return run_all(engine, [req])[req.key]


@pytest.mark.parametrize("model", ["tiny", "smol"])
def test_greedy_batched_equals_alone(
    model: str, request: pytest.FixtureRequest, make_engine: EngineFactory
) -> None:
    loaded: LoadedModel = request.getfixturevalue(model)
    engine = make_engine(loaded, step_cost=100_000)  # big batches: lots of padding
    new = 24 if model == "tiny" else 12
    reqs = [
        GenRequest(str(i), parse_params({"max_new_tokens": new}), p)
        for i, p in enumerate(varied_prompts(32))
    ]
    reports = list(engine.run(reqs))
    assert max(r.rows for r in reports) >= 16  # really batched, with real padding
    assert min(r.prompt_efficiency for r in reports) < 1.0
    batched = {r.key: r for rep in reports for r in rep.results}
    for req in reqs:
        single = alone(engine, req)
        assert single.ok and batched[req.key].ok
        assert batched[req.key].choices == single.choices, req.prompt


def test_seeded_sampling_ignores_batch_company(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    engine = make_engine(tiny)
    params = {
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 50,
        "top_p": 0.95,
        "max_new_tokens": 20,
    }
    prompts = varied_prompts(12)
    target = request("t", prompts[3], seed=1234, **params)
    solo = alone(engine, target)
    mix_a = [request(f"a{i}", p, seed=i, **params) for i, p in enumerate(prompts)] + [target]
    mix_b = [target] + [request(f"b{i}", p, **params) for i, p in enumerate(reversed(prompts))]
    in_a = run_all(engine, mix_a)["t"]
    in_b = run_all(engine, mix_b)["t"]
    assert solo.choices == in_a.choices == in_b.choices
    other_seed = alone(engine, request("t", prompts[3], seed=1235, **params))
    assert other_seed.choices != solo.choices  # the seed is really used


def test_n_return_sequences(tiny: LoadedModel, make_engine: EngineFactory) -> None:
    engine = make_engine(tiny)
    req = request(
        "n", "Once upon a time", do_sample=True, seed=5, num_return_sequences=3, max_new_tokens=12
    )
    first = alone(engine, req)
    assert len(first.choices) == 3
    assert len({c.text for c in first.choices}) == 3
    for choice in first.choices:
        assert (choice.finish_reason == "length") == (choice.completion_tokens == 12)
    assert alone(engine, req).choices == first.choices


def test_stop_strings_cut_the_text(tiny: LoadedModel, make_engine: EngineFactory) -> None:
    engine = make_engine(tiny)
    prompt = varied_prompts(5)[2]
    full = alone(engine, request("f", prompt, max_new_tokens=40)).choices[0]
    stop = full.text[10:14]
    assert stop and stop in full.text
    cut = run_all(
        engine,
        [
            request("s", prompt, max_new_tokens=40, stop=[stop, "never-seen"]),
            request("o", varied_prompts(5)[4], max_new_tokens=40),
        ],
    )
    choice = cut["s"].choices[0]
    assert choice.text == full.text[: full.text.find(stop)]
    assert choice.finish_reason == "stop"
    assert choice.completion_tokens < full.completion_tokens
    other = alone(engine, request("o", varied_prompts(5)[4], max_new_tokens=40))
    assert cut["o"].choices == other.choices  # a neighbour's stop leaves this row alone


def test_finish_reason_stop_at_eos(smol: LoadedModel, make_engine: EngineFactory) -> None:
    engine = make_engine(smol)
    question = ({"role": "user", "content": "What is the capital of France?"},)
    chat = GenRequest("c", parse_params({"max_new_tokens": 40}), messages=question)
    result = alone(engine, chat).choices[0]
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    assert result.completion_tokens < 40
    assert "<|im_end|>" not in result.text


def test_repetition_penalty_ignores_padding(tiny: LoadedModel, make_engine: EngineFactory) -> None:
    engine = make_engine(tiny)
    reqs = [
        request(str(i), p, max_new_tokens=16, repetition_penalty=1.5)
        for i, p in enumerate(varied_prompts(8))
    ]
    batched = run_all(engine, reqs)
    plain = run_all(engine, [request("0", varied_prompts(8)[0], max_new_tokens=16)])
    assert batched["0"].choices != plain["0"].choices  # the penalty changes the output
    for req in reqs:
        assert batched[req.key].choices == alone(engine, req).choices


def test_over_length_prompt_fails_alone(tiny: LoadedModel, make_engine: EngineFactory) -> None:
    engine = make_engine(tiny)
    huge = " ".join(["river"] * (tiny.context_length + 10))
    results = run_all(
        engine,
        [
            request("big", huge, max_new_tokens=8),
            request("ok", "Once upon a time", max_new_tokens=8),
            request("chat", None, max_new_tokens=8),
        ],
    )
    assert results["big"].error is not None
    assert "prompt" in results["big"].error and "context" in results["big"].error
    assert results["ok"].ok and results["ok"].choices[0].completion_tokens == 8
    assert results["chat"].error == "prompt: a prompt or messages is required"


def test_chat_without_template_is_a_clear_error(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    engine = make_engine(tiny)
    req = GenRequest("c", parse_params({}), messages=({"role": "user", "content": "hi"},))
    result = alone(engine, req)
    assert result.error is not None and "no chat template" in result.error


def test_out_of_memory_halves_the_batch(
    tiny: LoadedModel, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(tiny, step_cost=100_000)  # one batch of 8
    reqs = [request(str(i), p, max_new_tokens=10) for i, p in enumerate(varied_prompts(8))]
    expected = run_all(engine, reqs)
    real_generate = tiny.model.generate
    sizes: list[int] = []

    def generate(**kwargs: Any) -> Any:
        rows = kwargs["input_ids"].shape[0]
        sizes.append(rows)
        if rows > 2:
            raise MemoryError("injected")
        return real_generate(**kwargs)

    monkeypatch.setattr(tiny.model, "generate", generate)
    reports = list(engine.run(reqs))
    results = {r.key: r for rep in reports for r in rep.results}
    assert sizes[:3] == [8, 4, 2]
    assert all(r.ok for r in results.values())
    assert {k: r.choices for k, r in results.items()} == {k: r.choices for k, r in expected.items()}


def test_a_request_that_fails_alone_gets_an_error(
    tiny: LoadedModel, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(tiny)
    reqs = [request(str(i), p, max_new_tokens=6) for i, p in enumerate(varied_prompts(6))]
    poison = engine.encode(reqs[2])
    real_generate = tiny.model.generate

    def generate(**kwargs: Any) -> Any:
        rows = kwargs["input_ids"].tolist()  # prompt, then the tokens generated so far
        n = len(poison)
        if any(row[i : i + n] == poison for row in rows for i in range(len(row) - n + 1)):
            raise MemoryError("injected")
        return real_generate(**kwargs)

    monkeypatch.setattr(tiny.model, "generate", generate)
    results = run_all(engine, reqs)
    assert results["2"].error == "out of memory: injected"
    assert sorted(k for k, r in results.items() if r.ok) == ["0", "1", "3", "4", "5"]


def test_finished_rows_leave_the_batch(
    tiny: LoadedModel, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    reqs = [request(str(i), p, max_new_tokens=40) for i, p in enumerate(varied_prompts(24))]
    whole = make_engine(tiny, prune_every=40, step_cost=100_000)  # one batch of 24
    expected = run_all(whole, reqs)
    assert any(r.choices[0].finish_reason == "stop" for r in expected.values())
    real_generate = tiny.model.generate
    sizes: list[int] = []

    def generate(**kwargs: Any) -> Any:
        sizes.append(kwargs["input_ids"].shape[0])
        return real_generate(**kwargs)

    monkeypatch.setattr(tiny.model, "generate", generate)
    pruned = run_all(make_engine(tiny, prune_every=4, step_cost=100_000), reqs)
    # Rows that stopped early were dropped (some already at the first token, picked from the
    # prefill before any generate call).
    assert sizes[-1] < sizes[0] <= 24
    assert sizes == sorted(sizes, reverse=True)
    assert {k: r.choices for k, r in pruned.items()} == {k: r.choices for k, r in expected.items()}
