"""Build the criteria bank for online refinement: `python data/everyday/make_criteria_bank.py`.

For every everyday prompt (train and held-out), candidate criteria a rubric writer might add once the rubric
saturates, all rules (so the bank proposer runs without an LLM judge). They are written from the prompt and its
keywords alone, never from the gold rubric: some plausible (explains in some words, names specifics, finishes
its sentences, does not loop), some traps a policy can game (length for its own sake, restating the question,
lists, politeness, exclamation marks). Which of them coincide with the gold is what `bank_overlap.py` reports.
"""

import json
import re
from pathlib import Path

from make_dataset import COMMON_WORDS, HELDOUT, TRAIN

HERE = Path(__file__).parent
BANK_FILE = HERE / "criteria_bank.jsonl"

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
