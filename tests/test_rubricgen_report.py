"""The rubric quality report on fixtures whose right answers are known."""

import asyncio
import json

import numpy as np
import pytest
from rich.console import Console

from rubric_rft.rubricgen.gold import build_gold
from rubric_rft.rubricgen.records import Candidate, PromptRow
from rubric_rft.rubricgen.report import (
    Comparison,
    comparisons_from_candidates,
    gold_tail,
    load_comparisons,
    markdown_count,
    quality_table,
    rubric_report,
    word_count,
    write_report,
)
from rubric_rft.rubrics.format import Rubric, RubricFileError
from rubric_rft.rubrics.rules import grade_rules


def rule(cid, weight, check, text=None):
    return {"id": cid, "kind": "rule", "weight": weight, "text": text or cid, "check": check}


# Gold: at least 10 words (4), at most 40 (2), says "fresh" (1): every text below scores differently.
GOLD = [
    rule("long_enough", 4, {"type": "word_count", "min": 10}),
    rule("not_too_long", 2, {"type": "word_count", "max": 40}),
    rule("fresh", 1, {"type": "contains", "any_of": ["fresh"]}),
]
TEXTS = {  # name: (words, text); gold scores 2, 3, 6, 7, 4
    "t1": "Steep the tea.",
    "t2": "Use fresh leaves, then steep.",
    "t3": " ".join(["Boil"] + ["water"] * 10 + ["now."]),
    "t4": " ".join(["Use", "fresh"] + ["leaves"] * 17 + ["please."]),
    "t5": " ".join(["Tea"] * 59 + ["end."]),
}
GOLD_ORDER = ["t4", "t3", "t5", "t2", "t1"]
LENGTH = [rule(f"min{n}", 1, {"type": "word_count", "min": n}) for n in (4, 8, 16, 32)]
CONSTANT = [rule("anything", 1, {"type": "regex", "pattern": "."})]
PROMPTS = ("p1", "p2")


def rows(criteria, version=1) -> list[PromptRow]:
    return [
        PromptRow(
            p,
            [{"role": "user", "content": "How do I make tea?"}],
            rubric=Rubric(id=f"{p}-x", prompt_id=p, criteria=criteria, version=version),
        )
        for p in PROMPTS
    ]


def candidates(labelled=True) -> list[Candidate]:
    gold = Rubric(id="gold", criteria=GOLD)
    return [
        Candidate(
            prompt_id=p,
            generator=name,
            index=0,
            response=text,
            label=gold.score(grade_rules(gold.criteria, text), normalize=False) if labelled else None,
        )
        for p in PROMPTS
        for name, text in TEXTS.items()
    ]


def report(sets, comparisons=None, **options):
    comparisons = comparisons if comparisons is not None else comparisons_from_candidates(candidates())
    return asyncio.run(rubric_report(sets, comparisons, **options))


def test_the_fixture_is_what_the_tests_assume():
    assert [word_count(TEXTS[n]) for n in ("t1", "t2", "t3", "t4", "t5")] == [3, 5, 12, 20, 60]
    labels = {c.generator: c.label for c in candidates()[:5]}
    assert sorted(labels, key=labels.get, reverse=True) == GOLD_ORDER
    assert len(comparisons_from_candidates(candidates())) == 2 * 10


def test_the_gold_tail_is_the_top_of_the_gold_ranking():
    tails = gold_tail(comparisons_from_candidates(candidates()), tail_fraction=0.5)
    assert tails == {p: {TEXTS[n] for n in ("t4", "t3", "t5")} for p in PROMPTS}
    assert gold_tail(comparisons_from_candidates(candidates()), 0.2)["p1"] == {TEXTS["t4"], TEXTS["t3"]}


def test_figures_on_rubrics_whose_answers_are_known():
    result = report({"gold": rows(GOLD), "length": rows(LENGTH), "constant": rows(CONSTANT)})
    gold, length, constant = (result.sets[n] for n in ("gold", "length", "constant"))
    assert (gold["accuracy"], gold["tail_accuracy"], gold["tie_rate"], gold["pairs"], gold["tail_pairs"]) == (
        1.0,
        1.0,
        0.0,
        20,
        6,
    )
    assert gold["tail_spread"] == pytest.approx(float(np.std([7 / 7, 6 / 7, 4 / 7])))
    # length orders by words: right except t5 (60 words) above t4 and t3, which is wrong twice in the tail
    assert (length["length_correlation"], length["accuracy"], length["tail_accuracy"]) == pytest.approx(
        (1.0, 0.8, 1 / 3)
    )
    assert gold["length_correlation"] < length["length_correlation"]
    assert (constant["accuracy"], constant["tail_accuracy"], constant["tie_rate"], constant["tail_tie_rate"]) == (
        0.5,
        0.5,
        1.0,
        1.0,
    )
    assert constant["tail_spread"] == 0.0 and constant["length_correlation"] is None
    assert (constant["always_met_share"], constant["never_met_share"], constant["mean_pass_rate"]) == (1.0, 0.0, 1.0)
    assert (length["criteria_per_rubric"], length["llm_share"], length["pitfalls_per_rubric"]) == (4, 0.0, 0)
    assert length["mean_pass_rate"] == pytest.approx((0.8 + 0.6 + 0.4 + 0.2) / 4)  # min4..min32 over 3..60 words
    assert [(c["prompt_id"], c["id"], c["pass_rate"]) for c in length["criteria"]][:2] == [
        ("p1", "min4", 0.8),
        ("p1", "min8", 0.6),
    ]
    assert result.comparisons == 20 and result.dropped == 0 and result.unlabelled == 0


