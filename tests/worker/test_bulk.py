from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Row, select

from genq.errors import Conflict
from genq.settings import Settings
from genq.store import RequestStatus, find_job, make_engine, session_factory
from genq.store.tables import Request
from worker.bulk import RUN_TAG, RunSummary, read_input, run_file
from worker.engine import Engine
from worker.models import LoadedModel
from worker.types import BatchReport

from .conftest import varied_prompts

EngineFactory = Callable[..., Engine]


@pytest.fixture
def settings(tmp_path: Path, tiny_cache: Path) -> Settings:
    """The embedded database in the test's temp dir, never the user's."""
    return Settings(database_url=f"sqlite:///{tmp_path / 'genq.db'}", model_cache=tiny_cache)


def run_path(
    src: Path, out: Path, *, settings: Settings, model: str | None = "tiny-gpt2", **kwargs: Any
) -> RunSummary:
    """``genq run`` on ``src``, as the command reads it."""
    source = read_input(src, model=model, settings=settings)
    return run_file(source, out, settings=settings, progress=False, **kwargs)


def write_lines(path: Path, lines: Sequence[object]) -> Path:
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
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory, settings: Settings
) -> None:
    lines = native_lines(5) + [
        "{not json",
        {"custom_id": "bad", "prompt": "x", "params": {"top_p": 2, "do_sample": True}},
        {"custom_id": "unknown", "prompt": "x", "params": {"beams": 2}},
        {"prompt": "no custom id", "params": {"max_new_tokens": 3}},
    ]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = run_path(src, out, engine=make_engine(tiny), settings=settings)
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
    assert got[5]["error"].startswith("line 6: malformed JSON")
    assert got[6]["error"].startswith("line 7: params.top_p:")
    assert got[7]["error"] == "line 8: params.beams: unknown parameter"
    assert (summary.ok, summary.failed) == (6, 3)
    assert summary.completion_tokens == sum(
        o["usage"]["completion_tokens"] for o in got[:5] + got[8:]
    )
    # Nothing left beside the output but the database.
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith("genq.db")} == {
        "in.jsonl",
        "out.jsonl",
    }


def test_openai_lines(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory, settings: Settings
) -> None:
    lines = [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/completions",
            "body": {
                "model": "tiny-gpt2",
                "prompt": "Once upon a time",
                "max_tokens": 5,
                "temperature": 0,
            },
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
        {
            "custom_id": "f",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "smollm2-135m", "prompt": "x"},
        },
        {
            "custom_id": "g",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"prompt": "x", "max_tokens": "5"},
        },
    ]
    # A first line naming a model this machine lacks fails alone; the run takes the next.
    lines.insert(
        0,
        {
            "custom_id": "z",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "gpt-4o-mini", "prompt": "x"},
        },
    )
    out = tmp_path / "out.jsonl"
    # No --model: the run takes the model the lines name.
    run_path(
        write_lines(tmp_path / "in.jsonl", lines),
        out,
        engine=make_engine(tiny),
        model=None,
        settings=settings,
    )
    z, a, b, c, d, e, f, g = read_lines(out)
    assert z["response"]["body"]["error"]["param"] == "body.model"
    assert "unknown model 'gpt-4o-mini'" in z["response"]["body"]["error"]["message"]
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
    assert f["response"]["body"]["error"]["param"] == "body.model"
    assert "one model per job: this one runs tiny-gpt2" in f["response"]["body"]["error"]["message"]
    assert g["response"]["body"]["error"]["param"] == "body.max_tokens"


class Interrupt(Exception):
    pass


def request_rows(settings: Settings, out: Path) -> list[Row[str, RequestStatus, int]]:
    """(id, status, attempts) of the stored requests of the run writing ``out``."""
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine).begin() as session:
            job = find_job(session, tenant="default", key=RUN_TAG, value=str(out.resolve()))
            assert job is not None
            query = select(Request.id, Request.status, Request.attempts).where(
                Request.job_id == job.id
            )
            return list(session.execute(query.order_by(Request.idx)).all())
    finally:
        engine.dispose()


