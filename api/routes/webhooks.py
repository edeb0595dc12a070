"""Webhooks: the tenant's signing secret, and what was sent for a job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import SessionDep, TenantDep
from api.schemas import WebhookDeliveryList, WebhookSecret, answers
from genq.store import get_job
from genq.store.webhooks import job_deliveries, tenant_secret

router = APIRouter(tags=["webhooks"])


@router.get("/v1/webhooks/secret", response_model=None, responses=answers(WebhookSecret))
def secret(session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """The ``whsec_`` secret every webhook of this tenant is signed with (made on first use);
    ``genq tenants webhook NAME --rotate-secret`` replaces it."""
    return {"object": "webhook_secret", "secret": tenant_secret(session, tenant=tenant)}


@router.get(
    "/v1/jobs/{job_id}/webhooks", response_model=None, responses=answers(WebhookDeliveryList)
)
def deliveries(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """The job's webhook events and how their delivery went."""
    get_job(session, tenant=tenant, job_id=job_id)  # the tenant's, or 404
    return {
        "object": "list",
        "data": [
            {
                "id": d.id,
                "event": d.event,
                "url": d.url,
                "status": d.status,
                "attempts": d.attempts,
                "last_status_code": d.last_status_code,
                "last_error": d.last_error,
                "created_at": d.created_at.isoformat(),
                "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
            }
            for d in job_deliveries(session, job_id=job_id)
        ],
    }
