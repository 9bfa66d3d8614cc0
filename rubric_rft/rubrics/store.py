"""`RubricStore`: the rubric of each prompt, by `prompt_id`, with every version a run has used.

Rubrics start as the training dataset's (the `rubric` column); the data loader owns those cells, so a rubric
that changes during training lives here instead, and the reward looks rows up by their `prompt_id` column.
A new version (`update`) gets `version` + 1, the id `{prompt_id}-v{version}` and, as `parent`, the id of the
version it replaces: the convention of offline refinement (`Rubric.next_version`), so ids
are unique within a prompt's history and each names its predecessor.

Every rank must grade with the same rubrics: updates are decided on the main process and applied on every
rank at a step boundary through `apply`, which broadcasts them. In training, `RubricStoreCallback`
(`rubric_rft.training.rubric_checkpoints`) saves `state_dict()` in each checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rubric_rft.rubrics.format import Rubric

FINAL_RUBRICS_FILE = "rubrics.jsonl"
LINEAGE_FILE = "rubric_lineage.jsonl"


class UnknownPromptError(LookupError):
    """A prompt id the store holds no rubric for."""


@dataclass(frozen=True)
class RubricVersion:
    """One version of a prompt's rubric; `step` is the global step it took effect at (None: from the dataset)."""

    rubric: Rubric
    step: int | None = None


@dataclass(frozen=True)
class RubricUpdate:
    """A new rubric for a prompt, decided on the main process; `apply` gives it its version, id and parent."""

    prompt_id: str
    rubric: Rubric
    step: int
    reason: str | None = None


class RubricStore:
    """The current rubric and the version history of every prompt, keyed by `prompt_id`."""

    def __init__(self) -> None:
        self._history: dict[str, list[RubricVersion]] = {}

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], source: str = "the dataset") -> RubricStore:
        """A store from prompt rows (`prompt_id`, `rubric`: a `Rubric`, its JSON or a dict).

        A prompt id may repeat with the same rubric; with a different one it is an error naming the prompt id.
        """
        store = cls()
        for row in rows:
            prompt_id = str(row["prompt_id"])
            rubric = Rubric.from_value(row["rubric"]).model_copy(update={"prompt_id": prompt_id})
            known = store._history.get(prompt_id)
            if known is None:
                store._history[prompt_id] = [RubricVersion(rubric)]
            elif known[-1].rubric != rubric:
                raise ValueError(
                    f"{source}: prompt_id {prompt_id!r} has two different rubrics "
                    f"({known[-1].rubric.id!r} and {rubric.id!r}); a prompt id must name one rubric"
                )
        return store

    # ----- reading --------------------------------------------------------------------------------------------
    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._history

    def __len__(self) -> int:
        return len(self._history)

    def rubric_for(self, prompt_id: str) -> Rubric:
        return self._versions(prompt_id)[-1].rubric

    def history(self, prompt_id: str) -> list[RubricVersion]:
        """Every version of the prompt's rubric, oldest first."""
        return list(self._versions(prompt_id))

    def _versions(self, prompt_id: str) -> list[RubricVersion]:
        if prompt_id not in self._history:
            raise UnknownPromptError(
                f"no rubric for prompt_id {prompt_id!r}: the rubric store holds {len(self)} prompts "
                "(those of the training dataset)"
            )
        return self._history[prompt_id]

    def lineage(self) -> list[Rubric]:
        """Every version of every prompt's rubric, each prompt's oldest first: `parent` and `reason` say how each
        came from the one before."""
        return [version.rubric for versions in self._history.values() for version in versions]

    def current(self) -> list[Rubric]:
        """The current rubric of every prompt, in the order the prompts were first seen."""
        return [versions[-1].rubric for versions in self._history.values()]

    # ----- changing -------------------------------------------------------------------------------------------
    def update(self, prompt_id: str, rubric: Rubric, *, step: int, reason: str | None = None) -> Rubric:
        """Make `rubric`'s criteria the prompt's next version, in effect from `step`, and return that version.

        On one process only; a run with several processes changes rubrics through `apply`.
        """
        versions = self._versions(prompt_id)
        new = versions[-1].rubric.next_version(rubric.criteria, reason)
        versions.append(RubricVersion(new, step))
        return new

    def apply(self, updates: Sequence[RubricUpdate] | None) -> list[Rubric]:
        """Apply the main process's `updates` on every rank (other ranks' `updates` are ignored; pass None).

        A collective when torch.distributed is initialized: every rank calls it at the same step boundary.
        """
        return [self.update(u.prompt_id, u.rubric, step=u.step, reason=u.reason) for u in _from_main(updates)]

    # ----- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "versions": [
                {"prompt_id": prompt_id, "step": version.step,
                 "rubric": version.rubric.model_dump(mode="json", exclude_none=True)}
                for prompt_id, versions in self._history.items()
                for version in versions
            ]
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        history: dict[str, list[RubricVersion]] = {}
        for record in state["versions"]:
            history.setdefault(record["prompt_id"], []).append(
                RubricVersion(Rubric.model_validate(record["rubric"]), record["step"])
            )
        self._history = history


def _from_main(updates: Sequence[RubricUpdate] | None) -> list[RubricUpdate]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(updates or [])
    box = [list(updates or [])]
    dist.broadcast_object_list(box, src=0)
    return box[0]
