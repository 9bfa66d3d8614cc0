"""Refinement: tail and diverse pair selection, the convergence test, the acceptance test, rounds over HTTP,
resuming, failures."""

import asyncio
import json
from pathlib import Path

import pytest

from rubric_rft.judges.registry import build_judge
from rubric_rft.llm.endpoint import ChatEndpointConfig
from rubric_rft.pairwise.judges import LLMPairwiseJudge
from rubric_rft.rubricgen.generate import generate_rubrics
from rubric_rft.rubricgen.gold import GoldJudge, LabelPreference, build_gold
from rubric_rft.rubricgen.proposer import RubricProposer
from rubric_rft.rubricgen.records import (
    Candidate,
    PromptRow,
    load_candidates,
    load_prompts,
    load_rubric_rows,
    read_appended,
)
from rubric_rft.rubricgen.refine import OFFLINE_ACCEPTANCE, RefineConfig, refine_rubrics, round_path
from rubric_rft.rubricgen.selection import Scored, SelectionConfig, select_pairs, similarity, tail
from rubric_rft.rubrics.datasets import load_prompt_dataset
from rubric_rft.rubrics.format import Rubric
from rubric_rft.testing.judge_server import DEFAULT_MODEL, more_words_wins

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "refinement"
FRESH = {"op": "add", "criterion": {"id": "fresh", "text": "Mentions 'fresh'.", "weight": 2}}


def scored(generator, index, score, text=None, prompt_id="p") -> Scored:
    text = text if text is not None else f"{generator} {index} says {score} distinct{generator}{index}"
    return Scored(Candidate(prompt_id=prompt_id, generator=generator, index=index, response=text), score, score / 10)


# --- selection --------------------------------------------------------------------------------------------


def test_the_tail_is_the_top_share_with_ties_at_the_cut():
    items = [scored(f"g{i}", 0, float(i)) for i in range(10)]
    assert [s.score for s in tail(items, 0.3, 2)] == [9, 8, 7]
    assert [s.score for s in tail(items, 0.1, 4)] == [9, 8, 7, 6]
    tied = [*items, scored("h", 0, 7.0)]
    assert sorted(s.score for s in tail(tied, 0.3, 2)) == [7, 7, 8, 9]
    assert len(tail(items[:3], 0.5, 4)) == 3 and tail([], 0.5, 4) == []


def test_pairs_come_from_the_tail_and_are_diverse():
    copy = "Boil fresh water and steep the tea for three minutes."
    items = [
        scored("a", 0, 9, copy),
        scored("a", 1, 9, "Warm the pot, then add one spoon of leaves per cup."),
        scored("b", 0, 8, copy.replace("three", "four")),  # a near-copy of a#0
        scored("c", 0, 8, "Use loose leaves and a timer; do not squeeze the bag."),
        scored("d", 0, 1, "Tea."),  # outside the tail
    ]
    config = SelectionConfig(num_pairs=10, tail_fraction=0.5, min_tail=4, max_similarity=0.7)
    pairs = select_pairs(items, config, seed=0)
    names = {frozenset((p.first.candidate.name, p.second.candidate.name)) for p in pairs}
    assert similarity(items[0].candidate.response, items[2].candidate.response) > 0.7
    assert names == {frozenset(n) for n in [("a#0", "c#0"), ("a#1", "b#0"), ("a#1", "c#0"), ("b#0", "c#0")]}
    assert all(p.similarity <= 0.7 for p in pairs)
    same_generator = select_pairs(items, config.model_copy(update={"distinct_generators": False}), seed=0)
    assert frozenset(("a#0", "a#1")) in {
        frozenset((p.first.candidate.name, p.second.candidate.name)) for p in same_generator
    }
    assert select_pairs(items[:1], config) == [] and select_pairs([items[0], items[2]], config) == []


def test_selection_spreads_over_responses_first():
    items = [scored(g, 0, 5) for g in "abcdef"]
    pairs = select_pairs(items, SelectionConfig(num_pairs=3, min_tail=6), seed=1)
    used = [p.first.candidate.generator for p in pairs] + [p.second.candidate.generator for p in pairs]
    assert sorted(used) == list("abcdef")


