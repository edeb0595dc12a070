"""Model registry and provisioning: which names exist, where they live, how they load.

Nothing here imports torch or transformers at module level, so that `genq models list`
starts instantly; the heavy imports happen inside the functions that need them.
"""

from __future__ import annotations

from worker.models.loading import LoadedModel, load_model, resolve_device
from worker.models.registry import (
    BUILTINS,
    ModelInfo,
    list_models,
    pull_model,
    resolve_model_path,
)

__all__ = [
    "BUILTINS",
    "LoadedModel",
    "ModelInfo",
    "list_models",
    "load_model",
    "pull_model",
    "resolve_device",
    "resolve_model_path",
]
