"""How much of the criteria bank the gold rubric already contains: `python data/everyday/bank_overlap.py`.

A bank criterion overlaps the gold when its check is the same as a gold criterion's check (weights aside), for
the prompt's gold rubric as `make_dataset.gold_criteria` writes it. Prints one line per bank criterion id and the
overall share, for the README.
"""

from collections import Counter

from make_criteria_bank import TRAPS, bank_rows
from make_dataset import HELDOUT, TRAIN, gold_criteria


def overlap() -> dict[str, tuple[int, int]]:
    """Bank criterion id -> (prompts where it matches a gold criterion's check, prompts it is in)."""
    gold = {prompt_id: [c["check"] for c in gold_criteria(keywords, prompt)]
            for prompt_id, prompt, keywords, _ in TRAIN + HELDOUT}
    matched, total = Counter(), Counter()
    for row in bank_rows():
        for criterion in row["criteria"]:
            total[criterion["id"]] += 1
            matched[criterion["id"]] += criterion["check"] in gold[row["prompt_id"]]
    return {cid: (matched[cid], total[cid]) for cid in total}


if __name__ == "__main__":
    table = overlap()
    for cid, (hits, count) in table.items():
        print(f"{cid:16} {'trap' if cid in TRAPS else '':5} matches gold in {hits:2d} of {count} prompts")
    hits = sum(h for h, _ in table.values())
    count = sum(c for _, c in table.values())
    print(f"overall: {hits} of {count} bank criteria ({hits / count:.0%}) coincide with a gold criterion")