def test_selection_is_deterministic_under_a_seed_and_the_seed_breaks_ties():
    items = [scored(g, 0, 5) for g in "abcdef"]
    config = SelectionConfig(num_pairs=4, min_tail=6)

    def names(seed):
        return [(p.first.candidate.name, p.second.candidate.name) for p in select_pairs(items, config, seed=seed)]

    assert names(7) == names(7) == names("7")
    assert len({tuple(names(seed)) for seed in range(8)}) > 1
    assert names(3) == [
        (p.first.candidate.name, p.second.candidate.name) for p in select_pairs(list(reversed(items)), config, seed=3)
    ]


# --- the refinement loop ----------------------------------------------------------------------------------


def world(prompt_ids=("tea", "egg", "rice")) -> tuple[list[PromptRow], list[Candidate]]:
    """Prompts whose rubric ('Mentions the subject') ties every candidate; the labelled best ones say 'fresh'."""
    rows, candidates = [], []
    for p in prompt_ids:
        rubric = Rubric(id=p, prompt_id=p, criteria=[{"id": "subject", "text": f"Mentions '{p}'.", "weight": 2}])
        rows.append(PromptRow(p, [{"role": "user", "content": f"How do I make {p}?"}], rubric=rubric))
        texts = [
            ("terse", 1, f"Just make {p} now."),
            ("plain", 1, f"Make the {p} the usual way, nothing special about it at all."),
            ("fresh", 3, f"Use fresh ingredients for the {p} and take your time with it."),
            ("market", 3, f"Buy the freshest produce at the market, then prepare the {p} gently."),
        ]
        candidates += [Candidate(prompt_id=p, generator=g, index=0, response=t, label=label) for g, label, t in texts]
    return rows, candidates


def endpoint(server, **options) -> ChatEndpointConfig:
    settings = {"timeout_s": 5.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **options}
    return ChatEndpointConfig(model=DEFAULT_MODEL, base_urls=[server.base_url], **settings)


def adds_fresh(question) -> str:
    return json.dumps({"reason": "The better ones use fresh ingredients.", "edits": [FRESH]})


def refine(
    server,
    rows,
    candidates,
    out_dir,
    gold=None,
    judge=True,
    on_record=None,
    proposer_options=None,
    judge_options=None,
    **config,
):
    proposer = RubricProposer(endpoint(server, **(proposer_options or {})))
    grader = build_judge(endpoint(server, **(judge_options or {}))) if judge else None
    gold = gold or LabelPreference()

    async def run():
        try:
            return await refine_rubrics(
                rows,
                candidates,
                proposer=proposer,
                judge=grader,
                gold=gold,
                out_dir=out_dir,
                config=RefineConfig(**config),
                progress=False,
                on_record=on_record,
            )
        finally:
            await asyncio.gather(proposer.aclose(), gold.aclose(), *([grader.aclose()] if grader else []))

    return asyncio.run(run())


def records(out_dir, number):
    return {r["prompt_id"]: r for _, r in read_appended(round_path(Path(out_dir), number))}


def test_a_round_adds_what_separates_the_pairs_then_the_rubric_converges(start_judge_server, tmp_path):
    asked = []
    server = start_judge_server(proposer=lambda q: asked.append(q) or adds_fresh(q))
    rows, candidates = world()
    result = refine(server, rows, candidates, tmp_path / "run", max_rounds=6)
    assert [r["status"] for r in result.rounds] == [{"refined": 3}, {"separated": 3}, {"converged": 3}]
    first = records(tmp_path / "run", 1)["tea"]
    assert first["agreement"] == 0.0 and first["reason"] == "The better ones use fresh ingredients."
    assert len(first["pairs"]) == 4 and all(p["gold"] in (0.0, 1.0, 0.5) for p in first["pairs"])
    assert [(r["agreement"], r["streak"]) for r in (records(tmp_path / "run", n)["tea"] for n in (2, 3))] == [
        (1.0, 1),
        (1.0, 2),
    ]
    assert len(asked) == 3 and all(q.task == "refine" for q in asked)
    shown = asked[0].pairs
    assert all("fresh" in better.lower() or "market" in better.lower() for better, _ in shown)
    refined = {row.prompt_id: row.rubric for row in result.rows}
    assert all(
        (r.version, r.parent, r.reason) == (2, p, "The better ones use fresh ingredients.") for p, r in refined.items()
    )
    assert refined["tea"].id == "tea-v2" and [c.id for c in refined["tea"].criteria] == ["subject", "fresh"]
    dataset = load_prompt_dataset(str(tmp_path / "run" / "rubrics.jsonl"))
    assert Rubric.from_value(dataset[0]["rubric"]) == refined[dataset[0]["prompt_id"]]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final_status"] == {"converged": 3} and summary["versions"] == {"tea": 2, "egg": 2, "rice": 2}


