from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from genq.cli import app
from genq.settings import get_settings
from tests.api.conftest import Service
from tests.api.test_openai_client import live

__all__ = ["live"]


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """The CLI reads its settings once per process; each test here sets its own environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_submit_wait_status_results_cancel(
    live: Callable[[str], openai.OpenAI],
    service: Service,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = str(live("a").base_url).removesuffix("/v1/")
    monkeypatch.setenv("GENQ_API_URL", url)
    monkeypatch.setenv("GENQ_API_KEY", service.keys["a"])
    lines = [
        {"custom_id": f"q{i}", "prompt": f"p {i}", "params": {"max_new_tokens": 2}}
        for i in range(3)
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    runner = CliRunner()
    queued = runner.invoke(app, ["submit", str(path)])
    assert queued.exit_code == 0, queued.output
    job_id = queued.stdout.strip()
    assert runner.invoke(app, ["cancel", job_id]).stdout.strip() == "cancelled"
    service.start_worker()
    done = runner.invoke(app, ["submit", str(path), "--wait"])
    assert done.exit_code == 0, done.output
    job_id = done.stdout.strip().splitlines()[0]
    status = json.loads(runner.invoke(app, ["status", job_id]).stdout)
    assert status["status"] == "completed" and status["counts"]["succeeded"] == 3
    out = tmp_path / "out.jsonl"
    assert runner.invoke(app, ["results", job_id, "-o", str(out)]).exit_code == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["q0", "q1", "q2"]
    assert all(r["usage"]["completion_tokens"] == 2 for r in rows)
    missing = runner.invoke(app, ["status", "job_nope"])
    assert missing.exit_code == 2 and "HTTP 404" in missing.output
    to_stdout = runner.invoke(app, ["results", job_id, "-o", "-"])
    assert to_stdout.exit_code == 0 and not (Path.cwd() / "-").exists()
    assert [json.loads(x)["custom_id"] for x in to_stdout.stdout.splitlines()] == ["q0", "q1", "q2"]


def test_the_cli_says_what_is_wrong_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "hi"}\n')
    monkeypatch.setenv("GENQ_API_KEY", "")
    for args in (["status", "job_x"], ["submit", str(path)], ["results", "job_x", "-o", "-"]):
        get_settings.cache_clear()
        unset = runner.invoke(app, args)
        assert unset.exit_code == 2 and "GENQ_API_KEY is not set" in unset.output, args
        assert isinstance(unset.exception, SystemExit)  # an exit code, not a traceback
    monkeypatch.setenv("GENQ_API_KEY", "gq_something")
    monkeypatch.setenv("GENQ_API_URL", "http://127.0.0.1:9")  # nothing listens there
    for args in (["status", "job_x"], ["cancel", "job_x"], ["results", "job_x", "-o", "-"]):
        get_settings.cache_clear()
        down = runner.invoke(app, args)
        assert down.exit_code == 2, (args, down.output)
        assert "cannot reach genq at http://127.0.0.1:9" in down.output, args
        assert isinstance(down.exception, SystemExit)
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("genq ")
    # An unknown model is refused before any model loads (nor writes an output file).
    for args in (["retry", "job_x"], ["jobs", "list"]):
        get_settings.cache_clear()
        assert runner.invoke(app, args).exit_code == 2, args
    get_settings.cache_clear()
    out = tmp_path / "out.jsonl"
    unknown = runner.invoke(app, ["run", str(path), "-o", str(out), "--model", "no-such-model"])
    assert unknown.exit_code == 2 and "unknown model 'no-such-model'" in unknown.output
    assert "Loading" not in unknown.output and not out.exists()


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _openai_lines() -> list[dict[str, Any]]:
    """OpenAI completions lines over the example prompts, with greedy, sampled (n > 1, seeded)
    and stop-string bodies, and two bad lines."""
    lines = []
    for i, line in enumerate(
        map(json.loads, (EXAMPLES / "prompts.jsonl").read_text().split("\n")[:9])
    ):
        text = line.get("prompt") or line["messages"][0]["content"]
        body: dict[str, Any] = {"model": "tiny-gpt2", "prompt": text, "max_tokens": 12}
        body.update(
            [
                {"temperature": 0},
                {"temperature": 0.8, "seed": i, "n": 2},
                {"temperature": 0, "stop": ["\n"]},
            ][i % 3]
        )
        lines.append(
            {"custom_id": f"o{i}", "method": "POST", "url": "/v1/completions", "body": body}
        )
    lines.insert(
        3,
        {"custom_id": "bad", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": "9"}},
    )
    lines.append({"custom_id": "o0", "url": "/v1/completions", "body": {"prompt": "dup"}})
    return lines


def _texts(line: dict[str, Any]) -> tuple[str, list[str] | str]:
    """(custom_id, texts or error) of an output line of ``genq run`` or ``genq results``."""
    if "response" in line:
        body = line["response"]["body"]
        if "error" in body:
            return line["custom_id"], body["error"]["message"]
        return line["custom_id"], [c["text"] for c in body["choices"]]
    if line.get("error"):
        return line["custom_id"], line["error"]
    return line["custom_id"], [c["text"] for c in line["choices"]]


@pytest.mark.parametrize("form", ["native", "openai"])
def test_submit_then_results_equal_run_on_the_same_file(
    form: str,
    live: Callable[[str], openai.OpenAI],
    service: Service,
    tiny_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if form == "native":
        src = EXAMPLES / "prompts.jsonl"
    else:
        src = tmp_path / "openai.jsonl"
        src.write_text("".join(json.dumps(x) + "\n" for x in _openai_lines()))
    monkeypatch.setenv("GENQ_MODEL_CACHE", str(tiny_cache))
    monkeypatch.setenv("GENQ_DEFAULT_MODEL", "tiny-gpt2")
    monkeypatch.setenv("GENQ_DATABASE_URL", f"sqlite:///{tmp_path / 'run.db'}")
    monkeypatch.setenv("GENQ_API_URL", str(live("a").base_url).removesuffix("/v1/"))
    monkeypatch.setenv("GENQ_API_KEY", service.keys["a"])
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(src), "-o", str(tmp_path / "run.jsonl"), "--no-progress"])
    assert ran.exit_code == 0, ran.output
    service.start_worker()
    submitted = runner.invoke(app, ["submit", str(src), "--wait"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[0]
    got = runner.invoke(app, ["results", job_id, "-o", str(tmp_path / "results.jsonl")])
    assert got.exit_code == 0, got.output
    run_lines = [json.loads(x) for x in (tmp_path / "run.jsonl").read_text().splitlines()]
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(results) == len(run_lines) == len(src.read_text().splitlines())
    assert [_texts(r) for r in results] == [_texts(r) for r in run_lines]
    assert [r["idx"] for r in results] == list(range(len(results)))
    # Every line ran with its own parameters: the example's stop lines never run on past "\n\n".
    for line, result in zip(src.read_text().splitlines(), results, strict=True):
        asked = json.loads(line).get("params", {})
        if result["status"] == "succeeded" and asked:
            assert result["params"]["max_new_tokens"] == asked["max_new_tokens"]
            assert result["params"]["do_sample"] == asked.get("do_sample", False)
            assert all(stop not in result["text"] for stop in asked.get("stop", []))


def test_retry_from_the_cli(
    live: Callable[[str], openai.OpenAI],
    service: Service,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from genq.store import Outcome, claim, complete_many

    monkeypatch.setenv("GENQ_API_URL", str(live("a").base_url).removesuffix("/v1/"))
    monkeypatch.setenv("GENQ_API_KEY", service.keys["a"])
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(f'{{"prompt": "p {i}", "params": {{"max_new_tokens": 2}}}}\n' for i in range(3))
    )
    runner = CliRunner()
    job_id = runner.invoke(app, ["submit", str(path)]).stdout.strip()
    with service.context.sessions.begin() as session:
        claims = claim(session, worker_id="w", model="tiny-gpt2", lease_seconds=60)
        complete_many(
            session, items=[(c.request_id, c.fence, Outcome(error="boom")) for c in claims]
        )
    service.start_worker()
    retried = runner.invoke(app, ["retry", job_id, "--wait"])
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.splitlines()[0] == f"3 failed requests of {job_id} queued again"
    assert "req/s" in retried.stderr and "completed" in retried.stderr
    status = json.loads(runner.invoke(app, ["status", job_id]).stdout)
    assert status["counts"]["succeeded"] == 3 and status["retried"] == 3
    nothing = runner.invoke(app, ["retry", job_id])
    assert nothing.stdout.strip() == f"0 failed requests of {job_id} queued again"
    missing = runner.invoke(app, ["retry", "job_nope"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert missing.output.strip().startswith("error:")


def test_jobs_list_newest_first_with_more(
    live: Callable[[str], openai.OpenAI], service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENQ_API_URL", str(live("a").base_url).removesuffix("/v1/"))
    monkeypatch.setenv("GENQ_API_KEY", service.keys["a"])
    ids = [
        service.client.post(
            "/v1/jobs", json={"requests": [{"prompt": "x"}] * n}, headers=service.as_("a")
        ).json()["id"]
        for n in (1, 2, 3)
    ]
    service.client.post("/v1/jobs", json={"requests": [{"prompt": "y"}]}, headers=service.as_("b"))
    runner = CliRunner()
    shown = runner.invoke(app, ["jobs", "list", "--limit", "2"])
    assert shown.exit_code == 0, shown.output
    rows = shown.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ids[::-1][:2]
    assert rows[0].split()[1:4] == ["queued", "tiny-gpt2", "0/3"]
    assert f"--after {ids[1]}" in shown.stderr
    rest = runner.invoke(app, ["jobs", "list", "--after", ids[1]])
    assert [r.split()[0] for r in rest.stdout.splitlines()[1:]] == [ids[0]]  # not tenant b's


def test_run_and_submit_read_a_csv_as_its_jsonl(
    live: Callable[[str], openai.OpenAI],
    service: Service,
    tiny_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import csv

    rows = [
        {"custom_id": f"r{i}", "prompt": f"Item {i}, the river", "params": '{"max_new_tokens": 3}'}
        for i in range(3)
    ]
    table = tmp_path / "in.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["custom_id", "prompt", "params"])
        writer.writeheader()
        writer.writerows(rows)
    same = tmp_path / "in.jsonl"
    same.write_text(
        "".join(json.dumps({**r, "params": json.loads(r["params"])}) + "\n" for r in rows)
    )
    monkeypatch.setenv("GENQ_MODEL_CACHE", str(tiny_cache))
    monkeypatch.setenv("GENQ_DEFAULT_MODEL", "tiny-gpt2")
    monkeypatch.setenv("GENQ_API_URL", str(live("a").base_url).removesuffix("/v1/"))
    monkeypatch.setenv("GENQ_API_KEY", service.keys["a"])
    runner = CliRunner()
    texts = {}
    for path in (table, same):
        monkeypatch.setenv("GENQ_DATABASE_URL", f"sqlite:///{tmp_path / (path.suffix[1:] + '.db')}")
        get_settings.cache_clear()
        out = tmp_path / f"{path.suffix[1:]}.out.jsonl"
        ran = runner.invoke(app, ["run", str(path), "-o", str(out), "--no-progress"])
        assert ran.exit_code == 0, ran.output
        texts[path.suffix] = [
            (r["custom_id"], r["text"]) for r in map(json.loads, out.read_text().splitlines())
        ]
    assert texts[".csv"] == texts[".jsonl"] and [c for c, _ in texts[".csv"]] == ["r0", "r1", "r2"]
    service.start_worker()
    submitted = runner.invoke(app, ["submit", str(table), "--wait"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.splitlines()[0]
    got = runner.invoke(app, ["results", job_id, "-o", "-"])
    results = [json.loads(x) for x in got.stdout.splitlines()]
    assert [(r["custom_id"], r["text"]) for r in results] == texts[".csv"]
