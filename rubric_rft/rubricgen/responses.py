"""Candidate responses per prompt from several sources, each response tagged with its generator's name.

Refinement needs great *and diverse* responses: a policy's own samples rarely reach the high-score tail, so
off-policy models and rewrites ("improve this answer") supply it. Sources (one config each, `type`):

- `policy`: a local transformers model, greedy (`temperature: 0`) or sampled;
- `openai`: any OpenAI-compatible chat model (a `ChatEndpointConfig` under `endpoint`), `samples` answers each;
- `rewrite`: a model asked to improve the responses of other generators (`of`; default: every generator that
  is not itself a rewrite); a rewrite of generator G's answer #i is generator `{name}/{G}`, index i;
- `jsonl`: responses already collected, `{prompt_id, response, generator?, index?, label?}` per line.

Sources run in the order given, each concurrently over its prompts. Every response is appended to the output as
it arrives and a rerun skips each (prompt_id, generator, index) already there, so an interrupted run resumes.
A request that failed after retries is listed in `<out>.errors.jsonl` (and tried again on a rerun), never written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from tqdm.auto import tqdm

from rubric_rft.config_values import load_validated
from rubric_rft.llm.client import ChatClient
from rubric_rft.llm.costs import Costs
from rubric_rft.llm.endpoint import ChatEndpointConfig, load_endpoint
from rubric_rft.rubricgen.proposer import RubricProposer
from rubric_rft.rubricgen.records import Appender, Candidate, PromptRow, load_candidates, write_errors
from rubric_rft.rubrics.format import iter_json_records, validated_record

logger = logging.getLogger(__name__)

RESPONSE_SHAPE = "response-v1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PolicySource(_Strict):
    """A local transformers model (a folder or a name `rubric_rft.llm.weights.resolve_model` finds)."""

    type: Literal["policy"] = "policy"
    model: str
    name: str | None = Field(default=None, description="Generator name; default: the model.")
    samples: int = Field(default=1, ge=1)
    temperature: float = Field(default=0.0, ge=0, description="0: greedy (one sample); above 0: sampled.")
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=8, ge=1)
    device: str = "cpu"
    seed: int = 0

    @property
    def generator(self) -> str:
        return self.name or self.model


class _EndpointSource(_Strict):
    endpoint: ChatEndpointConfig

    @field_validator("endpoint", mode="before")
    @classmethod
    def _read_endpoint(cls, value: Any) -> Any:
        return load_endpoint(value, "endpoint config") if isinstance(value, (str, dict)) else value


class ChatSource(_EndpointSource):
    """An OpenAI-compatible chat model answering each prompt `samples` times (set the endpoint's temperature)."""

    type: Literal["openai"] = "openai"
    name: str | None = Field(default=None, description="Generator name; default: the endpoint's model.")
    samples: int = Field(default=1, ge=1)

    @property
    def generator(self) -> str:
        return self.name or self.endpoint.model


class RewriteSource(_EndpointSource):
    """A chat model asked to improve the responses of the generators in `of`."""

    type: Literal["rewrite"] = "rewrite"
    name: str | None = Field(default=None, description="Name prefix; default: rewrite:<model>.")
    of: list[str] | None = Field(default=None, description="Generators to rewrite; default: all but rewrites.")

    @property
    def generator(self) -> str:
        return self.name or f"rewrite:{self.endpoint.model}"


class JsonlSource(_Strict):
    """Responses collected elsewhere; `name` is the generator of records that name none."""

    type: Literal["jsonl"] = "jsonl"
    path: str
    name: str | None = None

    @property
    def generator(self) -> str:
        return self.name or Path(self.path).stem


SourceConfig = Annotated[PolicySource | ChatSource | RewriteSource | JsonlSource, Field(discriminator="type")]
_adapter: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)


def load_source(value: str | dict[str, Any] | BaseModel) -> PolicySource | ChatSource | RewriteSource | JsonlSource:
    """A source config from a dict, a JSON string or a YAML/JSON path; errors name the field."""
    if isinstance(value, (PolicySource, ChatSource, RewriteSource, JsonlSource)):
        return value
    return load_validated(value, _adapter, "response source")[0]