def test_a_rubric_that_already_separates_the_pairs_converges_without_the_proposer(judge_server, tmp_path):
    rows, candidates = world()
    rule = {
        "id": "fresh",
        "kind": "rule",
        "text": "Says fresh.",
        "weight": 1,
        "check": {"type": "contains", "any_of": ["fresh"]},
    }
    rows = [PromptRow(r.prompt_id, r.prompt, rubric=Rubric(id=r.prompt_id, criteria=[rule])) for r in rows]
    result = refine(judge_server, rows, candidates, tmp_path / "run", judge=False, max_rounds=5, patience=2)
    assert [r["status"] for r in result.rounds] == [{"separated": 3}, {"converged": 3}]
    assert judge_server.stats.requests == 0 and all(row.rubric.version == 1 for row in result.rows)
    once = refine(judge_server, rows, candidates, tmp_path / "patient", judge=False, patience=1)
    assert [r["status"] for r in once.rounds] == [{"converged": 3}]


def test_below_the_threshold_the_streak_starts_over(start_judge_server, tmp_path):
    answers = iter([json.dumps({"reason": "Nothing stands out.", "edits": []})] + [adds_fresh(None)] * 10)
    server = start_judge_server(proposer=lambda q: next(answers))
    rows, candidates = world(("tea",))
    result = refine(server, rows, candidates, tmp_path / "run", max_rounds=2)
    assert [r["status"] for r in result.rounds] == [{"unchanged": 1}, {"refined": 1}]
    assert [records(tmp_path / "run", n)["tea"]["streak"] for n in (1, 2)] == [0, 0]
    assert result.rows[0].rubric.version == 2


def adds(word):
    edit = {"op": "add", "criterion": {"id": word, "text": f"Mentions '{word}'.", "weight": 2}}
    return lambda question: json.dumps({"reason": f"The better ones say {word!r}.", "edits": [edit]})


@pytest.mark.parametrize("word", ["zebra", "now"])  # no candidate says zebra; only the terse (worse) one says now
def test_an_edit_that_does_not_order_the_pairs_better_is_rejected(start_judge_server, tmp_path, word):
    server = start_judge_server(proposer=adds(word))
    rows, candidates = world(("tea",))
    result = refine(server, rows, candidates, tmp_path / "run", max_rounds=1)
    [record] = records(tmp_path / "run", 1).values()
    assert (record["status"], record["decision"], record["streak"]) == ("rejected", "no_improvement", 0)
    assert record["edits"][0]["criterion"]["id"] == word and record["proposer_calls"] == 1
    assert record["agreement_after"] <= record["agreement_before"] == 0.5  # every pair tied before: half credit
    assert Rubric.model_validate(record["rubric"]) == rows[0].rubric == result.rows[0].rubric
    assert result.rows[0].rubric.version == 1 and result.as_dict()["final_status"] == {"rejected": 1}


def test_an_edit_that_orders_the_pairs_better_is_kept(start_judge_server, tmp_path):
    server = start_judge_server(proposer=adds_fresh)
    rows, candidates = world(("tea",))
    result = refine(server, rows, candidates, tmp_path / "run", max_rounds=1)
    [record] = records(tmp_path / "run", 1).values()
    assert (record["status"], record["decision"]) == ("refined", "improved_agreement")
    assert record["agreement_after"] == 1.0 > record["agreement_before"] and record["newly_ordered"] >= 1
    assert all(p.get("use") == ["proposal", "test"] for p in record["pairs"] if p["gold"] != 0.5)
    assert result.rows[0].rubric.version == 2 and record["rubric"]["version"] == 2


