"""Online refinement's configuration: `refinement:` in a training config (a mapping, a JSON string, or a YAML path).

    refinement:
      refine_steps: 10                      # decide at every 10th optimizer step, and only then
      gold:                                 # who says which of two answers is better (never trains anything)
        judge: {backend: rubric}            # a pairwise judge config; `rubric` compares by gold rubrics
        rubrics_path: data/everyday/train_gold.jsonl
      proposer: {type: bank, bank_path: data/everyday/criteria_bank_independent.jsonl}  # or type: llm
      budgets: {prompts_per_round: 4, rounds_per_prompt: 3, cooldown_steps: 20, max_gold_calls: 400}
      acceptance: {min_pairs: 6, holdout_fraction: 0.5, min_newly_ordered: 2}   # tested on answers never shown
      monitor: {enabled: true}              # the monitor's proxy up, gold down: every prompt is a candidate...
      pooled: {enabled: false}              # ...or, gold-free, most recently answered prompts saturated...
      schedule: {steps: []}                 # ...or, gold-free, at these steps whatever the signals...
      fresh_samples: {enabled: true}        # ...and prompts not answered lately are answered now
      transfer: {enabled: false}            # a criterion accepted on 2 prompts is offered to the others
      pooled_proposal: {enabled: false}     # on a broad trigger: chosen on half the prompts, tested on the rest
      stuck: {enabled: false}               # flat groups at any mean: sample the prompt hotter, refine on that
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator, model_validator

from rubric_rft.config_values import load_validated
from rubric_rft.rubricgen.acceptance import Acceptance
from rubric_rft.rubricgen.selection import SelectionConfig

# Every buffered completion is the policy's; 12 pairs leave about 6 that the gold orders on a saturated prompt.
_SELECTION_DEFAULTS = {"distinct_generators": False, "num_pairs": 12}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SaturationTrigger(_Strict):
    """A rubric is saturated when its `top_k` best recent completions all score at least `min_score` (normalized)."""

    enabled: bool = True
    top_k: int = Field(default=4, ge=1)
    min_score: float = Field(default=0.95, gt=0, le=1)


class SpreadTrigger(_Strict):
    """GRPO learns nothing from a group whose rewards are equal: the last `groups` groups of a prompt (completions
    graded at one step) all have a standard deviation of at most `max_std` and a mean of at least `min_mean`."""

    enabled: bool = True
    groups: int = Field(default=2, ge=1)
    max_std: float = Field(default=0.02, ge=0)
    min_mean: float = Field(default=0.8, ge=0, le=1)


class MonitorTrigger(_Strict):
    """Over the monitor's last `window` evaluations the proxy rose while the gold fell: every prompt with enough
    buffered completions becomes a candidate."""

    enabled: bool = False
    window: int = Field(default=3, ge=2)


class PooledTrigger(_Strict):
    """Gold-free: the policy saturates its rubrics broadly. Among the prompts answered in the last `window_steps`
    steps (at least `min_prompts` of them), a share of at least `min_share` is saturated (the `saturation`
    settings, on completions graded with the current rubric): every prompt with enough completions becomes a
    candidate, as with the monitor trigger, and fresh samples answer the prompts not answered lately. Reads only
    the training reward, so an experiment's measuring stick never decides when the loop acts."""

    enabled: bool = False
    window_steps: int = Field(default=8, ge=1)
    min_prompts: int = Field(default=4, ge=1)
    min_share: float = Field(default=0.5, gt=0, le=1)


class ScheduleTrigger(_Strict):
    """Gold-free and early: at each of `steps` every prompt with enough completions becomes a candidate, as with the
    monitor trigger, and fresh samples answer the prompts not answered lately, whatever the signals say. A policy
    can collapse onto a rubric's loophole before any rubric saturates; a sweep over every prompt while the policy's
    answers still differ refines each rubric on the policy's own answers before the next epoch trains on it. Each
    step must be a refinement step (a multiple of `refine_steps`)."""

    steps: list[int] = Field(default_factory=list)

    @field_validator("steps")
    @classmethod
    def _positive_and_sorted(cls, steps: list[int]) -> list[int]:
        if any(step < 1 for step in steps):
            raise ValueError(f"steps must be optimizer steps (1 or more), got {steps}")
        return sorted(set(steps))


