from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from genq.cli import app
from tests.api.conftest import Service
from tests.api.test_openai_client import live

__all__ = ["live"]


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