def test_offline_acceptance_defaults_and_errors():
    config = RefineConfig()
    assert config.acceptance.model_dump(exclude={"max_p_value"}) == OFFLINE_ACCEPTANCE
    assert config.acceptance.max_p_value is None
    with pytest.raises(ValueError, match=r"acceptance\.min_pairs \(6\) is above selection\.num_pairs \(4\)"):
        RefineConfig(acceptance={"min_pairs": 6})
    with pytest.raises(ValueError, match="min_pairs must be at least 2 when holdout_fraction > 0"):
        RefineConfig(acceptance={"holdout_fraction": 0.5, "min_pairs": 1})


def test_an_interrupted_round_resumes_where_it_stopped(start_judge_server, tmp_path):
    asked = []
    server = start_judge_server(proposer=lambda q: asked.append(q.prompt) or adds_fresh(q))
    rows, candidates = world()
    expected = refine(server, rows, candidates, tmp_path / "uninterrupted")

    class Interrupted(Exception):
        pass

    def interrupt_in_round_2(record):
        if record["round"] == 2:
            raise Interrupted

    asked.clear()
    with pytest.raises(Interrupted):  # one request at a time: the first prompt of round 2 finishes alone
        refine(
            server,
            rows,
            candidates,
            tmp_path / "run",
            on_record=interrupt_in_round_2,
            judge_options={"max_concurrency": 1},
        )
    round_1 = round_path(tmp_path / "run", 1).read_text()
    [done] = records(tmp_path / "run", 2)
    assert sorted(asked) == sorted(r.text for r in rows) and not (tmp_path / "run" / "rubrics.jsonl").exists()

    asked.clear()
    graded_before = server.stats.requests
    resumed = refine(server, rows, candidates, tmp_path / "run")
    assert asked == []  # round 1 is not asked again
    assert round_path(tmp_path / "run", 1).read_text() == round_1
    assert sorted(records(tmp_path / "run", 2)) == sorted(r.prompt_id for r in rows)
    assert [r for _, r in read_appended(round_path(tmp_path / "run", 2))][0]["prompt_id"] == done
    # round 2 grades the other two prompts' candidates (4 each), round 3 all three
    assert server.stats.requests - graded_before == 4 * 2 + 4 * 3
    assert [row.rubric for row in resumed.rows] == [row.rubric for row in expected.rows]
    assert resumed.rounds == expected.rounds


def test_a_finished_run_continues_with_more_rounds(start_judge_server, tmp_path):
    server = start_judge_server(proposer=adds_fresh)
    rows, candidates = world()
    first = refine(server, rows, candidates, tmp_path / "run", max_rounds=1)
    assert [r["status"] for r in first.rounds] == [{"refined": 3}]
    requests = server.stats.requests
    more = refine(server, rows, candidates, tmp_path / "run", max_rounds=3)
    assert [r["status"] for r in more.rounds] == [{"refined": 3}, {"separated": 3}, {"converged": 3}]
    assert server.stats.requests - requests == 2 * 3 * 4  # rounds 2 and 3 grade; round 1 is read back


def test_a_round_file_cut_off_mid_write_resumes(start_judge_server, tmp_path):
    server = start_judge_server(proposer=adds_fresh)
    rows, candidates = world()
    refine(server, rows, candidates, tmp_path / "run", max_rounds=1)
    path = round_path(tmp_path / "run", 1)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:40])
    result = refine(server, rows, candidates, tmp_path / "run", max_rounds=1)
    assert result.rounds[0]["status"] == {"refined": 3} and len(path.read_text().splitlines()) == 3


def test_resuming_with_other_inputs_or_settings_is_refused(judge_server, tmp_path):
    rows, candidates = world()
    refine(judge_server, rows, candidates, tmp_path / "run", max_rounds=1)
    with pytest.raises(ValueError, match=r"run\.json: .* other config"):
        refine(judge_server, rows, candidates, tmp_path / "run", max_rounds=1, agreement_threshold=0.5)
    with pytest.raises(ValueError, match="other inputs_sha256"):
        refine(judge_server, rows, candidates[1:], tmp_path / "run", max_rounds=1)


def test_a_failed_proposer_keeps_the_rubric_and_is_asked_again_next_round(start_judge_server, tmp_path):
    answers = iter(["I would rather not say.", adds_fresh(None)])
    server = start_judge_server(proposer=lambda question: next(answers))
    rows, candidates = world(("tea",))
    result = refine(server, rows, candidates, tmp_path / "run", max_rounds=2, proposer_options={"max_retries": 0})
    [first] = records(tmp_path / "run", 1).values()
    assert first["status"] == "error" and "malformed answer" in first["error"] and first["rubric"]["version"] == 1
    assert [r["status"] for r in result.rounds] == [{"error": 1}, {"refined": 1}]
    assert result.rows[0].rubric.version == 2 and result.rows[0].rubric.parent == "tea"


