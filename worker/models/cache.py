"""Build a model directory once, atomically, into the model cache.

A build writes into a hidden staging directory next to its target and is renamed into
place only when complete, so an interrupted build never leaves a half model behind and
concurrent workers never read one.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

READY_MARKER = ".genq-ready"
"""File in a built model directory holding the recipe it was built from."""


def is_ready(target: Path, recipe: str) -> bool:
    # A directory built by an older recipe is not ready: bumping a recipe rebuilds caches.
    marker = target / READY_MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8") == recipe


def build_once(
    target: Path, recipe: str, build: Callable[[Path], None], *, progress: bool = True
) -> Path:
    """Return ``target``, first running ``build(staging_dir)`` unless ``recipe`` is built there."""
    if is_ready(target, recipe):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if progress:
            print(f"genq: building {target.name} into {target}", file=sys.stderr)
        with _progress_bars(progress):
            build(staging)
        (staging / READY_MARKER).write_text(recipe, encoding="utf-8")
        _publish(staging, target, recipe)
    finally:
        # Gone already after a successful rename; otherwise this drops the partial build.
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _publish(staging: Path, target: Path, recipe: str) -> None:
    # mkdtemp makes the directory 0700 and save_pretrained writes safetensors 0600; a cache
    # shared with workers running as another user must be readable by them.
    for path in [staging, *staging.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if target.exists() and not is_ready(target, recipe):
        _remove_stale(target)
    try:
        staging.rename(target)
    except OSError:
        # Another process published the same build first; its copy is as good as ours.
        if not is_ready(target, recipe):
            raise


def _remove_stale(target: Path) -> None:
    # Rename first so that no reader ever sees a directory half deleted.
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
    target.rename(trash / target.name)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
