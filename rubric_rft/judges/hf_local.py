"""An in-process transformers judge: P(yes) per criterion from the model's next-token distribution.

For small local judges (and for tests without a server). One forward pass per criterion answers it: the
judge is asked to reply Yes or No, and P(yes) is the probability mass of the "yes" answer tokens against the
"no" ones. Forward passes run in a worker thread, one batch at a time, so the event loop (and the other
reward functions on it) keeps going.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rubric_rft.config_values import ConfigError
from rubric_rft.judges.base import AsyncClosing, CriterionVerdict, GradeRequest, Verdict
from rubric_rft.judges.prompts import TEMPLATE_VERSION, per_criterion_yes_no_messages
from rubric_rft.judges.registry import register_backend
from rubric_rft.llm.cache import AnswerCache, cache_key
from rubric_rft.llm.weights import resolve_model

YES_WORDS = ("Yes", "yes", "YES")
NO_WORDS = ("No", "no", "NO")


class HFJudgeConfig(BaseModel):
    """A transformers causal LM loaded in-process; P(yes) per criterion from its next-token distribution."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Literal["hf"] = "hf"
    model: str
    cache_path: str | None = Field(default=None, description="SQLite file of cached verdicts; none disables the cache.")
    device: str = "cpu"
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=2048, ge=64, description="Prompt tokens kept (left-truncated).")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="P(yes) at or above which a criterion is met.")


class JudgeModelError(ConfigError):
    """The judge's model cannot be loaded: the run stops at the start instead of failing every grade."""


@register_backend
class HFJudge(AsyncClosing):
    """Judge backend `hf`. The model is loaded when the judge is built, so a model that cannot load stops the run
    at its start, with the model's path in the message."""

    Config = HFJudgeConfig

    def __init__(self, config: HFJudgeConfig) -> None:
        self.config = config
        self.name = f"hf:{config.model}"
        self._cache = AnswerCache(config.cache_path) if config.cache_path else None
        self._forward_lock = threading.Lock()
        try:
            self._load()
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise JudgeModelError(f"model: judge model {config.model!r} cannot be loaded ({problem}): give a local "
                                  "model directory, or a model whose weights are installed (nothing is downloaded)"
                                  ) from exc

    def _load(self) -> None:
        # torch and transformers are imported here, not at the top: the registry imports every built-in backend
        # to read its config, and a process that only talks to servers then stays lean (its garbage collector
        # walks far fewer objects: docs/benchmarks.md has the grading throughput it costs).
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(self.config.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.config.device).eval()
        self._yes_ids = _first_token_ids(tokenizer, YES_WORDS)
        self._no_ids = _first_token_ids(tokenizer, NO_WORDS)
        if set(self._yes_ids) & set(self._no_ids):
            raise ValueError(f"{path}: the tokenizer does not tell 'yes' from 'no' by first token")
        self._tokenizer, self._model = tokenizer, model

    async def grade(self, request: GradeRequest) -> Verdict:
        started = time.perf_counter()
        verdict = Verdict()
        keys = [self._key(request, c.text) for c in request.criteria]
        probabilities: dict[str, float] = {}
        todo = []
        for criterion, key in zip(request.criteria, keys, strict=True):
            cached = self._cache.get(key) if self._cache is not None else None
            if cached is not None:
                probabilities[criterion.id] = cached["p_yes"]
                verdict.cache_hits += 1
            else:
                todo.append((criterion, key))
        if todo:
            try:
                questions = [per_criterion_yes_no_messages(request.prompt, request.response, c.text) for c, _ in todo]
                computed = await asyncio.to_thread(self.p_yes, questions)
            except Exception as exc:  # a failed forward pass is a failed grade, reported, never a score
                error = f"{self.name}: {type(exc).__name__}: {exc}"
                return Verdict(error=error, latency_s=time.perf_counter() - started)
            verdict.calls += len(todo)
            for (criterion, key), p_yes in zip(todo, computed, strict=True):
                probabilities[criterion.id] = p_yes
                if self._cache is not None:
                    self._cache.put(key, {"p_yes": p_yes})
        verdict.criteria = {
            cid: CriterionVerdict(satisfied=p >= self.config.threshold, probability=p)
            for cid, p in probabilities.items()
        }
        verdict.latency_s = time.perf_counter() - started
        return verdict

    def _key(self, request: GradeRequest, criterion_text: str) -> str:
        return cache_key(
            backend="hf",
            model=self.config.model,
            template=TEMPLATE_VERSION,
            shape="per_criterion_yes_no",
            prompt=request.prompt,
            response=request.response,
            criteria=[criterion_text],
        )

    def p_yes(self, conversations: list[list[dict]]) -> list[float]:
        """P(yes) against P(no) for the first answer token of each chat message list, as `grade` reads it; for
        measuring other judge templates with the same model and the same reading."""
        import torch

        results: list[float] = []
        with self._forward_lock, torch.no_grad():
            for start in range(0, len(conversations), self.config.batch_size):
                texts = [
                    self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                    for messages in conversations[start : start + self.config.batch_size]
                ]
                self._tokenizer.truncation_side = "left"
                inputs = self._tokenizer(
                    texts,
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.config.max_length,
                    add_special_tokens=False,
                ).to(self._model.device)
                logits = self._model(**inputs).logits[:, -1, :].float()
                log_probs = torch.log_softmax(logits, dim=-1)
                yes = torch.logsumexp(log_probs[:, self._yes_ids], dim=-1)
                no = torch.logsumexp(log_probs[:, self._no_ids], dim=-1)
                results.extend(torch.sigmoid(yes - no).tolist())
        return results

    async def aclose(self) -> None:
        """Close the cache connection (the next grade opens it again); the model stays loaded."""
        if self._cache is not None:
            self._cache.close()


def _first_token_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """The first token of each spelling, with and without a leading space, when that token carries letters
    (a tokenizer without a merged " Yes" starts it with a bare space, which says nothing)."""
    ids = set()
    for variant in (v for w in words for v in (w, " " + w)):
        first = tokenizer.encode(variant, add_special_tokens=False)[0]
        if tokenizer.decode([first]).strip():
            ids.add(first)
    return sorted(ids)
