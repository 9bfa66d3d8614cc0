"""Rubric quality on held-out comparisons with a known preference, for several rubric sets side by side.

A comparison is two responses to one prompt and which is better (from labels, or a gold judge asked in both
orders). Per rubric set, over the prompts every set covers:

- `accuracy`: share of the strictly preferred pairs the rubric orders as the gold does (a rubric tie counts
  one half); `tail_accuracy` the same over *tail pairs*, both of whose responses are in the gold tail of their
  prompt: the top `tail_fraction` of its responses by gold strength (each response's mean outcome over its
  comparisons, so the tail needs several comparisons per response, e.g. every pair of a prompt's responses).
  The paper's point is that the tail is where a rubric must be right;
- `tie_rate`, `tail_tie_rate`: share of those pairs the rubric scores equal;
- `tail_spread`: standard deviation of the normalized scores of a prompt's tail responses, averaged over
  prompts: zero when the rubric cannot tell great responses apart;
- `length_correlation`, `markdown_correlation`: Spearman correlation, over all graded responses, of the normalized
  score with the length in words and with the count of markdown list items, headings and bold spans: a high
  value means the score follows a superficial feature;
- criteria: count per rubric, share graded by an LLM, pitfalls per rubric, mean positive weight, mean pass rate
  and the shares of criteria every response meets or none does (neither tells responses apart).

`write_report` adds a JSON file and a PNG of the headline figures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rubric_rft.judges.base import Judge
from rubric_rft.pairwise.judges import PREFERENCE
from rubric_rft.rubricgen.gold import Preference
from rubric_rft.rubricgen.records import Candidate, PromptRow
from rubric_rft.rubricgen.scoring import Grade, score_responses
from rubric_rft.rubrics.format import RubricFileError, iter_json_records, validated_record
from rubric_rft.stats import rank_correlation

_MARKDOWN = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S|^\s*#{1,6}\s+\S|\*\*[^*\n]+\*\*", re.M)

# (key, label, format) of the figures in the table, in order.
METRICS = [
    ("pairs", "held-out pairs", "d"),
    ("accuracy", "pairwise accuracy (all)", ".3f"),
    ("tail_pairs", "tail pairs", "d"),
    ("tail_accuracy", "pairwise accuracy (tail)", ".3f"),
    ("tie_rate", "pairs the rubric ties (all)", ".3f"),
    ("tail_tie_rate", "pairs the rubric ties (tail)", ".3f"),
    ("tail_spread", "score spread in the tail (sd)", ".3f"),
    ("length_correlation", "corr. with length (words)", ".3f"),
    ("markdown_correlation", "corr. with markdown", ".3f"),
    ("criteria_per_rubric", "criteria per rubric", ".1f"),
    ("llm_share", "share of llm criteria", ".2f"),
    ("pitfalls_per_rubric", "pitfalls per rubric", ".1f"),
    ("mean_positive_weight", "mean positive weight", ".2f"),
    ("mean_pass_rate", "mean pass rate", ".3f"),
    ("always_met_share", "criteria met by all", ".3f"),
    ("never_met_share", "criteria met by none", ".3f"),
    ("mean_version", "mean rubric version", ".2f"),
    ("grading_failures", "responses not graded", "d"),
]


def word_count(text: str) -> int:
    return len(text.split())


def markdown_count(text: str) -> int:
    """List items, headings and bold spans: the formatting a judge may reward for its own sake."""
    return len(_MARKDOWN.findall(text))


class Comparison(BaseModel):
    """A held-out comparison: `preference` is response A's share of a win ("A", "B", "tie" or a number in
    [0, 1]); None until a gold judge labels it."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str = Field(min_length=1)
    response_a: str
    response_b: str
    preference: float | None = None
    prompt: Any = None

    @field_validator("preference", mode="before")
    @classmethod
    def _winner(cls, value: Any) -> Any:
        if isinstance(value, str) and value in PREFERENCE:
            return PREFERENCE[value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= 1:
            raise ValueError(f"a preference is 'A', 'B', 'tie' or a number in [0, 1], got {value}")
        return value


def load_comparisons(path: str | Path) -> list[Comparison]:
    """Comparisons from a JSON/JSONL file; errors name the file, line and field."""
    comparisons = []
    for location, record in iter_json_records(Path(path)):
        comparisons.append(validated_record(location, record, Comparison))
    if not comparisons:
        raise RubricFileError(f"{path}: no records")
    return comparisons


def comparisons_from_candidates(
    candidates: Sequence[Candidate], *, max_per_prompt: int | None = None, seed: int = 0
) -> list[Comparison]:
    """Every pair of a prompt's responses (a sample of `max_per_prompt`, seeded), unlabelled, or labelled by the
    candidates' `label`s when every candidate has one."""
    by_prompt: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in sorted(candidates, key=lambda c: c.key):
        by_prompt[candidate.prompt_id].append(candidate)
    labelled = all(c.label is not None for c in candidates)
    rng = random.Random(seed)
    comparisons = []
    for prompt_id, group in by_prompt.items():
        pairs = list(itertools.combinations(group, 2))
        if max_per_prompt is not None and len(pairs) > max_per_prompt:
            pairs = sorted(rng.sample(pairs, max_per_prompt), key=lambda p: (p[0].key, p[1].key))
        for a, b in pairs:
            preference = None
            if labelled:
                preference = 1.0 if a.label > b.label else 0.0 if a.label < b.label else 0.5
            comparisons.append(
                Comparison(prompt_id=prompt_id, response_a=a.response, response_b=b.response, preference=preference)
            )
    return comparisons


async def label_comparisons(
    comparisons: Sequence[Comparison], gold: Preference, prompts: Mapping[str, str]
) -> tuple[list[Comparison], list[str]]:
    """Comparisons with a preference, unlabelled ones asked of `gold`; the errors of those it could not label."""

    async def labelled(comparison: Comparison) -> tuple[Comparison | None, str | None]:
        if comparison.preference is not None:
            return comparison, None
        a, b = (
            Candidate(prompt_id=comparison.prompt_id, generator=side, index=0, response=text)
            for side, text in (("A", comparison.response_a), ("B", comparison.response_b))
        )
        preferred = await gold.prefer(comparison.prompt_id, prompts[comparison.prompt_id], a, b)
        if preferred.value is None:
            return None, preferred.error
        return comparison.model_copy(update={"preference": preferred.value}), None

    results = await asyncio.gather(*(labelled(c) for c in comparisons))
    return [c for c, _ in results if c is not None], [e for _, e in results if e is not None]


async def grade_sets(
    rubric_sets: Mapping[str, Mapping[str, PromptRow]], comparisons: Sequence[Comparison], judge: Judge | None
) -> dict[str, dict[tuple[str, str], Grade]]:
    """Every distinct response of the comparisons graded under every rubric set: set -> (prompt id, text) -> grade."""
    responses: dict[str, list[str]] = defaultdict(list)
    for c in comparisons:
        for text in (c.response_a, c.response_b):
            if text not in responses[c.prompt_id]:
                responses[c.prompt_id].append(text)
    jobs = [(name, prompt_id) for name in rubric_sets for prompt_id in responses]

    async def one(name: str, prompt_id: str) -> list[Grade]:
        row = rubric_sets[name][prompt_id]
        return await score_responses(judge, row.text, row.rubric, responses[prompt_id])

    graded = await asyncio.gather(*(one(name, prompt_id) for name, prompt_id in jobs))
    out: dict[str, dict[tuple[str, str], Grade]] = {name: {} for name in rubric_sets}
    for (name, prompt_id), grades in zip(jobs, graded, strict=True):
        out[name].update({(prompt_id, text): g for text, g in zip(responses[prompt_id], grades, strict=True)})
    return out


def gold_tail(comparisons: Sequence[Comparison], tail_fraction: float) -> dict[str, set[str]]:
    """Per prompt, the responses in the top `tail_fraction` by gold strength (at least 2; ties at the cut in)."""
    outcomes: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in comparisons:
        outcomes[c.prompt_id][c.response_a].append(c.preference)
        outcomes[c.prompt_id][c.response_b].append(1.0 - c.preference)
    tails = {}
    for prompt_id, by_response in outcomes.items():
        strength = sorted((sum(v) / len(v) for v in by_response.values()), reverse=True)
        size = min(len(strength), max(2, math.ceil(tail_fraction * len(strength))))
        cut = strength[size - 1]
        tails[prompt_id] = {text for text, v in by_response.items() if sum(v) / len(v) >= cut - 1e-12}
    return tails


def rubric_quality(
    rows: Mapping[str, PromptRow],
    grades: Mapping[tuple[str, str], Grade],
    comparisons: Sequence[Comparison],
    tails: Mapping[str, set[str]],
) -> dict[str, Any]:
    """The figures of the module docstring for one rubric set, with per-criterion pass rates under `criteria`."""
    agreements, tail_agreements, ties, tail_ties = [], [], 0, 0
    for c in comparisons:
        a, b = grades[(c.prompt_id, c.response_a)], grades[(c.prompt_id, c.response_b)]
        if c.preference == 0.5 or a.score is None or b.score is None:
            continue
        tied = math.isclose(a.score, b.score, abs_tol=1e-9)
        agree = 0.5 if tied else float((a.score > b.score) == (c.preference > 0.5))
        ties += tied
        agreements.append(agree)
        tail = tails.get(c.prompt_id, set())
        if c.response_a in tail and c.response_b in tail:
            tail_agreements.append(agree)
            tail_ties += tied
    graded = {key: g for key, g in grades.items() if g.score is not None}
    spreads = []
    for prompt_id, tail in tails.items():
        scores = [graded[(prompt_id, text)].normalized for text in tail if (prompt_id, text) in graded]
        if len(scores) >= 2:
            spreads.append(float(np.std(scores)))
    texts = [text for _, text in graded]
    scores = [g.normalized for g in graded.values()]
    criteria = _criteria(rows, graded)
    rubrics = [rows[prompt_id].rubric for prompt_id in sorted({p for p, _ in grades})]
    all_criteria = [c for rubric in rubrics for c in rubric.criteria]
    positive = [c.weight for c in all_criteria if c.weight > 0]
    rates = [c["pass_rate"] for c in criteria if c["pass_rate"] is not None]
    return {
        "pairs": len(agreements),
        "accuracy": _mean(agreements),
        "tail_pairs": len(tail_agreements),
        "tail_accuracy": _mean(tail_agreements),
        "tie_rate": ties / len(agreements) if agreements else None,
        "tail_tie_rate": tail_ties / len(tail_agreements) if tail_agreements else None,
        "tail_spread": _mean(spreads),
        "length_correlation": rank_correlation(scores, [word_count(t) for t in texts]),
        "markdown_correlation": rank_correlation(scores, [markdown_count(t) for t in texts]),
        "criteria_per_rubric": len(all_criteria) / len(rubrics),
        "llm_share": sum(c.kind == "llm" for c in all_criteria) / len(all_criteria),
        "pitfalls_per_rubric": sum(c.weight < 0 for c in all_criteria) / len(rubrics),
        "mean_positive_weight": _mean(positive),
        "mean_pass_rate": _mean(rates),
        "always_met_share": _mean([float(r == 1.0) for r in rates]),
        "never_met_share": _mean([float(r == 0.0) for r in rates]),
        "mean_version": _mean([r.version for r in rubrics]),
        "grading_failures": len(grades) - len(graded),
        "criteria": criteria,
    }


def _criteria(rows: Mapping[str, PromptRow], graded: Mapping[tuple[str, str], Grade]) -> list[dict[str, Any]]:
    verdicts: dict[str, list[dict[str, bool]]] = defaultdict(list)
    for (prompt_id, _), g in graded.items():
        verdicts[prompt_id].append(g.satisfied)
    out = []
    for prompt_id in sorted(verdicts):
        for criterion in rows[prompt_id].rubric.criteria:
            met = [v[criterion.id] for v in verdicts[prompt_id] if criterion.id in v]
            out.append(
                {
                    "prompt_id": prompt_id,
                    "id": criterion.id,
                    "kind": criterion.kind,
                    "weight": criterion.weight,
                    "pass_rate": sum(met) / len(met) if met else None,
                }
            )
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


@dataclass
class QualityReport:
    """Figures per rubric set (in the order given), and what they were computed on."""

    sets: dict[str, dict[str, Any]]
    comparisons: int
    unlabelled: int
    dropped: int
    tail_fraction: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "tail_fraction": self.tail_fraction,
            "comparisons": self.comparisons,
            "comparisons_unlabelled": self.unlabelled,
            "comparisons_without_rubric": self.dropped,
            "sets": self.sets,
        }


