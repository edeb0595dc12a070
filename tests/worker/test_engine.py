from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from genq.params import parse_params
from worker import linear
from worker.decode import Row
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
    engine = make_engine(loaded)
    new = 24 if model == "tiny" else 12
    reqs = [
        GenRequest(str(i), parse_params({"max_new_tokens": new}), p)
        for i, p in enumerate(varied_prompts(32))
    ]
    reports = list(engine.run(reqs))
    assert max(r.rows for r in reports) >= 16  # really batched, prompts of varied length
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


def test_greedy_return_sequences_are_one_text_decoded_once(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    engine = make_engine(tiny)
    three = request("g", "Once upon a time", num_return_sequences=3, max_new_tokens=8)
    one = request("g1", "Once upon a time", max_new_tokens=8)
    reports = list(engine.run([three]))
    assert [r.rows for r in reports] == [1]  # one row decoded, not three
    choices = reports[0].results[0].choices
    assert len(choices) == 3 and len(set(choices)) == 1
    assert choices[0] == alone(engine, one).choices[0]


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


Forward = Callable[..., torch.Tensor]


def spy(engine: Engine, wrap: Callable[[Forward, Sequence[Row], tuple[Any, ...]], Any]) -> None:
    """Route the engine's model calls through ``wrap(real, rows, args)``."""
    real = engine.forward

    def forward(rows: Sequence[Row], *args: Any) -> torch.Tensor:
        return wrap(real, rows, args)

    engine.forward = forward  # type: ignore[method-assign]


def test_out_of_memory_halves_the_batch(tiny: LoadedModel, make_engine: EngineFactory) -> None:
    engine = make_engine(tiny)
    reqs = [request(str(i), p, max_new_tokens=10) for i, p in enumerate(varied_prompts(8))]
    expected = run_all(engine, reqs)
    sizes: list[int] = []

    def wrap(real: Forward, rows: Sequence[Row], args: tuple[Any, ...]) -> torch.Tensor:
        sizes.append(len(rows))
        if len(rows) > 2:
            raise MemoryError("injected")
        return real(rows, *args)

    spy(engine, wrap)
    results = run_all(engine, reqs)
    assert sizes[:3] == [8, 4, 2]  # the prefill halves
    # ...and so does the decode batch, each once: out of memory is not tried again and again
    assert sorted(n for n in sizes if n > 2) == [4, 4, 8, 8]
    assert all(r.ok for r in results.values())
    assert {k: r.choices for k, r in results.items()} == {k: r.choices for k, r in expected.items()}


def test_a_request_that_fails_alone_gets_an_error(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    engine = make_engine(tiny)
    reqs = [request(str(i), p, max_new_tokens=6) for i, p in enumerate(varied_prompts(6))]
    expected = run_all(engine, reqs)

    def wrap(real: Forward, rows: Sequence[Row], args: tuple[Any, ...]) -> torch.Tensor:
        if any(row.key == "2" for row in rows):
            raise MemoryError("injected")
        return real(rows, *args)

    spy(engine, wrap)
    results = run_all(engine, reqs)
    assert results["2"].error == "out of memory: injected"
    assert sorted(k for k, r in results.items() if r.ok) == ["0", "1", "3", "4", "5"]
    assert all(results[k].choices == expected[k].choices for k in "01345")


def test_a_poison_request_found_the_batch_grows_back(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    engine = make_engine(tiny, prefill_tokens=100_000)  # every prompt fits one prefill
    reqs = [request(str(i), p, max_new_tokens=12) for i, p in enumerate(varied_prompts(16))]
    prefills: list[int] = []

    def wrap(real: Forward, rows: Sequence[Row], args: tuple[Any, ...]) -> torch.Tensor:
        if args[0].shape[0] == 1 and args[0].shape[1] > 1:
            prefills.append(len(rows))
        if any(row.key == "0" for row in rows):
            raise ValueError("poison")
        return real(rows, *args)

    spy(engine, wrap)
    results = run_all(engine, reqs)
    assert results["0"].error == "generation failed: ValueError: poison"
    assert sum(r.ok for r in results.values()) == 15
    # Halved down to the one that fails alone, then the other 15 at once: not a lack of
    # memory, so no reason to stay small.
    assert prefills == [16, 8, 4, 2, 1, 15]


def test_finished_rows_leave_the_batch(tiny: LoadedModel, make_engine: EngineFactory) -> None:
    reqs = [request(str(i), p, max_new_tokens=40) for i, p in enumerate(varied_prompts(24))]
    engine = make_engine(tiny)
    sizes: list[int] = []

    def wrap(real: Forward, rows: Sequence[Row], args: tuple[Any, ...]) -> torch.Tensor:
        if args[0].shape[1] == 1:  # a decode step: one token per row
            sizes.append(len(rows))
        return real(rows, *args)

    spy(engine, wrap)
    results = run_all(engine, reqs)
    stopped = sum(r.choices[0].finish_reason == "stop" for r in results.values())
    assert 0 < stopped < 24
    # Each step runs only the rows still generating.
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] <= 24
    assert sum(sizes) == sum(r.completion_tokens for r in results.values()) - 24
    for req in reqs[:6]:
        assert results[req.key].choices == alone(engine, req).choices


@pytest.mark.parametrize("sampled", [False, True])
def test_rows_admitted_into_a_running_batch_give_the_same_text(
    tiny: LoadedModel, make_engine: EngineFactory, sampled: bool
) -> None:
    params: dict[str, Any] = {"max_new_tokens": 30}
    if sampled:
        params |= {"do_sample": True, "temperature": 0.9, "top_k": 40, "top_p": 0.9}
    reqs = [
        request(str(i), p, seed=i if sampled else None, **params)
        for i, p in enumerate(varied_prompts(20))
    ]
    engine = make_engine(tiny, max_batch_size=6)
    events: list[tuple[str, int]] = []

    def wrap(real: Forward, rows: Sequence[Row], args: tuple[Any, ...]) -> torch.Tensor:
        events.append(("step" if args[0].shape[1] == 1 else "prefill", len(rows)))
        return real(rows, *args)

    spy(engine, wrap)
    results = run_all(engine, reqs)
    steps = [i for i, (kind, _) in enumerate(events) if kind == "step"]
    late = [i for i, (kind, _) in enumerate(events) if kind == "prefill" and i > steps[0]]
    assert late, "rows joined the batch while it ran"
    assert max(n for kind, n in events if kind == "step") == 6
    solo = make_engine(tiny, max_batch_size=1)
    for req in reqs:
        assert results[req.key].choices == alone(solo, req).choices, req.key


def test_requests_added_while_the_run_goes_join_its_batch_with_the_same_texts(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    reqs = [request(str(i), p, max_new_tokens=20) for i, p in enumerate(varied_prompts(18))]
    other = request("other", "A different parameter set.", max_new_tokens=9)
    bad = request("bad", "x " * 5000, max_new_tokens=5)  # over the context: refused
    engine = make_engine(tiny, max_batch_size=6)
    run = engine.run(reqs[:6])
    windows = [reqs[6:12], reqs[12:] + [other, bad]]
    asked: list[int] = []

    def refill() -> None:  # as a worker does with the windows it claimed ahead
        asked.append(len(asked))
        if windows:
            run.extend(windows.pop(0))

    run.refill = refill
    events: list[tuple[str, int]] = []

    def wrap(real: Forward, rows: Sequence[Row], args: tuple[Any, ...]) -> torch.Tensor:
        events.append(("step" if args[0].shape[1] == 1 else "prefill", len(rows)))
        return real(rows, *args)

    spy(engine, wrap)
    reports = list(run)
    results = {r.key: r for report in reports for r in report.results}
    assert not windows and sorted(results) == sorted([r.key for r in reqs] + ["other", "bad"])
    assert results["bad"].error is not None and "context" in results["bad"].error
    # One batch of 6 rows ran the three windows (it never drained between them), and the other
    # parameter set ran after it, in a report of its own.
    steps = [n for kind, n in events if kind == "step"]
    assert steps.count(6) >= 20
    (last,) = [report for report in reports if "other" in report.keys]
    assert last.keys == ("other",) and reports[-1] is last
    solo = make_engine(tiny, max_batch_size=1)
    for req in reqs + [other]:
        assert results[req.key].choices == alone(solo, req).choices, req.key


TEMPLATE = "Answer in one short sentence. Here are worked examples.\n" + "".join(
    f"Question: what is {n} plus {n}? Answer: {2 * n}.\n" for n in range(12)
)


@pytest.mark.parametrize("model", ["tiny", "smol"])
def test_a_shared_prefix_is_prefilled_once_and_changes_nothing(
    model: str, request: pytest.FixtureRequest, make_engine: EngineFactory
) -> None:
    loaded: LoadedModel = request.getfixturevalue(model)
    items = [f"Question: what is {n} times {n + 1}? Answer:" for n in range(10)]
    reqs = [
        GenRequest(str(i), parse_params({"max_new_tokens": 10}), TEMPLATE + item)
        for i, item in enumerate(items)
    ]
    reuse = make_engine(loaded)
    prefilled: list[int] = []
    real = reuse.prefill_prefix

    def prefill_prefix(tokens: Sequence[int], *args: Any) -> Any:
        prefilled.append(len(tokens))
        return real(tokens, *args)

    reuse.prefill_prefix = prefill_prefix  # type: ignore[method-assign]
    shared = run_all(reuse, reqs)
    assert len(prefilled) == 1 and prefilled[0] >= 64  # one prefix, for all ten
    plain = run_all(make_engine(loaded, prefix_cache_tokens=0), reqs)
    assert {k: r.choices for k, r in shared.items()} == {k: r.choices for k, r in plain.items()}
    # A later window finds the prefix kept and prefills only the item.
    again = run_all(reuse, reqs[:1])
    assert len(prefilled) == 1 and again["0"].choices == plain["0"].choices


def test_rows_that_sample_and_penalise_differently_share_a_batch(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    prompts = varied_prompts(6)
    reqs = [
        request("a", prompts[0], do_sample=True, seed=1, temperature=0.7, max_new_tokens=16),
        request("b", prompts[1], do_sample=True, seed=2, top_k=8, max_new_tokens=16),
        request("c", prompts[2], do_sample=True, seed=3, top_p=0.8, max_new_tokens=16),
        request("d", prompts[3], do_sample=True, seed=4, repetition_penalty=1.3, max_new_tokens=16),
        request("e", prompts[4], do_sample=True, seed=5, min_new_tokens=12, max_new_tokens=16),
        request("f", prompts[5], do_sample=True, seed=6, no_repeat_ngram_size=2, max_new_tokens=16),
    ]
    assert len({r.params.group_key() for r in reqs}) == 1
    reports = list(make_engine(tiny).run(reqs))
    assert max(r.rows for r in reports) == 6  # one batch
    together = {r.key: r for rep in reports for r in rep.results}
    for req in reqs:
        assert together[req.key].choices == alone(make_engine(tiny), req).choices, req.key
    assert together["e"].choices[0].completion_tokens >= 12


def test_more_return_sequences_than_the_row_cap_still_run_together(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    req = request("n", "Once upon a time", do_sample=True, seed=9, num_return_sequences=4)
    other = request("o", "The river", max_new_tokens=8)
    results = run_all(make_engine(tiny, max_batch_size=2), [req, other])
    assert len(results["n"].choices) == 4 and results["o"].ok
    assert results["n"].choices == alone(make_engine(tiny), req).choices


def test_packed_linear_layers_keep_greedy_texts_and_batch_invariance(
    smol: LoadedModel, make_engine: EngineFactory
) -> None:
    if not linear.available():
        pytest.skip("torch has no oneDNN here")
    engine = make_engine(smol)  # packs the model's linear layers on the CPU
    packed = sum(isinstance(m, linear.PackedLinear) for m in smol.model.modules())
    if smol.device.type == "cpu":
        assert packed >= 7 * smol.model.config.num_hidden_layers
    reqs = [request(str(i), p, max_new_tokens=10) for i, p in enumerate(varied_prompts(12))]
    batched = run_all(engine, reqs)
    for req in reqs[:4]:
        enc = smol.tokenizer(req.prompt, return_tensors="pt").to(smol.device)
        with torch.inference_mode():  # transformers' own generate, on the packed layers too
            out = smol.model.generate(
                **enc, max_new_tokens=10, do_sample=False, pad_token_id=smol.pad_token_id
            )
        text = smol.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert batched[req.key].choices[0].text == text
        assert batched[req.key].choices == alone(engine, req).choices


def test_cpu_decode_attention_keeps_greedy_texts(
    smol: LoadedModel, make_engine: EngineFactory
) -> None:
    fast = make_engine(smol)
    if not fast.own_columns:
        pytest.skip("decode attention runs through SDPA on this device and dtype")
    reqs = [request(str(i), p, max_new_tokens=12) for i, p in enumerate(varied_prompts(10))]
    with_kernel = run_all(fast, reqs)
    with_sdpa = run_all(make_engine(smol, own_columns=False), reqs)
    assert {k: r.choices for k, r in with_kernel.items()} == {
        k: r.choices for k, r in with_sdpa.items()
    }


def test_rows_that_end_at_admission_are_reported_as_they_end(
    tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    # One new token: every row ends as it is admitted, and no decode step ever runs. Reports
    # still come every half batch of results, so a worker writes them (and renews its
    # leases) as the run goes, not once at its end.
    engine = make_engine(tiny, max_batch_size=8)
    reqs = [request(str(i), f"prompt {i}", max_new_tokens=1) for i in range(64)]
    reports = list(engine.run(reqs))
    assert sum(len(r.results) for r in reports) == 64
    assert len(reports) >= 64 // 8