class Transfer(_Strict):
    """A criterion accepted on `min_accepted` prompts is offered to the others at once: each gets its own instance
    (the bank's criterion of that id for the prompt; an LLM proposer's criterion as it is), and all of them are
    tested together on the gold-ordered pairs of their buffered answers (up to `max_prompts` prompts with
    `min_completions` answers each, regraded with their current rubric). The proposal came from other prompts,
    so every one of those pairs is held out; the change goes to every tested prompt with an ordered pair when the
    pooled pairs pass `acceptance` (agreement up, `min_newly_ordered`, `max_p_value`). A prompt is offered a
    criterion once; prompts answered later are offered it at a later round."""

    enabled: bool = False
    min_accepted: int = Field(default=2, ge=1)
    max_prompts: int = Field(default=40, ge=1)


class PooledProposal(_Strict):
    """When a broad trigger fires, one criterion is chosen on the pooled gold-ordered pairs of a random half of the
    prompts with `min_completions` answers (at least `min_prompts` of them), tested on the other half's pooled
    pairs under `acceptance`, and added to every prompt whose bank has it
    (`rubric_rft.training.refinement.pooled_proposal`). For evidence too thin per prompt; needs the bank proposer."""

    enabled: bool = False
    min_prompts: int = Field(default=8, ge=2)


class Sampling(_Strict):
    """How prompts answered at a refinement step are sampled from the policy."""

    samples_per_prompt: int = Field(default=8, ge=2)
    temperature: float = Field(default=1.0, gt=0)
    max_new_tokens: int | None = Field(default=None, ge=1, description="Null: the training max_completion_length.")
    batch_size: int = Field(default=16, ge=1)


class FreshSamples(Sampling):
    """When the monitor, the pooled or the schedule trigger fires, up to `prompts` prompts the policy has not answered
    under their current rubric (too few buffered completions: a prompt's next visit may be far off) are answered
    now, `samples_per_prompt` times each, graded with their rubric and buffered, so they can be refined at this step.
    Prompts in their cooldown or out of rounds are passed over; the rest come in dataset order."""

    enabled: bool = False
    prompts: int = Field(default=8, ge=1, description="Prompts answered at one refinement step.")


class StuckTrigger(Sampling):
    """A prompt is stuck when GRPO learns nothing from it: its last `groups` groups (completions graded at one step)
    have a standard deviation of at most `max_std`, at any mean (a policy collapsed onto one answer is stuck whether
    the rubric passes or fails it). Its answers then differ too little to make pairs, so refining on them finds
    none: the source of spread is the policy itself, sampled hotter than training (`temperature`), `samples_per_prompt`
    times, graded with the prompt's rubric and buffered; the prompt is then refined on those answers at this step
    like any triggered prompt. Up to `prompts` stuck prompts a step, newest first, cooldown and rounds respected."""

    enabled: bool = False
    groups: int = Field(default=1, ge=1)
    max_std: float = Field(default=0.02, ge=0)
    prompts: int = Field(default=4, ge=1, description="Stuck prompts answered at one refinement step.")
    temperature: float = Field(default=1.5, gt=0)


class Budgets(_Strict):
    prompts_per_round: int = Field(default=4, ge=1, description="Prompts refined at one refinement step.")
    rounds_per_prompt: int = Field(default=3, ge=1, description="Refinement attempts per prompt over the run.")
    max_criteria: int = Field(default=10, ge=1, description="A proposal with more criteria is rejected.")
    cooldown_steps: int = Field(default=20, ge=0, description="Steps after an attempt before a prompt is tried again.")
    max_gold_calls: int | None = Field(default=400, ge=0, description="Gold preferences (pairs) per run; null: no cap.")
    max_proposer_calls: int | None = Field(default=100, ge=0, description="Proposer requests per run; null: no cap.")


class GoldSource(_Strict):
    judge: dict[str, Any] | str = Field(
        default_factory=lambda: {"backend": "rubric"},
        description="Pairwise judge config (see rubric_rft.pairwise.judges); `rubric` compares by gold rubrics.",
    )
    rubrics_path: str | None = Field(default=None, description="Gold rubrics by prompt_id, for the `rubric` judge.")


class BankProposerConfig(_Strict):
    type: Literal["bank"] = "bank"
    bank_path: str = Field(description="JSONL: {prompt_id, criteria: [criterion, ...]} per prompt.")


class LLMProposerConfig(_Strict):
    type: Literal["llm"] = "llm"
    endpoint: dict[str, Any] | str = Field(description="The proposer's chat endpoint (rubric_rft.llm.endpoint).")