def test_interrupted_run_resumes_without_redoing_lines(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory, settings: Settings
) -> None:
    src = write_lines(tmp_path / "in.jsonl", native_lines(12))
    out = tmp_path / "out.jsonl"
    first: list[BatchReport] = []

    def stop_after_one(report: BatchReport) -> None:
        first.append(report)
        raise Interrupt

    engine = make_engine(tiny, max_batch_size=4)
    run = partial(run_path, engine=engine, settings=settings)
    with pytest.raises(Interrupt):
        run(src, out, on_batch=stop_after_one)
    assert not out.exists()
    done_first = set(first[0].keys)
    rows = request_rows(settings, out)
    # The interrupted run wrote its batch and gave the rest back, attempts returned.
    assert {r.id for r in rows if r.status == RequestStatus.SUCCEEDED} == done_first
    assert {(r.status, r.attempts) for r in rows if r.id not in done_first} == {
        (RequestStatus.QUEUED, 0)
    }
    second: list[BatchReport] = []
    summary = run(src, out, on_batch=second.append)
    redone = {key for report in second for key in report.keys}
    assert 0 < summary.resumed == len(done_first) < 12
    assert redone.isdisjoint(done_first) and len(redone) == 12 - len(done_first)
    assert (summary.ok, summary.failed) == (12 - len(done_first), 0)
    fresh = tmp_path / "fresh.jsonl"
    run(src, fresh)
    assert read_lines(out) == read_lines(fresh)
    again: list[BatchReport] = []
    run(src, out, on_batch=again.append)
    assert again == []  # a finished output is not redone
    assert read_lines(out) == read_lines(fresh)


KILLED_RUN = """
import os, sys
from pathlib import Path
from genq.settings import Settings
from worker.bulk import read_input, run_file
from worker.engine import Engine
from worker.models import load_model

settings = Settings(database_url=sys.argv[3], model_cache=Path(sys.argv[4]))
engine = Engine(load_model("tiny-gpt2", settings), max_batch_tokens=65536, max_batch_size=4)
source = read_input(Path(sys.argv[1]), model="tiny-gpt2", settings=settings)
run_file(source, Path(sys.argv[2]), engine=engine, settings=settings, progress=False,
         on_batch=lambda report: os._exit(9))
"""


def test_a_killed_run_resumes_from_the_store(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory, settings: Settings
) -> None:
    src = write_lines(tmp_path / "in.jsonl", native_lines(12))
    out = tmp_path / "out.jsonl"
    args = [str(src), str(out), settings.database_url, str(settings.model_cache)]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, *args], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == 9, killed.stderr
    rows = request_rows(settings, out)
    finished = {r.id for r in rows if r.status == RequestStatus.SUCCEEDED}
    assert 0 < len(finished) < 12
    # The dead process's claims are still running under its lease...
    assert {r.status for r in rows if r.id not in finished} == {RequestStatus.RUNNING}
    second: list[BatchReport] = []
    summary = run_path(
        src,
        out,
        engine=make_engine(tiny, max_batch_size=4),
        settings=settings,
        on_batch=second.append,
    )
    # ...and the rerun released them at once, ran each alone (any may have killed the run),
    # and did not redo the finished ones.
    left = 12 - len(finished)
    assert summary.resumed == len(finished) and (summary.ok, summary.failed) == (left, 0)
    assert sorted(len(report.keys) for report in second) == [1] * left
    assert {key for report in second for key in report.keys}.isdisjoint(finished)
    assert [o["custom_id"] for o in read_lines(out)] == [f"c{i}" for i in range(12)]


def test_output_of_another_input_is_refused(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory, settings: Settings
) -> None:
    out = write_lines(tmp_path / "out.jsonl", [{"custom_id": "zzz", "text": "x"}])
    src = write_lines(tmp_path / "in.jsonl", native_lines(2))
    run = partial(run_path, engine=make_engine(tiny), settings=settings)
    with pytest.raises(Conflict, match="different input"):
        run(src, out)
    out.unlink()
    run(src, out)
    first = read_lines(out)
    src = write_lines(tmp_path / "in.jsonl", native_lines(3))  # the input changed
    with pytest.raises(Conflict, match="different input"):
        run(src, out)
    assert read_lines(out) == first  # left as it was


def test_genq_run_command_end_to_end(tmp_path: Path, tiny_cache: Path, tiny: LoadedModel) -> None:
    src = write_lines(tmp_path / "in.jsonl", native_lines(3))
    out = tmp_path / "out.jsonl"
    env = {
        **os.environ,
        "GENQ_MODEL_CACHE": str(tiny_cache),
        "GENQ_DATABASE_URL": f"sqlite:///{tmp_path / 'genq.db'}",
    }
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
    assert "rows per decode step" in proc.stderr
    assert [o["custom_id"] for o in read_lines(out)] == ["c0", "c1", "c2"]


