"""What the monitor grades held-out samples with, and how the ranks share that work.

Three graders: the proxy (the training reward itself when it is not a rubric, e.g. a Bradley–Terry model; else a
rubric reward over the training judge, reading each prompt's current rubric from the training store), the gold
rubrics (graded by their own judge) and the pairwise gold judge (each sample against the starting policy's sample
of the same prompt and index). Every rank grades its block of the samples and the main process gets them all.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from accelerate.utils import gather_object

from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.llm.generation import rank_block
from rubric_rft.pairwise.win_rate import judge_pairs
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.datasets import load_prompt_dataset
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.monitor.config import MonitorConfig


class HeldoutGraders:
    """The held-out rows (`rows`), their gold rubrics, and the proxy, gold and pairwise graders of the monitor; see
    `OverOptimizationMonitor` for `proxy`, `proxy_judge`, `normalize` and `rubric_store`."""

    def __init__(self, config: MonitorConfig, *, proxy=None, proxy_judge: dict | None = None, normalize: bool = True,
                 rubric_store: RubricStore | None = None) -> None:
        self.rows = heldout_rows(config)
        self.gold_rubrics = gold_rubrics(config, [r["prompt_id"] for r in self.rows])
        self.rubric_store = rubric_store
        self.proxy = proxy if proxy is not None else RubricReward(
            _judge(proxy_judge), normalize=normalize, name="proxy")
        self.gold = RubricReward(_judge(config.gold.judge), normalize=normalize, name="gold") if (
            self.gold_rubrics) else None
        self.pairwise = _pairwise_judge(config.gold.pairwise)

    @property
    def gold_metric(self) -> str:
        """The record field the gold is read from: the gold rubrics' score, else the pairwise win rate."""
        return "gold" if self.gold is not None else "win_rate"

    def grade_on_every_rank(self, rows: list[dict], texts: list[str], baseline_texts: list[str] | None):
        """Every rank grades its block of the samples (`rank_block`); the main process gets every grade, in order.
        Blocks are padded to one length with their last sample (its grade thrown away), so that an in-process proxy
        sharded under ZeRO-3 (a reward model) runs as many forward passes on every rank. `baseline_texts`: the
        starting policy's samples, which the pairwise gold compares with (None before there are any)."""
        from accelerate import PartialState

        ranks = PartialState()
        block = rank_block(len(rows), ranks.process_index, ranks.num_processes)
        padded = list(block) + [block[-1] if block else len(rows) - 1] * (
            -(-len(rows) // ranks.num_processes) - len(block))
        mine = asyncio.run(self._grade([rows[i] for i in padded], [texts[i] for i in padded], padded,
                                       baseline_texts))
        blocks = [rank_block(len(rows), rank, ranks.num_processes) for rank in range(ranks.num_processes)]
        kept = [[None if graded is None else graded[: len(block)] for graded in grades]
                for grades, block in zip(gather_object([mine]), blocks, strict=True)]
        return tuple(None if kept[0][k] is None else [g for grades in kept for g in grades[k]] for k in range(3))

    async def _grade(self, rows: list[dict], texts: list[str], indices: list[int],
                     baseline_texts: list[str] | None):
        """Proxy and gold grades of these samples, and their pairs against the starting policy's samples at the
        same `indices` (None where there is no such grader, or no baseline yet); the three graders at once."""
        prompts = [row["prompt"] for row in rows]

        async def nothing():
            return None

        async with contextlib.AsyncExitStack() as clients:  # each evaluation runs on a fresh loop: close on it
            for client in (self.proxy, self.gold, self.pairwise):
                if client is not None:
                    clients.push_async_callback(client.aclose)
            proxy = self.proxy.grade(prompts, texts, [proxy_rubric(row, self.rubric_store) for row in rows])
            gold = nothing() if self.gold is None else self.gold.grade(
                prompts, texts, [self.gold_rubrics[row["prompt_id"]] for row in rows])
            pairs = nothing() if self.pairwise is None or baseline_texts is None else judge_pairs(self.pairwise, [
                {"prompt_id": row["prompt_id"], "prompt": row["prompt"], "candidate": text,
                 "baseline": baseline_texts[index], "rubric": self.gold_rubrics.get(row["prompt_id"])}
                for row, text, index in zip(rows, texts, indices, strict=True)])
            return tuple(await asyncio.gather(proxy, gold, pairs))


def heldout_rows(config: MonitorConfig) -> list[dict]:
    dataset = load_prompt_dataset(config.heldout_path)
    count = min(config.num_prompts or len(dataset), len(dataset))
    return list(dataset.select(range(count)))


def gold_rubrics(config: MonitorConfig, prompt_ids: list[str]) -> dict[str, Any]:
    if config.gold.rubrics_path is None:
        return {}
    rows = load_prompt_dataset(config.gold.rubrics_path)
    rubrics = dict(zip(rows["prompt_id"], rows["rubric"], strict=True))
    missing = [p for p in prompt_ids if p not in rubrics]
    if missing:
        raise ValueError(
            f"{config.gold.rubrics_path}: no gold rubric for held-out prompt_id(s) {missing} "
            f"(from {config.heldout_path}); every monitored prompt needs one"
        )
    return rubrics


def proxy_rubric(row: dict, store: RubricStore | None):
    """The store's current rubric for a prompt it knows, else the held-out row's own."""
    return store.rubric_for(row["prompt_id"]) if store is not None and row["prompt_id"] in store else row["rubric"]


def _judge(config: dict | None):
    return build_judge(load_judge_config(config)) if config else None


def _pairwise_judge(config: dict | None):
    if config is None:
        return None
    from rubric_rft.pairwise.judges import build_pairwise_judge, load_pairwise_judge

    return build_pairwise_judge(load_pairwise_judge(config))
