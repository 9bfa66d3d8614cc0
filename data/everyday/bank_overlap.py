"""How much of a criteria bank behaves like the gold: `python data/everyday/bank_overlap.py [--bank PATH]`.

Functional, not textual: two criteria overlap when they give the same verdicts on the same answers, whatever
their checks look like (`min 15 words` and `min 20 words` do on most answers; a pitfall `at most 12 words` is
the gold's `at least 15 words` turned around). Every answer of a fixed corpus is graded by the bank's criteria
and the gold's criteria of its prompt (`rubric_rft.rubrics.rules`), each verdict read as "rewards this answer"
(satisfied for a positive weight, not satisfied for a pitfall). For each bank criterion id (pooled over the
prompts that have it) and each gold criterion id: the agreement (share of answers both reward or both do not),
Cohen's kappa and the phi correlation beside it (agreement is inflated when both reward nearly every answer;
kappa and phi are None when a verdict never varies). Prints, for each bank criterion, the gold criterion it
agrees with best, and the share of the bank that behaves like a gold criterion (agreement >= 0.9; kappa >= 0.6).

The corpus: every distinct (prompt, response) of bt_pairs_offpolicy.jsonl and bt_pairs_heldout.jsonl (chosen
and rejected), plus the `{prompt_id, response}` rows of `--samples PATH` (policy samples) if given. The gold:
train_gold.jsonl and heldout_gold.jsonl. This script reads the gold; the banks it measures must not.
"""

import argparse
import json
import math
from pathlib import Path

from make_independent_bank import TRAPS as INDEPENDENT_TRAPS
from make_oracle_bank import TRAPS as ORACLE_TRAPS

from rubric_rft.rubrics.format import Criterion, Rubric, iter_json_records
from rubric_rft.rubrics.rules import grade_rules

HERE = Path(__file__).parent
GOLD_FILES = [HERE / "train_gold.jsonl", HERE / "heldout_gold.jsonl"]
PAIR_FILES = [HERE / "bt_pairs_offpolicy.jsonl", HERE / "bt_pairs_heldout.jsonl"]
DEFAULT_BANK = HERE / "criteria_bank_independent.jsonl"
TRAPS = ORACLE_TRAPS | INDEPENDENT_TRAPS  # both builders' traps; the oracle bank is criteria_bank_oracle.jsonl
AGREEMENT_BAR, KAPPA_BAR = 0.9, 0.6

Criteria = dict[str, list[Criterion]]  # prompt id -> criteria


def load_bank(path: Path) -> Criteria:
    bank: Criteria = {}
    for _, row in iter_json_records(Path(path)):
        bank.setdefault(row["prompt_id"], []).extend(Criterion.model_validate(c) for c in row["criteria"])
    return bank


def load_gold(paths=GOLD_FILES) -> Criteria:
    return {row["prompt_id"]: Rubric.from_value(row["rubric"]).criteria
            for path in paths for _, row in iter_json_records(Path(path))}


def load_corpus(pair_files=PAIR_FILES, samples: Path | None = None) -> list[tuple[str, str]]:
    """Distinct (prompt id, response), in the order first seen."""
    answers = []
    for path in pair_files:
        for _, row in iter_json_records(Path(path)):
            answers += [(row["prompt_id"], row[side][-1]["content"]) for side in ("chosen", "rejected")]
    if samples is not None:
        answers += [(row["prompt_id"], row["response"]) for _, row in iter_json_records(Path(samples))]
    return list(dict.fromkeys(answers))


def rewarded(criteria: list[Criterion], response: str) -> dict[str, bool]:
    """Criterion id -> whether it rewards `response`: satisfied for a positive weight, unsatisfied for a pitfall."""
    weights = {c.id: c.weight for c in criteria}
    return {cid: satisfied == (weights[cid] > 0) for cid, satisfied in grade_rules(criteria, response).items()}


def agreement(a: list[bool], b: list[bool]) -> tuple[float, float | None, float | None]:
    """(share of equal verdicts, Cohen's kappa, phi) of two verdict lists."""
    n = len(a)
    both = sum(x and y for x, y in zip(a, b, strict=True))
    pa, pb = sum(a) / n, sum(b) / n
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    kappa = None if chance == 1 else (observed - chance) / (1 - chance)
    spread = pa * (1 - pa) * pb * (1 - pb)
    phi = None if spread == 0 else (both / n - pa * pb) / math.sqrt(spread)
    return observed, kappa, phi


