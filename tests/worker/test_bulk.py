from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from genq.errors import Conflict
from worker.bulk import journal_path, run_file
from worker.engine import Engine
from worker.models import LoadedModel
from worker.types import BatchReport

from .conftest import varied_prompts

EngineFactory = Callable[..., Engine]


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def native_lines(count: int) -> list[object]:
    return [
        {"custom_id": f"c{i}", "prompt": p, "params": {"max_new_tokens": 6}}
        for i, p in enumerate(varied_prompts(count))
    ]


def test_native_lines_in_input_order_with_errors(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    lines = native_lines(5) + [
        "{not json",
        {"custom_id": "bad", "prompt": "x", "params": {"top_p": 2, "do_sample": True}},
        {"custom_id": "unknown", "prompt": "x", "params": {"beams": 2}},
        {"prompt": "no custom id", "params": {"max_new_tokens": 3}},
    ]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = run_file(src, out, engine=make_engine(tiny), model="tiny-gpt2", progress=False)
    got = read_lines(out)
    assert [o["custom_id"] for o in got] == [
        "c0",
        "c1",
        "c2",
        "c3",
        "c4",
        "line-6",
        "bad",
        "unknown",
        "line-9",
    ]
    for o in got[:5] + got[8:]:
        assert o["error"] is None and o["text"] == o["choices"][0]["text"]
        limit = 3 if o["custom_id"] == "line-9" else 6
        at_limit = o["usage"]["completion_tokens"] == limit
        assert (o["finish_reason"] == "length") == at_limit
        assert o["usage"]["completion_tokens"] <= limit
    assert "invalid JSON" in got[5]["error"]
    assert got[6]["error"].startswith("params.top_p:")
    assert got[7]["error"] == "params.beams: unknown parameter"
    assert (summary.ok, summary.failed) == (6, 3)
    assert summary.completion_tokens == sum(
        o["usage"]["completion_tokens"] for o in got[:5] + got[8:]
    )
    assert not journal_path(out).exists()


def test_openai_lines(tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory) -> None:
    lines = [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "x", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0},
        },
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"prompt": "The river", "max_tokens": 4, "temperature": 0.7, "seed": 1, "n": 2},
        },
        {
            "custom_id": "c",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        },
        {"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},
        {
            "custom_id": "e",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"prompt": "x", "logprobs": 2},
        },
    ]
    out = tmp_path / "out.jsonl"
    run_file(
        write_lines(tmp_path / "in.jsonl", lines),
        out,
        engine=make_engine(tiny),
        model="tiny-gpt2",
        progress=False,
    )
    a, b, c, d, e = read_lines(out)
    assert a["custom_id"] == "a" and a["error"] is None
    assert a["response"]["status_code"] == 200
    body = a["response"]["body"]
    assert body["object"] == "text_completion" and body["model"] == "tiny-gpt2"
    assert (
        body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] == "length"
    )
    assert [ch["index"] for ch in b["response"]["body"]["choices"]] == [0, 1]
    assert c["response"]["status_code"] == 400
    assert "no chat template" in c["response"]["body"]["error"]["message"]
    assert d["response"]["body"]["error"]["param"] == "url"
    assert e["response"]["body"]["error"]["param"] == "body.logprobs"


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_redoing_lines(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    src = write_lines(tmp_path / "in.jsonl", native_lines(12))
    out = tmp_path / "out.jsonl"
    first: list[BatchReport] = []

    def stop_after_one(report: BatchReport) -> None:
        first.append(report)
        raise Interrupt

    engine = make_engine(tiny, max_batch_size=4)
    with pytest.raises(Interrupt):
        run_file(
            src, out, engine=engine, model="tiny-gpt2", progress=False, on_batch=stop_after_one
        )
    assert not out.exists() and journal_path(out).exists()
    done_first = set(first[0].keys)
    second: list[BatchReport] = []
    summary = run_file(
        src, out, engine=engine, model="tiny-gpt2", progress=False, on_batch=second.append
    )
    redone = {key for report in second for key in report.keys}
    assert summary.resumed == len(done_first) == 4
    assert redone.isdisjoint(done_first) and len(redone) == 8
    fresh = tmp_path / "fresh.jsonl"
    run_file(src, fresh, engine=engine, model="tiny-gpt2", progress=False)
    assert read_lines(out) == read_lines(fresh)
    again: list[BatchReport] = []
    run_file(src, out, engine=engine, model="tiny-gpt2", progress=False, on_batch=again.append)
    assert again == []  # a finished output is not redone


def test_output_of_another_input_is_refused(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory
) -> None:
    out = write_lines(tmp_path / "out.jsonl", [{"custom_id": "zzz", "text": "x"}])
    src = write_lines(tmp_path / "in.jsonl", native_lines(2))
    with pytest.raises(Conflict, match="different input"):
        run_file(src, out, engine=make_engine(tiny), model="tiny-gpt2", progress=False)


def test_genq_run_command_end_to_end(tmp_path: Path, tiny_cache: Path, tiny: LoadedModel) -> None:
    src = write_lines(tmp_path / "in.jsonl", native_lines(3))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "GENQ_MODEL_CACHE": str(tiny_cache)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genq",
            "run",
            str(src),
            "-o",
            str(out),
            "--model",
            "tiny-gpt2",
            "--max-batch-size",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "requests: 3 ok, 0 failed" in proc.stderr
    assert "padding efficiency" in proc.stderr
    assert [o["custom_id"] for o in read_lines(out)] == ["c0", "c1", "c2"]
