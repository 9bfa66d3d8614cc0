"""Rubric refinement by progressive differentiation: rounds of tail pairs, gold preferences and proposer edits.

Each round, for every prompt still being refined, concurrently:
1. grade the prompt's candidates with the current rubric;
2. pick great and diverse pairs from the high-score tail (`rubric_rft.rubricgen.selection`);
3. ask the gold source which response of each pair is better (ties and failures are left out);
4. convergence test: the *agreement* is the share of those pairs the rubric orders as the gold does (a strictly
   higher score for the better one). At or above `agreement_threshold` the rubric is kept and its streak grows;
   `patience` consecutive such rounds and the prompt has *converged*;
5. otherwise the proposer sees the pairs, says what makes the better responses better, and edits the rubric
   (add, rewrite, split). The new rubric has `version` + 1, `parent` the rubric it refines, and the proposer's
   `reason`.

A prompt stops at convergence, or when no pair qualifies (`no_pairs`); a prompt whose round failed (grading,
gold or proposer) keeps its rubric and is tried again next round. The run stops after `max_rounds`.

State lives in `out_dir`: `run.json` (what the run was started with), `round-NNN.jsonl` (one record per prompt
and round, appended as each finishes) and, at the end, `rubrics.jsonl` (dataset rows with the final rubrics,
what `scripts/train_grpo.py` reads) and `summary.json`. A rerun with the same inputs resumes where the last one
stopped, mid-round included; `max_rounds` may be raised to continue a finished run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from rubric_rft.judges.base import Judge
from rubric_rft.rubricgen.edits import apply_edits
from rubric_rft.rubricgen.gold import Preference, ask_gold, gold_agreement
from rubric_rft.rubricgen.prompts import ShownPair
from rubric_rft.rubricgen.proposer import RubricProposer
from rubric_rft.rubricgen.records import Appender, Candidate, PromptRow, read_appended, replace_file
from rubric_rft.rubricgen.scoring import score_responses
from rubric_rft.rubricgen.selection import Scored, SelectionConfig, select_pairs
from rubric_rft.rubrics.format import Rubric

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"converged", "no_pairs"})


class RefineConfig(BaseModel):
    """How a refinement run goes; the pair selection defaults to 4 great and diverse pairs."""

    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(default=4, ge=1)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    agreement_threshold: float = Field(
        default=0.75, gt=0, le=1, description="Share of pairs ordered as the gold does that counts as separated."
    )
    patience: int = Field(default=2, ge=1, description="Consecutive separated rounds that make a prompt converged.")
    seed: int = 0
    show_scores: bool = Field(default=True, description="Show the proposer the current rubric's scores of a pair.")


@dataclass
class RefineResult:
    """The final rubric of every prompt, each prompt's last record, and one summary per round."""

    rows: list[PromptRow]
    last: dict[str, dict[str, Any]]
    rounds: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        statuses = Counter(record["status"] for record in self.last.values())
        return {
            "prompts": len(self.rows),
            "final_status": dict(sorted(statuses.items())),
            "versions": {row.prompt_id: row.rubric.version for row in self.rows},
            "rounds": self.rounds,
        }


def round_path(out_dir: Path, number: int) -> Path:
    return out_dir / f"round-{number:03d}.jsonl"