async def rubric_report(
    rubric_sets: Mapping[str, Sequence[PromptRow]],
    comparisons: Sequence[Comparison],
    *,
    judge: Judge | None = None,
    gold: Preference | None = None,
    tail_fraction: float = 0.5,
) -> QualityReport:
    """The quality of each rubric set on the comparisons of the prompts every set covers (see the module
    docstring); unlabelled comparisons are labelled by `gold` first."""
    if not rubric_sets:
        raise ValueError("give at least one rubric set")
    if not 0 < tail_fraction <= 1:
        raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction}")
    sets = {name: {row.prompt_id: row for row in rows} for name, rows in rubric_sets.items()}
    covered = set.intersection(*(set(rows) for rows in sets.values()))
    kept = [c for c in comparisons if c.prompt_id in covered]
    dropped = len(comparisons) - len(kept)
    if not kept:
        raise ValueError("no comparison is about a prompt that every rubric set has a rubric for")
    unlabelled_errors: list[str] = []
    if any(c.preference is None for c in kept):
        if gold is None:
            raise ValueError("some comparisons have no preference: give a gold judge to label them")
        prompts = {prompt_id: row.text for prompt_id, row in next(iter(sets.values())).items()}
        kept, unlabelled_errors = await label_comparisons(kept, gold, prompts)
    grades = await grade_sets(sets, kept, judge)
    tails = gold_tail(kept, tail_fraction)
    figures = {name: rubric_quality(sets[name], grades[name], kept, tails) for name in sets}
    return QualityReport(figures, len(kept), len(unlabelled_errors), dropped, tail_fraction)


