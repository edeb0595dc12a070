"""The generation engine: encode, plan, pad on the left, generate, decode the new tokens."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import (
    Cache,
    DynamicLayer,
    GenerationConfig,
    GenerationMixin,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    StoppingCriteriaList,
)

from genq.errors import InvalidRequest
from genq.params import GenerationParams
from worker import attention
from worker.kvcache import PreallocatedLayer, stack_left_padded
from worker.planner import DEFAULT_STEP_COST, Batch, PlanItem, plan, prefill_chunks, split
from worker.sampling import RepetitionPenalty, RowSampler, StopStrings, cut_at_stop, row_seed
from worker.types import BatchReport, Choice, FinishReason, GenRequest, GenResult

if TYPE_CHECKING:
    from genq.settings import Settings
    from worker.models import LoadedModel

log = logging.getLogger(__name__)

ACCELERATOR_STEP_COST = 1024
"""On a GPU a decode step is bound by reading the weights, so extra rows are nearly free."""

DEFAULT_PRUNE_EVERY = 8
"""New tokens per generate slice; finished rows leave the batch between slices."""

DEFAULT_PREFILL_TOKENS = 4096
"""Most padded prompt tokens in one prefill chunk (bounds the attention scores' memory)."""

OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


@dataclass(frozen=True)
class _Encoded:
    request: GenRequest
    ids: list[int]
    seeds: tuple[int, ...]  # one per return sequence; used only when sampling


class Engine:
    """Turns many requests into few, well-packed ``generate`` calls.

    Requests are grouped by parameter set; a failing request (bad input, a decode error, out of
    memory on its own) becomes that request's error and the others go on.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        prune_every: int = DEFAULT_PRUNE_EVERY,
        step_cost: int | None = None,
        prefill_tokens: int = DEFAULT_PREFILL_TOKENS,
    ) -> None:
        self.loaded = loaded
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.prune_every = prune_every
        self.prefill_tokens = prefill_tokens
        self._split_prefill = True
        self._spanned = attention.install(loaded.model)
        if step_cost is None:
            step_cost = DEFAULT_STEP_COST if loaded.device.type == "cpu" else ACCELERATOR_STEP_COST
        self.step_cost = step_cost

    @classmethod
    def from_settings(cls, loaded: LoadedModel, settings: Settings, **overrides: Any) -> Engine:
        options: dict[str, Any] = {
            "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_size": settings.max_batch_size,
            "step_cost": settings.batch_step_cost,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        return cls(loaded, **options)

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self.loaded.tokenizer

    def encode(self, request: GenRequest) -> list[int]:
        """Token ids of the prompt; raises InvalidRequest when it cannot run on this model."""
        tok = self.tokenizer
        if request.messages is not None:
            if not getattr(tok, "chat_template", None):
                raise InvalidRequest(
                    "messages", f"model {self.loaded.name} has no chat template; send a prompt"
                )
            text = tok.apply_chat_template(
                list(request.messages), add_generation_prompt=True, tokenize=False
            )
            ids = tok(text, add_special_tokens=False)["input_ids"]
        elif request.prompt is not None:
            ids = tok(request.prompt)["input_ids"]
        else:
            raise InvalidRequest("prompt", "a prompt or messages is required")
        if not ids:
            raise InvalidRequest("prompt", "prompt is empty")
        limit = self.loaded.context_length
        if len(ids) + request.params.max_new_tokens > limit:
            raise InvalidRequest(
                "prompt",
                f"prompt has {len(ids)} tokens; with max_new_tokens="
                f"{request.params.max_new_tokens} that exceeds the model's context of "
                f"{limit} tokens",
            )
        return list(ids)

    def run(self, requests: Iterable[GenRequest]) -> Iterator[BatchReport]:
        """Yields one report per planned batch (and one for requests refused before any)."""
        encoded: dict[str, _Encoded] = {}
        refused: list[GenResult] = []
        for request in requests:
            try:
                ids = self.encode(request)
            except InvalidRequest as exc:
                refused.append(GenResult(key=request.key, error=str(exc)))
                continue
            encoded[request.key] = _Encoded(request, ids, _seeds(request.params))
        if refused:
            yield BatchReport("", tuple(r.key for r in refused), 0, 0, 1.0, 0.0, tuple(refused))
        items = [
            PlanItem(
                key=key,
                group=enc.request.params.group_key(),
                prompt_tokens=len(enc.ids),
                max_new_tokens=enc.request.params.max_new_tokens,
                rows=enc.request.params.num_return_sequences,
            )
            for key, enc in encoded.items()
        ]
        for batch in plan(
            items,
            max_batch_tokens=self.max_batch_tokens,
            max_batch_size=self.max_batch_size,
            step_cost=self.step_cost,
        ):
            started = time.perf_counter()
            results = self._run_batch(batch, encoded)
            yield BatchReport(
                group=batch.group,
                keys=tuple(item.key for item in batch.items),
                rows=batch.rows,
                padded_length=batch.padded_length,
                prompt_efficiency=batch.prompt_efficiency,
                seconds=time.perf_counter() - started,
                results=tuple(results),
            )

    def _run_batch(self, batch: Batch, encoded: dict[str, _Encoded]) -> list[GenResult]:
        members = [encoded[item.key] for item in batch.items]
        try:
            return self._generate(members)
        except OUT_OF_MEMORY as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            reason = f"out of memory: {exc}"
        except Exception as exc:  # noqa: BLE001 - isolate the request that breaks the batch
            reason = f"generation failed: {type(exc).__name__}: {exc}"
        if len(batch.items) == 1:
            log.warning("request %s failed alone: %s", batch.items[0].key, reason)
            return [GenResult(key=batch.items[0].key, error=reason)]
        log.info("batch of %d rows failed (%s); halving", batch.rows, reason)
        first, second = split(batch)
        return self._run_batch(first, encoded) + self._run_batch(second, encoded)

    def _generate(self, members: Sequence[_Encoded]) -> list[GenResult]:
        params = members[0].request.params  # one group: the same batch-wide parameters
        rows = [(m, i) for m in members for i in range(params.num_return_sequences)]
        width = max(len(m.ids) for m in members)
        loaded = self.loaded
        # Left padding: every row's last prompt token sits in the last column, where
        # generation continues; the mask keeps padding out of attention and positions.
        input_ids, attention_mask = _left_padded([m.ids for m, _ in rows], loaded.pad_token_id)
        first_real = width - torch.tensor([len(m.ids) for m, _ in rows])

        processors = LogitsProcessorList()
        if params.repetition_penalty is not None:
            processors.append(RepetitionPenalty(params.repetition_penalty, first_real))
        if params.no_repeat_ngram_size is not None:
            processors.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
        if params.min_new_tokens:
            processors.append(
                MinNewTokensLengthLogitsProcessor(
                    width, params.min_new_tokens, list(loaded.eos_token_ids)
                )
            )
        if params.do_sample:
            processors.append(
                RowSampler(
                    [m.seeds[i] for m, i in rows],
                    temperature=params.temperature,
                    top_k=params.top_k,
                    top_p=params.top_p,
                )
            )
        stops = [m.request.params.stop for m, _ in rows]
        stop_criterion = StopStrings(self.tokenizer, stops, width) if any(stops) else None
        prunable: list[Any] = [p for p in processors if hasattr(p, "select")]
        if stop_criterion:
            prunable.append(stop_criterion)
        prefilled = self._prefill([m.ids for m in members], width, params.max_new_tokens)
        if prefilled is not None and params.num_return_sequences > 1:
            prefilled.cache.batch_repeat_interleave(params.num_return_sequences)
            prefilled.logits = prefilled.logits.repeat_interleave(
                params.num_return_sequences, dim=0
            )
        tokens, stopped_at = self._generate_pruning(
            input_ids,
            attention_mask,
            prefilled,
            params.max_new_tokens,
            processors,
            stop_criterion,
            prunable,
        )
        return self._decode(members, rows, tokens, stopped_at)

    def _prefill(
        self, prompts: Sequence[list[int]], width: int, max_new_tokens: int
    ) -> _Prefilled | None:
        """The KV cache of every prompt, left-padded to ``width``, and each prompt's next-token
        logits.

        Prompts run in chunks of near-equal length, so a long prompt in the batch does not make
        every short one pay for its padding in the prefill; the decode that follows still runs
        all rows together. Each prompt is prefilled whole, as ``generate`` would, so its output
        does not change with the batch. ``None`` when the model's cache is not the plain growing
        kind: ``generate`` then prefills the whole batch itself."""
        if not self._split_prefill:
            return None
        loaded = self.loaded
        order = sorted(range(len(prompts)), key=lambda r: len(prompts[r]))
        chunks = prefill_chunks([len(prompts[r]) for r in order], self.prefill_tokens)
        cache: Cache | None = None
        parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        logits: list[torch.Tensor] = []
        start = 0
        for size in chunks:
            rows = [prompts[r] for r in order[start : start + size]]
            start += size
            ids, mask = _left_padded(rows, loaded.pad_token_id)
            positions = mask.cumsum(-1) - 1  # as generate numbers left-padded rows
            positions.masked_fill_(mask == 0, 1)
            with torch.inference_mode():
                out = loaded.model(
                    input_ids=ids.to(loaded.device),
                    attention_mask=mask.to(loaded.device),
                    position_ids=positions.to(loaded.device),
                    use_cache=True,
                    logits_to_keep=1,
                )
            if not all(type(layer) is DynamicLayer for layer in out.cache.layers):
                self._split_prefill = False
                log.info(
                    "model %s keeps a windowed or static cache: prefill whole batches", loaded.name
                )
                return None
            cache = cache or out.cache
            parts.append([(layer.keys, layer.values) for layer in out.cache.layers])
            logits.append(out.logits[:, -1, :].float())
        assert cache is not None
        restore = torch.empty(len(order), dtype=torch.long)
        restore[torch.tensor(order)] = torch.arange(len(order))
        restore = restore.to(loaded.device)
        capacity = width + max_new_tokens
        for index in range(len(cache.layers)):
            cache.layers[index] = PreallocatedLayer(
                stack_left_padded([part[index][0] for part in parts], width)[restore],
                stack_left_padded([part[index][1] for part in parts], width)[restore],
                capacity,
            )
        return _Prefilled(cache, torch.cat(logits)[restore])

    def _generate_pruning(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefilled: _Prefilled | None,
        max_new_tokens: int,
        processors: LogitsProcessorList,
        stop_criterion: StopStrings | None,
        prunable: Sequence[Any],
    ) -> tuple[list[list[int]], list[int | None]]:
        """``generate`` in slices of ``prune_every`` new tokens, continuing from the KV cache;
        between slices the rows that finished leave the batch, so a few long answers do not
        keep paying for the rows that stopped early. After a split prefill the first token is
        picked here from the prefill's logits, the way ``generate`` picks every other."""
        loaded = self.loaded
        eos = set(loaded.eos_token_ids)
        alive = list(range(input_ids.shape[0]))  # original row of each row still generating
        tokens: list[list[int]] = [[] for _ in alive]
        stopped_at: list[int | None] = [None] * len(alive)
        sequences = input_ids.to(loaded.device)
        mask = attention_mask.to(loaded.device)
        cache = prefilled.cache if prefilled else None
        produced = 0
        while alive and produced < max_new_tokens:
            if prefilled is not None and produced == 0:
                with torch.inference_mode():
                    ids = cast(torch.LongTensor, sequences)
                    scores = processors(ids, cast(torch.FloatTensor, prefilled.logits))
                    sequences = torch.cat([sequences, scores.argmax(-1, keepdim=True)], dim=1)
                    if stop_criterion:
                        stop_criterion(
                            cast(torch.LongTensor, sequences), cast(torch.FloatTensor, scores)
                        )
            else:
                config = GenerationConfig(
                    max_new_tokens=min(self.prune_every, max_new_tokens - produced),
                    do_sample=False,  # sampling, when asked for, happens per row in RowSampler
                    pad_token_id=loaded.pad_token_id,
                    eos_token_id=list(loaded.eos_token_ids),
                    return_dict_in_generate=True,
                )
                first_real = (mask.shape[1] - mask.sum(-1)).tolist()
                spans = attention.plan_spans(first_real) if self._spanned else None
                with torch.inference_mode(), attention.row_spans(spans):
                    out = cast(GenerationMixin, loaded.model).generate(
                        input_ids=sequences,
                        attention_mask=mask,
                        cache=cache,
                        generation_config=config,
                        logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList(
                            [stop_criterion] if stop_criterion else []
                        ),
                    )
                sequences, cache = out.sequences, out.cache
            new = sequences[:, mask.shape[1] :]
            produced += new.shape[1]
            keep = []
            for j, row_tokens in enumerate(new.tolist()):
                row = alive[j]
                tokens[row].extend(row_tokens)
                stop_step = stop_criterion.stopped_at[j] if stop_criterion else None
                if stop_step is not None:
                    stopped_at[row] = stop_step
                elif not eos.intersection(row_tokens):
                    keep.append(j)
            # Every row still generating has only real tokens since the prompt.
            mask = torch.cat([mask, mask.new_ones(new.shape)], dim=1)
            if len(keep) < len(alive):
                index = torch.tensor(keep, dtype=torch.long, device=loaded.device)
                sequences, mask = sequences[index], mask[index]
                if cache is not None:
                    cache.batch_select_indices(index)
                for part in prunable:
                    part.select(keep)
                alive = [alive[j] for j in keep]
        return tokens, stopped_at

    def _decode(
        self,
        members: Sequence[_Encoded],
        rows: Sequence[tuple[_Encoded, int]],
        new_tokens: list[list[int]],
        stopped_at: Sequence[int | None],
    ) -> list[GenResult]:
        eos = set(self.loaded.eos_token_ids)
        kept: list[list[int]] = []
        ended: list[bool] = []
        for tokens, stop_step in zip(new_tokens, stopped_at, strict=True):
            if stop_step is not None:  # what follows is padding, which may be EOS itself
                tokens = tokens[:stop_step]
            end = next((i for i, t in enumerate(tokens) if t in eos), None)
            kept.append(tokens if end is None else tokens[: end + 1])  # a generated EOS counts
            ended.append(end is not None)
        try:
            texts = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        except Exception:  # noqa: BLE001 - decode row by row below, failing only the bad ones
            texts = [None] * len(kept)
        choices: dict[str, list[Choice]] = {m.request.key: [] for m in members}
        errors: dict[str, str] = {}
        for r, (member, _) in enumerate(rows):
            key = member.request.key
            try:
                text = texts[r]
                if text is None:
                    text = self.tokenizer.decode(kept[r], skip_special_tokens=True)
                text, hit_stop = cut_at_stop(text, member.request.params.stop)
            except Exception as exc:  # noqa: BLE001
                errors[key] = f"decode failed: {type(exc).__name__}: {exc}"
                continue
            reason: FinishReason = "stop" if ended[r] or hit_stop else "length"
            choices[key].append(Choice(text, reason, len(kept[r])))
        return [
            GenResult(key=m.request.key, error=errors[m.request.key])
            if m.request.key in errors
            else GenResult(m.request.key, tuple(choices[m.request.key]), len(m.ids))
            for m in members
        ]


@dataclass
class _Prefilled:
    cache: Cache  # every prompt token of every row, left-padded
    logits: torch.Tensor  # (rows, vocab) float32: the scores for each row's first new token


def _left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``rows`` padded on the left to the longest."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :] = torch.tensor(row)
        mask[r, width - len(row) :] = 1
    return ids, mask


def _seeds(params: GenerationParams) -> tuple[int, ...]:
    base = params.seed if params.seed is not None else secrets.randbits(63)
    return tuple(row_seed(base, i) for i in range(params.num_return_sequences))
