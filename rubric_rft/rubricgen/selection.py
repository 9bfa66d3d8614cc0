"""Which responses a refinement round compares: great and diverse pairs from the high-score tail.

Principle 1 (the tail): only the responses the current rubric scores highest matter to a policy optimized
against it, so pairs are drawn among the top `tail_fraction` of a prompt's candidates (at least `min_tail`;
responses tied with the last one in are in too). Principle 2 (diversity): two responses of one generator, or
two near-copies, differ in little the rubric should learn, so a pair must come from different generators
(`distinct_generators`) and have a token Jaccard similarity of at most `max_similarity`. Among the eligible
pairs, picks are greedy: responses not used yet first, then generator pairs not used yet, then the most
dissimilar; remaining ties are broken by a random draw seeded by `seed`, so a selection is reproducible.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from rubric_rft.rubricgen.records import Candidate

_TOKEN = re.compile(r"\w+")


class SelectionConfig(BaseModel):
    """How pairs are picked; the defaults are the paper's best setting: 4 great and diverse pairs."""

    model_config = ConfigDict(extra="forbid")

    num_pairs: int = Field(default=4, ge=1)
    tail_fraction: float = Field(default=0.5, gt=0, le=1, description="Share of a prompt's candidates in the tail.")
    min_tail: int = Field(default=4, ge=2, description="Candidates in the tail at least (all when fewer).")
    max_similarity: float = Field(default=0.7, ge=0, le=1, description="Most token Jaccard similarity in a pair.")
    distinct_generators: bool = Field(default=True, description="Pair only responses of different generators.")


@dataclass(frozen=True)
class Scored:
    """A candidate with its score under the current rubric (the raw weighted sum orders; normalized is shown)."""

    candidate: Candidate
    score: float
    normalized: float


@dataclass(frozen=True)
class SelectedPair:
    first: Scored
    second: Scored
    similarity: float


def tokens(text: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(text.lower()))


def similarity(a: str, b: str) -> float:
    """Token Jaccard similarity: shared words over words in either (two empty texts are identical)."""
    first, second = tokens(a), tokens(b)
    union = first | second
    return 1.0 if not union else len(first & second) / len(union)


def tail(scored: Sequence[Scored], tail_fraction: float, min_tail: int) -> list[Scored]:
    """The best-scored candidates, best first: the top `tail_fraction` (at least `min_tail`), ties included."""
    if not scored:
        return []
    ranked = sorted(scored, key=lambda s: -s.score)
    size = min(len(ranked), max(min_tail, math.ceil(tail_fraction * len(ranked))))
    cut = ranked[size - 1].score
    return [s for s in ranked if s.score >= cut or math.isclose(s.score, cut, abs_tol=1e-12)]


def select_pairs(scored: Sequence[Scored], config: SelectionConfig, seed: int | str = 0) -> list[SelectedPair]:
    """Up to `config.num_pairs` great and diverse pairs (see the module docstring); fewer when too few qualify."""
    rng = random.Random(f"select:{seed}")
    top = sorted(tail(scored, config.tail_fraction, config.min_tail), key=lambda s: s.candidate.key)
    eligible = []
    for first, second in itertools.combinations(top, 2):
        if config.distinct_generators and first.candidate.generator == second.candidate.generator:
            continue
        shared = similarity(first.candidate.response, second.candidate.response)
        if shared <= config.max_similarity:
            eligible.append((SelectedPair(first, second, shared), rng.random()))
    chosen: list[SelectedPair] = []
    used: set[tuple[str, str, int]] = set()
    used_generators: set[frozenset[str]] = set()
    while eligible and len(chosen) < config.num_pairs:

        def priority(item: tuple[SelectedPair, float]) -> tuple:
            pair, draw = item
            keys = (pair.first.candidate.key, pair.second.candidate.key)
            generators = frozenset((pair.first.candidate.generator, pair.second.candidate.generator))
            return (sum(k not in used for k in keys), generators not in used_generators, -pair.similarity, draw)

        best = max(eligible, key=priority)
        eligible.remove(best)
        pair = best[0]
        chosen.append(pair)
        used.update((pair.first.candidate.key, pair.second.candidate.key))
        used_generators.add(frozenset((pair.first.candidate.generator, pair.second.candidate.generator)))
    return chosen