def test_prompts_without_diverse_or_preferred_pairs_stop(judge_server, tmp_path):
    rows, candidates = world(("tea", "egg"))
    one_generator = [
        c.model_copy(update={"generator": "same", "index": i}) for i, c in enumerate(candidates) if c.prompt_id == "tea"
    ]
    all_tied = [c.model_copy(update={"label": 1.0}) for c in candidates if c.prompt_id == "egg"]
    result = refine(judge_server, rows, one_generator + all_tied, tmp_path / "run", max_rounds=3)
    assert [r["status"] for r in result.rounds] == [{"no_pairs": 2}]
    last = result.last
    assert "diverse" in last["tea"]["error"] and "ties every selected pair" in last["egg"]["error"]
    labels_missing = [c.model_copy(update={"label": None}) for c in candidates if c.prompt_id == "egg"]
    failed = refine(judge_server, rows[1:], labels_missing, tmp_path / "unlabelled", max_rounds=1)
    assert failed.last["egg"]["status"] == "error" and "no label" in failed.last["egg"]["error"]


def test_a_gold_llm_judge_decides_in_both_orders(start_judge_server, tmp_path):
    seen = []
    server = start_judge_server(
        proposer=adds_fresh, pair_policy=lambda p, a, b: seen.append((a, b)) or more_words_wins(p, a, b)
    )
    rows, candidates = world(("tea",))
    gold = GoldJudge(LLMPairwiseJudge(endpoint(server)))
    refine(server, rows, candidates, tmp_path / "run", gold=gold, max_rounds=1)
    [record] = records(tmp_path / "run", 1).values()
    pairs = {(p["first"], p["second"]): p["gold"] for p in record["pairs"]}
    texts = {c.name: c.response for c in candidates}
    for (first, second), preference in pairs.items():
        assert (texts[first], texts[second]) in seen and (texts[second], texts[first]) in seen
        assert preference == {"A": 1.0, "B": 0.0, "tie": 0.5}[more_words_wins("", texts[first], texts[second])]


def test_gold_configs():
    assert isinstance(build_gold(None), LabelPreference)
    with pytest.raises(ValueError, match="give their dataset file"):
        build_gold({"backend": "rubric"})
    with pytest.raises(ValueError, match="only read by a gold judge with backend 'rubric'"):
        build_gold({"backend": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"]}, "gold.jsonl")
    gold = build_gold({"backend": "rubric"}, EXAMPLE / "gold_rubrics.jsonl")
    assert isinstance(gold, GoldJudge) and sorted(gold.rubrics) == sorted(
        r.prompt_id for r in load_rubric_rows(EXAMPLE / "gold_rubrics.jsonl")
    )


def test_the_shipped_example_refines_against_gold_rubrics_over_http(judge_server, tmp_path):
    proposer = RubricProposer(endpoint(judge_server))

    async def generate():
        try:
            await generate_rubrics(
                load_prompts(EXAMPLE / "prompts.jsonl"), proposer, tmp_path / "r.jsonl", progress=False
            )
        finally:
            await proposer.aclose()

    asyncio.run(generate())
    rows = load_rubric_rows(tmp_path / "r.jsonl")
    gold = build_gold({"backend": "rubric"}, EXAMPLE / "gold_rubrics.jsonl")
    result = refine(judge_server, rows, load_candidates(EXAMPLE / "responses.jsonl"), tmp_path / "run", gold=gold)
    agreements = [r["mean_agreement"] for r in result.rounds]
    assert agreements[-1] > agreements[0] and len(result.rounds) <= 4
    assert any(row.rubric.version > 1 for row in result.rows)
    refined = 0
    for number in range(1, len(result.rounds) + 1):
        for record in records(tmp_path / "run", number).values():
            if record["status"] == "refined":
                refined += 1
                after = record["rubric"]
                assert (after["parent"], after["reason"]) == (record["rubric_in"], record["reason"])
                assert after["id"] == f"{record['prompt_id']}-v{after['version']}"
    assert refined >= len(rows)
