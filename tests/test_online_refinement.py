"""Online rubric refinement: the tail buffer, the triggers, budgets, the acceptance rule, the proposers, the
callback's schedule, its checkpointed state, and rubric versions agreeing across two processes."""

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_rubric_store import save_checkpoint

from rubric_rft.judges.registry import build_judge
from rubric_rft.llm.costs import Costs
from rubric_rft.llm.endpoint import ChatEndpointConfig
from rubric_rft.pairwise.judges import RubricPairwiseConfig, build_pairwise_judge
from rubric_rft.reward.rubric_reward import GradedCompletion, RubricReward
from rubric_rft.rubricgen.gold import GoldJudge, Preferred, gold_agreement
from rubric_rft.rubricgen.proposer import LLMProposer, Proposal, RubricProposer
from rubric_rft.rubricgen.records import Candidate, PromptRow
from rubric_rft.rubricgen.refine import RefineConfig, refine_rubrics
from rubric_rft.rubricgen.selection import Scored
from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.testing.judge_server import DEFAULT_MODEL
from rubric_rft.training.refinement import callback as callback_module
from rubric_rft.training.refinement import fresh
from rubric_rft.training.refinement.callback import RECORDS_FILE, OnlineRefinementCallback
from rubric_rft.training.refinement.config import RefinementConfig, load_refinement_config
from rubric_rft.training.refinement.proposers import BankProposer, load_bank
from rubric_rft.training.refinement.rounds import RefinementState, answer_digests, run_round
from rubric_rft.training.refinement.tail_buffer import Entry, TailBuffer
from rubric_rft.training.refinement.trigger import (
    Trigger,
    check,
    monitor_diverging,
    pooled_saturation,
    spread_collapsed,
)
from rubric_rft.training.rubric_checkpoints import RubricStoreCallback

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "data" / "everyday"

# Every one of these passes the weak rubric; the gold prefers the ones that name specifics.
SPECIFIC = ["Boil water, steep the tea three minutes.", "Steep it in hot water for minutes, add milk.",
            "Pour water on leaves, wait two minutes then milk."]
VAGUE = ["Just make some tea, it is easy.", "Tea is nice, drink your tea daily.", "Any tea works fine for you here."]

MANY_SPECIFIC = ["Boil water, steep the tea three minutes.", "Heat water and steep tea leaves for minutes.",
                 "Tea: water near boiling, steep four minutes, milk.", "Steep green tea in warm water two minutes.",
                 "Add milk after you steep the tea in water.", "Black tea wants boiling water, then some milk."]
MANY_VAGUE = ["Just make some tea, it is easy.", "Tea is nice, drink your tea daily.",
              "Any tea works fine for you here.", "Buy good tea from a shop.", "Tea? Sure, just enjoy it.",
              "Everyone likes tea in the morning."]


def rule(cid, check, weight=2, text=None):
    return Criterion(id=cid, text=text or cid, weight=weight, kind="rule", check=check)


SHORT = rule("short", {"type": "word_count", "max": 12})
ON_TOPIC = rule("on_topic", {"type": "contains", "any_of": ["tea", "leaves"]})
SPECIFICS = rule("specifics", {"type": "contains", "any_of": ["water", "steep", "minutes", "milk"], "min_matches": 2})
POLITE = rule("polite", {"type": "contains", "any_of": ["hope this helps"]}, weight=1)


def weak(pid="tea") -> Rubric:
    return Rubric(id=pid, prompt_id=pid, criteria=[SHORT, ON_TOPIC])


def gold_rubric(pid="tea") -> Rubric:
    return Rubric(id=f"{pid}-gold", prompt_id=pid, criteria=[ON_TOPIC, SPECIFICS])


def rubric_gold(pids=("tea",)) -> GoldJudge:
    return GoldJudge(build_pairwise_judge(RubricPairwiseConfig()), {p: gold_rubric(p) for p in pids})


def config(**overrides) -> RefinementConfig:
    settings = {"proposer": {"type": "bank", "bank_path": "unused"}, "min_completions": 4, "refine_steps": 5,
                "saturation": {"top_k": 3}, **overrides}
    return RefinementConfig.model_validate(settings)


def fill(buffer: TailBuffer, store: RubricStore, pid: str, texts, step: int) -> None:
    """Grade `texts` with the prompt's current rubric, as the reward does, and buffer them."""
    rubric = store.rubric_for(pid)
    graded = asyncio.run(RubricReward(None).grade(["q"] * len(texts), list(texts), [rubric] * len(texts)))
    buffer.record([pid] * len(texts), list(texts), graded, step)


def saturated_world(pids=("tea",), texts=MANY_SPECIFIC + MANY_VAGUE):
    store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in pids])
    buffer = TailBuffer(16)
    for p in pids:
        fill(buffer, store, p, texts, step=4)
    return store, buffer, {p: f"How do I make {p}?" for p in pids}


def round_(store, buffer, prompts, state, cfg, proposer, step=5, gold=None, judge=None, broad=None):
    return asyncio.run(run_round(step, buffer, store, prompts, state, cfg, gold=gold or rubric_gold(list(prompts)),
                                 proposer=proposer, judge=judge, broad=broad))


class FixedProposer:
    """Proposes adding `criterion`, one proposer call each time."""

    name = "fixed"
    asks_model = True

    def __init__(self, criterion: Criterion) -> None:
        self.criterion = criterion
        self.asked = 0

    async def propose(self, prompt_id, prompt, rubric, pairs, agreement, before):
        self.asked += 1
        return Proposal([*rubric.criteria, self.criterion], f"add {self.criterion.id}", {"added": self.criterion.id},
                        Costs(calls=1))

    async def aclose(self):
        pass


# --- the buffer -------------------------------------------------------------------------------------------


def test_the_buffer_keeps_the_newest_graded_completions_per_prompt_and_round_trips():
    buffer = TailBuffer(3)
    rubric = weak()
    ok = GradedCompletion(score=1.0, satisfied={"short": True, "on_topic": True}, rubric=rubric)
    failed = GradedCompletion(score=None, error="judge down", rubric=rubric)
    for step in range(5):
        columns = {"prompt_id": ["tea", "tea"], "trainer_state": SimpleNamespace(global_step=step)}
        buffer.on_graded([f"tea {step}", [{"role": "assistant", "content": "lost"}]], [ok, failed], columns)
    entries = buffer.entries("tea")
    assert [e.text for e in entries] == ["tea 2", "tea 3", "tea 4"]  # newest 3; failures never buffered
    assert {(e.step, e.version, e.rubric_id, e.score, e.raw) for e in entries} == {
        (s, 1, "tea", 1.0, 4.0) for s in (2, 3, 4)}
    again = TailBuffer(3)
    again.load_state_dict(json.loads(json.dumps(buffer.state_dict())))
    assert again.entries("tea") == entries and again.entries("tea", version=2) == []
    with pytest.raises(ValueError, match="size"):
        TailBuffer(0)


# --- triggers ---------------------------------------------------------------------------------------------


def entries(scores_by_step, pid="tea"):
    return [Entry(pid, f"t{step}-{i}", s, s, {}, pid, 1, step, i) for step, scores in scores_by_step.items()
            for i, s in enumerate(scores)]


def test_saturation_fires_when_the_top_completions_all_score_high():
    cfg = config()
    assert check(entries({1: [1.0, 1.0, 0.96, 0.2]}), cfg).reason == "saturation"
    assert check(entries({1: [1.0, 1.0, 0.9, 0.2]}), cfg).reason == "not_saturated"
    assert check(entries({1: [1.0, 1.0, 1.0]}), cfg).reason == "too_few_completions"
    assert not check(entries({1: [1.0] * 4}), config(saturation={"enabled": False}, spread={"enabled": False})).fired


