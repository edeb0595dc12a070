"""Which model names a job may name, checked without loading anything (and without torch, so
the API can check them): built-ins, local directories, Hugging Face cache entries, and models
that live workers serve."""

from __future__ import annotations

from pathlib import Path

from genq.errors import ModelNotFound
from genq.settings import Settings

BUILTIN_MODELS = ("smollm2-135m", "tiny-gpt2")
"""The registry's built-in names (worker.models.BUILTINS; a test keeps the two equal)."""


def check_model(name: str, settings: Settings, *, served: frozenset[str] = frozenset()) -> None:
    """Raise :class:`ModelNotFound` unless ``name`` is a model genq can run here; ``served``
    holds the models of live workers, which may run where this process has no copy."""
    if name in BUILTIN_MODELS or name in served:
        return
    path = Path(name).expanduser()
    if path.is_dir() or (path.name == name and (settings.model_cache / name).is_dir()):
        return
    if _in_hf_cache(name):
        return
    raise ModelNotFound(
        f"model: unknown model {name!r}; use a built-in ({', '.join(BUILTIN_MODELS)}), a model "
        "directory, or a Hugging Face id in the local cache"
    )


def _in_hf_cache(name: str) -> bool:
    if name.count("/") != 1:
        return False
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))).is_dir()
