"""Model names and where they resolve: built-ins, directories under the model roots, the local
HF cache (the rule is genq.modelnames', which the API checks names with).

genq never downloads from a model hub. Built-ins are provisioned by recipes in this
package; any other model must already be on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import constants, scan_cache_dir, snapshot_download
from huggingface_hub.errors import CacheNotFound, HFValidationError, LocalEntryNotFoundError

from genq.errors import ModelNotFound
from genq.modelnames import DIRECTORY_NAME, model_directory
from genq.settings import Settings
from worker.models import smollm2, tiny_gpt2
from worker.models.cache import build_once, is_ready

ModelKind = Literal["builtin", "directory", "hf-cache"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: ModelKind
    path: Path | None
    ready: bool  # a built or converted copy exists locally; always true outside built-ins


@dataclass(frozen=True)
class Builtin:
    recipe: str  # stored in the ready marker: a new recipe rebuilds old caches
    build: Callable[[Path], None]  # writes a complete model directory into its argument


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m": Builtin(smollm2.RECIPE, smollm2.build),
    "tiny-gpt2": Builtin(tiny_gpt2.RECIPE, tiny_gpt2.build),
}


def list_models(settings: Settings) -> list[ModelInfo]:
    builtins = [_builtin_info(name, settings) for name in BUILTINS]
    return builtins + _cache_directories(settings) + _hf_cache_models()


def pull_model(name: str, settings: Settings, *, progress: bool = True) -> Path:
    """Provision built-in ``name`` in the model cache unless it is there already."""
    builtin = BUILTINS.get(name)
    if builtin is None:
        raise ModelNotFound(f"{name!r} is not a built-in model; built-ins: {_builtin_names()}")
    target = settings.model_cache / name
    return build_once(target, builtin.recipe, builtin.build, progress=progress)


def resolve_model_path(name: str, settings: Settings) -> Path:
    """The local directory holding model ``name``, provisioning a built-in on first use."""
    if name in BUILTINS:
        return pull_model(name, settings)
    directory = model_directory(name, settings)
    if directory is not None:
        return directory
    snapshot = _hf_snapshot(name) if DIRECTORY_NAME.fullmatch(name) else None
    if snapshot is not None:
        return snapshot
    raise ModelNotFound(
        f"unknown model {name!r}: not a built-in ({_builtin_names()}), not a model directory "
        "under the model cache or GENQ_MODEL_DIRS, and not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}). genq never downloads from the hub; fetch it first "
        f"(`hf download {name}`) or put it under a model directory."
    )


def _builtin_info(name: str, settings: Settings) -> ModelInfo:
    path = settings.model_cache / name
    return ModelInfo(name, "builtin", path, is_ready(path, BUILTINS[name].recipe))


def _builtin_names() -> str:
    return ", ".join(BUILTINS)


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _hf_snapshot(repo_id: str) -> Path | None:
    # HF_HUB_CACHE is read at call time so that tests can point it at a fixture cache.
    try:
        found = snapshot_download(repo_id, local_files_only=True, cache_dir=constants.HF_HUB_CACHE)
    except (HFValidationError, LocalEntryNotFoundError):  # not a repo id, or not cached
        return None
    return Path(found)


def _cache_directories(settings: Settings) -> list[ModelInfo]:
    if not settings.model_cache.is_dir():
        return []
    return [
        ModelInfo(path.name, "directory", path, True)
        for path in sorted(settings.model_cache.iterdir())
        if path.name not in BUILTINS and not path.name.startswith(".") and _is_model_dir(path)
    ]


def _hf_cache_models() -> list[ModelInfo]:
    try:
        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(repos, key=lambda repo: repo.repo_id):
        snapshot = _hf_snapshot(repo.repo_id) if repo.repo_type == "model" else None
        # Caches also hold tokenizer-only or config-only fetches; list loadable models only.
        if snapshot is not None and _is_model_dir(snapshot):
            found.append(ModelInfo(repo.repo_id, "hf-cache", snapshot, True))
    return found