def test_collapsed_spread_fires_on_flat_high_groups_only():
    flat = {1: [0.85, 0.85], 2: [0.9, 0.9, 0.9]}
    assert spread_collapsed(entries(flat), groups=2, max_std=0.02, min_mean=0.8)
    assert not spread_collapsed(entries({1: [0.85, 0.85], 2: [0.2, 0.9]}), groups=2, max_std=0.02, min_mean=0.8)
    assert not spread_collapsed(entries({1: [0.3, 0.3], 2: [0.3, 0.3]}), groups=2, max_std=0.02, min_mean=0.8)
    assert not spread_collapsed(entries({2: [0.9, 0.9]}), groups=2, max_std=0.02, min_mean=0.8)  # one group only
    cfg = config(saturation={"enabled": False})
    assert check(entries(flat), cfg).reason == "collapsed_spread"


def test_the_monitor_trigger_fires_on_proxy_up_gold_down_and_makes_every_prompt_a_candidate():
    up_down = [{"step": 0, "proxy": 0.5, "gold": 0.6}, {"step": 2, "proxy": 0.7, "gold": 0.5},
               {"step": 4, "proxy": 0.9, "gold": 0.4}]
    assert monitor_diverging(up_down, window=3)
    assert not monitor_diverging(up_down[:2], window=3)
    assert not monitor_diverging([{**r, "gold": r["proxy"]} for r in up_down], window=3)
    assert monitor_diverging([{k: v for k, v in r.items() if k != "gold"} | {"win_rate": r["gold"]}
                              for r in up_down], window=2)
    spread_out = entries({1: [0.9, 0.5, 0.4, 0.3]})
    cfg = config()
    assert check(spread_out, cfg).reason == "not_saturated"
    assert check(spread_out, cfg, "monitor_divergence").reason == "monitor_divergence"


def test_the_pooled_trigger_fires_when_most_prompts_answered_lately_are_saturated():
    buffer = TailBuffer(16)
    for pid, top in (("a", 1.0), ("b", 1.0), ("c", 0.5), ("d", 0.4)):
        for entry in entries({4: [top, top, top, top, 0.1]}, pid):
            buffer.add(entry)
    versions = {pid: 1 for pid in "abcd"}
    cfg = config(pooled={"enabled": True, "window_steps": 8, "min_prompts": 4, "min_share": 0.5})
    assert pooled_saturation(buffer, versions, step=5, config=cfg)  # 2 of the 4 answered lately
    assert not pooled_saturation(buffer, versions, step=5, config=cfg.model_copy(
        update={"pooled": cfg.pooled.model_copy(update={"min_share": 0.75})}))
    assert not pooled_saturation(buffer, versions, step=12, config=cfg)  # answered too long ago
    assert not pooled_saturation(buffer, {**versions, "a": 2, "b": 2}, step=5, config=cfg)  # rubrics changed since
    spread_out = entries({4: [0.9, 0.5, 0.4, 0.3]})
    assert check(spread_out, cfg, "pooled_saturation") == Trigger(True, "pooled_saturation")


def test_only_completions_graded_with_the_current_rubric_count():
    store, buffer, prompts = saturated_world()
    store.update("tea", weak(), step=3, reason="a new version nobody has been graded with")
    result = round_(store, buffer, prompts, RefinementState(), config(), BankProposer({}))
    assert result.records == [{"step": 5, "prompt_id": "tea", "completions": 0, "status": "not_triggered",
                               "reason": "too_few_completions"}]


# --- refining one prompt: acceptance --------------------------------------------------------------------


def test_a_proposal_is_accepted_only_when_it_orders_the_gold_pairs_better():
    store, buffer, prompts = saturated_world()
    state = RefinementState()
    result = round_(store, buffer, prompts, state, config(), FixedProposer(POLITE))
    [record] = result.records
    assert record["trigger"] == "saturation" and record["status"] == "rejected" and record["reason"] == "no_improvement"
    # the weak rubric ties every pair, and so does adding `polite`: a tie is worth half an agreement
    assert record["fit_before"] == record["agreement_before"] == record["agreement_after"] == 0.5
    assert all(p["gold"] in (0.0, 0.5, 1.0) for p in record["pairs"]) and result.updates == []
    assert (state.rejected, state.accepted, state.proposer_calls) == (1, 0, 1) and state.gold_calls == len(
        record["pairs"])
    # the gold-ordered pairs are split in two, none shown to the proposer and also used for the test
    uses = [p.get("use") for p in record["pairs"]]
    assert all((use is None) == (p["gold"] == 0.5) for use, p in zip(uses, record["pairs"], strict=True))
    assert uses.count(["proposal"]) >= 3 and uses.count(["test"]) >= 3 and ["proposal", "test"] not in uses

    store, buffer, prompts = saturated_world()
    result = round_(store, buffer, prompts, RefinementState(), config(), FixedProposer(SPECIFICS))
    [record] = result.records
    assert record["status"] == "accepted" and record["agreement_after"] == 1.0 > record["agreement_before"]
    [new] = store.apply(result.updates)
    assert (new.id, new.version, new.parent, new.reason) == ("tea-v2", 2, "tea", "add specifics")
    assert [c.id for c in new.criteria] == ["short", "on_topic", "specifics"]
    assert store.history("tea")[-1].step == 5


class Memorizer:
    """Proposes a criterion that passes exactly the better responses it was shown: it fits those pairs perfectly
    and says nothing about any other response, the overfitting the held-out pairs are there to catch."""

    name = "memorizer"
    asks_model = False

    async def propose(self, prompt_id, prompt, rubric, pairs, agreement, before):
        seen = rule("seen_better", {"type": "contains", "any_of": [b.candidate.response for b, _ in pairs]})
        return Proposal([*rubric.criteria, seen], "memorized", {"fit": await agreement(
            rubric.model_copy(update={"criteria": [*rubric.criteria, seen]}))})

    async def aclose(self):
        pass


def test_a_proposal_that_only_fits_the_pairs_it_was_shown_fails_on_the_held_out_pairs():
    def attempt(holdout_fraction):
        store = RubricStore.from_rows([{"prompt_id": "tea", "rubric": weak()}])
        buffer = TailBuffer(16)
        fill(buffer, store, "tea", MANY_SPECIFIC + MANY_VAGUE, step=4)
        cfg = config(selection={"num_pairs": 6},
                     acceptance={"min_pairs": 2, "holdout_fraction": holdout_fraction})
        [record] = round_(store, buffer, {"tea": "How do I make tea?"}, RefinementState(), cfg, Memorizer()).records
        return record

    record = attempt(0.5)
    texts = [t for p in record["pairs"] for t in (p["first"], p["second"])]
    assert len(texts) == len(set(texts)) == 12  # disjoint pairs: no held-out response was ever shown
    assert record["edit"]["fit"] == 1.0 and record["fit_before"] == 0.5  # it fits what it saw...
    assert record["agreement_before"] == record["agreement_after"] == 0.5  # ...and ties every held-out pair
    assert (record["status"], record["reason"]) == ("rejected", "no_improvement")

    record = attempt(0)  # tested on the very pairs it was chosen on, the same proposal passes
    assert (record["status"], record["agreement_after"]) == ("accepted", 1.0)


class OneHeldOutAnswer:
    """Proposes a criterion that passes one specific answer it was not shown: it can order only the held-out pairs
    that answer is in, the thin evidence `min_newly_ordered` asks more than."""

    name = "one_answer"
    asks_model = False

    async def propose(self, prompt_id, prompt, rubric, pairs, agreement, before):
        shown = {t for b, w in pairs for t in (b.candidate.response, w.candidate.response)}
        target = next(t for t in MANY_SPECIFIC if t not in shown)
        criterion = rule("that_answer", {"type": "contains", "any_of": [target]})
        return Proposal([*rubric.criteria, criterion], "one answer", {"target": target})

    async def aclose(self):
        pass


