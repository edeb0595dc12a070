"""Engine benchmark: one prompt at a time vs transformers' pipeline vs the genq engine.

Same prompts, same greedy parameters, one process, measured side by side:

    python bench/engine.py [--count 128] [--max-new-tokens 64] [--model smollm2-135m]

Prints completion tokens/s for each way, the ratios, and whether every output text is
identical across the three.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, pipeline

from genq.params import parse_params
from genq.settings import get_settings
from worker.engine import Engine
from worker.models import load_model, resolve_model_path
from worker.types import GenRequest

PROMPTS = Path(__file__).with_name("prompts.jsonl")


def one_at_a_time(loaded, prompts: list[str], max_new_tokens: int) -> list[str]:  # type: ignore[no-untyped-def]
    texts = []
    for prompt in prompts:
        enc = loaded.tokenizer(prompt, return_tensors="pt").to(loaded.device)
        with torch.inference_mode():
            out = loaded.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=loaded.pad_token_id,
            )
        new = out[0, enc["input_ids"].shape[1] :]
        texts.append(loaded.tokenizer.decode(new, skip_special_tokens=True))
    return texts


def with_pipeline(loaded, path: Path, prompts: list[str], max_new_tokens: int) -> list[str]:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    pipe = pipeline(
        "text-generation",
        model=loaded.model,
        tokenizer=tokenizer,
        device=loaded.device,
        batch_size=32,
    )
    outputs = pipe(
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        return_full_text=False,
        pad_token_id=loaded.pad_token_id,
    )
    return [o[0]["generated_text"] for o in outputs]


def with_engine(engine: Engine, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int]:
    params = parse_params({"max_new_tokens": max_new_tokens})
    requests = [GenRequest(str(i), params, p) for i, p in enumerate(prompts)]
    results = {r.key: r for report in engine.run(requests) for r in report.results}
    texts = [results[str(i)].choices[0].text for i in range(len(prompts))]
    return texts, sum(r.completion_tokens for r in results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    settings = get_settings()
    loaded = load_model(args.model, settings)
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()]
    prompts = prompts[: args.count]
    engine = Engine.from_settings(loaded, settings)
    with_engine(engine, prompts[:4], 4)  # warm-up: first calls pay one-off setup costs

    timings: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    started = time.perf_counter()
    texts["genq engine"], tokens = with_engine(engine, prompts, args.max_new_tokens)
    timings["genq engine"] = time.perf_counter() - started
    started = time.perf_counter()
    texts["pipeline bs=32"] = with_pipeline(
        loaded, resolve_model_path(args.model, settings), prompts, args.max_new_tokens
    )
    timings["pipeline bs=32"] = time.perf_counter() - started
    started = time.perf_counter()
    texts["one at a time"] = one_at_a_time(loaded, prompts, args.max_new_tokens)
    timings["one at a time"] = time.perf_counter() - started

    print(
        f"model {args.model}, {len(prompts)} prompts, greedy, max_new_tokens="
        f"{args.max_new_tokens}, {torch.get_num_threads()} threads, device {loaded.device}"
    )
    print(f"completion tokens (up to EOS, as genq counts them): {tokens}")
    print(f"{'way':<16}{'seconds':>10}{'tokens/s':>12}{'genq x':>10}")
    for way, seconds in timings.items():
        print(
            f"{way:<16}{seconds:>10.1f}{tokens / seconds:>12.1f}"
            f"{seconds / timings['genq engine']:>10.2f}"
        )
    reference = texts["genq engine"]
    for way, outs in texts.items():
        same = sum(a == b for a, b in zip(outs, reference, strict=True))
        print(f"identical to genq engine: {way:<16} {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
