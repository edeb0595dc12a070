"""Which model names a job may name, checked without loading anything (and without torch, so
the API can check them): built-ins, directories under the model roots (the model cache and
``GENQ_MODEL_DIRS``), Hugging Face cache entries, and models that live workers serve. A name
is never an arbitrary path: ``..`` or ``/etc`` is simply unknown."""

from __future__ import annotations

import re
from pathlib import Path

from genq.errors import ModelNotFound
from genq.settings import Settings

BUILTIN_MODELS = ("smollm2-135m", "tiny-gpt2")
"""The registry's built-in names (worker.models.BUILTINS; a test keeps the two equal)."""

# A directory name, or an org/name pair: no leading dot (so no "." or ".."), no other separator.
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
DIRECTORY_NAME = re.compile(rf"{_PART}(/{_PART})?")


def check_model(name: str, settings: Settings, *, served: frozenset[str] = frozenset()) -> None:
    """Raise :class:`ModelNotFound` unless ``name`` is a model genq can run here; ``served``
    holds the models of live workers, which may run where this process has no copy."""
    if name in BUILTIN_MODELS or name in served:
        return
    if model_directory(name, settings) is not None or _in_hf_cache(name):
        return
    raise ModelNotFound(
        f"model: unknown model {name!r}; use a built-in ({', '.join(BUILTIN_MODELS)}), the "
        "name of a model directory under GENQ_MODEL_DIRS or the model cache, or a Hugging Face "
        "id in the local cache"
    )


def model_directory(name: str, settings: Settings) -> Path | None:
    """The directory of model ``name`` under a model root (one holding a ``config.json``)."""
    if not DIRECTORY_NAME.fullmatch(name):
        return None
    for root in settings.model_roots:
        if (root / name / "config.json").is_file():
            return root / name
    return None


def listed_models(
    settings: Settings, *, served: frozenset[str] = frozenset()
) -> dict[str, Path | None]:
    """The models a client can name here, each with its directory where this process has one:
    built-ins, directories under the model roots (``name`` or ``org/name``) and what live
    workers serve. Hugging Face cache entries can be named too but are not listed (the cache
    holds more than models)."""
    found: dict[str, Path | None] = {name: None for name in (*BUILTIN_MODELS, *sorted(served))}
    for root in reversed(settings.model_roots):  # the first root wins, as in model_directory
        if not root.is_dir():
            continue
        for config in (*root.glob("*/config.json"), *root.glob("*/*/config.json")):
            name = config.parent.relative_to(root).as_posix()
            if DIRECTORY_NAME.fullmatch(name):
                found[name] = config.parent
    return found


def local_model(value: str, settings: Settings) -> tuple[str, Settings]:
    """For commands run on the model's own machine (``genq run``, ``genq worker``): a path to a
    model directory becomes its name, with its parent added to the model roots. A name genq
    knows already (a built-in, one under a model root) stays what it names."""
    path = Path(value).expanduser()
    known = value in BUILTIN_MODELS or model_directory(value, settings) is not None
    if known or not (path / "config.json").is_file():
        return value, settings
    path = path.resolve()
    roots = (*settings.model_dirs, path.parent)
    return path.name, settings.model_copy(update={"model_dirs": roots})


def _in_hf_cache(name: str) -> bool:
    if not DIRECTORY_NAME.fullmatch(name):  # "gpt2" or "org/name"
        return False
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))).is_dir()
