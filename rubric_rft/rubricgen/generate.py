"""Initial rubrics from prompts (and reference answers, when the prompts have them), all prompts concurrently.

Each rubric is appended to the output as soon as it is written, so an interrupted run resumes with the prompts
that have none; at the end the file is rewritten in input order. A prompt whose proposer answers never
validated gets an error record in the errors file (`<out>.errors.jsonl`), never a silent gap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from rubric_rft.llm.costs import Costs
from rubric_rft.rubricgen.proposer import RubricProposer
from rubric_rft.rubricgen.records import Appender, PromptRow, read_appended, replace_file, write_errors


@dataclass
class GenerationSummary:
    """What a run did: rubrics written now or found from an earlier run, and the prompts that failed."""

    written: int = 0
    resumed: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    costs: Costs = field(default_factory=Costs)


async def generate_rubrics(
    prompts: list[PromptRow],
    proposer: RubricProposer,
    out: str | Path,
    *,
    use_reference: bool = True,
    progress: bool = True,
) -> GenerationSummary:
    """Write a rubric for every prompt without one in `out` (JSONL dataset rows); see the module docstring."""
    out = Path(out)
    if out.suffix != ".jsonl":
        raise ValueError(f"{out}: rubrics are appended as they are written, so the output must be a .jsonl file")
    existing = {str(record["prompt_id"]): record for _, record in read_appended(out) if "prompt_id" in record}
    summary = GenerationSummary(resumed=sum(row.prompt_id in existing for row in prompts))
    todo = [row for row in prompts if row.prompt_id not in existing]
    bar = tqdm(total=len(todo), desc="writing rubrics", unit="prompt", disable=not progress)
    with Appender(out) as appender, bar:

        async def one(row: PromptRow) -> None:
            reference = row.reference if use_reference else None
            asked = await proposer.generate(row.text, row.prompt_id, row.prompt_id, reference)
            summary.costs.add(asked)
            if asked.ok:
                record = PromptRow(row.prompt_id, row.prompt, row.reference, asked.value).as_row()
                appender.write(record)
                existing[row.prompt_id] = record
                summary.written += 1
            else:
                summary.errors[row.prompt_id] = asked.error
            bar.update()

        await asyncio.gather(*(one(row) for row in todo))
    ordered = [existing[row.prompt_id] for row in prompts if row.prompt_id in existing]
    others = [record for key, record in existing.items() if key not in {row.prompt_id for row in prompts}]
    replace_file(out, [*ordered, *others])
    failures = [
        {"prompt_id": row.prompt_id, "prompt": row.prompt, "error": summary.errors[row.prompt_id]}
        for row in prompts
        if row.prompt_id in summary.errors
    ]
    write_errors(out, failures)
    return summary
