"""Rubric refinement by progressive differentiation: rounds over a fixed set of candidate answers per prompt.

Each round, for every prompt still being refined, concurrently: grade the prompt's candidates with the current
rubric, then take the step every refinement loop shares (`rubric_rft.rubricgen.differentiate.refine_prompt`):
1. pick great and diverse pairs from the high-score tail (`rubric_rft.rubricgen.selection`);
2. ask the gold source which response of each pair is better (ties and failures are left out);
3. convergence test: the *agreement* is the share of those pairs the rubric orders as the gold does (a strictly
   higher score for the better one). At or above `agreement_threshold` the rubric is kept and its streak grows;
   `patience` consecutive such rounds and the prompt has *converged*;
4. otherwise the proposer sees the pairs, says what makes the better responses better, and edits the rubric
   (add, rewrite, split); the edit is kept only when it passes `acceptance`, the test online refinement uses
   (`rubric_rft.rubricgen.acceptance`): graded by the judge, the edited rubric must order the test pairs better
   than the current one. A kept edit gives a rubric with `version` + 1, `parent` the rubric it refines, and the
   proposer's `reason`; a refused one leaves the rubric as it was (`rejected`, why in `decision`).

The offline defaults (`OFFLINE_ACCEPTANCE`) test on the pairs the proposer saw: a prompt has a few candidates and
4 pairs, of which the gold orders fewer, too few to split into a part to show and a part to test; so the test
asks that the edit, as the judge actually grades it, puts at least one more of those pairs in the gold's order
than it takes out (agreement strictly up, a tie worth half). With more candidates, `holdout_fraction` > 0 tests
on pairs among answers the proposer never saw, as online.

Statuses: `separated`/`converged` (the convergence test passed), `refined` (an edit kept), `rejected` (an edit
refused), `unchanged` (the proposer proposed no edit), `skipped` (too few gold-ordered pairs to test an edit on),
`no_pairs`, `error`. A prompt stops at convergence, or when no pair qualifies (`no_pairs`); a prompt whose round
failed (grading, gold or proposer) keeps its rubric and is tried again next round. The run stops after
`max_rounds`.

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

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from rubric_rft.judges.base import Judge
from rubric_rft.rubricgen.acceptance import Acceptance
from rubric_rft.rubricgen.differentiate import Outcome, refine_prompt
from rubric_rft.rubricgen.gold import Preference
from rubric_rft.rubricgen.proposer import LLMProposer, Proposer, RubricProposer
from rubric_rft.rubricgen.records import Appender, Candidate, PromptRow, read_appended, replace_file
from rubric_rft.rubricgen.scoring import score_responses
from rubric_rft.rubricgen.selection import Scored, SelectionConfig
from rubric_rft.rubrics.format import Rubric

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"converged", "no_pairs"})
# few candidates, 4 pairs: test an edit on the pairs it was made for (see the module docstring)
OFFLINE_ACCEPTANCE = {"min_pairs": 1, "holdout_fraction": 0.0, "tie_credit": 0.5, "min_newly_ordered": 1}
# the engine's verdicts and evidence, copied into a round's record
_EVIDENCE = ("pairs", "agreement", "gold_failures", "fit_before", "agreement_before", "agreement_after",
             "newly_ordered", "no_longer_ordered", "sign_test_p", "judge_calls")


class RefineConfig(BaseModel):
    """How a refinement run goes; the pair selection defaults to 4 great and diverse pairs, the acceptance test to
    `OFFLINE_ACCEPTANCE`."""

    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(default=4, ge=1)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    agreement_threshold: float = Field(
        default=0.75, gt=0, le=1, description="Share of pairs ordered as the gold does that counts as separated."
    )
    patience: int = Field(default=2, ge=1, description="Consecutive separated rounds that make a prompt converged.")
    seed: int = 0
    show_scores: bool = Field(default=True, description="Show the proposer the current rubric's scores of a pair.")
    acceptance: Acceptance = Field(
        default_factory=lambda: Acceptance(**OFFLINE_ACCEPTANCE), description="When an edit is kept."
    )

    @model_validator(mode="after")
    def _enough_pairs_selected(self) -> RefineConfig:
        if self.selection.num_pairs < self.acceptance.min_pairs:
            raise ValueError(f"acceptance.min_pairs ({self.acceptance.min_pairs}) is above selection.num_pairs "
                             f"({self.selection.num_pairs}): no edit could ever be tested")
        return self


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
    llm = LLMProposer(proposer, show_scores=config.show_scores)
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
            number, active, last, by_prompt, out_dir, llm, judge, gold, config, progress, on_record
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
    proposer: Proposer,
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
    proposer: Proposer,
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
    outcome = await refine_prompt(
        row.prompt_id, row.text, rubric, scored, gold=gold, proposer=proposer, judge=judge,
        selection=config.selection, acceptance=config.acceptance, seed=f"{config.seed}:{number}:{row.prompt_id}",
        separated_at=config.agreement_threshold, name=lambda c: c.name,
    )
    return _record_outcome(outcome, rubric, streak, config, finish)


def _record_outcome(outcome: Outcome, rubric: Rubric, streak: int, config: RefineConfig,
                    finish: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The engine's outcome as an offline record: `decision` is its verdict, `reason` and `edits` the proposer's."""
    result = outcome.record
    fields: dict[str, Any] = {key: result[key] for key in _EVIDENCE if key in result}
    fields["decision"] = result["reason"]
    if "edit" in result:
        fields["proposer_calls"] = outcome.proposer.calls
        if result["edit"] is not None:
            fields.update(reason=result["proposal_reason"], edits=result["edit"]["edits"])
    match result["status"], result["reason"]:
        case "skipped", "no_pairs":
            return finish("no_pairs", error="no pair of tail responses is diverse enough", **fields)
        case "skipped", "gold_ties":
            return finish("no_pairs", error="the gold source ties every selected pair", **fields)
        case "error", "gold_failed":
            failure = next(p["error"] for p in result["pairs"] if "error" in p)
            return finish("error", error=f"gold preferences failed: {failure}", **fields)
        case "separated", _:
            separated = streak + 1
            return finish("converged" if separated >= config.patience else "separated", streak=separated, **fields)
        # below the threshold from here on: the streak starts over
        case "accepted", _:
            return finish("refined", rubric.next_version(outcome.criteria, outcome.reason), streak=0, **fields)
        case "rejected", "no_proposal":
            return finish("unchanged", streak=0, **fields)
        case "error", reason:
            return finish("error", error=reason, streak=0, **fields)
        case status, _:  # rejected by the acceptance test, or skipped: too few pairs to test an edit on
            return finish(status, streak=0, **fields)


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