def test_a_change_needs_enough_newly_ordered_held_out_pairs_and_optionally_a_sign_test():
    def attempt(seed, **acceptance):
        store, buffer, prompts = saturated_world()
        [record] = round_(store, buffer, prompts, RefinementState(), config(seed=seed, acceptance=acceptance),
                          OneHeldOutAnswer()).records
        return record

    thin = attempt(5)  # the answer is in one held-out pair: one pair moves from a tie to the gold's order
    assert thin["agreement_after"] > thin["agreement_before"] and thin["newly_ordered"] == 1
    assert (thin["status"], thin["reason"]) == ("rejected", "too_little_evidence: 1 more held-out pairs ordered < 2")
    assert attempt(5, min_newly_ordered=1)["status"] == "accepted"

    three = attempt(7)  # three pairs improve, none worsens: one-sided sign test p = 1/8
    assert (three["newly_ordered"], three["no_longer_ordered"], three["sign_test_p"]) == (3, 0, 0.125)
    assert three["status"] == "accepted"
    refused = attempt(7, max_p_value=0.1)
    assert (refused["status"], refused["reason"]) == ("rejected", "too_little_evidence: sign test p = 0.125 > 0.1")


def test_the_proposal_and_the_test_never_share_an_answer_in_the_shipped_regime():
    """The shipped config's acceptance (16 buffered answers, 12 pairs, half held out) on a collapsing policy that
    repeats itself: a proposer that memorizes the better answers it was shown gains nothing on the test, because
    no test pair holds an answer it saw. Drawing the held-out pairs among the same answers would let it pass."""
    shipped = yaml.safe_load((ROOT / "configs" / "overopt_online_refinement.yaml").read_text())["refinement"]
    settings = {key: shipped[key] for key in ("buffer_size", "selection", "acceptance")}
    assert settings["buffer_size"] == 16 and settings["selection"]["num_pairs"] == 12
    store = RubricStore.from_rows([{"prompt_id": "tea", "rubric": weak()}])
    buffer = TailBuffer(settings["buffer_size"])
    answers = MANY_SPECIFIC[:5] + MANY_VAGUE[:5]
    fill(buffer, store, "tea", answers + answers[:6], step=4)  # 16 completions, 10 distinct
    for seed in range(6):
        [record] = round_(store, buffer, {"tea": "How do I make tea?"}, RefinementState(),
                          config(seed=seed, **settings), Memorizer()).records
        shown = {t for p in record["pairs"] if "proposal" in p.get("use", []) for t in (p["first"], p["second"])}
        tested = {t for p in record["pairs"] if "test" in p.get("use", []) for t in (p["first"], p["second"])}
        assert shown and tested and not shown & tested
        assert record["edit"]["fit"] == 1.0 and record["agreement_after"] == record["agreement_before"]
        assert (record["status"], record["reason"]) == ("rejected", "no_improvement")


def test_too_few_gold_ordered_pairs_spend_the_gold_calls_but_ask_no_proposer():
    # 3 specific and 3 vague answers, split 3 and 3: each part orders at most 2 pairs
    store, buffer, prompts = saturated_world(texts=SPECIFIC + VAGUE)
    state = RefinementState()
    proposer = FixedProposer(SPECIFICS)
    [record] = round_(store, buffer, prompts, state, config(acceptance={"min_pairs": 6}), proposer).records
    assert record["status"] == "skipped" and record["reason"].startswith("too_few_pairs: ")
    assert record["reason"].endswith("< 6") and proposer.asked == 0
    assert state.gold_calls == len(record["pairs"]) > 0 and state.attempts == {"tea": 1}


def test_agreement_counts_a_tie_as_the_credit_it_is_given():
    first, second = (Scored(Candidate(prompt_id="p", generator="g", index=i, response=str(i)), s, s)
                     for i, s in ((0, 1.0), (1, 1.0)))
    third = Scored(Candidate(prompt_id="p", generator="g", index=2, response="2"), 0.0, 0.0)
    directed = [(first, second), (first, third), (third, first)]  # a tie, a hit, a miss
    assert gold_agreement(directed) == pytest.approx(1 / 3)
    assert gold_agreement(directed, tie_credit=0.5) == pytest.approx(1.5 / 3)


def test_a_proposal_over_the_criteria_cap_is_rejected():
    store, buffer, prompts = saturated_world()
    result = round_(store, buffer, prompts, RefinementState(), config(budgets={"max_criteria": 2}),
                    FixedProposer(SPECIFICS))
    assert result.records[0]["status"] == "rejected" and result.records[0]["reason"].startswith("max_criteria")
    assert result.updates == []


class FailingGold:
    name = "down"

    async def prefer(self, prompt_id, prompt, first, second):
        return Preferred(None, "gold judge unreachable")

    async def aclose(self):
        pass


def test_a_failed_gold_is_counted_and_never_becomes_an_edit():
    store, buffer, prompts = saturated_world()
    state = RefinementState()
    proposer = FixedProposer(SPECIFICS)
    result = round_(store, buffer, prompts, state, config(), proposer, gold=FailingGold())
    [record] = result.records
    assert (record["status"], record["reason"]) == ("error", "gold_failed")
    assert record["gold_failures"] == len(record["pairs"]) > 0 and all(p["error"] for p in record["pairs"])
    assert result.updates == [] and proposer.asked == 0 and state.errors == 1


# --- budgets ----------------------------------------------------------------------------------------------


def test_cooldown_rounds_and_prompts_per_round_stop_refinement_and_say_so():
    pids = ("tea", "egg", "rice")
    store, buffer, prompts = saturated_world(pids)
    state = RefinementState()
    cfg = config(budgets={"prompts_per_round": 2, "cooldown_steps": 10, "rounds_per_prompt": 1})
    proposer = FixedProposer(POLITE)  # never improves: prompts stay saturated
    first = round_(store, buffer, prompts, state, cfg, proposer, step=5)
    assert [(r["prompt_id"], r["status"], r["reason"]) for r in first.records] == [
        ("tea", "rejected", "no_improvement"), ("egg", "rejected", "no_improvement"),
        ("rice", "skipped", "prompts_per_round")]
    second = round_(store, buffer, prompts, state, cfg, proposer, step=10)
    assert [r["reason"] for r in second.records] == ["cooldown", "cooldown", "no_improvement"]
    third = round_(store, buffer, prompts, state, cfg, proposer, step=20)
    assert [r["reason"] for r in third.records] == ["rounds_per_prompt"] * 3
    assert state.attempts == {"tea": 1, "egg": 1, "rice": 1} and proposer.asked == 3


def test_a_prompt_is_tried_again_only_on_completions_written_since_its_last_attempt():
    store, buffer, prompts = saturated_world()  # completions of step 4
    state = RefinementState()
    cfg = config(budgets={"cooldown_steps": 0})
    proposer = FixedProposer(POLITE)  # never improves: the prompt stays saturated
    assert round_(store, buffer, prompts, state, cfg, proposer, step=5).records[0]["reason"] == "no_improvement"
    # the same completions again: another draw of pairs and of the held-out split is no new evidence
    [again] = round_(store, buffer, prompts, state, cfg, proposer, step=10).records
    assert (again["status"], again["reason"]) == ("skipped", "no_new_completions") and "pairs" not in again
    assert state.attempts == {"tea": 1} and proposer.asked == 1
    fill(buffer, store, "tea", SPECIFIC + VAGUE, step=12)
    [fresh] = round_(store, buffer, prompts, state, cfg, proposer, step=15).records
    assert fresh["reason"] == "no_improvement" and state.attempts == {"tea": 2} and proposer.asked == 2


def test_answers_given_at_the_refinement_step_itself_are_not_tried_twice():
    """Fresh samples are buffered at the refinement step itself, training completions at the step before: either
    way, an attempt that was rejected is not repeated on the same answers after its cooldown."""
    store = RubricStore.from_rows([{"prompt_id": "tea", "rubric": weak()}])
    buffer = TailBuffer(16)
    fill(buffer, store, "tea", MANY_SPECIFIC + MANY_VAGUE, step=5)  # answered for the round at step 5
    state = RefinementState()
    cfg = config(budgets={"cooldown_steps": 5})
    proposer = FixedProposer(POLITE)
    assert round_(store, buffer, {"tea": "q"}, state, cfg, proposer, step=5).records[0]["reason"] == "no_improvement"
    [again] = round_(store, buffer, {"tea": "q"}, state, cfg, proposer, step=10).records
    assert (again["status"], again["reason"]) == ("skipped", "no_new_completions") and proposer.asked == 1
    fill(buffer, store, "tea", MANY_VAGUE[:2], step=10)  # answers seen before are no new evidence either
    assert round_(store, buffer, {"tea": "q"}, state, cfg, proposer, step=15).records[0]["reason"] == (
        "no_new_completions")


