"""The `rubric-rft` command line: exit statuses, summaries, and file:line:field messages instead of tracebacks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rubric_rft.cli import main
from rubric_rft.rubrics.imports import FORMATS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "formats"

CRITERIA = {"rubric": 5, "dataset": 6, "paper": 7, "paper_generator": 5, "healthbench": 6, "rar": 7, "rubrichub": 6}
RULE_CRITERIA = {"rubric": 2, "dataset": 2}


def fixture(name: str) -> Path:
    return FIXTURES / f"{name}.jsonl"


def fixture_records(name: str) -> list[dict]:
    return [json.loads(line) for line in fixture(name).read_text().splitlines()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.mark.parametrize("name", FORMATS)
def test_validate_summarises_a_good_file_of_each_format(name, capsys):
    assert main(["validate", str(fixture(name))]) == 0
    out, err = capsys.readouterr()
    rules = RULE_CRITERIA.get(name, 0)
    assert out == (
        f"{fixture(name)}: 2 valid records (formats: {name} 2), "
        f"{CRITERIA[name]} criteria ({CRITERIA[name] - rules} llm, {rules} rule)\n"
    )
    assert err == ""


def test_validate_lists_every_format_of_a_mixed_file(tmp_path, capsys):
    path = write_jsonl(tmp_path / "mixed.jsonl", fixture_records("paper")[:1] + fixture_records("rubrichub"))
    assert main(["validate", str(path)]) == 0
    assert "3 valid records (formats: paper 1, rubrichub 2), 10 criteria" in capsys.readouterr().out


def test_validate_names_file_line_and_field_of_a_bad_record(tmp_path, capsys):
    good, bad = fixture_records("healthbench")
    bad["rubrics"][1]["points"] = 0
    path = write_jsonl(tmp_path / "data.jsonl", [good, bad])
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}:2: rubrics.1.points: ") and "non-zero" in err
    assert "Traceback" not in err


def test_validate_names_the_field_inside_a_dataset_rubric(tmp_path, capsys):
    good, bad = fixture_records("dataset")
    bad["rubric"]["criteria"][0]["weight"] = 0
    path = write_jsonl(tmp_path / "data.jsonl", [good, good, bad])
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:3: rubric.criteria.0.weight: ")


def test_validate_explains_an_unrecognised_record(tmp_path, capsys):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"instruction": "Hi", "checklist": ["Greets back"]}])
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:1: no known rubric format matches a record with keys instruction, checklist")
    assert "healthbench: prompt and rubrics: [{criterion, points, tags}]" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "Hi", "rubrics": [}\n', ":1: invalid JSON: Expecting value"),
        ("[1, 2]\n", ":1: expected a JSON object, got list"),
        ("", ": no records"),
    ],
)
def test_validate_reports_unreadable_files(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().err == f"{path}{expected}\n"


GOOD_RUBRIC = '{"id": "r", "criteria": [{"id": "c", "text": "Answers.", "weight": 1}]}'


@pytest.mark.parametrize(
    ("name", "bad_line"),
    [
        ("past the parser", '{"a": ' * 5000 + "1" + "}" * 5000),  # RecursionError inside json itself
        ("parsed, then walked", '{"prompt_id": "p", "prompt": "Hi", "rubric": {"id": "r", "criteria": [{"id": "c", '
         '"text": "Answers.", "weight": 1}], "meta": ' + '{"a": ' * 980 + "1" + "}" * 980 + "}}"),
        ("an array", "[" * 100_000 + "]" * 100_000),
    ],
)
def test_validate_reports_a_deeply_nested_line_as_invalid_json_at_its_line(tmp_path, capsys, name, bad_line):
    path = tmp_path / "deep.jsonl"
    path.write_text(f"{GOOD_RUBRIC}\n{bad_line}\n")
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().err == f"{path}:2: invalid JSON: nested more than 64 levels deep\n"


def test_validate_reports_missing_files_and_directories(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.jsonl")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'absent.jsonl'}: no such file\n"
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"{tmp_path}: ")


def test_validate_with_an_explicit_format_reads_every_record_as_it(capsys):
    assert main(["validate", str(fixture("rar")), "--format", "paper"]) == 1
    assert "rubrics: Field required (read as format 'paper')" in capsys.readouterr().err


def test_validate_applies_the_pitfall_phrasing(tmp_path, capsys):
    only_pitfall = {
        "question": "Is it safe?",
        "rubric": [{"title": "t", "description": "Avoids a myth.", "weight": -1}],
    }
    path = write_jsonl(tmp_path / "rar.jsonl", [only_pitfall])
    assert main(["validate", str(path)]) == 1
    assert "positive weight" in capsys.readouterr().err
    assert main(["validate", str(path), "--pitfall-phrasing", "avoids"]) == 0


def test_bad_command_line_exits_with_usage():
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "x.jsonl", "--format", "csv"])
    assert exit_.value.code == 2


def test_help_names_every_subcommand_and_every_option_has_help(capsys):
    from rubric_rft.cli import SUBCOMMANDS, __version__, build_parser

    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(subcommand.name in listed and subcommand.help in " ".join(listed.split())
               for subcommand in SUBCOMMANDS)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"rubric-rft {__version__}"
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in commands.choices.items():
        unhelped = [a.dest for a in parser._actions if not a.help]
        assert unhelped == [], f"rubric-rft {name}: options without help: {unhelped}"


@pytest.mark.parametrize(("judge", "expected"), [
    ({"backend": "nope"}, "judge config: <record>: Input tag 'nope'"),
    ({"backend": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": "RUBRIC_RFT_UNSET_KEY"},
     "api_key_env: the environment variable RUBRIC_RFT_UNSET_KEY is not set: export it"),
    ({"backend": "hf", "model": "/nonexistent/judge"}, "model: judge model '/nonexistent/judge' cannot be loaded"),
])
def test_a_judge_config_that_cannot_work_ends_in_one_line_naming_the_field(tmp_path, capsys, monkeypatch, judge,
                                                                          expected):
    monkeypatch.delenv("RUBRIC_RFT_UNSET_KEY", raising=False)
    data = Path(__file__).resolve().parent.parent / "data" / "judge_check"
    status = main(["grade", "--rubrics", str(data / "rubrics.jsonl"), "--responses", str(data / "responses.jsonl"),
                   "--judge", json.dumps(judge), "--out", str(tmp_path / "graded.jsonl")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "graded.jsonl").exists()


def test_convert_writes_dataset_rows_that_validate_as_ours(tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    assert main(["convert", str(fixture("rar")), str(out), "--pitfall-phrasing", "avoids"]) == 0
    assert capsys.readouterr().out == f"converted 2 records from {fixture('rar')} to dataset rows in {out}\n"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["weight"] for c in rows[0]["rubric"]["criteria"]] == [5, 4, 2, 1]
    assert set(rows[0]) == {"prompt_id", "prompt", "rubric", "reference"}
    assert main(["validate", str(out)]) == 0
    assert "(formats: dataset 2)" in capsys.readouterr().out


def test_convert_rubrics_only_writes_bare_rubrics(tmp_path, capsys):
    out = tmp_path / "rubrics.json"
    assert main(["convert", str(fixture("healthbench")), str(out), "--rubrics-only"]) == 0
    rubrics = json.loads(out.read_text())
    assert [r["id"] for r in rubrics] == [r["prompt_id"] for r in fixture_records("healthbench")]
    assert main(["validate", str(out)]) == 0
    assert "(formats: rubric 2)" in capsys.readouterr().out


def test_convert_refuses_bare_rubrics_as_dataset_rows(tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    assert main(["convert", str(fixture("rubric")), str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"{fixture('rubric')}:1: a bare rubric has no prompt")
    assert not out.exists()


def test_convert_writes_nothing_when_a_later_record_is_bad(tmp_path, capsys):
    good, bad = fixture_records("paper")
    bad["rubrics"][2]["weight"] = 0
    source = write_jsonl(tmp_path / "paper.jsonl", [good, bad])
    out = tmp_path / "rows.jsonl"
    assert main(["convert", str(source), str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"{source}:2: rubrics.2.weight: ")
    assert not out.exists()


def test_module_entry_point_runs_validate():
    result = subprocess.run(
        [sys.executable, "-m", "rubric_rft.cli", "validate", str(fixture("healthbench"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "2 valid records (formats: healthbench 2)" in result.stdout
