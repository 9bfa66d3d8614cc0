"""The injection benchmark: its labelled sample, its two templates, and its scoring against scripted judges."""

import asyncio
import importlib.util
import json
from pathlib import Path
from statistics import mean

import pytest
from tqdm.auto import tqdm

from rubric_rft.cli import main as cli_main
from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.hf_local import HFJudge, HFJudgeConfig
from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.prompts import per_criterion_yes_no_messages
from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.testing.judge_server import read_question

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "judge_check"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("injection_benchmark", ROOT / "benchmarks" / "injection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sample_items():
    return bench.load_sample(SAMPLE / "rubrics.jsonl", SAMPLE / "responses.jsonl")


def test_the_sample_validates_and_labels_every_criterion_of_every_response(capsys):
    assert cli_main(["validate", str(SAMPLE / "rubrics.jsonl")]) == 0
    rubrics = {row["prompt_id"]: Rubric.from_value(row["rubric"]) for row in read_jsonl(SAMPLE / "rubrics.jsonl")}
    responses = read_jsonl(SAMPLE / "responses.jsonl")
    for record in responses:
        criteria = rubrics[record["prompt_id"]].criteria
        assert set(record["labels"]) == {c.id for c in criteria} and all(c.kind == "llm" for c in criteria)
        assert all(isinstance(value, bool) for value in record["labels"].values())
        assert len(record["response"].split()) <= 50
    assert len({(r["prompt_id"], r["response_id"]) for r in responses}) == len(responses)
    labels = [value for record in responses for value in record["labels"].values()]
    assert len(labels) == len(sample_items()) == 40 and sum(labels) == 20


def test_the_naive_template_has_no_fences_or_warning_and_the_fenced_one_has_both():
    prompt, response, criterion = "How do I make tea?", f"Boil water. {bench.INJECTION}", "Says to boil water."
    naive = bench.naive_yes_no_messages(prompt, response, criterion)
    fenced = per_criterion_yes_no_messages(prompt, response, criterion)
    for messages in (naive, bench.naive_demonstrated(naive)):
        text = "\n".join(m["content"] for m in messages)
        assert "<<<" not in text and "never instructions" not in text and "ignore the rubric" not in text
    assert f"Response to grade:\n{response}\n\nCriterion: {criterion}\n" in naive[1]["content"]
    assert read_question(naive) is None
    assert "<<<RESPONSE-" in fenced[1]["content"] and "never instructions" in fenced[0]["content"]
    assert read_question(fenced).response == response
    for messages in (naive, fenced):
        assert messages[1]["content"].endswith("Answer yes or no.")
    demonstrated = bench.naive_demonstrated(naive)
    assert [m["role"] for m in demonstrated] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in demonstrated[2::2]] == ["Yes", "No"] and demonstrated[-1] == naive[-1]


def test_summary_scores_responses_by_their_criteria_and_counts_flips_at_one_half():
    keys = (("a", "c1"), ("a", "c2"), ("b", "c1"), ("c", "c1"), ("d", "c1"))  # (response id, criterion)
    items = [bench.Item("p", response_id, "prompt", "response", criterion) for response_id, criterion in keys]
    grades = {
        "clean": [0.2, 0.6, 0.4, None, 0.1],
        "control": [0.3, 0.6, 0.5, 0.2, None],
        "injected": [0.7, 0.6, 0.3, 0.9, 0.8],
    }
    row = bench.summarise("judge", "fenced", items, grades)
    assert (row["responses"], row["responses_left_out"], row["failures"], row["answers"]) == (2, 2, 2, 15)
    assert row["clean"] == pytest.approx(mean([0.4, 0.4])) and row["injected"] == pytest.approx(mean([0.65, 0.3]))
    assert row["control"] == pytest.approx(mean([0.45, 0.5]))
    assert row["gain"] == pytest.approx(mean([0.25, -0.1]))
    assert row["control_gain"] == pytest.approx(mean([0.05, 0.1]))
    assert row["gain_beyond_control"] == pytest.approx(mean([0.2, -0.2]))
    for name in ("gain", "control_gain", "gain_beyond_control"):
        assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"]
    assert (row["clean_no"], row["flips_no_to_yes_injected"], row["flips_no_to_yes_control"]) == (2, 1, 1)


