"""Which of two responses is better, by a source that never trains anything: a gold judge or known labels.

`GoldJudge` asks a `rubric_rft.pairwise.judges` judge in both orders (so position bias cancels); with the `rubric`
backend it compares by each prompt's gold rubric. `LabelPreference` compares the candidates' `label`s.
A preference is the first response's share of a win: 1 better, 0 worse, 0.5 a tie (0.75 and 0.25 when one
order ties); None with an `error` when it could not be had, which is never read as a tie.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rubric_rft.pairwise.judges import PairwiseJudge, RubricPairwiseConfig, build_pairwise_judge, load_pairwise_judge
from rubric_rft.pairwise.win_rate import PairItem, judge_pair
from rubric_rft.rubricgen.records import Candidate, load_rubric_rows
from rubric_rft.rubricgen.selection import Scored, SelectedPair
from rubric_rft.rubrics.format import Rubric


@dataclass(frozen=True)
class Preferred:
    value: float | None
    error: str | None = None

    @property
    def better_is_first(self) -> bool | None:
        """True or False for a strict preference, None for a tie or a failure."""
        if self.value is None or self.value == 0.5:
            return None
        return self.value > 0.5


class Preference(Protocol):
    name: str

    async def prefer(self, prompt_id: str, prompt: str, first: Candidate, second: Candidate) -> Preferred: ...

    async def aclose(self) -> None: ...


class GoldJudge:
    """A pairwise judge in both orders; `rubrics` (prompt id -> gold rubric) for judges that compare by rubric."""

    def __init__(self, judge: PairwiseJudge, rubrics: Mapping[str, Rubric] | None = None) -> None:
        self.judge = judge
        self.rubrics = rubrics
        self.name = judge.name

    async def prefer(self, prompt_id: str, prompt: str, first: Candidate, second: Candidate) -> Preferred:
        rubric = None
        if self.rubrics is not None:
            rubric = self.rubrics.get(prompt_id)
            if rubric is None:
                return Preferred(None, f"{self.name}: no gold rubric for prompt {prompt_id!r}")
        outcome = await judge_pair(self.judge, PairItem(prompt_id, prompt, first.response, second.response, rubric))
        return Preferred(outcome.outcome, outcome.error)

    async def aclose(self) -> None:
        await self.judge.aclose()


class LabelPreference:
    """The candidate with the higher `label` is better; equal labels tie."""

    name = "labels"

    async def prefer(self, prompt_id: str, prompt: str, first: Candidate, second: Candidate) -> Preferred:
        missing = [c.name for c in (first, second) if c.label is None]
        if missing:
            return Preferred(None, f"labels: no label for {', '.join(missing)} of prompt {prompt_id!r}")
        return Preferred(1.0 if first.label > second.label else 0.0 if first.label < second.label else 0.5)

    async def aclose(self) -> None:
        pass


def build_gold(config: str | dict | None, rubrics_path: str | Path | None = None) -> Preference:
    """A gold judge from a pairwise judge config (see `rubric_rft.pairwise.judges.load_pairwise_judge`) and, for the
    `rubric` backend, a dataset of gold rubrics; with no config, the candidates' labels."""
    if config is None:
        if rubrics_path is not None:
            raise ValueError("gold rubrics need a gold judge config ({'backend': 'rubric', ...})")
        return LabelPreference()
    parsed = load_pairwise_judge(config)
    rubrics = None
    if isinstance(parsed, RubricPairwiseConfig):
        if rubrics_path is None:
            raise ValueError("a gold judge with backend 'rubric' compares by gold rubrics: give their dataset file")
        rubrics = {row.prompt_id: row.rubric for row in load_rubric_rows(rubrics_path)}
    elif rubrics_path is not None:
        raise ValueError("gold rubrics are only read by a gold judge with backend 'rubric'")
    return GoldJudge(build_pairwise_judge(parsed), rubrics)


@dataclass(frozen=True)
class GoldPairs:
    """Pairs with the gold's verdicts: `records` for the logs and `directed` (better, worse), None where the gold
    tied or failed, both in the order of the pairs."""

    records: list[dict[str, Any]]
    directed: list[tuple[Scored, Scored] | None]

    @property
    def ordered(self) -> list[tuple[Scored, Scored]]:
        return [d for d in self.directed if d is not None]

    @property
    def errors(self) -> list[str]:
        return [r["error"] for r in self.records if "error" in r]


async def ask_gold(gold: Preference, prompt_id: str, prompt: str, pairs: Sequence[SelectedPair],
                   shown: Callable[[Candidate], str]) -> GoldPairs:
    """The gold's verdict on every pair, concurrently: what offline and online refinement and transfer all start
    from. `shown` says how a response is named in the records."""
    preferences = await asyncio.gather(
        *(gold.prefer(prompt_id, prompt, p.first.candidate, p.second.candidate) for p in pairs)
    )
    judged = list(zip(pairs, preferences, strict=True))
    return GoldPairs([pair_record(pair, preferred, shown) for pair, preferred in judged],
                     [ordered_by_gold(pair, preferred) for pair, preferred in judged])


def ordered_by_gold(pair: SelectedPair, preferred: Preferred) -> tuple[Scored, Scored] | None:
    """(better, worse) by the gold source; None for a tie or a failure."""
    first_better = preferred.better_is_first
    if first_better is None:
        return None
    return (pair.first, pair.second) if first_better else (pair.second, pair.first)


def pair_credits(
    directed: Sequence[tuple[Scored, Scored]],
    score: Callable[[Scored], float] = lambda scored: scored.score,
    tie_credit: float = 0.0,
) -> list[float]:
    """Each gold-ordered (better, worse) pair's credit under `score`: 1 when the better one scores strictly higher,
    `tie_credit` for a tie, 0 when misordered."""
    def credit(better: Scored, worse: Scored) -> float:
        first, second = score(better), score(worse)
        return 1.0 if first > second else tie_credit if first == second else 0.0

    return [credit(better, worse) for better, worse in directed]


def gold_agreement(
    directed: Sequence[tuple[Scored, Scored]],
    score: Callable[[Scored], float] = lambda scored: scored.score,
    tie_credit: float = 0.0,
) -> float:
    """The share of gold-ordered (better, worse) pairs that `score` puts strictly higher for the better one, a pair
    it ties counting `tie_credit` (0: a tie is a miss; 0.5: a tie is a coin flip, so a rubric that misorders as
    many pairs as it newly orders gains nothing over one that ties them all)."""
    credits = pair_credits(directed, score, tie_credit)
    return sum(credits) / len(credits)


def pair_record(pair: SelectedPair, preferred: Preferred, shown: Callable[[Candidate], str]) -> dict[str, Any]:
    """A pair and the gold's verdict on it, for the records; `shown` says how a response is named there."""
    record = {
        "first": shown(pair.first.candidate),
        "second": shown(pair.second.candidate),
        "first_score": pair.first.score,
        "second_score": pair.second.score,
        "similarity": round(pair.similarity, 4),
        "gold": preferred.value,
    }
    if preferred.error:
        record["error"] = preferred.error
    return record
