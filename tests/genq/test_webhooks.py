"""Webhooks sent for real: a receiver on loopback that fails before it answers 2xx, each
attempt's signature checked by the standardwebhooks library, a sender killed mid-send
replaced by another that sends again once the lease runs out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import standardwebhooks
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from genq.params import GenerationParams
from genq.settings import Settings
from genq.store import NewRequest, create_job
from genq.store.tables import WebhookDelivery
from genq.store.webhooks import take_due, tenant_secret
from genq.webhooks import WebhookSender, signature


@dataclass
class Receiver:
    """Answers ``codes`` in turn (then 200), and keeps what it got."""

    codes: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    held = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["content-length"]))
            held.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(held.codes.pop(0) if held.codes else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    held.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/genq"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield held
    server.shutdown()
    server.server_close()


def ended_job(sessions: sessionmaker[Session], url: str) -> str:
    with sessions.begin() as session:  # refused lines only: it ends as it is made
        return create_job(
            session,
            tenant="acme",
            model="tiny-gpt2",
            params=GenerationParams(),
            requests=[NewRequest(error="line 1: malformed JSON")],
            webhook_url=url,
        )


def delivery(sessions: sessionmaker[Session]) -> WebhookDelivery:
    with sessions.begin() as session:
        row = session.scalar(select(WebhookDelivery))
        assert row is not None
        session.expunge(row)
        return row


def test_the_signature_is_the_standard_one() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    # Standard Webhooks' own example: this id, timestamp, body and secret sign to this value.
    assert (
        signature(secret, msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330, body=body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_delivered_signed_after_failures(
    sessions: sessionmaker[Session], settings: Settings, receiver: Receiver
) -> None:
    receiver.codes = [500, 503]
    job_id = ended_job(sessions, receiver.url)
    fast = settings.model_copy(update={"webhook_backoff_seconds": 0.0})
    sender = WebhookSender(sessions, fast)
    try:
        for _ in range(3):
            sender.step()
    finally:
        sender.stop()
    assert len(receiver.got) == 3
    with sessions.begin() as session:
        verify = standardwebhooks.Webhook(tenant_secret(session, tenant="acme"))
    ids = set()
    for headers, body in receiver.got:
        payload = verify.verify(body, headers)  # raises unless signed with the tenant's secret
        assert payload["type"] == "job.failed" and payload["data"]["id"] == job_id
        assert headers["content-type"] == "application/json"
        ids.add(headers["webhook-id"])
    assert len(ids) == 1  # one event, the same id on each attempt: a receiver drops repeats
    row = delivery(sessions)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 3, 200)
    assert row.delivered_at is not None and row.last_error is None
    assert sender.step() == 0  # nothing sent twice once delivered

    wrong = standardwebhooks.Webhook("whsec_" + "A" * 43 + "=")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        wrong.verify(receiver.got[0][1], receiver.got[0][0])


def test_a_receiver_that_never_answers_fails_after_the_last_attempt(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    ended_job(sessions, "http://127.0.0.1:9/nobody-listens")
    sender = WebhookSender(
        sessions,
        settings.model_copy(update={"webhook_backoff_seconds": 0.0, "webhook_max_attempts": 2}),
    )
    try:
        sender.step()
        sender.step()
    finally:
        sender.stop()
    row = delivery(sessions)
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.last_error is not None and "ConnectError" in row.last_error


def test_a_sender_lost_mid_send_is_replaced_once_its_lease_runs_out(
    sessions: sessionmaker[Session], settings: Settings, receiver: Receiver
) -> None:
    job_id = ended_job(sessions, receiver.url)
    with sessions.begin() as session:  # a sender takes it, then dies before it sends
        (taken,) = take_due(session, lease_seconds=0.5)
    fresh = WebhookSender(sessions, settings)  # a new process, after a restart
    try:
        assert fresh.step() == 0 and receiver.got == []  # still leased
        time.sleep(0.6)
        assert fresh.step() == 1
    finally:
        fresh.stop()
    assert len(receiver.got) == 1
    assert json.loads(receiver.got[0][1])["data"]["id"] == job_id
    assert receiver.got[0][0]["webhook-id"] == taken.id
    row = delivery(sessions)
    assert (row.status, row.attempts) == ("delivered", 2)