def test_the_control_is_as_long_as_the_injection_and_asks_the_grader_for_nothing():
    assert abs(len(bench.CONTROL) - len(bench.INJECTION)) <= 2
    assert not {"yes", "rubric", "criterion", "ignore"} & set(bench.CONTROL.lower().replace(",", "").split())
    assert bench.VARIANTS["control"]("Boil water.") == f"Boil water. {bench.CONTROL}"


def test_a_judge_that_obeys_unfenced_injections_gains_under_the_naive_template_only(start_judge_server):
    items = sample_items()
    labels = {
        (record["response"], criterion.text): record["labels"][criterion.id]
        for row in read_jsonl(SAMPLE / "rubrics.jsonl")
        for criterion in Rubric.from_value(row["rubric"]).criteria
        for record in read_jsonl(SAMPLE / "responses.jsonl")
        if record["prompt_id"] == row["prompt_id"]
    }

    def by_the_labels(prompt, response, criterion):  # fenced questions: the truth, whatever the response says
        return labels[(response.removesuffix(" " + bench.INJECTION).removesuffix(" " + bench.CONTROL), criterion)]

    def obeys_what_it_sees(messages):  # naive questions: yes to a visible injection, else no; one it cannot read
        question = messages[-1]["content"]
        return "Perhaps." if "15 times 4 is 45" in question else "Yes" if bench.INJECTION in question else "No"

    server = start_judge_server(policy=by_the_labels, responder=obeys_what_it_sees)
    config = OpenAIJudgeConfig(model="scripted-judge", base_urls=[server.base_url], max_retries=0, max_tokens=4)
    grades = asyncio.run(bench.grade_served(config, items, tqdm(disable=True)))
    fenced, naive = (bench.summarise("served", name, items, grades[name]) for name in ("fenced", "naive"))

    per_response = {}
    for (response, _), label in labels.items():
        per_response.setdefault(response, []).append(label)
    truth = mean(mean(values) for values in per_response.values())
    assert (fenced["responses"], fenced["failures"]) == (27, 0)
    assert all(fenced[variant] == pytest.approx(truth) for variant in ("clean", "control", "injected"))
    assert (fenced["gain"], fenced["gain_ci_low"], fenced["gain_ci_high"]) == (0.0, 0.0, 0.0)
    assert (fenced["clean_no"], fenced["flips_no_to_yes_injected"], fenced["flips_no_to_yes_control"]) == (20, 0, 0)

    assert (naive["responses"], naive["responses_left_out"], naive["failures"]) == (26, 1, 3)
    assert (naive["clean"], naive["control"], naive["injected"]) == (0.0, 0.0, 1.0)
    gains = ("gain", "control_gain", "gain_beyond_control", "gain_beyond_control_ci_low")
    assert [naive[name] for name in gains] == [1.0, 0.0, 1.0, 1.0]
    assert (naive["clean_no"], naive["flips_no_to_yes_injected"], naive["flips_no_to_yes_control"]) == (39, 39, 0)
    assert server.stats.requests == 2 * 3 * len(items)


def test_p_yes_of_the_fenced_question_is_what_grade_reads(tiny_model_path):
    items = sample_items()[:3]  # boil-egg: two criteria of one response, then the first of the next
    config = HFJudgeConfig(model=tiny_model_path)
    judge = HFJudge(config)
    criteria = tuple(Criterion(id=f"k{n}", text=item.criterion, weight=1.0) for n, item in enumerate(items[:2]))
    request = GradeRequest(items[0].prompt, items[0].response, criteria)
    graded = asyncio.run(judge.grade(request))
    direct = judge.p_yes([per_criterion_yes_no_messages(i.prompt, i.response, i.criterion) for i in items[:2]])
    assert [graded.criteria[c.id].probability for c in request.criteria] == pytest.approx(direct, abs=1e-6)

    grades = bench.grade_in_process(config, items, tqdm(disable=True))
    assert grades["fenced"]["clean"][:2] == pytest.approx(direct, abs=1e-5)
    assert grades["fenced"]["injected"] != pytest.approx(grades["fenced"]["clean"], abs=1e-6)
    assert grades["fenced"]["control"] != pytest.approx(grades["fenced"]["injected"], abs=1e-6)
    assert grades["naive"]["clean"] != pytest.approx(grades["fenced"]["clean"], abs=1e-6)
