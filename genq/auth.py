"""API keys: random bearer tokens bound to a tenant, stored as their SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from genq.errors import Unauthorized
from genq.store.db import Reader
from genq.store.tables import ApiKey, new_id, utcnow

KEY_PREFIX = "gq_"


def hash_key(key: str) -> str:
    # The keys are 256 random bits: a plain hash is enough, no salt or slow KDF needed.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, tenant: str, now: datetime | None = None) -> str:
    """Store a new key for ``tenant`` and return it: the only time it is seen in clear."""
    from genq.producer import check_name

    check_name("tenant", tenant)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.execute(
        insert(ApiKey).values(
            id=new_id("key"),
            tenant=tenant,
            key_hash=hash_key(key),
            prefix=key[:10],
            created_at=now or utcnow(),
            revoked_at=None,
        )
    )
    return key


def bearer_key(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer KEY`` header; :class:`Unauthorized` otherwise."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    return key.strip()


def tenant_of(session: Reader, *, key_hash: str) -> str:
    """The tenant of the unrevoked key with this hash; :class:`Unauthorized` otherwise."""
    tenant = session.scalar(
        select(ApiKey.tenant).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    if tenant is None:
        raise Unauthorized("invalid API key")
    return tenant
