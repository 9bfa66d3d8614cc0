"""The independent criteria bank (data/everyday/make_independent_bank.py) and the functional overlap measure
(data/everyday/bank_overlap.py)."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.rubrics.rules import grade_rules

ROOT = Path(__file__).resolve().parents[1]
EVERYDAY = ROOT / "data" / "everyday"
BUILDER = EVERYDAY / "make_independent_bank.py"
BANK = EVERYDAY / "criteria_bank_independent.jsonl"


def everyday(name: str):
    sys.path.insert(0, str(EVERYDAY))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EVERYDAY))


def bank_rows() -> list[dict]:
    return [json.loads(line) for line in BANK.read_text().splitlines()]


def test_the_shipped_bank_is_what_the_builder_writes():
    rows = everyday("make_independent_bank").bank_rows()
    assert BANK.read_text() == "".join(json.dumps(row) + "\n" for row in rows)


def test_every_row_is_a_valid_set_of_gradable_rule_criteria():
    traps = everyday("make_independent_bank").TRAPS
    answers = ["", "Boil it.", "Great question! Put the egg in boiling water for 8 minutes, then cool it in cold "
               "water.\n- peel it\n- eat it", "As an AI, I cannot help. Why do you ask?", "egg " * 100]
    for row in bank_rows():
        criteria = [Criterion.model_validate(c) for c in row["criteria"]]
        rubric = Rubric(id=row["prompt_id"], criteria=criteria)  # unique ids, a positive weight
        assert all(c.kind == "rule" for c in rubric.criteria) and traps <= {c.id for c in criteria}
        for answer in answers:
            assert set(grade_rules(criteria, answer)) == {c.id for c in criteria}


def test_the_bank_covers_every_everyday_prompt():
    def ids(name: str) -> list[str]:
        return [json.loads(line)["prompt_id"] for line in (EVERYDAY / name).read_text().splitlines()]

    wanted = ids("train_prompt_only.jsonl") + ids("heldout_prompt_only.jsonl")
    assert len(wanted) == 48 and wanted == ids("train_gold.jsonl") + ids("heldout_gold.jsonl")
    assert [row["prompt_id"] for row in bank_rows()] == wanted


ALLOWED_IMPORTS = {"itertools", "json", "re", "pathlib"}
FORBIDDEN_WORDS = ("gold", "make_dataset", "make_oracle_bank", "keywords", "common_words", "rubric", "bt_pairs")
ROW_KEYS = {"prompt_id", "prompt", "role", "content"}  # all the builder may read of a prompt-only row
ROW_KEYS |= {"criteria"}  # and of the bank's own rows


def gold_leaks(source: str) -> list[str]:
    """What in a builder's source could let the gold in: an import beyond the standard few, a dynamic import, a
    string (docstrings aside) naming gold code or data, a .jsonl other than the prompt files, a row key other
    than the prompt's."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and ast.get_docstring(node)}
    leaks = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            leaks += [f"import {n}" for n in names if n.split(".")[0] not in ALLOWED_IMPORTS]
        elif isinstance(node, ast.Name) and node.id in {"__import__", "importlib", "exec", "eval", "open"}:
            leaks.append(f"uses {node.id}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.lower()
            leaks += [f"string {node.value!r}" for word in FORBIDDEN_WORDS if word in text]
            if ".jsonl" in text and text not in {"train_prompt_only.jsonl", "heldout_prompt_only.jsonl",
                                                 "criteria_bank_independent.jsonl"}:
                leaks.append(f"file {node.value!r}")
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, str) and node.slice.value not in ROW_KEYS):
            leaks.append(f"reads key {node.slice.value!r}")
    return leaks


def test_the_builder_reads_no_gold_code_or_data():
    source = BUILDER.read_text()
    assert gold_leaks(source) == []
    # the check catches what it is for
    with_import = source.replace("import re\n", "import re\nfrom make_dataset import TRAIN\n")
    assert gold_leaks(with_import) == ["import make_dataset"]
    assert gold_leaks(source + "\nimport make_oracle_bank\n") == ["import make_oracle_bank"]
    assert set(gold_leaks(source + "\nGOLD = HERE / 'heldout_gold.jsonl'\n")) == {"string 'heldout_gold.jsonl'",
                                                                                  "file 'heldout_gold.jsonl'"}
    assert set(gold_leaks(source + "\nrow = {}\nrow['rubric']\n")) == {"string 'rubric'", "reads key 'rubric'"}


def rule(cid: str, weight: float, **check) -> Criterion:
    return Criterion(id=cid, text=cid, weight=weight, kind="rule", check=check)


def test_overlap_is_1_for_a_copy_of_a_gold_criterion_and_lower_for_another():
    overlap = everyday("bank_overlap")
    substance = rule("substance", 3, type="word_count", min=5)
    gold = {"tea": [substance, rule("deflects", -3, type="contains", any_of=["i cannot"])]}
    bank = {"tea": [substance.model_copy(update={"id": "explains"}),
                    rule("fragment", -1, type="word_count", max=4),  # the same verdicts, as a pitfall
                    rule("exclaims", 1, type="regex", pattern="!")]}
    corpus = [("tea", "Steep it."), ("tea", "Boil the water, then steep for three minutes!"),
              ("tea", "I cannot help with that, sorry!"), ("tea", "Use fresh water and steep the leaves briefly.")]
    table = {row["id"]: row for row in overlap.overlap(bank, gold, corpus)}
    assert table["explains"]["gold"] == "substance" and table["explains"]["agreement"] == 1.0
    assert table["explains"]["kappa"] == pytest.approx(1.0) and table["explains"]["answers"] == 4
    assert table["fragment"]["gold"] == "substance" and table["fragment"]["agreement"] == 1.0
    assert table["exclaims"]["all"]["substance"]["agreement"] == 0.75
    assert table["exclaims"]["agreement"] < 1.0 and table["exclaims"]["trap"]
    assert overlap.agreement([True, True], [True, True]) == (1.0, None, None)  # kappa undefined without variation
    assert overlap.summary(list(table.values())).startswith("overall: 2 of 3 bank criteria (67%)")


def test_the_overlap_script_reports_both_banks(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"prompt_id": "boil-egg", "response": "Boil it for 8 minutes!"}) + "\n")
    for bank, copy in (("criteria_bank_independent.jsonl", "words_20"), ("criteria_bank_oracle.jsonl", "explains")):
        out = tmp_path / "table.json"
        printed = subprocess.run([sys.executable, "bank_overlap.py", "--bank", bank, "--samples", str(samples),
                                  "--json", str(out)], cwd=EVERYDAY, capture_output=True, text=True, check=True).stdout
        assert "overall:" in printed and "kappa >= 0.6" in printed
        report = json.loads(out.read_text())
        assert report["answers"] == 296
        rows = {row["id"]: row for row in report["criteria"]}
        assert rows[copy]["gold"] == "substance" and rows[copy]["agreement"] == 1.0
