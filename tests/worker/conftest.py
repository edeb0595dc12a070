from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from genq.params import parse_params
from genq.settings import Settings, get_settings
from worker.engine import Engine
from worker.models import LoadedModel, load_model
from worker.types import GenRequest, GenResult

PROSE = (
    "The river ran past the old mill and the children watched the water turn the wheel. "
    "Every evening the baker closed his shop, counted the coins and walked home by the bridge. "
    "In the north the winters are long, and people keep lamps burning in their windows. "
)


def varied_prompts(count: int) -> list[str]:
    """Prompts from a few words to a few hundred tokens long, all different."""
    words = PROSE.split()
    return [
        f"{n}. " + " ".join(words[(n * 7) % len(words) :] + words)[: 8 + (n * 53) % 600]
        for n in range(count)
    ]


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


TEST_DEVICE = os.environ.get("GENQ_TEST_DEVICE", "cpu")
"""Where the engine tests' models run: ``GENQ_TEST_DEVICE=cuda`` runs them all on a GPU
(``bench/gpu_check.sh`` does)."""

cuda_only = pytest.mark.skipif(TEST_DEVICE != "cuda", reason="runs with GENQ_TEST_DEVICE=cuda")


@pytest.fixture(scope="session")
def tiny(tiny_cache: Path) -> LoadedModel:
    return load_model("tiny-gpt2", Settings(model_cache=tiny_cache, device=TEST_DEVICE))


@pytest.fixture(scope="session")
def smol() -> LoadedModel:
    return load_model("smollm2-135m", get_settings().model_copy(update={"device": TEST_DEVICE}))


@pytest.fixture
def make_engine() -> Callable[..., Engine]:
    def make(loaded: LoadedModel, **options: Any) -> Engine:
        options.setdefault("max_batch_tokens", 65536)
        options.setdefault("max_batch_size", 64)
        return Engine(loaded, **options)

    return make


def request(key: str, prompt: str | None = None, **params: object) -> GenRequest:
    return GenRequest(key=key, params=parse_params(params), prompt=prompt)


def run_all(engine: Engine, requests: Iterable[GenRequest]) -> dict[str, GenResult]:
    return {r.key: r for report in engine.run(requests) for r in report.results}