def test_scores_that_follow_markdown_correlate_with_it():
    texts = ["Tea.", "Boil water.", "- boil\n- steep", "# Tea\n- boil\n- steep\n- **pour**", "1. boil\n2. steep"]
    assert [markdown_count(t) for t in texts] == [0, 0, 2, 4, 2]
    markdown = [
        rule("list", 1, {"type": "regex", "pattern": r"(?m)^(\s*[-*]|\d+\.)\s"}),
        rule("bold", 1, {"type": "regex", "pattern": r"\*\*"}),
    ]
    comparisons = [
        Comparison(prompt_id=p, response_a=a, response_b=b, preference=0.5)
        for p in PROMPTS
        for i, a in enumerate(texts)
        for b in texts[i + 1 :]
    ]
    result = report({"markdown": rows(markdown)}, comparisons)
    assert result.sets["markdown"]["markdown_correlation"] > 0.9
    assert result.sets["markdown"]["pairs"] == 0 and result.sets["markdown"]["accuracy"] is None


def test_before_and_after_with_pitfalls_weights_and_versions():
    before = rows(CONSTANT)
    after = rows([*GOLD, rule("rude", -2, {"type": "contains", "any_of": ["idiot"]})], version=3)
    result = report({"before": before, "after": after})
    assert result.sets["after"]["accuracy"] == 1.0 and result.sets["before"]["accuracy"] == 0.5
    assert result.sets["after"]["pitfalls_per_rubric"] == 1 and result.sets["after"]["never_met_share"] == 0.25
    assert result.sets["after"]["mean_positive_weight"] == pytest.approx(7 / 3)
    assert (result.sets["before"]["mean_version"], result.sets["after"]["mean_version"]) == (1, 3)


def test_a_gold_judge_labels_unlabelled_comparisons(tmp_path):
    gold_file = tmp_path / "gold.jsonl"
    gold_file.write_text(
        "".join(
            json.dumps({"prompt_id": r.prompt_id, "prompt": r.prompt, "rubric": r.rubric.model_dump()}) + "\n"
            for r in rows(GOLD)
        )
    )
    unlabelled = comparisons_from_candidates(candidates(labelled=False))
    assert all(c.preference is None for c in unlabelled)
    with pytest.raises(ValueError, match="give a gold judge"):
        report({"length": rows(LENGTH)}, unlabelled)
    judged = report({"length": rows(LENGTH)}, unlabelled, gold=build_gold({"backend": "rubric"}, gold_file))
    assert judged.sets == report({"length": rows(LENGTH)}).sets
    missing = report({"length": rows(LENGTH)}, unlabelled, gold=_partial_gold(tmp_path))
    assert missing.unlabelled == 10 and missing.comparisons == 10


def _partial_gold(tmp_path):
    path = tmp_path / "p1_only.jsonl"
    [row] = rows(GOLD)[:1]
    path.write_text(json.dumps({"prompt_id": row.prompt_id, "prompt": row.prompt, "rubric": row.rubric.model_dump()}))
    return build_gold({"backend": "rubric"}, path)


def test_comparisons_about_prompts_a_set_lacks_are_left_out():
    result = report({"all": rows(GOLD), "p1 only": rows(GOLD)[:1]})
    assert (result.comparisons, result.dropped) == (10, 10)
    with pytest.raises(ValueError, match="every rubric set has a rubric for"):
        report({"none": rows(GOLD)}, [Comparison(prompt_id="p9", response_a="a", response_b="b", preference=1)])


def test_comparison_files(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [
        {"prompt_id": "p1", "response_a": "a", "response_b": "b", "preference": value}
        for value in ("A", "B", "tie", 0.75)
    ] + [{"prompt_id": "p1", "response_a": "a", "response_b": "b"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [c.preference for c in load_comparisons(path)] == [1.0, 0.0, 0.5, 0.75, None]
    path.write_text(json.dumps({"prompt_id": "p1", "response_a": "a", "response_b": "b", "preference": 2}) + "\n")
    with pytest.raises(RubricFileError, match=r"pairs\.jsonl:1: preference: .*number in \[0, 1\]"):
        load_comparisons(path)
    path.write_text(json.dumps({"prompt_id": "p1", "response_a": "a"}) + "\n")
    with pytest.raises(RubricFileError, match=r"pairs\.jsonl:1: response_b: Field required"):
        load_comparisons(path)


def test_comparisons_can_be_sampled_per_prompt():
    sampled = comparisons_from_candidates(candidates(), max_per_prompt=3, seed=1)
    assert len(sampled) == 6 and sampled == comparisons_from_candidates(candidates(), max_per_prompt=3, seed=1)


def test_the_report_is_written_as_json_png_and_a_table(tmp_path):
    result = report({"before": rows(CONSTANT), "after": rows(GOLD)})
    json_path, png_path = write_report(result, tmp_path / "out" / "report")
    saved = json.loads(json_path.read_text())
    assert saved["sets"]["after"]["accuracy"] == 1.0 and saved["comparisons"] == 20
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
    console = Console(record=True, width=120)
    console.print(quality_table(result))
    text = console.export_text()
    assert "pairwise accuracy (tail)" in text and "before" in text and "1.000" in text
