"""The dashboard over the app: login and its cookie, one tenant's jobs only, a job's page with
its counts, charts, batches and errors, the workers and queues, assets from the package."""

from __future__ import annotations

import re

from api.routes.ui import COOKIE
from tests.api.conftest import Service
from tests.api.support import prompts, upload, wait_job


def log_in(service: Service, tenant: str) -> None:
    answer = service.client.post(
        "/ui/login", data={"key": service.keys[tenant]}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={service.keys[tenant]};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie


def test_pages_need_a_key_and_the_login_sets_a_cookie(service: Service) -> None:
    client = service.client
    for path in ("/ui", "/ui/jobs/job_x"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui"
    assert client.get("/dashboard", follow_redirects=False).headers["location"] == "/ui"

    wrong = client.post("/ui/login", data={"key": "gq_not-a-key"}, follow_redirects=False)
    assert wrong.status_code == 401
    assert "unknown or revoked" in wrong.text and "set-cookie" not in wrong.headers

    log_in(service, "a")
    page = client.get("/ui")
    assert page.status_code == 200
    assert '<b id="tenant">a</b>' in page.text
    assert "No jobs yet" in page.text
    # Nothing loads from elsewhere, and nothing runs.
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert not re.search(r"<script|https?://(?!www\.w3\.org/2000/svg)", page.text)
    css = client.get("/ui/static/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

    out = client.post("/ui/logout", follow_redirects=False)
    assert out.headers["location"] == "/ui/login" and f'{COOKIE}=""' in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_a_bearer_header_works_as_well(service: Service) -> None:
    page = service.client.get("/ui", headers=service.as_("b"))
    assert page.status_code == 200 and '<b id="tenant">b</b>' in page.text


def test_a_tenant_sees_only_its_own_jobs(service: Service) -> None:
    client = service.client
    mine = client.post("/v1/jobs", json=prompts(2), headers=service.as_("a")).json()["id"]
    theirs = client.post("/v1/jobs", json=prompts(3), headers=service.as_("b")).json()["id"]
    log_in(service, "a")
    page = client.get("/ui").text
    assert f'data-job="{mine}"' in page and theirs not in page
    assert "queued" in page and '<meta http-equiv="refresh"' in page  # open work: it refreshes
    other = client.get(f"/ui/jobs/{theirs}")
    assert other.status_code == 404 and theirs in other.text and "No such job" in other.text
    assert "tiny-gpt2" in client.get("/ui").text  # the queue of its model
    assert re.search(r"<td>tiny-gpt2</td><td class=\"num\">5</td>", client.get("/ui").text)


def test_a_finished_jobs_page(service: Service) -> None:
    client, a = service.client, service.as_("a")
    lines = [f'{{"custom_id": "ok{i}", "prompt": "Item {i}: the river"}}' for i in range(6)]
    lines.insert(2, '{"custom_id": "broken", "prompt": ')
    file_id = upload(service, "\n".join(lines).encode())
    job = client.post(
        "/v1/jobs", json={"input_file_id": file_id, "params": {"max_new_tokens": 4}}, headers=a
    ).json()
    service.start_worker()
    done = wait_job(client, job["id"], a)
    assert done["counts"]["succeeded"] == 6 and done["counts"]["failed"] == 1

    log_in(service, "a")
    page = client.get(f"/ui/jobs/{job['id']}")
    assert page.status_code == 200
    text = page.text
    assert '<span class="status completed" id="job-status">completed</span>' in text
    assert '<td class="num" id="succeeded">6</td>' in text
    assert '<td class="num" id="failed">1</td>' in text
    assert '<progress max="100" value="100.0">' in text
    assert "refresh" not in text  # finished: nothing to follow
    # Its throughput over time and the batches that carried it, from the recorded batches.
    assert text.count('<svg class="chart"') == 2 and '<rect class="bar"' in text
    rows = re.findall(
        r"<tr><td>(\d+)</td><td>([^<]+)</td><td class=\"num\">(\d+)</td>\s*"
        r"<td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>",
        text,
    )
    assert rows, text
    assert sum(int(job_rows) for _, _, _, job_rows, _ in rows) == 6
    assert sum(int(tokens) for *_, tokens in rows) == done["usage"]["completion_tokens"] == 24
    assert re.search(r"\d+ batches carried this job", text)
    # The refused line, with where it was and why.
    errors = re.search(r'<table id="errors">.*?</table>', text, re.S)
    assert errors is not None
    assert '<td class="num">2</td><td>line-3</td>' in errors.group(0)
    assert "line 3: malformed JSON" in errors.group(0)


def test_workers_show_with_their_batches(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(4), headers=a).json()
    service.start_worker()
    wait_job(client, job["id"], a)
    page = client.get("/ui", headers=a).text
    workers = re.search(r'<table id="workers">.*?</table>', page, re.S)
    assert workers is not None, page
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", workers.group(0))
    assert cells[1] == "tiny-gpt2" and cells[2].endswith("ago")
    assert float(cells[3]) > 0 and float(cells[4]) >= 4 / 5  # 4 rows over five minutes


def test_a_jobs_webhook_events_show_on_its_page(service: Service) -> None:
    client, a = service.client, service.as_("a")
    url = "http://127.0.0.1:9/hook"
    job = client.post("/v1/jobs", json=prompts(1, webhook_url=url), headers=a).json()
    assert '<table id="webhooks">' not in client.get(f"/ui/jobs/{job['id']}", headers=a).text
    service.start_worker()
    wait_job(client, job["id"], a)
    page = client.get(f"/ui/jobs/{job['id']}", headers=a).text
    assert page.count('<table id="webhooks">') == 1
    assert f"<title>genq: job {job['id']}</title>" in page
    table = re.search(r'<table id="webhooks">.*?</table>', page, re.S)
    assert table is not None  # no sender runs here: the event waits, as written
    assert f"<td>job.completed</td><td>{url}</td><td>pending</td>" in table.group(0)
