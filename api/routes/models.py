"""OpenAI-compatible models: what this deployment can run, for ``client.models.list()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from api.context import Context
from api.deps import ContextDep, TenantDep
from genq.errors import ModelNotFound
from genq.modelnames import listed_models
from genq.uploads import served_models

router = APIRouter(prefix="/v1/models", tags=["models"])


def _models(context: Context) -> dict[str, Path | None]:
    return listed_models(context.settings, served=served_models(context.sessions))


def _model(name: str, directory: Path | None) -> dict[str, Any]:
    # created: when the model's files were made here, where this process has them
    config = directory / "config.json" if directory is not None else None
    created = int(config.stat().st_mtime) if config is not None and config.is_file() else 0
    return {"id": name, "object": "model", "created": created, "owned_by": "genq"}


@router.get("")
def index(context: ContextDep, _tenant: TenantDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model(n, d) for n, d in _models(context).items()]}


@router.get("/{model:path}")
def read(model: str, context: ContextDep, _tenant: TenantDep) -> dict[str, Any]:
    models = _models(context)
    if model not in models:
        raise ModelNotFound(f"model: unknown model {model!r}; GET /v1/models lists them")
    return _model(model, models[model])