def test_gold_and_proposer_budgets_stop_refinement():
    store, buffer, prompts = saturated_world(("tea", "egg"))
    state = RefinementState()
    result = round_(store, buffer, prompts, state, config(budgets={"max_gold_calls": 14}), FixedProposer(POLITE))
    assert [r["reason"] for r in result.records] == ["no_improvement", "gold_budget"]
    assert 6 <= state.gold_calls <= 14

    store, buffer, prompts = saturated_world(("tea", "egg"))
    state = RefinementState()
    result = round_(store, buffer, prompts, state, config(budgets={"max_proposer_calls": 1}), FixedProposer(POLITE))
    assert [r["reason"] for r in result.records] == ["no_improvement", "proposer_budget"]
    bank = BankProposer({"tea": [SPECIFICS], "egg": [SPECIFICS]})  # asks no model: the proposer budget is not its
    for pid in ("tea", "egg"):
        fill(buffer, store, pid, SPECIFIC + VAGUE, step=29)
    result = round_(store, buffer, prompts, state, config(budgets={"max_proposer_calls": 1}), bank, step=30)
    assert [r["status"] for r in result.records] == ["accepted", "accepted"]


# --- transfer ---------------------------------------------------------------------------------------------

VAGUE_WORDS = ["just", "nice", "fine", "shop", "sure", "likes"]


def transfer_world(prefers_vague=()):
    """tea and egg saturated and refined at step 5; rice and soup answered too, but over the round's slots."""
    pids = ("tea", "egg", "rice", "soup")
    store, buffer, prompts = saturated_world(pids)
    vague = rule("vague", {"type": "contains", "any_of": VAGUE_WORDS})
    vague_gold = Rubric(id="vague-gold", criteria=[ON_TOPIC, vague])
    gold = GoldJudge(build_pairwise_judge(RubricPairwiseConfig()),
                     {p: vague_gold if p in prefers_vague else gold_rubric(p) for p in pids})
    bank = BankProposer({p: [POLITE, SPECIFICS] for p in pids})
    cfg = config(budgets={"prompts_per_round": 2}, transfer={"enabled": True, "min_accepted": 2})
    return store, buffer, prompts, gold, bank, cfg


def test_a_criterion_accepted_on_two_prompts_is_tested_on_the_others_pooled_and_transferred():
    store, buffer, prompts, gold, bank, cfg = transfer_world()
    state = RefinementState()
    result = round_(store, buffer, prompts, state, cfg, bank, gold=gold)
    assert [(r["prompt_id"], r["status"]) for r in result.records[:4]] == [
        ("tea", "accepted"), ("egg", "accepted"), ("rice", "skipped"), ("soup", "skipped")]
    [moved] = result.records[4:]
    assert (moved["transfer"], moved["sources"], moved["prompt_ids"]) == ("specifics", ["tea", "egg"], ["rice", "soup"])
    assert moved["status"] == "accepted" and moved["changes"] == 2 and moved["agreement_after"] == 1.0
    assert {p["prompt_id"] for p in moved["pairs"]} == {"rice", "soup"} and moved["newly_ordered"] >= 2
    new = store.apply(result.updates)
    assert [(r.prompt_id, r.version, [c.id for c in r.criteria][-1]) for r in new] == [
        ("tea", 2, "specifics"), ("egg", 2, "specifics"), ("rice", 2, "specifics"), ("soup", 2, "specifics")]
    assert "transferred 'specifics', accepted on tea, egg" in new[2].reason
    assert state.transfers == {"specifics": ["rice", "soup"]} and state.accepted == 3
    assert state.gold_calls == sum(len(r["pairs"]) for r in result.records if "pairs" in r)


POOLED_PIDS = ("tea", "egg", "rice", "soup", "pie", "jam", "stew", "cake", "bun", "pho")


def pooled_world(answered=POOLED_PIDS[:-1]):
    """Ten prompts, nine answered four times each (two specific answers, two vague, all passing the weak rubric):
    too few pairs on any one prompt, plenty pooled; `pho` not answered at all."""
    store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in POOLED_PIDS])
    buffer = TailBuffer(16)
    for p in answered:
        fill(buffer, store, p, MANY_SPECIFIC[:2] + MANY_VAGUE[:2], step=4)
    cfg = config(pooled_proposal={"enabled": True, "min_prompts": 4}, saturation={"enabled": False},
                 spread={"enabled": False})
    return store, buffer, {p: f"How do I make {p}?" for p in POOLED_PIDS}, cfg


def test_thin_evidence_pooled_over_prompts_chooses_on_half_tests_on_the_rest_and_reaches_every_prompt():
    store, buffer, prompts, cfg = pooled_world()
    state = RefinementState()
    bank = BankProposer({p: [POLITE, SPECIFICS] for p in POOLED_PIDS})
    result = round_(store, buffer, prompts, state, cfg, bank, broad="schedule")
    per_prompt = [r for r in result.records if r.get("prompt_id")]
    assert {r["status"] for r in per_prompt} == {"skipped"}  # one prompt's four answers are too few
    [pooled] = [r for r in result.records if r.get("pooled_proposal")]
    assert pooled["status"] == "accepted" and pooled["criterion"] == "specifics"
    assert not set(pooled["proposal_prompts"]) & set(pooled["test_prompts"])  # chosen and tested apart
    assert len(pooled["proposal_prompts"]) + len(pooled["test_prompts"]) == 9
    assert pooled["tried"]["polite"] <= 0 < pooled["tried"]["specifics"] and pooled["newly_ordered"] >= 2
    new = store.apply(result.updates)
    assert sorted(r.prompt_id for r in new) == sorted(POOLED_PIDS)  # pho too, which was never answered
    assert all([c.id for c in r.criteria][-1] == "specifics" for r in new)
    assert state.accepted == 1 and state.gold_calls > 0


def test_a_pooled_proposal_needs_a_broad_trigger_enough_prompts_and_held_out_gain():
    store, buffer, prompts, cfg = pooled_world()
    bank = BankProposer({p: [POLITE, SPECIFICS] for p in POOLED_PIDS})
    quiet = round_(store, buffer, prompts, RefinementState(), cfg, bank)  # no broad trigger fired
    assert not [r for r in quiet.records if r.get("pooled_proposal")] and quiet.updates == []
    store, buffer, prompts, cfg = pooled_world(answered=POOLED_PIDS[:3])
    [few] = [r for r in round_(store, buffer, prompts, RefinementState(), cfg, bank, broad="schedule").records
             if r.get("pooled_proposal")]
    assert (few["status"], few["reason"]) == ("skipped", "too_few_prompts: 3 < 4")
    store, buffer, prompts, cfg = pooled_world()
    useless = BankProposer({p: [POLITE] for p in POOLED_PIDS})
    result = round_(store, buffer, prompts, RefinementState(), cfg, useless, broad="schedule")
    [none] = [r for r in result.records if r.get("pooled_proposal")]
    assert (none["status"], none["reason"]) == ("rejected", "no_proposal") and result.updates == []


def test_a_transfer_that_misorders_the_other_prompts_pairs_is_rejected_and_not_retried():
    store, buffer, prompts, gold, bank, cfg = transfer_world(prefers_vague=("rice", "soup"))
    state = RefinementState()
    result = round_(store, buffer, prompts, state, cfg, bank, gold=gold)
    [moved] = result.records[4:]
    assert (moved["status"], moved["reason"]) == ("rejected", "no_improvement")
    assert moved["agreement_after"] < moved["agreement_before"] and moved["no_longer_ordered"] == 0
    assert [u.prompt_id for u in result.updates] == ["tea", "egg"]
    store.apply(result.updates)
    again = round_(store, buffer, prompts, state, cfg, bank, gold=gold, step=10)
    assert not [r for r in again.records if "transfer" in r]  # offered to rice and soup once: not again


# --- proposers --------------------------------------------------------------------------------------------


