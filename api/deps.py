"""FastAPI dependencies: the context, a session per request, the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from api.context import Context
from genq.auth import tenant_for
from genq.settings import Settings


def get_context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


ContextDep = Annotated[Context, Depends(get_context)]


def get_sessions(context: ContextDep) -> sessionmaker[Session]:
    return context.sessions


def get_settings(context: ContextDep) -> Settings:
    return context.settings


SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(sessions: SessionsDep) -> Iterator[Session]:
    """One transaction per request, committed when the route returns without error."""
    with sessions.begin() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_tenant(sessions: SessionsDep, authorization: Annotated[str | None, Header()] = None) -> str:
    with sessions.begin() as session:
        return tenant_for(session, authorization=authorization)


TenantDep = Annotated[str, Depends(get_tenant)]