def quality_table(report: QualityReport, title: str = "rubric quality on held-out comparisons"):
    """A rich table: one row per figure, one column per rubric set."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    for name in report.sets:
        table.add_column(name, justify="right")
    for key, label, spec in METRICS:
        table.add_row(label, *(_format(figures.get(key), spec) for figures in report.sets.values()))
    return table


def _format(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def plot_report(report: QualityReport, path: str | Path) -> None:
    """Accuracy (all vs tail), correlations with superficial features, and tail spread, per rubric set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.sets)
    panels = [
        ("pairwise accuracy", [("accuracy", "all pairs"), ("tail_accuracy", "tail pairs")], (0, 1)),
        (
            "correlation of score with",
            [("length_correlation", "length"), ("markdown_correlation", "markdown")],
            (-1, 1),
        ),
        ("in the tail", [("tail_spread", "score spread (sd)"), ("tail_tie_rate", "pairs tied")], (0, 1)),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    width = 0.8 / len(names)
    for axis, (title, series, limits) in zip(axes, panels, strict=True):
        for offset, name in enumerate(names):
            values = [report.sets[name].get(key) for key, _ in series]
            xs = np.arange(len(series)) + (offset - (len(names) - 1) / 2) * width
            bars = axis.bar(xs, [0 if v is None else v for v in values], width, label=name)
            for bar, value in zip(bars, values, strict=True):
                where = (bar.get_x() + bar.get_width() / 2, bar.get_height())
                below = value is not None and value < 0
                label = "-" if value is None else f"{value:.2f}"
                axis.annotate(label, where, ha="center", va="top" if below else "bottom", fontsize=7)
        axis.set_xticks(np.arange(len(series)), [label for _, label in series])
        axis.set_ylim(*limits)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    figure.suptitle(
        f"rubric quality on {report.comparisons} held-out comparisons (tail: top {report.tail_fraction:.0%})"
    )
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(report: QualityReport, prefix: str | Path) -> tuple[Path, Path]:
    """`PREFIX.json` (every figure, per-criterion pass rates included) and `PREFIX.png`."""
    prefix = Path(prefix)
    json_path, png_path = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".png")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
    plot_report(report, png_path)
    return json_path, png_path