ProposerConfig = Annotated[BankProposerConfig | LLMProposerConfig, Field(discriminator="type")]


class RefinementConfig(_Strict):
    refine_steps: int = Field(default=10, ge=1, description="Decide every N optimizer steps, and only then.")
    buffer_size: int = Field(default=16, ge=2, description="Newest completions kept per prompt.")
    min_completions: int = Field(default=8, ge=2, description="Completions under the current rubric a prompt needs.")
    saturation: SaturationTrigger = Field(default_factory=SaturationTrigger)
    spread: SpreadTrigger = Field(default_factory=SpreadTrigger)
    monitor: MonitorTrigger = Field(default_factory=MonitorTrigger)
    pooled: PooledTrigger = Field(default_factory=PooledTrigger)
    schedule: ScheduleTrigger = Field(default_factory=ScheduleTrigger)
    transfer: Transfer = Field(default_factory=Transfer)
    pooled_proposal: PooledProposal = Field(default_factory=PooledProposal)
    stuck: StuckTrigger = Field(default_factory=StuckTrigger)
    fresh_samples: FreshSamples = Field(default_factory=FreshSamples)
    budgets: Budgets = Field(default_factory=Budgets)
    selection: SelectionConfig = Field(default_factory=lambda: SelectionConfig(**_SELECTION_DEFAULTS))
    acceptance: Acceptance = Field(default_factory=Acceptance, validate_default=True)
    gold: GoldSource = Field(default_factory=GoldSource)
    proposer: ProposerConfig
    judge: dict[str, Any] | str | None = Field(
        default=None, description="Judge for llm criteria when rubrics are compared; defaults to the training judge."
    )
    round_timeout_s: float = Field(
        default=600, gt=0,
        description="A round still deciding after this long is cut (no rubric changes, a 'timed_out' record): the "
                    "other ranks wait for it in a collective, which fails at the training's ddp_timeout (1800 s).")
    seed: int = 0

    @field_validator("selection", mode="before")
    @classmethod
    def _same_generator(cls, value: Any) -> Any:
        return {**_SELECTION_DEFAULTS, **value} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _policy_pairs(self) -> RefinementConfig:
        if self.selection.distinct_generators:
            raise ValueError("selection.distinct_generators must be false: every buffered completion is the policy's")
        if self.fresh_samples.enabled and not (self.monitor.enabled or self.pooled.enabled or self.schedule.steps):
            raise ValueError("fresh_samples answers prompts when the monitor, the pooled or the schedule trigger "
                             "fires: enable monitor or pooled, or set schedule.steps")
        off = [step for step in self.schedule.steps if step % self.refine_steps]
        if off:
            raise ValueError(f"schedule.steps {off} are not refinement steps: refinement decides only at multiples "
                             f"of refine_steps ({self.refine_steps})")
        if self.fresh_samples.enabled and self.fresh_samples.samples_per_prompt < self.min_completions:
            raise ValueError(f"fresh_samples.samples_per_prompt ({self.fresh_samples.samples_per_prompt}) is below "
                             f"min_completions ({self.min_completions}): the answered prompts could never trigger")
        return self

    @field_validator("acceptance")
    @classmethod
    def _enough_pairs_selected(cls, acceptance: Acceptance, info: ValidationInfo) -> Acceptance:
        selection = info.data.get("selection")
        if selection is not None and selection.num_pairs < acceptance.min_pairs:
            raise ValueError(f"min_pairs ({acceptance.min_pairs}) is above selection.num_pairs "
                             f"({selection.num_pairs}): no prompt could ever be refined")
        return acceptance


def load_refinement_config(value: str | dict[str, Any] | RefinementConfig) -> RefinementConfig:
    """Parse `refinement:` from a mapping, a JSON string, or a YAML/JSON file path; errors name the source and field."""
    if isinstance(value, RefinementConfig):
        return value
    config, source = load_validated(value, TypeAdapter(RefinementConfig), "refinement config",
                                    field_prefix="refinement.")
    if config.gold.rubrics_path is None and _backend(config.gold.judge) == "rubric":
        raise ValueError(f"{source}: refinement.gold.judge with backend 'rubric' compares by gold rubrics: "
                         "set refinement.gold.rubrics_path")
    return config


def _backend(judge: dict[str, Any] | str) -> str | None:
    return judge.get("backend") if isinstance(judge, dict) else None
