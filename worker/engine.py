"""The generation engine: encode, group by parameter set, decode continuously, decode the text.

Requests of one parameter set share one decode batch (``worker.decode``): prompts are
prefilled in chunks of about one length into free slots, every step feeds all live rows at
once, and a row leaves the batch the step it ends, its slot taken by the next prompt. Prompts
that share a long token prefix (one template, many items) take its keys and values from one
prefill, kept for later windows too.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from genq.errors import InvalidRequest, ModelUnavailable
from genq.params import GenerationParams
from worker import attention, cpu_attention, linear, planner
from worker.decode import KV, DecodeBatch, Prefix, Row
from worker.kvslots import SlotCache
from worker.sampling import cut_at_stop, row_seed
from worker.types import BatchReport, Choice, FinishReason, GenRequest, GenResult

if TYPE_CHECKING:
    from genq.settings import Settings
    from worker.models import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_PREFILL_TOKENS = 1024
"""Prompt tokens packed into one prefill forward: enough for the matrix products to run near
the machine's peak, few enough that the packed attention (every token against every other,
mostly masked) stays a small part of it. A longer prompt has a forward of its own."""

DEFAULT_PREFIX_CACHE_TOKENS = 8192
"""Shared-prefix tokens whose keys and values are kept between windows, least recent out."""

REPORT_SECONDS = 5.0
"""A report (and so a write of what finished) at least this often while rows finish."""

OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


class Engine:
    """Turns many requests into few forwards over one continuously refilled batch.

    A failing forward is retried on half its rows; a request that fails alone (bad input, a
    decode error, out of memory on its own) becomes that request's error and the others go on.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        prefill_tokens: int = DEFAULT_PREFILL_TOKENS,
        prefix_cache_tokens: int = DEFAULT_PREFIX_CACHE_TOKENS,
        packed_linear: bool = True,
        own_columns: bool = True,
    ) -> None:
        self.loaded = loaded
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.prefill_tokens = prefill_tokens
        self.prefixes = PrefixStore(prefix_cache_tokens)
        config = loaded.model.config
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
            raise ModelUnavailable(f"{loaded.name}: sliding-window attention is not supported")
        if not attention.install(loaded.model):
            raise ModelUnavailable(
                f"{loaded.name}: genq's engine needs a model with SDPA attention"
            )
        self.layers = int(config.num_hidden_layers)
        self._planned = attention.PLANNED.to(loaded.device)
        if loaded.device.type == "cpu" and packed_linear:
            linear.pack(loaded.model)
        # decode attention on the CPU through worker.cpu_attention
        self.own_columns = own_columns and cpu_attention.usable(loaded.device, loaded.model.dtype)

    @classmethod
    def from_settings(cls, loaded: LoadedModel, settings: Settings, **overrides: Any) -> Engine:
        options: dict[str, Any] = {
            "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_size": settings.max_batch_size,
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

    def run(self, requests: Iterable[GenRequest]) -> EngineRun:
        """Yields a report each time a share of the requests has finished (and one for
        requests refused before any ran). Between reports, :meth:`EngineRun.withdraw` takes
        back requests that have not started, and :meth:`EngineRun.extend` adds more."""
        groups, refused = self.prepare(requests)
        return EngineRun(self, groups, refused)

    def prepare(
        self, requests: Iterable[GenRequest]
    ) -> tuple[dict[str, list[list[Row]]], list[GenResult]]:
        """Requests as decode rows by parameter set, and those refused (with their error)."""
        groups: dict[str, list[list[Row]]] = {}
        refused: list[GenResult] = []
        for request in requests:
            try:
                ids = self.encode(request)
            except InvalidRequest as exc:
                refused.append(GenResult(key=request.key, error=str(exc)))
                continue
            seeds = _seeds(request.params)
            rows = [Row(request, i, ids, seed) for i, seed in enumerate(seeds)]
            groups.setdefault(request.params.group_key(), []).append(rows)
        return groups, refused

    def forward(
        self,
        rows: Sequence[Row],
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cache: SlotCache,
        spans: attention.Plan,
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        """The model over ``rows``: their next tokens (one per batch row), or their prompts
        packed into one sequence (``keep``: where each row's last token is). Returns the
        logits for each row's next token."""
        with torch.inference_mode(), attention.planned(spans):
            out = self.loaded.model(
                input_ids=input_ids,
                position_ids=position_ids,
                attention_mask=self._planned,
                cache=cache,
                use_cache=True,
                logits_to_keep=1 if keep is None else keep,
            )
        return out.logits[:, -1, :] if keep is None else out.logits[0]

    def prefill_prefix(self, tokens: Sequence[int], after: Prefix | None = None) -> KV:
        """Keys and values of a shared prefix, prefilled on its own (plain causal attention);
        after ``after`` (a shorter prefix it starts with), only the rest is computed."""
        device = self.loaded.device
        cache = DynamicCache(config=self.loaded.model.config)
        start = 0
        with torch.inference_mode():
            if after is not None:
                start = len(after.tokens)
                for index, (k, v) in enumerate(after.kv):
                    cache.update(k[None], v[None], index)
            self.loaded.model(
                input_ids=torch.tensor([list(tokens[start:])], device=device),
                position_ids=torch.arange(start, len(tokens), device=device)[None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return [(layer.keys[0], layer.values[0]) for layer in cache.layers]  # type: ignore[union-attr,index]

    def new_batch(self, shape: planner.Layout) -> DecodeBatch:
        loaded = self.loaded
        return DecodeBatch(
            self.forward,
            loaded.tokenizer,
            layers=self.layers,
            slots=shape.slots,
            capacity=shape.capacity,
            column=shape.column,
            eos=loaded.eos_token_ids,
            pad_id=loaded.pad_token_id,
            device=loaded.device,
            own_columns=self.own_columns,
        )


class EngineRun:
    """One window's requests through the engine, a parameter set at a time: an iterator of
    reports that can also give back requests not started yet and take more while it runs."""

    def __init__(
        self, engine: Engine, groups: dict[str, list[list[Row]]], refused: list[GenResult]
    ) -> None:
        self._engine = engine
        self._groups = groups
        self._refused = refused
        self._current: _Run | None = None
        self._reports = self._run()
        self.before_admit: Callable[[], None] | None = None
        """Called whenever rows are about to join the decode batch, between steps: where a
        worker checks for cancels often enough that few rows join after one."""
        self.refill: Callable[[], None] | None = None
        """Called between steps while fewer requests of the running parameter set wait than
        the batch holds, and none of another: where a worker claims its next window and
        :meth:`extend` s the run with it, so the batch stays full across windows."""

    def __iter__(self) -> EngineRun:
        return self

    def __next__(self) -> BatchReport:
        return next(self._reports)

    def close(self) -> None:
        self._reports.close()

    def extend(self, requests: Iterable[GenRequest]) -> None:
        """More requests for this run: those of the running parameter set join its queue
        (rows enter the decode batch as others leave it), others run after it."""
        groups, refused = self._engine.prepare(requests)
        self._refused.extend(refused)
        for group, units in groups.items():
            if self._current is not None and self._current.group == group:
                self._current.add(units)
            else:
                self._groups.setdefault(group, []).extend(units)

    def withdraw(self, keys: Iterable[str]) -> set[str]:
        """Take back the requests of ``keys`` that have not started generating; returns those
        taken (a request already in the decode batch runs on to its end)."""
        wanted = set(keys)
        taken: set[str] = set()
        queues: list[deque[list[Row]] | list[list[Row]]] = list(self._groups.values())
        if self._current is not None:
            queues.append(self._current.pending)
        for queue in queues:
            kept = [unit for unit in queue if unit[0].key not in wanted]
            if len(kept) < len(queue):
                taken |= {unit[0].key for unit in queue if unit[0].key in wanted}
                queue.clear()
                queue.extend(kept)
        return taken

    def _gate(self) -> None:
        if self.before_admit is not None:
            self.before_admit()

    def _hungry(self) -> None:
        if self.refill is not None and not self._groups:
            self.refill()

    def _refused_report(self) -> BatchReport:
        results, self._refused = tuple(self._refused), []
        return BatchReport("", tuple(r.key for r in results), 0, 0, 1.0, 0.0, results)

    def _run(self) -> Generator[BatchReport, None, None]:
        while True:
            if self._refused:
                yield self._refused_report()
            if not self._groups:
                return
            # The smallest parameter set first: what the fair pick gave a small job (of its
            # own parameters) finishes first, not after the large job's part of the window.
            group = min(self._groups, key=lambda g: (_work(self._groups[g]), g))
            units = self._groups.pop(group)
            if not units:
                continue
            self._current = _Run(self._engine, group, units, gate=self._gate, hungry=self._hungry)
            for report in self._current.reports():
                yield report
                if self._refused:  # refused among requests added meanwhile
                    yield self._refused_report()
            self._current = None


class PrefixStore:
    """Shared prefixes' keys and values, least recently used out past ``capacity`` tokens."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()

    @property
    def known(self) -> frozenset[tuple[int, ...]]:
        return frozenset(self._entries)

    def get(self, tokens: tuple[int, ...], engine: Engine) -> Prefix:
        prefix = self._entries.get(tokens)
        if prefix is None:
            shorter = [p for k, p in self._entries.items() if tokens[: len(k)] == k]
            after = max(shorter, key=lambda p: len(p.tokens), default=None)
            prefix = Prefix(tokens, engine.prefill_prefix(tokens, after))
            self._entries[tokens] = prefix
        self._entries.move_to_end(tokens)
        while self._entries and sum(len(t) for t in self._entries) > self.capacity:
            self._entries.popitem(last=False)  # rows that use it keep their own reference
        return prefix


@dataclass
class _Run:
    """One parameter set's requests through one decode batch."""

    engine: Engine
    group: str
    requests: list[list[Row]]  # each request's rows (one per return sequence)
    gate: Callable[[], None] | None = None  # called before rows join: may withdraw pending
    hungry: Callable[[], None] | None = None  # called while few wait: may add() more
    pending: deque[list[Row]] = field(default_factory=deque)
    batch: DecodeBatch | None = None
    finished: dict[str, list[Row]] = field(default_factory=dict)  # request key -> rows done
    results: list[GenResult] = field(default_factory=list)  # not yet reported
    failing: bool = False  # halving after a failure that was not out of memory
    max_rows: int = 0
    max_chunk: int = 0
    # what the next report says about the work since the last one
    since: float = 0.0
    steps: int = 0
    row_steps: int = 0

    def __post_init__(self) -> None:
        self.max_rows = self.engine.max_batch_size
        self.max_chunk = self.engine.max_batch_size
        self._find_prefixes(self.requests)
        order = sorted(self.requests, key=_admission_order)
        self.pending = deque(order)
        self.since = time.perf_counter()

    def add(self, units: list[list[Row]]) -> None:
        """More requests, queued after those waiting (in admission order among themselves)."""
        self._find_prefixes(units)
        self.pending.extend(sorted(units, key=_admission_order))

    def reports(self) -> Iterator[BatchReport]:
        while True:
            if self.hungry is not None and len(self.pending) < self.max_rows:
                self.hungry()
            if not (self.pending or (self.batch is not None and self.batch.live)):
                break
            if self._admit():
                # Rows can end at admission (one new token): reported as any others, or a run
                # of such rows would write nothing (nor renew its leases) until it ends.
                if self._report_due():
                    yield self._report()
                continue  # admit as many chunks as there are free slots before stepping
            assert self.batch is not None and self.batch.live, "a request that never fits"
            self._step()
            if self._report_due():
                yield self._report()
        if self.results:
            yield self._report()

    def _report_due(self) -> bool:
        return len(self.results) * 2 >= self.max_rows or bool(
            self.results and time.perf_counter() - self.since >= REPORT_SECONDS
        )

    # -- admission ------------------------------------------------------------------------------

    @torch.inference_mode()
    def _admit(self) -> bool:
        batch = self.batch
        live = len(batch.live) if batch is not None else 0
        if not self.pending:
            return False
        if batch is not None and not planner.should_admit(
            free=batch.free, slots=batch.slots, live=live
        ):
            return False
        if self.gate is not None:
            self.gate()  # the worker may take back what has not started (a cancel)
            if not self.pending:
                return False
        batch = self._room_for(self.pending[0])
        # A request's return sequences join together, however many the row cap allows.
        free = min(batch.free, max(self.max_rows, len(self.pending[0])) - len(batch.live))
        if free <= 0:
            return False
        units: list[list[Row]] = []
        lengths = []
        prefix = self.pending[0][0].prefix
        for unit in self.pending:
            row = unit[0]
            if len(units) >= self.max_chunk or row.prefix is not prefix or not batch.fits(row):
                break
            units.append(unit)
            lengths.append(len(row.own))
        per_unit = len(units[0]) if units else 1
        take = planner.chunk_size(
            lengths, free=free // per_unit, max_tokens=self.engine.prefill_tokens
        )
        if take == 0:
            return False
        units = units[:take]
        for _ in units:
            self.pending.popleft()
        rows = [row for unit in units for row in unit]
        try:
            firsts = batch.admit(rows)
        except OUT_OF_MEMORY + (Exception,) as exc:  # noqa: BLE001 - isolate what breaks it
            for row in rows:
                if row.slot >= 0:
                    batch.remove(row)
                row.reset()
            self._failed(units, exc, chunk=True)
            return True
        self._advance(rows, firsts)
        return True

    def _room_for(self, unit: list[Row]) -> DecodeBatch:
        """The batch, laid out anew if ``unit`` (the next request to join) does not fit."""
        batch = self.batch
        if batch is not None and batch.fits(unit[0]) and batch.slots >= len(unit):
            return batch
        live = batch.live if batch is not None else []
        longest = max(len(unit[0].own) for unit in self.pending)
        shape = planner.layout(
            live_lengths=[batch.column - r.start for r in live] if batch else [],
            longest_prompt=longest,
            max_new_tokens=max(unit[0].params.max_new_tokens for unit in self.pending),
            max_rows=max(self.max_rows, len(unit)),
            max_tokens=self.engine.max_batch_tokens,
            min_rows=len(unit),
        )
        if (
            batch is not None
            and shape.slots <= batch.slots
            and shape.capacity <= batch.cache.capacity
        ):
            # What is allocated is big enough: keep it (allocating is a full write of the cache).
            batch.relayout(batch.slots, batch.cache.capacity, shape.column)
        elif batch is None or not live:
            self.batch = self.engine.new_batch(shape)
        else:
            batch.relayout(shape.slots, shape.capacity, shape.column)
        return self.batch  # type: ignore[return-value]

    # -- decoding -------------------------------------------------------------------------------

    @torch.inference_mode()
    def _step(self) -> None:
        batch = self.batch
        assert batch is not None
        live = list(batch.live)
        try:
            tokens = batch.step()
        except OUT_OF_MEMORY + (Exception,) as exc:  # noqa: BLE001 - isolate what breaks it
            units = _units(live)
            for row in live:
                batch.remove(row)
                row.reset()
            self._failed(units, exc, chunk=False)
            return
        self.steps += 1
        self.row_steps += len(live)
        self._advance(live, tokens)

    def _advance(self, rows: Sequence[Row], tokens: Sequence[int]) -> None:
        assert self.batch is not None
        eos = self.batch.eos
        for row, token in zip(rows, tokens, strict=True):
            if token in eos or row.stopped or len(row.tokens) >= row.params.max_new_tokens:
                self.batch.remove(row)
                done = self.finished.setdefault(row.key, [])
                done.append(row)
                if len(done) == _row_count(row.params):
                    del self.finished[row.key]
                    self.results.append(self._result(done))

    # -- failures -------------------------------------------------------------------------------

    def _failed(self, units: list[list[Row]], exc: BaseException, *, chunk: bool) -> None:
        """A forward over ``units`` failed: one request alone gets the error; more go back to
        the queue with half as many allowed at once."""
        if isinstance(exc, OUT_OF_MEMORY):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            reason = f"out of memory: {exc}"
        else:
            reason = f"generation failed: {type(exc).__name__}: {exc}"
        if len(units) == 1:
            key = units[0][0].key
            log.warning("request %s failed alone: %s", key, reason)
            self.results.append(GenResult(key=key, error=reason))
            if self.failing:  # the request that broke the batch is found: back to full size
                self.failing = False
                self.max_rows = self.max_chunk = self.engine.max_batch_size
            return
        self.failing = not isinstance(exc, OUT_OF_MEMORY)
        half = max(1, len(units) // 2)
        log.info(
            "%s of %d requests failed (%s); halving",
            "prefill" if chunk else "step",
            len(units),
            reason,
        )
        if chunk:
            self.max_chunk = half
        else:
            self.max_rows = max(1, sum(len(u) for u in units) // 2)
            self.max_chunk = min(self.max_chunk, half)
        self.pending.extendleft(reversed(units))

    # -- results --------------------------------------------------------------------------------

    def _result(self, rows: list[Row]) -> GenResult:
        rows.sort(key=lambda row: row.index)
        request = rows[0].request
        tok = self.engine.tokenizer
        choices = []
        try:
            texts = tok.batch_decode([row.tokens for row in rows], skip_special_tokens=True)
            for row, text in zip(rows, texts, strict=True):
                text, hit_stop = cut_at_stop(text, request.params.stop)
                ended = bool(row.tokens) and row.tokens[-1] in self.engine.loaded.eos_token_ids
                reason: FinishReason = "stop" if ended or row.stopped or hit_stop else "length"
                choices.append(Choice(text, reason, len(row.tokens)))
        except Exception as exc:  # noqa: BLE001 - this request's error; the batch goes on
            return GenResult(key=request.key, error=f"decode failed: {type(exc).__name__}: {exc}")
        if len(choices) < request.params.num_return_sequences:  # greedy: the one text, n times
            choices *= request.params.num_return_sequences
        return GenResult(request.key, tuple(choices), len(rows[0].ids))

    def _report(self) -> BatchReport:
        now = time.perf_counter()
        results, self.results = tuple(self.results), []
        longest = max((r.prompt_tokens for r in results), default=0)
        report = BatchReport(
            group=self.group,
            keys=tuple(r.key for r in results),
            rows=max(1, round(self.row_steps / self.steps)) if self.steps else len(results),
            padded_length=longest,
            prompt_efficiency=1.0,  # prompts are prefilled packed, with no padding
            seconds=now - self.since,
            results=results,
        )
        self.since, self.steps, self.row_steps = now, 0, 0
        return report

    def _find_prefixes(self, units: list[list[Row]]) -> None:
        store = self.engine.prefixes
        if not store.capacity:
            return
        prompts = [unit[0].ids for unit in units]
        lengths = planner.shared_prefixes(prompts, known=store.known)
        # Shorter prefixes first: a longer one that starts with one is computed on top of it.
        for length, unit in sorted(zip(lengths, units, strict=True), key=lambda p: p[0]):
            if length:
                prefix = store.get(tuple(unit[0].ids[:length]), self.engine)
                for row in unit:
                    row.prefix = prefix


def _work(units: list[list[Row]]) -> int:
    return sum(len(row.ids) + row.params.max_new_tokens for unit in units for row in unit)


def _admission_order(unit: list[Row]) -> tuple[int, tuple[int, ...], int]:
    row = unit[0]
    prefix = row.prefix.tokens if row.prefix is not None else ()
    return (-len(prefix), prefix, len(row.ids))


def _units(rows: Sequence[Row]) -> list[list[Row]]:
    by_key: dict[str, list[Row]] = {}
    for row in rows:
        by_key.setdefault(row.key, []).append(row)
    return list(by_key.values())


def _row_count(params: GenerationParams) -> int:
    """Rows a request decodes: one per return sequence when sampling; greedy decoding gives
    one text, copied into every choice."""
    return params.num_return_sequences if params.do_sample else 1


def _seeds(params: GenerationParams) -> tuple[int, ...]:
    base = params.seed if params.seed is not None else secrets.randbits(63)
    return tuple(row_seed(base, i) for i in range(_row_count(params)))
