"""`rubric-rft grade`: per-criterion verdicts, failures reported, the cache reused on a rerun, agreement with labels."""

import json
from itertools import product
from pathlib import Path

import pytest

from rubric_rft.cli import main
from rubric_rft.evaluation.grading import roc_auc


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# The scripted judge satisfies a criterion iff its quoted keyword is in the response.
CRITERIA = [
    {"id": "water", "kind": "llm", "weight": 2, "text": "Mentions 'water'."},
    {"id": "minutes", "kind": "llm", "weight": 1, "text": "Says how many 'minutes'."},
    {
        "id": "short",
        "kind": "rule",
        "weight": 1,
        "text": "At most 12 words.",
        "check": {"type": "word_count", "max": 12},
    },
]
RESPONSES = [
    ("Boil the egg in water for 9 minutes.", {"water": True, "minutes": True}),
    ("Boil it in water.", {"water": True, "minutes": False}),
    ("Eggs are nice. " * 5, {"water": False, "minutes": True}),  # the judge says no to 'minutes': a disagreement
]


@pytest.fixture
def files(tmp_path):
    prompt = [{"role": "user", "content": "How do I boil an egg?"}]
    row = {"prompt_id": "egg", "prompt": prompt, "rubric": {"id": "egg", "criteria": CRITERIA}}
    rubrics = write_jsonl(tmp_path / "rubrics.jsonl", [row])
    responses = write_jsonl(
        tmp_path / "responses.jsonl",
        [
            {"prompt_id": "egg", "response_id": f"r{i}", "response": text, "labels": labels}
            for i, (text, labels) in enumerate(RESPONSES)
        ],
    )
    return rubrics, responses


def run_grade(rubrics: Path, responses: Path, out: Path, judge: str | None = None) -> int:
    """`rubric-rft grade` on these files; its exit status."""
    arguments = ["grade", "--rubrics", str(rubrics), "--responses", str(responses), "--out", str(out)]
    return main(arguments + (["--judge", judge] if judge else []))


def judge_config(tmp_path: Path, server, **options) -> str:
    config = {
        "backend": "openai",
        "model": "scripted-judge",
        "base_urls": [server.base_url],
        "max_retries": 1,
        "backoff_initial_s": 0,
        **options,
    }
    path = tmp_path / "judge.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_grade_writes_verdicts_scores_and_agreement(tmp_path, files, judge_server, capsys):
    rubrics, responses = files
    out = tmp_path / "graded.jsonl"
    status = run_grade(rubrics, responses, out, judge=judge_config(tmp_path, judge_server))
    assert status == 0
    records = read_jsonl(out)
    assert [r["response_id"] for r in records] == ["r0", "r1", "r2"]
    first = records[0]
    assert first["criteria"]["water"] == {"kind": "llm", "satisfied": True, "label": True}
    assert first["criteria"]["short"]["satisfied"] is True and first["score"] == pytest.approx(1.0)
    assert records[1]["score"] == pytest.approx(3 / 4)  # water (2) + short (1) of 4
    assert records[2]["criteria"]["short"]["satisfied"] is False and records[2]["score"] == 0.0
    summary = json.loads((tmp_path / "graded.summary.json").read_text())
    assert summary["summary"]["graded"] == 3 and summary["summary"]["failed"] == 0
    assert summary["summary"]["judge_calls"] == judge_server.stats.requests == 3  # batched: one call per response
    agreement = summary["agreement"]
    # Six labelled llm criteria; the judge misses only the 'minutes' label of r2.
    assert agreement["labelled"] == 6 and agreement["accuracy"] == pytest.approx(5 / 6)
    assert agreement["false_negative"] == 1 and agreement["majority_baseline"] == pytest.approx(4 / 6)
    assert agreement["auc"] is None  # this backend gives verdicts, not probabilities
    printed = capsys.readouterr().out
    assert "agreement: accuracy" in printed and "0.833" in printed


def test_a_rerun_reuses_the_verdict_cache(tmp_path, files, judge_server):
    rubrics, responses = files
    out, judge = tmp_path / "graded.jsonl", judge_config(tmp_path, judge_server)
    assert run_grade(rubrics, responses, out, judge) == 0
    first = read_jsonl(out)
    assert (tmp_path / "graded.jsonl.cache.sqlite").exists()
    assert run_grade(rubrics, responses, out, judge) == 0
    assert judge_server.stats.requests == 3  # nothing asked twice
    again = read_jsonl(tmp_path / "graded.jsonl")
    assert [r["score"] for r in again] == [r["score"] for r in first]
    assert [r["cache_hits"] for r in again] == [1, 1, 1] and all(r["judge_calls"] == 0 for r in again)