@dataclass
class CollectSummary:
    """Responses written per generator, responses already there, and the requests that failed."""

    written: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    costs: Costs = field(default_factory=Costs)


class _Collector:
    """Shared state of one collection run: what the output holds, and where new responses go."""

    def __init__(self, out: Path, summary: CollectSummary, progress: bool) -> None:
        self.candidates: dict[tuple[str, str, int], Candidate] = {c.key: c for c in load_candidates(out)}
        self.appender = Appender(out)
        self.summary = summary
        self.progress = progress

    def missing(self, keys: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        """The keys not in the output yet; the others count as skipped."""
        todo = [key for key in keys if key not in self.candidates]
        self.summary.skipped += len(keys) - len(todo)
        return todo

    def add(self, candidate: Candidate) -> None:
        self.appender.write(candidate.model_dump(mode="json", exclude_none=True))
        self.candidates[candidate.key] = candidate
        self.summary.written[candidate.generator] += 1

    def bar(self, total: int, what: str) -> tqdm:
        return tqdm(total=total, desc=what, unit="response", disable=not self.progress)


async def collect_responses(
    prompts: list[PromptRow],
    sources: list[PolicySource | ChatSource | RewriteSource | JsonlSource],
    out: str | Path,
    *,
    progress: bool = True,
) -> CollectSummary:
    """Append every source's responses for `prompts` to `out` (JSONL of `Candidate`); see the module docstring."""
    out = Path(out)
    if out.suffix != ".jsonl":
        raise ValueError(f"{out}: responses are appended as they arrive, so the output must be a .jsonl file")
    names = [source.generator for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"two sources have the generator name(s) {repeated}; give each source its own `name`")
    summary = CollectSummary()
    collector = _Collector(out, summary, progress)
    try:
        for source in sources:
            if isinstance(source, JsonlSource):
                _import_jsonl(source, prompts, collector)
            elif isinstance(source, PolicySource):
                await asyncio.to_thread(_sample_policy, source, prompts, collector)
            elif isinstance(source, ChatSource):
                await _ask_chat(source, prompts, collector)
            else:
                await _rewrite(source, prompts, collector)
    finally:
        collector.appender.close()
        write_errors(out, summary.errors)
    return summary


def _import_jsonl(source: JsonlSource, prompts: list[PromptRow], collector: _Collector) -> None:
    known = {row.prompt_id for row in prompts}
    counts: Counter[tuple[str, str]] = Counter()
    for location, record in iter_json_records(Path(source.path)):
        record = {"generator": source.generator, **record}
        if "index" not in record:
            record["index"] = counts[(str(record.get("prompt_id")), record["generator"])]
        candidate = validated_record(location, record, Candidate)
        counts[(candidate.prompt_id, candidate.generator)] += 1
        if candidate.prompt_id in known and collector.missing([candidate.key]):
            collector.add(candidate)


def _sample_policy(source: PolicySource, prompts: list[PromptRow], collector: _Collector) -> None:
    """Greedy or sampled answers from a local model, batch by batch (runs in a worker thread)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rubric_rft.llm.generation import generate
    from rubric_rft.llm.weights import resolve_model

    if source.temperature == 0 and source.samples > 1:
        raise ValueError(f"policy source {source.generator!r}: greedy decoding gives one answer; set a temperature")
    keys = [(row.prompt_id, source.generator, index) for row in prompts for index in range(source.samples)]
    missing = collector.missing(keys)
    rows = {row.prompt_id: row for row in prompts}
    todo = [rows[prompt_id] for prompt_id in dict.fromkeys(prompt_id for prompt_id, _, _ in missing)]
    if not todo:
        return
    path = resolve_model(source.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(source.device)
    with collector.bar(len(missing), f"answering ({source.generator})") as bar:
        for start in range(0, len(todo), source.batch_size):
            batch = todo[start : start + source.batch_size]
            messages = [row.prompt for row in batch]
            if source.temperature == 0:
                greedy = generate(model, tokenizer, messages, max_new_tokens=source.max_new_tokens)
                answers = [[text] for text in greedy.texts]
            else:
                answers = _sampled(model, tokenizer, messages, source, seed=source.seed + start)
            for row, samples in zip(batch, answers, strict=True):
                for index, text in enumerate(samples):
                    if (row.prompt_id, source.generator, index) not in collector.candidates:
                        collector.add(
                            Candidate(prompt_id=row.prompt_id, generator=source.generator, index=index, response=text)
                        )
                        bar.update()


def _sampled(model, tokenizer, messages: list[list[dict]], source: PolicySource, seed: int) -> list[list[str]]:
    """`source.samples` sampled answers per prompt, deterministic under `seed`: one generate call for the batch."""
    from rubric_rft.llm.generation import generate

    texts = generate(
        model,
        tokenizer,
        messages,
        max_new_tokens=source.max_new_tokens,
        batch_size=len(messages) * source.samples,
        samples_per_prompt=source.samples,
        temperature=source.temperature,
        top_p=source.top_p,
        seed=seed,
    ).texts
    return [texts[i : i + source.samples] for i in range(0, len(texts), source.samples)]


async def _ask_chat(source: ChatSource, prompts: list[PromptRow], collector: _Collector) -> None:
    """Each prompt's messages as they are, once per sample; the sample index is part of the cache key."""
    rows = {row.prompt_id: row for row in prompts}
    keys = [(row.prompt_id, source.generator, index) for row in prompts for index in range(source.samples)]
    todo = [(rows[prompt_id], index) for prompt_id, _, index in collector.missing(keys)]

    async def one(client: ChatClient, row: PromptRow, index: int, bar: tqdm) -> None:
        key = dict(shape=RESPONSE_SHAPE, max_tokens=source.endpoint.max_tokens, prompt=row.prompt, index=index)
        asked = await client.ask(row.prompt, lambda text: {"text": text.strip()}, key)
        if asked.ok:
            answer = asked.value["text"]
            collector.add(Candidate(prompt_id=row.prompt_id, generator=source.generator, index=index, response=answer))
        else:
            _failed(collector, row.prompt_id, source.generator, index, asked.error)
        collector.summary.costs.add(asked)
        bar.update()

    async with ChatClient(source.endpoint) as client:
        with collector.bar(len(todo), f"answering ({source.generator})") as bar:
            await asyncio.gather(*(one(client, row, index, bar) for row, index in todo))


async def _rewrite(source: RewriteSource, prompts: list[PromptRow], collector: _Collector) -> None:
    rows = {row.prompt_id: row for row in prompts}
    rewritable: Callable[[Candidate], bool] = (
        (lambda c: c.rewrite_of is None) if source.of is None else (lambda c: c.generator in source.of)
    )
    drafts = [
        c
        for c in sorted(collector.candidates.values(), key=lambda c: c.key)
        if c.prompt_id in rows and rewritable(c) and not c.generator.startswith(f"{source.generator}/")
    ]
    wanted = {(d.prompt_id, f"{source.generator}/{d.generator}", d.index): d for d in drafts}
    todo = [wanted[key] for key in collector.missing(list(wanted))]
    proposer = RubricProposer(source.endpoint)

    async def one(draft: Candidate, bar: tqdm) -> None:
        generator = f"{source.generator}/{draft.generator}"
        asked = await proposer.rewrite(rows[draft.prompt_id].text, draft.response)
        if asked.ok:
            collector.add(
                Candidate(
                    prompt_id=draft.prompt_id,
                    generator=generator,
                    index=draft.index,
                    response=asked.value,
                    rewrite_of={"generator": draft.generator, "index": draft.index},
                )
            )
        else:
            _failed(collector, draft.prompt_id, generator, draft.index, asked.error)
        collector.summary.costs.add(asked)
        bar.update()

    try:
        with collector.bar(len(todo), f"rewriting ({source.generator})") as bar:
            await asyncio.gather(*(one(draft, bar) for draft in todo))
    finally:
        await proposer.aclose()


def _failed(collector: _Collector, prompt_id: str, generator: str, index: int, error: str) -> None:
    logger.warning("no response for %s %s#%d: %s", prompt_id, generator, index, error)
    collector.summary.errors.append({"prompt_id": prompt_id, "generator": generator, "index": index, "error": error})