def test_the_bank_proposer_adds_the_criterion_that_orders_the_pairs_best_or_none():
    helps_a_little = rule("names_milk", {"type": "contains", "any_of": ["milk"]})  # not in every better one
    twin = rule("specifics_again", SPECIFICS.check.model_dump())
    bank = BankProposer({"tea": [POLITE, helps_a_little, SPECIFICS, twin, ON_TOPIC]})
    store, buffer, prompts = saturated_world()
    [record] = round_(store, buffer, prompts, RefinementState(), config(), bank).records
    assert record["status"] == "accepted" and record["edit"]["added"]["id"] == "specifics"  # first of the best two
    assert record["edit"]["tried"]["polite"] == 0.5 and "on_topic" not in record["edit"]["tried"]  # taken id
    assert record["edit"]["tried"]["specifics"] == record["edit"]["tried"]["specifics_again"] == 1.0

    store, buffer, prompts = saturated_world()
    [record] = round_(store, buffer, prompts, RefinementState(), config(), BankProposer({"tea": [POLITE]})).records
    assert (record["status"], record["reason"]) == ("rejected", "no_proposal")


def test_a_bank_whose_criteria_cannot_be_graded_is_an_error_not_a_choice(start_judge_server):
    server = start_judge_server(fail_first_n=10_000, fail_status=503)
    asks_the_judge = Criterion(id="fresh", text="Mentions 'fresh'.", weight=2)
    store, buffer, prompts = saturated_world()
    state = RefinementState()

    async def run():
        judge = build_judge(endpoint(server, max_retries=0))
        try:
            return await run_round(5, buffer, store, prompts, state, config(), gold=rubric_gold(),
                                   proposer=BankProposer({"tea": [asks_the_judge]}), judge=judge)
        finally:
            await judge.aclose()

    [record] = asyncio.run(run()).records
    assert record["status"] == "error" and "bank" in record["reason"] and record["edit"]["tried"] == {"fresh": None}
    assert state.errors == 1 and state.accepted == 0


def endpoint(server, **options) -> ChatEndpointConfig:
    settings = {"timeout_s": 5.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **options}
    return ChatEndpointConfig(model=DEFAULT_MODEL, base_urls=[server.base_url], **settings)


def test_the_llm_proposer_against_the_scripted_server(start_judge_server):
    steep = {"op": "add", "criterion": {"id": "steeps", "text": "Mentions 'minutes'.", "weight": 2}}
    answer = json.dumps({"reason": "Better ones say how long.", "edits": [steep]})
    server = start_judge_server(proposer=lambda q: answer)
    store, buffer, prompts = saturated_world()
    state = RefinementState()

    async def run(proposer):
        judge = build_judge(endpoint(server))
        try:
            return await run_round(5, buffer, store, prompts, state, config(), gold=rubric_gold(), proposer=proposer,
                                   judge=judge)
        finally:
            await asyncio.gather(proposer.aclose(), judge.aclose())

    result = asyncio.run(run(LLMProposer(RubricProposer(endpoint(server)))))
    [record] = result.records
    assert record["status"] == "accepted" and record["edit"]["edits"] == [steep]
    assert record["proposer_costs"]["calls"] == 1 and record["judge_calls"] > 0
    [new] = store.apply(result.updates)
    assert new.reason == "Better ones say how long." and new.criteria[-1].kind == "llm"

    broken = start_judge_server(proposer=lambda q: "not JSON at all")
    store, buffer, prompts = saturated_world()
    state = RefinementState()
    result = asyncio.run(run(LLMProposer(RubricProposer(endpoint(broken, max_retries=0)))))
    [record] = result.records
    assert record["status"] == "error" and record["reason"].startswith("proposer:") and result.updates == []
    assert state.errors == 1 and state.proposer_calls >= 1


@pytest.mark.parametrize("word, status", [("minutes", "accepted"), ("zebra", "rejected")])
def test_offline_and_online_refinement_decide_alike_on_the_same_answers(start_judge_server, tmp_path, word, status):
    """Both loops call one engine: on the same answers, rubric, gold, proposal and settings, offline refinement
    draws the same pairs, finds the same evidence and keeps or refuses the edit as online refinement does."""
    edit = {"op": "add", "criterion": {"id": word, "text": f"Mentions '{word}'.", "weight": 2}}
    server = start_judge_server(proposer=lambda q: json.dumps({"reason": f"Say {word}.", "edits": [edit]}))
    store, buffer, prompts = saturated_world()
    cfg = config()
    texts = list(dict.fromkeys(e.text for e in buffer.entries("tea")))

    async def online():
        proposer, judge = LLMProposer(RubricProposer(endpoint(server))), build_judge(endpoint(server))
        try:
            result = await run_round(1, buffer, store, prompts, RefinementState(), cfg, gold=rubric_gold(),
                                     proposer=proposer, judge=judge)
            return result.records[0]
        finally:
            await asyncio.gather(proposer.aclose(), judge.aclose())

    async def offline():
        proposer, judge = RubricProposer(endpoint(server)), build_judge(endpoint(server))
        row = PromptRow("tea", [{"role": "user", "content": prompts["tea"]}], rubric=weak())
        answers = [Candidate(prompt_id="tea", generator="policy", index=i, response=t) for i, t in enumerate(texts)]
        try:
            result = await refine_rubrics([row], answers, proposer=proposer, judge=judge, gold=rubric_gold(),
                                          out_dir=tmp_path / "offline", progress=False,
                                          config=RefineConfig(max_rounds=1, seed=cfg.seed, selection=cfg.selection,
                                                              acceptance=cfg.acceptance))
            return result.last["tea"]
        finally:
            await asyncio.gather(proposer.aclose(), judge.aclose())

    live, fixed = asyncio.run(online()), asyncio.run(offline())
    by_name = {f"policy#{i}": t for i, t in enumerate(texts)}
    assert [(p["first"], p["second"], p["gold"], p.get("use")) for p in live["pairs"]] == [
        (by_name[p["first"]], by_name[p["second"]], p["gold"], p.get("use")) for p in fixed["pairs"]]
    evidence = ("fit_before", "agreement_before", "agreement_after", "newly_ordered", "no_longer_ordered",
                "sign_test_p")
    assert {k: live[k] for k in evidence} == {k: fixed[k] for k in evidence}
    assert (live["status"], live["reason"]) == (status, fixed["decision"])
    assert fixed["status"] == {"accepted": "refined", "rejected": "rejected"}[status]
    assert fixed["rubric"]["version"] == (2 if status == "accepted" else 1)


# --- config -----------------------------------------------------------------------------------------------


def test_config_defaults_and_errors_name_the_field(tmp_path):
    cfg = load_refinement_config({"proposer": {"type": "bank", "bank_path": "b.jsonl"},
                                  "gold": {"rubrics_path": "g.jsonl"}, "selection": {"num_pairs": 8}})
    assert cfg.refine_steps == 10 and cfg.selection.distinct_generators is False and cfg.selection.num_pairs == 8
    assert (cfg.acceptance.min_pairs, cfg.acceptance.holdout_fraction, cfg.acceptance.tie_credit) == (6, 0.5, 0.5)
    assert config().selection.num_pairs == 12
    with pytest.raises(ValueError, match=r"refinement\.acceptance: .*min_pairs \(6\) is above selection\.num_pairs"):
        load_refinement_config({"proposer": {"type": "bank", "bank_path": "b"}, "gold": {"rubrics_path": "g"},
                                "selection": {"num_pairs": 4}})
    with pytest.raises(ValueError, match="one pair shown, one held out"):
        config(acceptance={"min_pairs": 1})
    assert config(acceptance={"min_pairs": 1, "holdout_fraction": 0}).acceptance.min_pairs == 1
    with pytest.raises(ValueError, match=r"refinement\.budgets\.cooldown_step"):
        load_refinement_config({"proposer": {"type": "bank", "bank_path": "b"}, "budgets": {"cooldown_step": 1}})
    with pytest.raises(ValueError, match="rubrics_path"):
        load_refinement_config({"proposer": {"type": "bank", "bank_path": "b"}})
    with pytest.raises(ValueError, match="distinct_generators"):
        load_refinement_config({"proposer": {"type": "bank", "bank_path": "b"}, "gold": {"rubrics_path": "g"},
                                "selection": {"distinct_generators": True}})
    path = tmp_path / "refinement.yaml"
    path.write_text("proposer: {type: llm, endpoint: {model: m, base_urls: ['http://x']}}\n"
                    "gold: {judge: {backend: rubric}, rubrics_path: g.jsonl}\n")
    assert load_refinement_config(str(path)).proposer.type == "llm"


