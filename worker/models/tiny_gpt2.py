"""``tiny-gpt2``: a small random GPT-2 with a GPT-2-style tokenizer, built locally.

It follows GPT-2's token rules exactly (byte-level BPE, ``<|endoftext|>`` as BOS, EOS and
UNK, no pad token), so tests exercise the real padding path in milliseconds. Same torch
and tokenizers versions give the same bytes.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel, GPT2Tokenizer

RECIPE = "tiny-gpt2/1"
"""Bump when anything below changes, so that cached copies are rebuilt."""

END_OF_TEXT = "<|endoftext|>"
VOCAB_SIZE = 1024
N_POSITIONS = 512
N_EMBD = 64
N_LAYER = 2
N_HEAD = 2
SEED = 0

INIT_STD = 0.2
"""Ten times GPT-2's 0.02: near-uniform logits would make greedy output one repeated token."""

EOS_EMBEDDING_SCALE = 2.0
"""Scales EOS's (tied) embedding so greedy runs stop at EOS after some prompts, not all."""


def build(out: Path) -> None:
    tokenizer = _train_tokenizer()
    _init_model(len(tokenizer), tokenizer.eos_token_id).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _train_tokenizer() -> GPT2Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Tokenizer

    corpus = files("worker.models").joinpath("data/tiny_corpus.txt").read_text(encoding="utf-8")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[END_OF_TEXT],
        # All 256 byte symbols, so that any text encodes, whatever the corpus holds.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([corpus], trainer)
    # transformers 5's GPT2Tokenizer is the tokenizers-backed class (4.x's GPT2TokenizerFast).
    return GPT2Tokenizer(
        tokenizer_object=bpe,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        model_max_length=N_POSITIONS,
    )


def _init_model(vocab_size: int, eos_token_id: int) -> GPT2LMHeadModel:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=N_POSITIONS,
        n_embd=N_EMBD,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        initializer_range=INIT_STD,
    )
    # Seed a forked RNG: building must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wte.weight[eos_token_id] *= EOS_EMBEDDING_SCALE
    return model
