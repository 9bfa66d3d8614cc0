"""Build the oracle control bank: `python data/everyday/make_oracle_bank.py`.

An ORACLE, kept only as a control for experiments: its criteria come from the same keyword tables as the gold
rubric (`make_dataset.py`), and several are the gold's own checks (`explains` is the gold's `substance`,
`one_liner` its negation, `two_specifics` the gold's `specific`). A loop that refines with it is a loop with an
oracle, and shows at most what a proposer that already knows the gold can do. `bank_overlap.py --bank
criteria_bank_oracle.jsonl` measures how much of it behaves like the gold; `make_independent_bank.py` writes the
bank that experiments use.
"""

import json
import re
from pathlib import Path

from make_dataset import COMMON_WORDS, HELDOUT, TRAIN

HERE = Path(__file__).parent
BANK_FILE = HERE / "criteria_bank_oracle.jsonl"

# ids of the criteria that reward something other than a better answer
TRAPS = {"thorough", "restates", "list", "polite", "enthusiastic"}

POLITE = ["hope this helps", "happy to help", "great question", "good luck", "feel free"]


def bank_criteria(keywords: list[str], prompt: str) -> list[dict]:
    prompt_words = set(re.findall(r"[a-z]+", prompt.lower()))
    subject = sorted(w for w in prompt_words if len(w) >= 3 and w not in COMMON_WORDS)
    beyond = [k for k in keywords if not set(k.split()) <= prompt_words]
    criteria = [
        {"id": "explains", "kind": "rule", "weight": 2, "text": "Explains rather than names: at least 15 words.",
         "check": {"type": "word_count", "min": 15}},
        {"id": "moderate_length", "kind": "rule", "weight": 2, "text": "Takes 20 to 60 words: room to explain, no ramble.",
         "check": {"type": "word_count", "min": 20, "max": 60}},
        {"id": "two_specifics", "kind": "rule", "weight": 2,
         "text": f"Names at least two specifics: {', '.join(beyond)}.",
         "check": {"type": "contains", "any_of": beyond, "min_matches": 2}},
        {"id": "three_specifics", "kind": "rule", "weight": 2,
         "text": f"Names at least three specifics: {', '.join(beyond)}.",
         "check": {"type": "contains", "any_of": beyond, "min_matches": 3}},
        {"id": "full_stop", "kind": "rule", "weight": 1, "text": "Ends with a full sentence.",
         "check": {"type": "regex", "pattern": r"[.!?]\s*$"}},
        {"id": "varied", "kind": "rule", "weight": 1, "text": "Does not repeat word pairs.",
         "check": {"type": "no_repetition", "ngram": 2, "max_repeat_fraction": 0.1}},
        {"id": "one_liner", "kind": "rule", "weight": -2, "text": "Is a bare one-liner of at most 12 words.",
         "check": {"type": "word_count", "max": 12}},
        {"id": "thorough", "kind": "rule", "weight": 2, "text": "Is thorough: at least 60 words.",
         "check": {"type": "word_count", "min": 60}},
        {"id": "list", "kind": "rule", "weight": 1, "text": "Uses a bulleted or numbered list.",
         "check": {"type": "regex", "pattern": r"(?m)^\s*([-*\u2022]|\d+[.)])\s"}},
        {"id": "polite", "kind": "rule", "weight": 1, "text": "Is polite and encouraging.",
         "check": {"type": "contains", "any_of": POLITE}},
        {"id": "enthusiastic", "kind": "rule", "weight": 1, "text": "Sounds enthusiastic (an exclamation mark).",
         "check": {"type": "regex", "pattern": "!"}},
    ]
    if len(subject) >= 2:
        criteria.append({"id": "restates", "kind": "rule", "weight": 1,
                         "text": f"Restates the question ({', '.join(subject)}).",
                         "check": {"type": "contains", "any_of": subject, "min_matches": 2}})
    return criteria


def bank_rows() -> list[dict]:
    return [{"prompt_id": prompt_id, "criteria": bank_criteria(keywords, prompt)}
            for prompt_id, prompt, keywords, _ in TRAIN + HELDOUT]


if __name__ == "__main__":
    rows = bank_rows()
    BANK_FILE.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {sum(len(r['criteria']) for r in rows)} criteria for {len(rows)} prompts to {BANK_FILE}")