def test_failures_are_reported_never_scored(tmp_path, files, start_judge_server, capsys):
    rubrics, responses = files
    server = start_judge_server(fail_first_n=2, fail_status=503)  # one at a time: r0 and r1 fail
    out = tmp_path / "graded.jsonl"
    status = run_grade(rubrics, responses, out, judge=judge_config(tmp_path, server, max_concurrency=1, max_retries=0))
    assert status == 1
    records = read_jsonl(out)
    failed = [r for r in records if r["error"]]
    assert len(failed) == 2 and all(r["score"] is None for r in failed)
    assert all(c["satisfied"] is None for r in failed for c in r["criteria"].values())
    assert "HTTP 503" in failed[0]["error"]
    summary = json.loads((tmp_path / "graded.summary.json").read_text())
    assert summary["summary"]["failed"] == 2 and summary["summary"]["judge_calls"] == 3
    assert summary["agreement"]["labelled"] == 2 and summary["agreement"]["unscored"] == 4
    assert capsys.readouterr().err.count("failed: egg/") == 2


def test_rule_only_rubrics_need_no_judge(tmp_path, capsys):
    rule = {"id": "short", "kind": "rule", "weight": 1, "text": "Short.", "check": {"type": "word_count", "max": 3}}
    row = {"prompt_id": "p", "prompt": "Hi?", "rubric": {"id": "p", "criteria": [rule]}}
    rubrics = write_jsonl(tmp_path / "r.jsonl", [row])
    responses = write_jsonl(
        tmp_path / "a.jsonl",
        [{"prompt_id": "p", "response": "Hello there."}, {"prompt_id": "p", "response": "Hello there, how are you?"}],
    )
    assert run_grade(rubrics, responses, tmp_path / "o.jsonl") == 0
    assert [r["score"] for r in read_jsonl(tmp_path / "o.jsonl")] == [1.0, 0.0]
    assert [r["response_id"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["0", "1"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt_id": "nope", "response": "x"}, "prompt_id 'nope' has no rubric"),
        (
            {"prompt_id": "egg", "response": "x", "labels": {"water": "yes"}},
            "field 'labels' must map criterion ids to true or false",
        ),
        (
            {"prompt_id": "egg", "response": "x", "labels": {"salt": True}},
            "labels criteria the rubric does not have: ['salt']",
        ),
        ({"prompt_id": "egg"}, "response"),
    ],
)
def test_bad_responses_are_named_by_file_and_line(tmp_path, files, record, message, capsys):
    rubrics, _ = files
    responses = write_jsonl(tmp_path / "bad.jsonl", [{"prompt_id": "egg", "response": "fine"}, record])
    judge = '{"backend": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"]}'
    status = run_grade(rubrics, responses, tmp_path / "o.jsonl", judge)
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{responses}:2: ") and message in err
    assert not (tmp_path / "o.jsonl").exists()


def test_llm_criteria_without_a_judge_is_an_error(tmp_path, files, capsys):
    rubrics, responses = files
    assert run_grade(rubrics, responses, tmp_path / "o") == 1
    assert "give a judge config with --judge" in capsys.readouterr().err


def test_in_process_judge_gives_an_auc(tmp_path, files, tiny_model_path):
    rubrics, responses = files
    out = tmp_path / "graded.jsonl"
    judge = json.dumps({"backend": "hf", "model": tiny_model_path})
    run_grade(rubrics, responses, out, judge)
    records = read_jsonl(out)
    assert all(0 <= r["criteria"]["water"]["p_yes"] <= 1 for r in records)
    agreement = json.loads((tmp_path / "graded.summary.json").read_text())["agreement"]
    assert agreement["labelled"] == 6 and 0 <= agreement["auc"] <= 1


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_is_the_fraction_of_correctly_ordered_pairs(seed):
    import random

    rng = random.Random(seed)
    labels = [rng.random() < 0.5 for _ in range(12)] + [True, False]
    scores = [rng.choice([0.1, 0.3, 0.5, 0.7]) for _ in labels]  # many ties
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    expected = sum((p > n) + 0.5 * (p == n) for p, n in product(positives, negatives)) / (
        len(positives) * len(negatives)
    )
    assert roc_auc(labels, scores) == pytest.approx(expected)
    assert roc_auc([True, True], [0.1, 0.2]) is None


def test_a_judge_giving_yes_probabilities_gets_an_auc(tmp_path, files, judge_server):
    rubrics, responses = files
    out = tmp_path / "graded.jsonl"
    judge = judge_config(tmp_path, judge_server, request_shape="yes_no", yes_probability=True)
    assert run_grade(rubrics, responses, out, judge) == 0
    assert read_jsonl(out)[0]["criteria"]["water"]["p_yes"] == pytest.approx(0.8 / 0.95)
    agreement = json.loads((tmp_path / "graded.summary.json").read_text())["agreement"]
    # 4 true labels (3 at P(yes) 0.84, the missed one at 0.16) against 2 false ones at 0.16: 7 of 8 pairs
    # ordered, counting the two ties half.
    assert agreement["auc"] == pytest.approx(7 / 8)
