"""`TailBuffer`: the policy's recent completions per prompt, with the grades the reward gave them.

Refinement looks at what the policy writes now, not at a fixed candidate set: the reward hands every graded
completion to `on_graded` (its hook), and the buffer keeps the newest `size` per prompt with the score,
the per-criterion verdicts, the rubric version that graded it and the global step. Each rank buffers what it
graded; `gather` moves every rank's entries to the main process (a collective; nothing to do in one process).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rubric_rft.reward.rubric_reward import GradedCompletion
from rubric_rft.rubricgen.records import Candidate
from rubric_rft.rubricgen.selection import Scored
from rubric_rft.rubrics.datasets import completion_text


@dataclass(frozen=True)
class Entry:
    """One graded completion. `score` is normalized to [0, 1], `raw` the weighted sum; `seq` orders entries."""

    prompt_id: str
    text: str
    score: float
    raw: float
    satisfied: dict[str, bool]
    rubric_id: str
    version: int
    step: int
    seq: int


class TailBuffer:
    """At most `size` entries per prompt, the newest kept."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"tail buffer size must be at least 1, got {size}")
        self.size = size
        self._entries: dict[str, deque[Entry]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def prompt_ids(self) -> list[str]:
        return list(self._entries)

    def newest_first(self) -> list[str]:
        """The prompt ids by their newest entry's step, latest first; the first buffered first among equals."""
        newest = {prompt_id: max(e.step for e in entries) for prompt_id, entries in self._entries.items()}
        return sorted(newest, key=lambda prompt_id: -newest[prompt_id])

    def entries(self, prompt_id: str, version: int | None = None) -> list[Entry]:
        """The prompt's entries, oldest first; with `version`, only those graded with that rubric version."""
        entries = self._entries.get(prompt_id, ())
        return [e for e in entries if version is None or e.version == version]

    def add(self, entry: Entry) -> None:
        self._entries.setdefault(entry.prompt_id, deque(maxlen=self.size)).append(entry)

    def on_graded(self, completions: Sequence[Any], graded: Sequence[GradedCompletion],
                  columns: Mapping[str, Any]) -> None:
        """The reward's hook: keep every completion that was graded (failures have no score to learn from)."""
        state = columns.get("trainer_state")
        step = state.global_step if state is not None else 0
        self.record(columns["prompt_id"], completions, graded, step)

    def record(self, prompt_ids: Sequence[str], completions: Sequence[Any], graded: Sequence[GradedCompletion],
               step: int) -> None:
        for prompt_id, completion, g in zip(prompt_ids, completions, graded, strict=True):
            if g.error is not None or g.rubric is None:
                continue
            satisfied = {cid: bool(ok) for cid, ok in g.satisfied.items()}
            self.add(Entry(
                prompt_id=str(prompt_id), text=completion_text(completion),
                score=g.rubric.score(satisfied), raw=g.rubric.score(satisfied, normalize=False),
                satisfied=satisfied, rubric_id=g.rubric.id, version=g.rubric.version, step=step, seq=next(self._seq),
            ))

    def gather(self) -> None:
        """Move every rank's entries into the main process's buffer (call on every rank at the same point)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[list[Entry] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._all())
        if dist.get_rank() != 0:
            self._entries = {}
            return
        merged = sorted(itertools.chain.from_iterable(gathered), key=lambda e: (e.step, e.seq))
        self._entries = {}
        for entry in merged:
            self.add(entry)

    def _all(self) -> list[Entry]:
        return list(itertools.chain.from_iterable(self._entries.values()))

    # ----- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "entries": [asdict(e) for e in self._all()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._entries = {}
        entries = [Entry(**record) for record in state["entries"]]
        for entry in sorted(entries, key=lambda e: (e.step, e.seq)):
            self.add(entry)
        self._seq = itertools.count(max((e.seq for e in entries), default=-1) + 1)


def scored_candidates(prompt_id: str, entries: Sequence[Entry]) -> list[Scored]:
    """The entries as answers to refine on (`rubric_rft.rubricgen.differentiate`), one per distinct text (the
    policy repeats itself)."""
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.text, entry)
    return [
        Scored(Candidate(prompt_id=prompt_id, generator="policy", index=index, response=entry.text),
               entry.raw, entry.score)
        for index, entry in enumerate(unique.values())
    ]