def overlap(bank: Criteria, gold: Criteria, corpus: list[tuple[str, str]]) -> list[dict]:
    """One row per bank criterion id: its best gold criterion by agreement (with that pair's kappa and phi), its
    best gold criterion by kappa, the number of answers compared, and whether it is a trap."""
    missing = sorted({pid for pid, _ in corpus if pid not in gold})
    if missing:
        raise ValueError(f"no gold rubric for prompts {missing}")
    verdicts: dict[str, dict[str, list[bool]]] = {}  # bank id -> {gold id or "": verdicts}, "" the bank's own
    for pid, response in corpus:
        if pid not in bank:
            continue
        ours, theirs = rewarded(bank[pid], response), rewarded(gold[pid], response)
        for cid, verdict in ours.items():
            lists = verdicts.setdefault(cid, {})
            lists.setdefault("", []).append(verdict)
            for gid, gold_verdict in theirs.items():
                lists.setdefault(gid, []).append(gold_verdict)
    table = []
    for cid, lists in verdicts.items():
        own = lists.pop("")
        stats = {gid: agreement(own, theirs) for gid, theirs in lists.items()}
        by_agreement = max(stats, key=lambda g: (stats[g][0], _or_low(stats[g][1])))
        by_kappa = max(stats, key=lambda g: (_or_low(stats[g][1]), stats[g][0]))
        table.append({"id": cid, "trap": cid in TRAPS, "gold": by_agreement, "agreement": stats[by_agreement][0],
                      "kappa": stats[by_agreement][1], "phi": stats[by_agreement][2], "gold_by_kappa": by_kappa,
                      "best_kappa": stats[by_kappa][1], "answers": len(own), "rewarded": sum(own) / len(own),
                      "all": {gid: dict(zip(("agreement", "kappa", "phi"), s, strict=True)) for gid, s in stats.items()}})
    return table


def _or_low(value: float | None) -> float:
    return -math.inf if value is None else value


def summary(table: list[dict]) -> str:
    close = [row for row in table if row["agreement"] >= AGREEMENT_BAR]
    constant = sum(row["rewarded"] in (0, 1) for row in close)
    kappa = sum(_or_low(row["best_kappa"]) >= KAPPA_BAR for row in table)
    n = len(table)
    return (f"overall: {len(close)} of {n} bank criteria ({len(close) / n:.0%}) agree with some gold criterion on "
            f">= {AGREEMENT_BAR:.0%} of answers ({constant} of them constant on this corpus); "
            f"{kappa} of {n} ({kappa / n:.0%}) at kappa >= {KAPPA_BAR}")


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.2f}"


def report(table: list[dict]) -> str:
    lines = [f"{'bank criterion':20} {'trap':4} {'rewards':>7}  {'best gold':13} {'agree':>5} {'kappa':>5} "
             f"{'phi':>5}  {'best by kappa':13} {'kappa':>5} {'n':>4}"]
    for row in table:
        lines.append(f"{row['id']:20} {'trap' if row['trap'] else '':4} {row['rewarded']:7.0%}  {row['gold']:13} "
                     f"{row['agreement']:5.2f} {_fmt(row['kappa'])} {_fmt(row['phi'])}  {row['gold_by_kappa']:13} "
                     f"{_fmt(row['best_kappa'])} {row['answers']:4d}")
    return "\n".join([*lines, summary(table)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK, help="criteria bank JSONL (default: %(default)s)")
    parser.add_argument("--samples", type=Path, help="extra answers: JSONL of {prompt_id, response}")
    parser.add_argument("--json", type=Path, help="also write the table here as JSON")
    args = parser.parse_args()
    corpus = load_corpus(samples=args.samples)
    table = overlap(load_bank(args.bank), load_gold(), corpus)
    print(f"{args.bank.name}: {len(corpus)} answers ({', '.join(p.name for p in PAIR_FILES)}"
          f"{', ' + args.samples.name if args.samples else ''}); verdicts compared as 'rewards the answer'")
    print(report(table))
    if args.json:
        args.json.write_text(json.dumps({"bank": str(args.bank), "answers": len(corpus), "summary": summary(table),
                                         "criteria": table}, indent=2) + "\n")