def test_genq_run_exit_codes_say_when_nothing_ran(
    tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from genq.cli import app
    from genq.settings import get_settings

    monkeypatch.setenv("GENQ_MODEL_CACHE", str(tiny_cache))
    monkeypatch.setenv("GENQ_DATABASE_URL", f"sqlite:///{tmp_path / 'genq.db'}")
    get_settings.cache_clear()
    runner = CliRunner()
    csv = tmp_path / "in.csv"
    csv.write_text("prompt,max_tokens\nhello,4\n")
    refused = runner.invoke(
        app, ["run", str(csv), "-o", str(tmp_path / "a.jsonl"), "--model", "tiny-gpt2"]
    )
    # Read as a CSV, its one row has no field a line takes: nothing can run.
    assert refused.exit_code == 2 and "JSONL, CSV or Parquet expected" in refused.output
    assert "max_tokens: unknown field" in refused.output
    assert not (tmp_path / "a.jsonl").exists()  # refused before anything ran
    too_long = write_lines(
        tmp_path / "long.jsonl", [{"prompt": "hi", "params": {"max_new_tokens": 30000}}]
    )
    failed = runner.invoke(
        app,
        [
            "run",
            str(too_long),
            "-o",
            str(tmp_path / "b.jsonl"),
            "--model",
            "tiny-gpt2",
            "--no-progress",
        ],
    )
    assert failed.exit_code == 1 and "every line failed" in failed.output
    assert "error" in read_lines(tmp_path / "b.jsonl")[0]
    get_settings.cache_clear()


KILLED_BEFORE_WRITE = """
import os, sys, time
from pathlib import Path
from genq.settings import Settings
from worker.bulk import read_input, run_file
from worker.engine import Engine, EngineRun
from worker.models import load_model

settings = Settings(database_url=sys.argv[3], model_cache=Path(sys.argv[4]))
engine = Engine(load_model("tiny-gpt2", settings), max_batch_tokens=65536, max_batch_size=4)
source = read_input(Path(sys.argv[1]), model="tiny-gpt2", settings=settings)
generated = []
next_report = EngineRun.__next__

def next_then_die(run):
    report = next_report(run)
    generated.append(report.keys)
    if len(generated) == 2:
        # the first report handed to the store thread has landed; the second is generated,
        # not handed over: the process dies between generate and write
        time.sleep(1.0)
        print(" ".join(generated[1]), flush=True)
        os._exit(9)
    return report

EngineRun.__next__ = next_then_die
run_file(source, Path(sys.argv[2]), engine=engine, settings=settings, progress=False)
"""


def test_a_run_killed_between_generate_and_write_loses_and_repeats_nothing(
    tmp_path: Path, tiny: LoadedModel, make_engine: EngineFactory, settings: Settings
) -> None:
    src = write_lines(tmp_path / "in.jsonl", native_lines(12))
    out = tmp_path / "out.jsonl"
    args = [str(src), str(out), settings.database_url, str(settings.model_cache)]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_WRITE, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 9, killed.stderr
    unwritten = set(killed.stdout.split())
    rows = {r.id: r for r in request_rows(settings, out)}
    finished = {key for key, r in rows.items() if r.status == RequestStatus.SUCCEEDED}
    # The first report was written; the second, generated when the process died, was not:
    # its requests are still running under the dead process's lease.
    assert finished and unwritten and finished.isdisjoint(unwritten)
    assert {rows[key].status for key in unwritten} == {RequestStatus.RUNNING}
    second: list[BatchReport] = []
    summary = run_path(
        src,
        out,
        engine=make_engine(tiny, max_batch_size=4),
        settings=settings,
        on_batch=second.append,
    )
    redone = [key for report in second for key in report.keys]
    # Every request not written ran again, once; none written ran again.
    assert sorted(redone) == sorted(set(rows) - finished)
    assert (summary.resumed, summary.ok, summary.failed) == (len(finished), 12 - len(finished), 0)
    fresh = tmp_path / "fresh.jsonl"
    run_path(src, fresh, engine=make_engine(tiny, max_batch_size=4), settings=settings)
    assert read_lines(out) == read_lines(fresh)
