"""API keys: random bearer tokens bound to a tenant, stored as their SHA-256 only; listed
without the secret, revoked by id, and marked with when an API process last accepted them."""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from genq.errors import InvalidRequest, NotFound, Unauthorized
from genq.store.db import Reader
from genq.store.tables import MAX_NAME_LENGTH, ApiKey, new_id, utcnow

KEY_PREFIX = "gq_"

LAST_USED_SECONDS = 60.0
"""How often an API process writes when its keys were last used: ``last_used_at`` is to the
minute, and costs one UPDATE a minute, not one per request."""


@dataclass(frozen=True)
class KeyInfo:
    """What a listing shows of a key: never the key, only its first characters."""

    id: str
    tenant: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    # The keys are 256 random bits: a plain hash is enough, no salt or slow KDF needed.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session, *, tenant: str, name: str | None = None, now: datetime | None = None
) -> str:
    """Store a new key for ``tenant`` and return it: the only time it is seen in clear."""
    from genq.producer import check_name

    check_name("tenant", tenant)
    if name is not None and not (0 < len(name) <= MAX_NAME_LENGTH and name.isprintable()):
        raise InvalidRequest("name", f"must be 1 to {MAX_NAME_LENGTH} printable characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.execute(
        insert(ApiKey).values(
            id=new_id("key"),
            tenant=tenant,
            key_hash=hash_key(key),
            prefix=key[:10],
            name=name,
            created_at=now or utcnow(),
            revoked_at=None,
        )
    )
    return key


def key_is_valid(session: Session, key: str) -> bool:
    """Whether ``key`` is a stored key that is not revoked."""
    found = session.scalar(
        select(ApiKey.id).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    return found is not None


def list_keys(
    session: Session, *, tenant: str | None = None, revoked: bool = False
) -> list[KeyInfo]:
    """Keys by creation, of one tenant or all; revoked ones only with ``revoked``."""
    query = select(
        ApiKey.id,
        ApiKey.tenant,
        ApiKey.name,
        ApiKey.prefix,
        ApiKey.created_at,
        ApiKey.last_used_at,
        ApiKey.revoked_at,
    ).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    if not revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return [KeyInfo(*row) for row in session.execute(query)]


def revoke_key(session: Session, key_id: str, *, now: datetime | None = None) -> bool:
    """Revoke the key ``key_id``; False when it was revoked already. API processes stop
    accepting it within ``GENQ_KEY_CACHE_SECONDS``."""
    found = session.execute(select(ApiKey.revoked_at).where(ApiKey.id == key_id)).first()
    if found is None:
        raise NotFound(f"no API key {key_id!r} (genq keys list shows them)")
    if found.revoked_at is not None:
        return False
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return True


class KeyUse:
    """The keys an API process accepted since it last wrote that down (by hash)."""

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def mark(self, key_hash: str) -> None:
        with self._lock:
            self._used.add(key_hash)

    def write(self, session: Session, *, now: datetime | None = None) -> int:
        """Set ``last_used_at`` of the keys used since the last write; returns how many."""
        with self._lock:
            used, self._used = self._used, set()
        if used:
            session.execute(
                update(ApiKey)
                .where(ApiKey.key_hash.in_(sorted(used)))
                .values(last_used_at=now or utcnow())
            )
        return len(used)


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