async def refine_rubrics(
    rows: Sequence[PromptRow],
    candidates: Sequence[Candidate],
    *,
    proposer: RubricProposer,
    judge: Judge | None,
    gold: Preference,
    out_dir: str | Path,
    config: RefineConfig | None = None,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RefineResult:
    """Refine every row's rubric against its candidates (see the module docstring); `on_record` is called with
    each record once it is saved."""
    config = config or RefineConfig()
    out_dir = Path(out_dir)
    by_prompt: dict[str, list[Candidate]] = {row.prompt_id: [] for row in rows}
    for candidate in candidates:
        if candidate.prompt_id in by_prompt:
            by_prompt[candidate.prompt_id].append(candidate)
    _check_run(
        out_dir,
        rows,
        by_prompt,
        config,
        {"proposer": proposer.name, "judge": getattr(judge, "name", None), "gold": gold.name},
    )
    last: dict[str, dict[str, Any]] = {}
    rounds = []
    for number in range(1, config.max_rounds + 1):
        active = [row for row in rows if last.get(row.prompt_id, {}).get("status") not in FINAL_STATUSES]
        if not active:
            break
        records = await _run_round(
            number, active, last, by_prompt, out_dir, proposer, judge, gold, config, progress, on_record
        )
        last.update({record["prompt_id"]: record for record in records})
        rounds.append(_round_summary(number, records))
    final = [
        PromptRow(row.prompt_id, row.prompt, row.reference, Rubric.model_validate(last[row.prompt_id]["rubric"]))
        if row.prompt_id in last
        else row
        for row in rows
    ]
    result = RefineResult(final, last, rounds)
    replace_file(out_dir / "rubrics.jsonl", [row.as_row() for row in final])
    (out_dir / "summary.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


async def _run_round(
    number: int,
    active: list[PromptRow],
    last: dict[str, dict[str, Any]],
    by_prompt: dict[str, list[Candidate]],
    out_dir: Path,
    proposer: RubricProposer,
    judge: Judge | None,
    gold: Preference,
    config: RefineConfig,
    progress: bool,
    on_record: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """Round `number` for the `active` prompts, concurrently; the records of a partly done round are reused."""
    path = round_path(out_dir, number)
    done = {r["prompt_id"]: r for _, r in read_appended(path)}
    todo = [row for row in active if row.prompt_id not in done]
    bar = tqdm(
        total=len(active), initial=len(active) - len(todo), desc=f"round {number}", unit="prompt", disable=not progress
    )
    with Appender(path) as appender, bar:

        async def one(row: PromptRow) -> None:
            previous = last.get(row.prompt_id)
            rubric = Rubric.model_validate(previous["rubric"]) if previous else row.rubric
            streak = previous["streak"] if previous else 0
            candidates = by_prompt[row.prompt_id]
            record = await _refine_prompt(row, rubric, streak, number, candidates, proposer, judge, gold, config)
            appender.write(record)
            done[row.prompt_id] = record
            bar.update()
            if on_record is not None:
                on_record(record)

        tasks = [asyncio.ensure_future(one(row)) for row in todo]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # stop the other prompts now; the records saved so far are where a rerun resumes
            for task in tasks:
                task.cancel()
            raise
    return [done[row.prompt_id] for row in active]


async def _refine_prompt(
    row: PromptRow,
    rubric: Rubric,
    streak: int,
    number: int,
    candidates: list[Candidate],
    proposer: RubricProposer,
    judge: Judge | None,
    gold: Preference,
    config: RefineConfig,
) -> dict[str, Any]:
    """One round for one prompt: the record it leaves (the rubric after the round included)."""
    record: dict[str, Any] = {"prompt_id": row.prompt_id, "round": number, "rubric_in": rubric.id}

    def finish(status: str, new_rubric: Rubric = rubric, **fields: Any) -> dict[str, Any]:
        record.update(fields)
        record.update(status=status, streak=record.get("streak", streak))
        record["rubric"] = new_rubric.model_dump(mode="json", exclude_none=True)
        return record

    grades = await score_responses(judge, row.text, rubric, [c.response for c in candidates])
    errors = [f"{c.name}: {g.error}" for c, g in zip(candidates, grades, strict=True) if g.error]
    scored = [Scored(c, g.score, g.normalized) for c, g in zip(candidates, grades, strict=True) if g.error is None]
    if errors:
        record["grading_errors"] = errors
    if len(scored) < 2:
        problem = "fewer than 2 candidates" if not errors else f"{len(errors)} of {len(candidates)} grades failed"
        return finish("error", error=f"cannot compare responses: {problem}")
    pairs = select_pairs(scored, config.selection, seed=f"{config.seed}:{number}:{row.prompt_id}")
    if not pairs:
        return finish("no_pairs", error="no pair of tail responses is diverse enough")
    judged = await ask_gold(gold, row.prompt_id, row.text, pairs, lambda c: c.name)
    record["pairs"] = judged.records
    directed = judged.ordered
    if not directed:
        if judged.errors:
            return finish("error", error=f"gold preferences failed: {judged.errors[0]}")
        return finish("no_pairs", error="the gold source ties every selected pair")
    agreement = gold_agreement(directed)
    record["agreement"] = agreement
    if agreement >= config.agreement_threshold:
        record["streak"] = streak + 1
        return finish("converged" if streak + 1 >= config.patience else "separated")
    record["streak"] = 0
    shown = [
        ShownPair(
            better.candidate.response,
            worse.candidate.response,
            better.normalized if config.show_scores else None,
            worse.normalized if config.show_scores else None,
        )
        for better, worse in directed
    ]
    asked = await proposer.refine(row.text, rubric, shown)
    record["proposer_calls"] = asked.calls
    if not asked.ok:
        return finish("error", error=asked.error)
    refinement = asked.value
    record["reason"] = refinement.reason
    record["edits"] = [edit.model_dump(mode="json") for edit in refinement.edits]
    if not refinement.edits:
        return finish("unchanged")
    return finish("refined", rubric.next_version(apply_edits(rubric, refinement.edits), refinement.reason))


def _round_summary(number: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    agreements = [r["agreement"] for r in records if r.get("agreement") is not None]
    return {
        "round": number,
        "prompts": len(records),
        "status": dict(sorted(Counter(r["status"] for r in records).items())),
        "mean_agreement": sum(agreements) / len(agreements) if agreements else None,
    }


def _check_run(
    out_dir: Path,
    rows: Sequence[PromptRow],
    candidates: dict[str, list[Candidate]],
    config: RefineConfig,
    models: dict[str, str | None],
) -> None:
    """Write `run.json` for a new run; for an existing one, refuse to resume with other inputs or settings."""
    inputs = {
        "rubrics": [row.as_row() for row in rows],
        "candidates": {key: [c.model_dump(mode="json") for c in value] for key, value in candidates.items()},
    }
    run = {
        "inputs_sha256": hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(),
        "config": config.model_dump(mode="json", exclude={"max_rounds"}),
        **models,
    }
    path = out_dir / "run.json"
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(key for key in run if previous.get(key) != run[key])
        if changed:
            raise ValueError(
                f"{path}: this folder holds a refinement run with other {', '.join(changed)}; resume it with the "
                "same inputs and settings, or refine into a new folder"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2) + "\n")
