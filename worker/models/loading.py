"""Load a resolved model for generation: weights on the device, tokenizer as shipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from genq.errors import ModelUnavailable
from genq.settings import Settings
from worker.models.registry import resolve_model_path

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    name: str
    model: PreTrainedModel  # eval mode, on `device`
    # As shipped: never given a pad token or another padding side; the engine pads itself.
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    pad_token_id: int  # the tokenizer's pad token, else EOS, as GPT-2 needs
    eos_token_ids: tuple[int, ...]
    context_length: int


def load_model(name: str, settings: Settings) -> LoadedModel:
    """Resolve ``name`` (provisioning a built-in if needed) and load it, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = resolve_model_path(name, settings)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    try:
        # The model first: a directory without config.json then says so plainly. A device_map
        # puts the weights straight on the device, with no CPU copy on the way to a GPU.
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=dtype, device_map=device
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{name}: {path} holds no loadable causal LM ({exc})") from exc
    model.eval()

    shipped = model.generation_config
    eos_token_ids = _unique_ids(shipped.eos_token_id, tokenizer.eos_token_id)
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        if not eos_token_ids:
            raise ModelUnavailable(f"{name}: the tokenizer has neither a pad nor an EOS token")
        pad_token_id = eos_token_ids[0]
    # A clean config: shipped sampling defaults (temperature, top_p...) would mix into every
    # request's parameters and make generate() warn when a request turns sampling off.
    bos_token_id = _unique_ids(shipped.bos_token_id, tokenizer.bos_token_id)[:1]
    model.generation_config = GenerationConfig(
        bos_token_id=bos_token_id[0] if bos_token_id else None,
        eos_token_id=list(eos_token_ids) or None,
        pad_token_id=pad_token_id,
    )
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=device,
        pad_token_id=pad_token_id,
        eos_token_ids=eos_token_ids,
        context_length=_context_length(name, model.config, tokenizer),
    )


def resolve_device(setting: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    import torch

    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as exc:
        raise ModelUnavailable(f"GENQ_DEVICE={setting!r} is not a torch device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable(f"GENQ_DEVICE={setting!r}, but torch sees no CUDA device")
    return device


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU (twice the speed of float32, the same memory for twice the
    rows) and float32 elsewhere."""
    import torch

    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, setting)  # type: ignore[no-any-return]


def _unique_ids(*values: int | list[int] | None) -> tuple[int, ...]:
    ids: list[int] = []
    for value in values:
        for token_id in [value] if isinstance(value, int) else value or []:
            if token_id not in ids:
                ids.append(token_id)
    return tuple(ids)


def _context_length(name: str, config: object, tokenizer: PreTrainedTokenizerBase) -> int:
    for attribute in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, attribute, None)
        if isinstance(value, int):
            return value
    # Tokenizers without a limit report a huge sentinel (int(1e30)), which is no limit.
    if tokenizer.model_max_length < 1_000_000:
        return int(tokenizer.model_max_length)
    raise ModelUnavailable(f"{name}: neither the config nor the tokenizer gives a context length")
