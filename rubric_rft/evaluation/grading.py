"""Grade a file of responses against their prompts' rubrics, and check a judge against labels: `rubric-rft grade`.

Responses are JSONL records `{"prompt_id", "response", "response_id"?, "labels"?}`; `labels` (the column name is
an option) maps criterion ids to the verdict a person gave, true or false. Every response is graded with the
same `RubricReward` that training uses, so the scores are the training reward's. Labels turn the run into a
check of the judge: agreement (accuracy beside the always-the-majority-answer baseline) and, where the backend
gives P(yes) (the in-process judge), the AUC of that probability, which says whether the judge ranks satisfying
responses above failing ones even when its threshold is off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError
from scipy.stats import mannwhitneyu

from rubric_rft.llm.costs import Costs
from rubric_rft.reward.rubric_reward import GradedCompletion, RubricReward
from rubric_rft.rubricgen.records import PromptRow
from rubric_rft.rubrics.format import Rubric, RubricFileError, iter_json_records, validated_record


class _ResponseRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_id: str = Field(min_length=1)
    response: str
    response_id: str | None = None


_LABELS: TypeAdapter[dict[str, bool]] = TypeAdapter(dict[str, StrictBool])


@dataclass(frozen=True)
class ResponseToGrade:
    """One response to grade; `labels` holds the human verdicts by criterion id, if the file has them."""

    prompt_id: str
    response_id: str
    response: str
    labels: dict[str, bool] | None
    location: str


def load_responses(
    path: str | Path, rubrics: dict[str, PromptRow], label_column: str | None = "labels"
) -> list[ResponseToGrade]:
    """Responses of a JSONL/JSON file, each checked against its prompt's rubric; errors name the file and line."""
    responses, seen = [], {}
    for location, record in iter_json_records(Path(path)):
        parsed = validated_record(location, record, _ResponseRecord)
        row = rubrics.get(parsed.prompt_id)
        if row is None:
            raise RubricFileError(f"{location}: prompt_id {parsed.prompt_id!r} has no rubric in the rubrics file")
        response_id = parsed.response_id or str(sum(r.prompt_id == parsed.prompt_id for r in responses))
        key = (parsed.prompt_id, response_id)
        if key in seen:
            raise RubricFileError(f"{location}: response {key} repeats {seen[key]}")
        seen[key] = location
        labels = _labels(record.get(label_column) if label_column else None, row.rubric, location, label_column)
        responses.append(ResponseToGrade(parsed.prompt_id, response_id, parsed.response, labels, location))
    if not responses:
        raise RubricFileError(f"{path}: no records")
    return responses


def _labels(value: Any, rubric: Rubric, location: str, column: str | None) -> dict[str, bool] | None:
    if value is None:
        return None
    try:
        labels = _LABELS.validate_python(value)
    except ValidationError:
        raise RubricFileError(
            f"{location}: field '{column}' must map criterion ids to true or false, got {value!r}"
        ) from None
    unknown = sorted(set(labels) - {c.id for c in rubric.criteria})
    if unknown:
        raise RubricFileError(f"{location}: field '{column}' labels criteria the rubric does not have: {unknown}")
    return labels


async def grade_responses(
    reward: RubricReward,
    rubrics: dict[str, PromptRow],
    responses: Sequence[ResponseToGrade],
    on_graded: Callable[[], None] = lambda: None,
) -> list[GradedCompletion]:
    """Grade every response concurrently (the judge bounds the requests in flight), in input order;
    `on_graded` is called as each one finishes (a progress bar)."""

    async def one(response: ResponseToGrade) -> GradedCompletion:
        row = rubrics[response.prompt_id]
        graded = await reward.grade_one(row.prompt, response.response, row.rubric)
        on_graded()
        return graded

    try:
        return await asyncio.gather(*(one(r) for r in responses))
    finally:
        await reward.aclose()


def graded_record(response: ResponseToGrade, rubric: Rubric, graded: GradedCompletion) -> dict[str, Any]:
    """The output line of one response: its score, every criterion's verdict (with P(yes) and the label where
    known), or the error that left it ungraded, and what grading it cost."""
    criteria = {}
    for criterion in rubric.criteria:
        entry: dict[str, Any] = {"kind": criterion.kind, "satisfied": graded.satisfied.get(criterion.id)}
        if criterion.id in graded.probabilities:
            entry["p_yes"] = graded.probabilities[criterion.id]
        if response.labels and criterion.id in response.labels:
            entry["label"] = response.labels[criterion.id]
        criteria[criterion.id] = entry
    costs = graded.verdict or Costs()
    return {
        "prompt_id": response.prompt_id,
        "response_id": response.response_id,
        "score": graded.score,
        "error": graded.error,
        "criteria": criteria,
        "judge_calls": costs.calls,
        "retries": costs.retries,
        "malformed": costs.malformed,
        "cache_hits": costs.cache_hits,
    }


def summarize(records: Sequence[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Counts, mean score and costs of a graded file."""
    scores = [r["score"] for r in records if r["error"] is None]
    return {
        "responses": len(records),
        "graded": len(scores),
        "failed": len(records) - len(scores),
        "mean_score": float(np.mean(scores)) if scores else None,
        "judge_calls": sum(r["judge_calls"] for r in records),
        "retries": sum(r["retries"] for r in records),
        "malformed": sum(r["malformed"] for r in records),
        "cache_hits": sum(r["cache_hits"] for r in records),
        "wall_s": wall_s,
    }


def agreement(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The judge against the labels, over labelled criteria of graded responses (None without labels).

    `majority_baseline` is the accuracy of always giving the more common label: a judge is only informative
    above it. `auc` is the chance that a satisfying criterion gets a higher P(yes) than a failing one (ties half),
    over criteria with a probability; None when the backend gives none or one class is missing.
    `unscored` counts labelled criteria of responses that failed to grade: left out, never guessed.
    """
    pairs = [
        (c["label"], c["satisfied"], c.get("p_yes"))
        for r in records
        for c in r["criteria"].values()
        if "label" in c and r["error"] is None
    ]
    unscored = sum("label" in c for r in records if r["error"] is not None for c in r["criteria"].values())
    if not pairs:
        return None if not unscored else {"labelled": 0, "unscored": unscored}
    labels = np.array([label for label, _, _ in pairs])
    verdicts = np.array([bool(satisfied) for _, satisfied, _ in pairs])
    result = {
        "labelled": len(pairs),
        "unscored": unscored,
        "accuracy": float((labels == verdicts).mean()),
        "majority_baseline": float(max(labels.mean(), 1 - labels.mean())),
        "true_positive": int((labels & verdicts).sum()),
        "false_positive": int((~labels & verdicts).sum()),
        "true_negative": int((~labels & ~verdicts).sum()),
        "false_negative": int((labels & ~verdicts).sum()),
        "auc": None,
    }
    probabilities = [(label, p) for label, _, p in pairs if p is not None]
    if probabilities:
        result["auc"] = roc_auc([label for label, _ in probabilities], [p for _, p in probabilities])
    return result


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve: the Mann-Whitney U statistic of the positives over both class sizes (ties half)."""
    labels_array, scores_array = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    positives, negatives = scores_array[labels_array], scores_array[~labels_array]
    if positives.size == 0 or negatives.size == 0:
        return None
    return float(mannwhitneyu(positives, negatives).statistic / (positives.size * negatives.size))
