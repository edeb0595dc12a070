"""Sending webhooks: each event signed in the Standard Webhooks style (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``id.timestamp.body`` under the tenant's ``whsec_`` secret) and POSTed by a thread of the API
process, until a 2xx answer or the last attempt (see genq.store.webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time

import httpx
from sqlalchemy.orm import Session, sessionmaker

from genq.periodic import Periodic
from genq.settings import Settings
from genq.store.webhooks import Delivery, record_attempt, take_due

log = logging.getLogger(__name__)

USER_AGENT = "genq-webhooks/0.1.0"


def signature(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` of ``body`` (Standard Webhooks, version 1)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def send(client: httpx.Client, delivery: Delivery) -> tuple[int | None, str | None]:
    """One POST of ``delivery``: (status code, None), or (None, why) when no answer came."""
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature(
            delivery.secret, msg_id=delivery.id, timestamp=now, body=body
        ),
    }
    try:
        answer = client.post(delivery.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000]
    return answer.status_code, None


class WebhookSender(Periodic):
    """Sends what is due every ``webhook_poll_seconds``, each delivery under a lease a little
    longer than its timeout, so that a sender killed mid-send leaves it to be sent again."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        super().__init__(every=settings.webhook_poll_seconds, name="genq-webhooks", at_once=True)
        self.sessions, self.settings = sessions, settings
        self.client = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)

    def tick(self) -> None:
        try:
            while self.step():
                pass
        except Exception as exc:  # noqa: BLE001 - a database outage: the next tick tries again
            log.warning("could not send webhooks: %s", exc)

    def step(self) -> int:
        """Send one page of due deliveries; returns how many were due."""
        settings = self.settings
        with self.sessions.begin() as session:
            due = take_due(session, lease_seconds=settings.webhook_timeout_seconds * 3)
        for delivery in due:
            code, error = send(self.client, delivery)
            with self.sessions.begin() as session:
                status = record_attempt(
                    session,
                    delivery=delivery,
                    status_code=code,
                    error=error,
                    max_attempts=settings.webhook_max_attempts,
                    backoff_seconds=settings.webhook_backoff_seconds,
                )
            log.info(
                "webhook %s attempt %d to %s: %s (%s)",
                delivery.id,
                delivery.attempt,
                delivery.url,
                code if code is not None else error,
                status,
            )
        return len(due)

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        self.client.close()
