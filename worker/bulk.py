"""``genq run``: a JSONL file of prompts through the engine, with no services.

Finished lines are appended to a journal beside the output as their batch completes, so an
interrupted run resumes where it stopped; the output is written in input order at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from genq.batchlines import Line, parse_line, render
from genq.errors import Conflict
from worker.engine import Engine
from worker.types import BatchReport, GenRequest


@dataclass
class RunSummary:
    lines: int = 0
    resumed: int = 0
    ok: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    real_prompt_tokens: int = 0
    padded_prompt_tokens: int = 0
    elapsed: float = 0.0
    batches: list[BatchReport] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.elapsed if self.elapsed else 0.0

    @property
    def padding_efficiency(self) -> float:
        return (
            self.real_prompt_tokens / self.padded_prompt_tokens
            if self.padded_prompt_tokens
            else 1.0
        )

    def text(self) -> str:
        return (
            f"requests: {self.ok} ok, {self.failed} failed ({self.resumed} resumed from an "
            f"earlier run) | tokens: {self.prompt_tokens} prompt, {self.completion_tokens} "
            f"completion | elapsed {self.elapsed:.1f} s | {self.tokens_per_second:.1f} "
            f"completion tokens/s | padding efficiency {self.padding_efficiency:.1%}"
        )


def journal_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".partial")


def run_file(
    in_path: Path,
    out_path: Path,
    *,
    engine: Engine,
    model: str,
    progress: bool = True,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> RunSummary:
    lines = [parse_line(text, i) for i, text in enumerate(_input_lines(in_path))]
    by_index = {line.index: line for line in lines}
    journal = journal_path(out_path)
    done = _load_done(out_path, journal, lines)
    summary = RunSummary(lines=len(lines), resumed=len(done))
    todo = [line for line in lines if line.index not in done]
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="req", disable=not progress, file=sys.stderr)
    with journal.open("a", encoding="utf-8") as sink:
        _journal(
            sink,
            done,
            summary,
            [
                (line, render(line, model=model, error=str(line.error)))
                for line in todo
                if line.error is not None
            ],
        )
        requests = [
            GenRequest(str(line.index), line.params, line.prompt, line.messages)
            for line in todo
            if line.error is None and line.params is not None
        ]
        for report in engine.run(requests):
            rendered = []
            for result in report.results:
                line = by_index[int(result.key)]
                choices = [c.__dict__ for c in result.choices]
                rendered.append(
                    (
                        line,
                        render(
                            line,
                            model=model,
                            choices=choices,
                            prompt_tokens=result.prompt_tokens,
                            error=result.error,
                        ),
                    )
                )
            _journal(sink, done, summary, rendered)
            summary.batches.append(report)
            summary.real_prompt_tokens += round(
                report.prompt_efficiency * report.rows * report.padded_length
            )
            summary.padded_prompt_tokens += report.rows * report.padded_length
            summary.elapsed = time.perf_counter() - started
            bar.update(len(report.results))
            bar.set_postfix_str(f"{summary.tokens_per_second:.1f} tok/s")
            if on_batch:
                on_batch(report)
    bar.close()
    summary.elapsed = time.perf_counter() - started
    _write_output(out_path, [done[line.index] for line in lines])
    journal.unlink()
    return summary


def _input_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as source:
        for text in source:
            if text.strip():
                yield text


def _journal(
    sink: Any,
    done: dict[int, dict[str, Any]],
    summary: RunSummary,
    rendered: list[tuple[Line, dict[str, Any]]],
) -> None:
    for line, out in rendered:
        done[line.index] = out
        sink.write(json.dumps({"index": line.index, "line": out}) + "\n")
        failed = (
            out.get("error") is not None
            or (out.get("response") or {}).get("status_code", 200) != 200
        )
        summary.failed += failed
        summary.ok += not failed
        usage = out.get("usage") or ((out.get("response") or {}).get("body") or {}).get("usage")
        if usage:
            summary.prompt_tokens += usage["prompt_tokens"]
            summary.completion_tokens += usage["completion_tokens"]
    sink.flush()
    os.fsync(sink.fileno())


def _load_done(out_path: Path, journal: Path, lines: list[Line]) -> dict[int, dict[str, Any]]:
    """Lines finished by an earlier run with this output: a complete output file, or the
    journal of an interrupted one. Refuses an output that belongs to another input."""
    done: dict[int, dict[str, Any]] = {}
    if out_path.exists() and not journal.exists():
        for index, text in enumerate(_input_lines(out_path)):
            done[index] = json.loads(text)
    elif journal.exists():
        for text in _input_lines(journal):
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
            done[int(entry["index"])] = entry["line"]
    for index, out in done.items():
        if index >= len(lines) or out.get("custom_id") != lines[index].custom_id:
            raise Conflict(
                f"{out_path} holds results of a different input (line {index + 1}); "
                "choose another output path or delete it"
            )
    return done


def _write_output(out_path: Path, outputs: list[dict[str, Any]]) -> None:
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as sink:
        for out in outputs:
            sink.write(json.dumps(out, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