@pytest.mark.parametrize("name", ["criteria_bank_oracle.jsonl", "criteria_bank_independent.jsonl"])
def test_the_shipped_banks_cover_every_everyday_prompt_with_rules(name):
    bank = load_bank(EVERYDAY / name)
    ids = [json.loads(line)["prompt_id"] for line in (EVERYDAY / "train_prompt_only.jsonl").read_text().splitlines()]
    ids += [json.loads(line)["prompt_id"] for line in (EVERYDAY / "heldout_gold.jsonl").read_text().splitlines()]
    assert len(ids) == 48 and set(bank) == set(ids)
    assert all(c.kind == "rule" and len(criteria) >= 10 for criteria in bank.values() for c in criteria)


def test_a_bank_file_error_names_the_line(tmp_path):
    path = tmp_path / "bank.jsonl"
    path.write_text(json.dumps({"prompt_id": "tea", "criteria": [{"id": "x", "text": "x", "weight": 0}]}) + "\n")
    with pytest.raises(ValueError, match=r"bank\.jsonl:1: criteria\.0\.weight: "):
        load_bank(path)
    twice = {"id": "x", "text": "x", "weight": 1, "kind": "rule", "check": {"type": "word_count", "min": 1}}
    path.write_text(json.dumps({"prompt_id": "tea", "criteria": [twice]}) + "\n"
                    + json.dumps({"prompt_id": "egg", "criteria": [twice, twice]}) + "\n")
    with pytest.raises(ValueError, match=r"bank\.jsonl:2: criteria: .*criterion ids repeated: \['x'\]"):
        load_bank(path)
    path.write_text(json.dumps({"criteria": []}) + "\n")
    with pytest.raises(ValueError, match=r"bank\.jsonl:1: prompt_id: Field required"):
        load_bank(path)


# --- the callback -----------------------------------------------------------------------------------------


def write_world(tmp_path, pids=("tea",)):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"prompt_id": p, "prompt": [{"role": "user", "content": f"How do I make {p}?"}],
                                        "rubric": gold_rubric(p).model_dump(mode="json")}) + "\n" for p in pids))
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps({"prompt_id": p, "criteria": [POLITE.model_dump(mode="json"),
                                                                      SPECIFICS.model_dump(mode="json")]}) + "\n"
                            for p in pids))
    return load_refinement_config({"refine_steps": 5, "min_completions": 4, "saturation": {"top_k": 3},
                                   "gold": {"rubrics_path": str(gold)},
                                   "proposer": {"type": "bank", "bank_path": str(bank)}})


def records(out):
    return [json.loads(line) for line in (Path(out) / RECORDS_FILE).read_text().splitlines()]


def test_the_callback_refines_every_refine_steps_only(tmp_path):
    cfg = write_world(tmp_path)
    store = RubricStore.from_rows([{"prompt_id": "tea", "rubric": weak()}])
    callback = OnlineRefinementCallback(cfg, store, {"tea": "How do I make tea?"}, tmp_path / "out")
    args, control = SimpleNamespace(output_dir=str(tmp_path / "out")), SimpleNamespace(should_save=False)
    for step in range(1, 11):
        fill(callback.buffer, store, "tea", [MANY_VAGUE[step % 6]], step)  # a vague answer a step: never refined
        callback.on_step_end(args, SimpleNamespace(global_step=step, is_world_process_zero=True), control)
    # decided at steps 5 and 10 only: every answer is vague, so at 5 the gold ties every pair (gold calls spent, an
    # attempt), and at 10 the prompt is cooling down
    assert [(r["step"], r["status"], r["reason"]) for r in records(tmp_path / "out")] == [
        (5, "skipped", "gold_ties"), (10, "skipped", "cooldown")]


def test_each_refinement_step_is_counted_in_wandb_when_a_run_is_active(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(callback_module.report, "wandb_run", lambda: SimpleNamespace(log=logged.append))
    cfg = write_world(tmp_path)
    store = RubricStore.from_rows([{"prompt_id": "tea", "rubric": weak()}])
    callback = OnlineRefinementCallback(cfg, store, {"tea": "How do I make tea?"}, tmp_path / "out")
    fill(callback.buffer, store, "tea", MANY_SPECIFIC + MANY_VAGUE, step=4)
    callback.refine(5, is_main=True)
    [metrics] = logged
    assert metrics["refinement/accepted"] == 1.0 and metrics["train/global_step"] == 5
    assert metrics["refinement/total_accepted"] == 1.0 and metrics["refinement/total_gold_calls"] > 0


def test_the_callback_with_an_llm_proposer_and_judge_works_on_each_steps_fresh_loop(tmp_path, start_judge_server):
    steep = {"op": "add", "criterion": {"id": "steeps", "text": "Mentions 'minutes'.", "weight": 2}}
    answer = json.dumps({"reason": "Better ones say how long.", "edits": [steep]})
    server = start_judge_server(proposer=lambda q: answer)
    chat = {"model": DEFAULT_MODEL, "base_urls": [server.base_url], "timeout_s": 5.0}
    cfg = write_world(tmp_path, ("tea", "egg")).model_copy(update={
        "proposer": load_refinement_config({"proposer": {"type": "llm", "endpoint": chat},
                                            "gold": {"rubrics_path": "g"}}).proposer})
    store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in ("tea", "egg")])
    callback = OnlineRefinementCallback(cfg, store, {"tea": "How do I make tea?", "egg": "How do I make egg?"},
                                        tmp_path / "out", judge={"backend": "openai", **chat})
    fill(callback.buffer, store, "tea", MANY_SPECIFIC + MANY_VAGUE, step=4)
    assert [r.id for r in callback.refine(5, is_main=True)] == ["tea-v2"]
    fill(callback.buffer, store, "egg", MANY_SPECIFIC + MANY_VAGUE, step=9)  # the next round runs on another event loop
    assert [r.id for r in callback.refine(10, is_main=True)] == ["egg-v2"]
    assert callback.progress.proposer_calls == 2 and callback.progress.accepted == 2


UP_DOWN = [{"step": 0, "proxy": 0.5, "gold": 0.6}, {"step": 2, "proxy": 0.7, "gold": 0.5},
           {"step": 4, "proxy": 0.9, "gold": 0.4}]


def test_when_the_monitor_fires_prompts_not_answered_lately_are_answered_now(tmp_path, tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = (AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoTokenizer.from_pretrained(tiny_model_path))
    pids = ("tea", "egg", "rice", "soup")
    base = write_world(tmp_path, pids)
    settings = {**base.model_dump(), "monitor": {"enabled": True},
                "fresh_samples": {"enabled": True, "prompts": 2, "samples_per_prompt": 4, "max_new_tokens": 6}}
    cfg = RefinementConfig.model_validate(settings)

    def world(history):
        store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in pids])
        callback = OnlineRefinementCallback(cfg, store, {p: [{"role": "user", "content": f"How do I make {p}?"}]
                                                         for p in pids}, tmp_path / "out",
                                            monitor=SimpleNamespace(history=history))
        fill(callback.buffer, store, "tea", SPECIFIC[:2] + VAGUE[:2], step=3)  # answered lately: not again
        return store, callback

    store, callback = world(UP_DOWN)
    callback.refine(5, is_main=True, policy=policy)
    [sampled, *decisions] = records(tmp_path / "out")
    assert (sampled["status"], sampled["prompt_ids"], sampled["completions"]) == ("sampled", ["egg", "rice"], 8)
    assert sampled["grading_failures"] == 0 and sampled["generation_s"] > 0
    for pid in ("egg", "rice"):  # graded with the current rubric, buffered as this step's completions
        entries = callback.buffer.entries(pid, version=1)
        assert len(entries) == 4 and {e.step for e in entries} == {5}
    assert callback.buffer.entries("soup") == []  # two prompts a step: soup waits
    decided = {r["prompt_id"]: r for r in decisions}
    assert list(decided) == ["egg", "rice", "tea"]  # the answers just paid for come first
    assert decided["tea"]["trigger"] == "saturation"  # its own answers all pass the weak rubric
    assert decided["egg"]["trigger"] == decided["rice"]["trigger"] == "monitor_divergence"

    (tmp_path / "out" / RECORDS_FILE).unlink()
    store, callback = world(UP_DOWN[:2])  # the monitor has not seen the proxy rise while the gold fell
    callback.refine(5, is_main=True, policy=policy)
    assert "sampled" not in {r["status"] for r in records(tmp_path / "out")}
    assert callback.buffer.prompt_ids() == ["tea"]


