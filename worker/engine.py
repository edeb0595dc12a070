"""The generation engine: encode, plan, pad on the left, generate, decode the new tokens."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    StoppingCriteriaList,
)

from genq.errors import InvalidRequest
from genq.params import GenerationParams
from worker.planner import Batch, PlanItem, plan, split
from worker.sampling import RepetitionPenalty, RowSampler, StopStrings, cut_at_stop, row_seed
from worker.types import BatchReport, Choice, GenRequest, GenResult

if TYPE_CHECKING:
    from worker.models import LoadedModel

log = logging.getLogger(__name__)

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

    def __init__(self, loaded: LoadedModel, *, max_batch_tokens: int, max_batch_size: int) -> None:
        self.loaded = loaded
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size

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
        """Yields one report per generate call (and one for requests refused before any)."""
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
            items, max_batch_tokens=self.max_batch_tokens, max_batch_size=self.max_batch_size
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
        input_ids = torch.full((len(rows), width), loaded.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (member, _) in enumerate(rows):
            input_ids[r, width - len(member.ids) :] = torch.tensor(member.ids)
            attention_mask[r, width - len(member.ids) :] = 1
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
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,  # sampling, when asked for, happens per row in RowSampler
            pad_token_id=loaded.pad_token_id,
            eos_token_id=list(loaded.eos_token_ids),
        )
        with torch.inference_mode():
            output = loaded.model.generate(
                input_ids=input_ids.to(loaded.device),
                attention_mask=attention_mask.to(loaded.device),
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stop_criterion] if stop_criterion else []),
            )
        new_tokens = output[:, width:].cpu().tolist()
        stopped_at = stop_criterion.stopped_at if stop_criterion else [None] * len(rows)
        return self._decode(members, rows, new_tokens, stopped_at)

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
            reason = "stop" if ended[r] or hit_stop else "length"
            choices[key].append(Choice(text, reason, len(kept[r])))
        return [
            GenResult(key=m.request.key, error=errors[m.request.key])
            if m.request.key in errors
            else GenResult(m.request.key, tuple(choices[m.request.key]), len(m.ids))
            for m in members
        ]


def _seeds(params: GenerationParams) -> tuple[int, ...]:
    base = params.seed if params.seed is not None else secrets.randbits(63)
    return tuple(row_seed(base, i) for i in range(params.num_return_sequences))