def test_at_a_scheduled_step_every_prompt_is_answered_and_refined_before_any_rubric_saturates(tmp_path, monkeypatch):
    """No rubric saturated and no monitor: only the schedule makes the unanswered prompts candidates, at its steps."""
    asked = []
    off_topic = ["Boil water, steep three minutes.", "Steep in hot water for minutes.", "Hot water, steep two minutes.",
                 "Add milk after you steep in water.", "Just make some, it is easy.", "It is nice, drink it daily.",
                 "Anything works fine for you here.", "Buy a good one from a shop."]  # all score 0.5: not saturated

    def policy_answers(model, tokenizer, messages, sampling, max_new_tokens, seed, trainer=None):
        asked.append(len(messages))
        return off_topic * len(messages)

    monkeypatch.setattr(fresh, "answer", policy_answers)
    pids = ("tea", "egg", "rice")
    base = write_world(tmp_path, pids)
    cfg = RefinementConfig.model_validate({**base.model_dump(), "schedule": {"steps": [10, 5]},
                                           "fresh_samples": {"enabled": True, "prompts": 3}})
    assert cfg.schedule.steps == [5, 10]
    store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in pids])
    callback = OnlineRefinementCallback(cfg, store, {p: f"How do I make {p}?" for p in pids}, tmp_path / "out")
    fill(callback.buffer, store, "tea", ["tea"] * 2 + ["Nothing to say."] * 2, step=4)  # answered, not saturated

    callback.refine(5, is_main=True, policy=("model", "tokenizer"))
    [sampled, *decisions] = records(tmp_path / "out")
    assert asked == [2] and (sampled["reason"], sampled["prompt_ids"]) == ("schedule", ["egg", "rice"])
    decided = {r["prompt_id"]: r for r in decisions}
    assert decided["egg"]["trigger"] == decided["rice"]["trigger"] == decided["tea"]["trigger"] == "schedule"
    assert decided["egg"]["pairs"] and decided["rice"]["pairs"]  # both refined on the answers just sampled
    assert decided["rice"]["status"] == "accepted" and store.rubric_for("rice").version == 2

    (tmp_path / "out" / RECORDS_FILE).unlink()
    callback.refine(15, is_main=True, policy=("model", "tokenizer"))  # not a scheduled step: nothing answered
    assert asked == [2] and "sampled" not in {r["status"] for r in records(tmp_path / "out")}
    assert {r["reason"] for r in records(tmp_path / "out")} == {"not_saturated", "too_few_completions"}


def test_fresh_samples_answer_prompts_without_enough_answers_or_with_only_answers_already_tried():
    store, buffer, _ = saturated_world(("tea", "egg", "rice"), texts=MANY_SPECIFIC[:4])
    cfg = config(monitor={"enabled": True}, fresh_samples={"enabled": True, "prompts": 3})
    state = RefinementState(attempts={"tea": 1, "egg": 1}, last_attempt={"tea": 0, "egg": 0},
                            answers_tried={p: sorted(answer_digests(MANY_SPECIFIC[:4])) for p in ("tea", "egg")})
    fill(buffer, store, "egg", MANY_VAGUE[:1], step=9)  # egg has an answer its attempt did not see
    store.apply([])
    chosen = fresh.prompts_to_answer(20, ["tea", "egg", "rice", "soup"], buffer, store, state, cfg)
    assert chosen == ["tea"]  # rice has answers nobody tried; soup is not in the store
    assert fresh.prompts_to_answer(20, ["tea", "egg", "rice"], buffer, store, RefinementState(), cfg) == []
    thin = cfg.model_copy(update={"min_completions": 5})
    assert fresh.prompts_to_answer(20, ["tea", "egg", "rice"], buffer, store, RefinementState(), thin) == [
        "tea", "rice"]  # egg has 5 answers, the others 4


def test_scheduled_steps_must_be_refinement_steps():
    with pytest.raises(ValueError, match=r"schedule.steps \[6\] are not refinement steps.*refine_steps \(5\)"):
        config(schedule={"steps": [5, 6]})
    with pytest.raises(ValueError, match="optimizer steps"):
        config(schedule={"steps": [0]})
    assert config(schedule={"steps": [5]}, fresh_samples={"enabled": True}).fresh_samples.enabled


def stuck_world(tmp_path, enabled=True, **stuck):
    """`tea` collapsed onto one vague answer (a flat group: it passes both weak criteria), `egg` answered with
    spread."""
    base = write_world(tmp_path, ("tea", "egg"))
    cfg = RefinementConfig.model_validate({**base.model_dump(), "stuck": {
        "enabled": enabled, "samples_per_prompt": 8, "max_new_tokens": 6, **stuck}})
    store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in ("tea", "egg")])
    callback = OnlineRefinementCallback(cfg, store, {p: [{"role": "user", "content": f"How do I make {p}?"}]
                                                     for p in ("tea", "egg")}, tmp_path / "out")
    fill(callback.buffer, store, "tea", [VAGUE[0]] * 8, step=4)
    fill(callback.buffer, store, "egg", ["egg"] * 4 + SPECIFIC[:2] + VAGUE[:2], step=3)
    return store, callback


def test_stuck_prompts_are_flat_at_any_mean_and_respect_cooldown_and_the_cap(tmp_path):
    store, callback = stuck_world(tmp_path)
    chosen = fresh.stuck_prompts(5, callback.buffer, store, RefinementState(), callback.config)
    assert chosen == ["tea"]  # egg's group differs; flat at a low mean counts too:
    fill(callback.buffer, store, "egg", ["Nothing to say."] * 4, step=4)  # fails on_topic: flat and low
    assert fresh.stuck_prompts(5, callback.buffer, store, RefinementState(), callback.config) == ["tea", "egg"]
    capped = callback.config.model_copy(update={"stuck": callback.config.stuck.model_copy(update={"prompts": 1})})
    assert fresh.stuck_prompts(5, callback.buffer, store, RefinementState(), capped) == ["tea"]
    cooling = RefinementState(attempts={"tea": 1}, last_attempt={"tea": 2})
    assert fresh.stuck_prompts(5, callback.buffer, store, cooling, callback.config) == ["egg"]


def test_a_stuck_prompt_is_answered_hotter_and_refined_on_those_answers(tmp_path, monkeypatch):
    """The collapsed answers alone give no pair to refine on; the hot samples are the spread the round needs."""
    asked = []

    def hot_policy(model, tokenizer, messages, sampling, max_new_tokens, seed, trainer=None):
        asked.append((len(messages), sampling.samples_per_prompt, sampling.temperature))
        return (MANY_SPECIFIC[:4] + MANY_VAGUE[:4]) * len(messages)

    monkeypatch.setattr(fresh, "answer", hot_policy)
    store, callback = stuck_world(tmp_path, enabled=False)
    callback.refine(5, is_main=True, policy=("model", "tokenizer"))
    assert {r["prompt_id"]: r["reason"] for r in records(tmp_path / "out")}["tea"] == "no_pairs"
    assert asked == [] and store.rubric_for("tea").version == 1

    (tmp_path / "out" / RECORDS_FILE).unlink()
    store, callback = stuck_world(tmp_path)
    assert [r.id for r in callback.refine(5, is_main=True, policy=("model", "tokenizer"))] == ["tea-v2"]
    assert asked == [(1, 8, 1.5)]
    [sampled, *decisions] = records(tmp_path / "out")
    assert (sampled["reason"], sampled["prompt_ids"], sampled["completions"]) == ("stuck", ["tea"], 8)
    decided = {r["prompt_id"]: r for r in decisions}
    assert decided["tea"]["trigger"] == "stuck" and decided["tea"]["status"] == "accepted"
    assert [c.id for c in store.rubric_for("tea").criteria] == ["short", "on_topic", "specifics"]


def test_stuck_prompts_are_sampled_from_the_policy_itself(tmp_path, tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = (AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoTokenizer.from_pretrained(tiny_model_path))
    store, callback = stuck_world(tmp_path)
    callback.refine(5, is_main=True, policy=policy)
    [sampled, *decisions] = records(tmp_path / "out")
    assert (sampled["status"], sampled["reason"], sampled["completions"]) == ("sampled", "stuck", 8)
    hot = [e.text for e in callback.buffer.entries("tea") if e.step == 5]
    assert len(hot) == 8 and len(set(hot)) > 1  # spread where the collapsed answers had none
    assert {r["prompt_id"]: r.get("trigger") for r in decisions}["tea"] == "stuck"


def test_fresh_samples_need_the_monitor_trigger_and_enough_samples_to_trigger():
    with pytest.raises(ValueError, match="enable monitor or pooled, or set schedule.steps"):
        config(fresh_samples={"enabled": True})
    with pytest.raises(ValueError, match=r"samples_per_prompt \(2\) is below min_completions \(4\)"):
        config(monitor={"enabled": True}, fresh_samples={"enabled": True, "samples_per_prompt": 2})
    assert config(monitor={"enabled": True}, fresh_samples={"enabled": True}).fresh_samples.prompts == 8


def test_a_round_that_outlasts_its_bound_is_cut_without_changing_rubrics(tmp_path):
    """The other ranks wait for the main process's round in a collective: a slow gold or proposer must not run past
    the collective's timeout, which would kill the job."""
    cfg = write_world(tmp_path).model_copy(update={"round_timeout_s": 0.2})
    store = RubricStore.from_rows([{"prompt_id": "tea", "rubric": weak()}])
    callback = OnlineRefinementCallback(cfg, store, {"tea": "How do I make tea?"}, tmp_path / "out")
    fill(callback.buffer, store, "tea", MANY_SPECIFIC + MANY_VAGUE, step=4)

    async def stuck_round(step, broad, answered):
        await asyncio.sleep(30)

    callback._round = stuck_round
    assert callback.refine(5, is_main=True) == []
    assert store.rubric_for("tea").version == 1
    assert [(r["step"], r["status"]) for r in records(tmp_path / "out")] == [(5, "timed_out")]
    assert "round_timeout_s (0.2 s)" in records(tmp_path / "out")[0]["reason"]


def test_state_and_rubrics_survive_a_kill_and_resume(tmp_path):
    """Unit level: the callback's and the store's checkpoint files, then a fresh callback and store resume."""
    cfg = write_world(tmp_path, ("tea", "egg"))
    prompts = {"tea": "How do I make tea?", "egg": "How do I make egg?"}
    out = tmp_path / "out"

    def fresh():
        store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in prompts])
        return store, OnlineRefinementCallback(cfg, store, prompts, out)

    store, callback = fresh()
    for pid in prompts:
        fill(callback.buffer, store, pid, MANY_SPECIFIC + MANY_VAGUE, step=4)
    assert [r.id for r in callback.refine(5, is_main=True)] == ["tea-v2", "egg-v2"]
    checkpoint = out / "checkpoint-5"
    save_checkpoint(checkpoint, callback, RubricStoreCallback(store))
    saved_buffer = callback.buffer.state_dict()
    fill(callback.buffer, store, "tea", SPECIFIC, step=9)
    callback.refine(10, is_main=True)  # after the checkpoint: lost with the kill

    resumed_store, resumed = fresh()
    RubricStoreCallback(resumed_store).restore(checkpoint)
    assert resumed.restore(checkpoint, is_main=True)
    tried = sorted(answer_digests(MANY_SPECIFIC + MANY_VAGUE))
    assert resumed.progress == RefinementState(step=5, attempts={"tea": 1, "egg": 1}, last_attempt={"tea": 5, "egg": 5},
                                               answers_tried={"tea": tried, "egg": tried},
                                               accepted_criteria={"specifics": ["tea", "egg"]},
                                               gold_calls=resumed.progress.gold_calls, accepted=2)
    assert resumed.buffer.state_dict() == saved_buffer
    assert [r.id for r in resumed_store.current()] == ["tea-v2", "egg-v2"]
    assert {r["step"] for r in records(out)} == {5}
    save_checkpoint(out / "checkpoint-6")  # saved by a run without online refinement: it starts afresh
    assert not resumed.restore(out / "checkpoint-6", is_main=True)

    other_rank_store, other_rank = fresh()
    other_rank.restore(checkpoint, is_main=False)  # another rank's buffer stays empty: the main process has them
    assert len(other_rank.buffer) == 0 and other_rank.progress.accepted == 2


# --- two processes ----------------------------------------------------------------------------------------

DRIVER = """
import json, sys
from pathlib import Path
from types import SimpleNamespace

from accelerate import PartialState

sys.path.insert(0, sys.argv[2])
from test_online_refinement import MANY_SPECIFIC, MANY_VAGUE, fill, weak, write_world
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.refinement.callback import OnlineRefinementCallback

out = Path(sys.argv[1])
rank = PartialState(cpu=True).process_index
(out / f"world{rank}").mkdir()
cfg = write_world(out / f"world{rank}", ("tea", "egg"))
store = RubricStore.from_rows([{"prompt_id": p, "rubric": weak(p)} for p in ("tea", "egg")])
callback = OnlineRefinementCallback(cfg, store, {"tea": "How do I make tea?", "egg": "How do I make egg?"},
                                    out / "run")
half = (MANY_SPECIFIC + MANY_VAGUE)[rank::2]  # each rank graded half of every group: only together are they enough
for pid in ("tea", "egg"):
    fill(callback.buffer, store, pid, half, step=4)
new = callback.refine(5, is_main=rank == 0)
fill(callback.buffer, store, "tea", half, step=6)
later = callback.refine(10, is_main=rank == 0)
buffered = len(callback.buffer)
fill(callback.buffer, store, "egg", half, step=11)
# a step that saves a checkpoint: the main process, which alone writes it, gets every rank's completions first
callback.on_step_end(None, SimpleNamespace(global_step=11, is_world_process_zero=rank == 0),
                     SimpleNamespace(should_save=True))
Path(out, f"rank{rank}.json").write_text(json.dumps({
    "new": [r.id for r in new], "later": [r.id for r in later], "store": store.state_dict(),
    "buffered": buffered, "buffered_at_save": len(callback.buffer)}))
PartialState().destroy_process_group()  # left to the interpreter's exit, gloo's threads can abort the process
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_grade_with_the_same_rubric_versions(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    command = ["accelerate", "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"),
               "--main_process_port", str(free_port()), str(driver), str(tmp_path), str(Path(__file__).parent)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["new"] == ranks[1]["new"] == ["tea-v2", "egg-v2"]
    assert ranks[0]["later"] == ranks[1]["later"] == []  # cooldown
    assert ranks[0]["store"] == ranks[1]["store"]
    # every rank's completions end up on the main process: 6 + 6 per prompt and step (tea twice, egg once), the
    # newest 16 a prompt kept
    assert (ranks[0]["buffered"], ranks[1]["buffered"]) == (16 + 12, 0)
    assert (ranks[0]["buffered_at_save"], ranks[1]["buffered_at_save"]) == (16 + 16, 0)
    assert [r["status"] for r in records(tmp_path / "run") if r["step"] == 5] == ["accepted", "accepted"]
