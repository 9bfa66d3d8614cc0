"""Build a criteria bank that never sees the gold: `python data/everyday/make_independent_bank.py`.

`criteria_bank_oracle.jsonl` (`make_oracle_bank.py`) is written from the gold's own keyword tables, so refining with
it is a loop with an oracle. This bank is its independent counterpart, for the same bank proposer
(`{prompt_id, criteria: [...]}` rows, all `rule` criteria).

Procedure, fixed before any run:
1. Prompts: `prompt_id` and the user message's text of `train_prompt_only.jsonl` and `heldout_prompt_only.jsonl`,
   nothing else of those rows (their `rubric` shares criteria with the gold and is never read).
2. Axes: the five behaviour axes HealthBench tags its rubric criteria with (Arora et al. 2025,
   arXiv 2505.08775): accuracy, completeness, communication quality, context awareness, instruction following.
   Criteria of the kind the "Chasing the Tail" rubric writer asks for (Zhang et al. 2025, arXiv 2509.21500;
   github.com/Jun-Kai-Zhang/rubrics, generator/prompts/generate_rubrics.txt): binary and objective ("the
   response should list exactly three examples"), atomic, phrased so that yes is good, weights 1 to 3; pitfalls
   get negative weights as in HealthBench (points from -10 to 10).
3. Each axis is made concrete as rule checks whose parameters come from the constants below (word-count bands,
   sentence counts, a repetition threshold, fixed generic phrase lists, a fixed stop-word list). The only
   per-prompt content is the question's own words: its content words (lower-case words of 3+ letters that are
   not stop words) and the question itself.
4. Traps (TRAPS): criteria a policy can satisfy without answering better (length for its own sake, lists, bold
   text, pleasantries, exclamation marks, echoing the question), kept so that refinement can be caught taking
   them.
Accuracy cannot be checked by a rule; its proxies here are committing to an answer (no hedging) and giving a
concrete quantity. How much of this bank still behaves like the gold is what `bank_overlap.py` measures.
"""

import itertools
import json
import re
from pathlib import Path

HERE = Path(__file__).parent
PROMPT_FILES = [HERE / "train_prompt_only.jsonl", HERE / "heldout_prompt_only.jsonl"]
BANK_FILE = HERE / "criteria_bank_independent.jsonl"

# the fixed grid
WORD_BANDS = (10, 20, 40, 80)  # minimum words: 10 and 20 plausible, 40 and 80 traps; 80 also the concise maximum
SENTENCE_COUNTS = (2, 3)
REPEAT_NGRAM, REPEAT_FRACTION = 4, 0.1
RUN_ON_WORDS = 35  # this many words without a sentence end is a run-on sentence
MIN_CONTENT_WORDS = 2  # "covers the question" asks for this many of its content words
HEDGES = ["it depends", "depends on", "everyone is different", "there is no single answer", "hard to say",
          "no one-size-fits-all", "may or may not", "varies from person to person"]
REFUSALS = ["as an ai", "as a language model", "i cannot", "i can't", "i am unable", "i'm unable", "i am not able",
            "i'm not able", "i won't be able", "unable to help"]
PLEASANTRIES = ["great question", "good question", "hope this helps", "happy to help", "good luck", "feel free",
                "thank you for asking", "thanks for asking"]
ADVICE_VERBS = ["try", "use", "start", "avoid", "keep", "add", "check", "set", "put", "stop", "make sure", "choose"]
NUMBERS = ["\\d+", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve",
           "twenty", "thirty", "half", "once", "twice"]
STOP_WORDS = {
    "about", "after", "again", "all", "also", "and", "any", "are", "because", "been", "before", "best", "better",
    "but", "can", "could", "did", "does", "doing", "done", "each", "easy", "for", "from", "get", "getting", "good",
    "had", "has", "have", "help", "helps", "her", "his", "how", "into", "its", "just", "like", "longer", "make",
    "many", "more", "most", "much", "need", "not", "off", "often", "one", "only", "other", "our", "out", "over",
    "really", "should", "simple", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "through", "too", "used", "very", "want", "was", "way", "ways", "well", "were",
    "what", "when", "where", "which", "while", "who", "why", "will", "with", "would", "you", "your",
}

TRAPS = {"words_40", "words_80", "bullet_list", "bold_text", "pleasantries", "exclaims", "echoes_question"}


def rule(cid: str, weight: int, text: str, **check) -> dict:
    return {"id": cid, "kind": "rule", "weight": weight, "text": text, "check": check}


def any_word(words: list[str]) -> str:
    return r"\b(?:" + "|".join(words) + r")\b"


def mentions(words: list[str], k: int) -> str:
    """A regex for: at least k of `words` each start a word of the response (so "egg" finds "eggs", not "leggings")."""
    combos = itertools.combinations(words, k)
    return "(?s)^(?:" + "|".join("".join(rf"(?=.*\b{w})" for w in combo) for combo in combos) + ")"


def content_words(question: str) -> list[str]:
    words = re.findall(r"[a-z]+", question.lower())
    return list(dict.fromkeys(w for w in words if len(w) >= 3 and w not in STOP_WORDS))


def sentences(n: int) -> str:
    """A regex for: the response opens with n sentences, each with a word and ended by . ! or ? before a space or
    the end ("3.5" ends none). Anchored and possessive, so it runs in linear time on any response."""
    sentence = r"[^\w.!?]*+\w(?:[^.!?]|[.!?](?=\S))*+[.!?]++(?:\s|\Z)"
    return rf"\A(?:{sentence}){{{n}}}"


def bank_criteria(question: str) -> list[dict]:
    subject = content_words(question)
    short, medium, long, longest = WORD_BANDS
    criteria = [
        # accuracy: commits to an answer, with a concrete quantity
        rule("hedges", -1, f"Hedges instead of committing to an answer ({', '.join(HEDGES)}).",
             type="contains", any_of=HEDGES),
        rule("gives_number", 1, "Gives a concrete quantity: an amount, a time or a count.",
             type="regex", pattern=any_word(NUMBERS)),
        # completeness: develops the answer
        rule(f"words_{short}", 1, f"Is more than a fragment: at least {short} words.", type="word_count", min=short),
        rule(f"words_{medium}", 2, f"Develops the answer: at least {medium} words.", type="word_count", min=medium),
        *[rule(f"sentences_{n}", 1, f"Has at least {n} complete sentences.", type="regex", pattern=sentences(n))
          for n in SENTENCE_COUNTS],
        # communication quality: finished, not looping, concise, readable sentences
        rule("ends_sentence", 1, "Ends with a complete sentence (final . ! or ?).",
             type="regex", pattern=r"[.!?][\"')\]]*\s*$"),
        rule("no_loops", 1, f"Does not repeat itself (at most {REPEAT_FRACTION:.0%} repeated {REPEAT_NGRAM}-word runs).",
             type="no_repetition", ngram=REPEAT_NGRAM, max_repeat_fraction=REPEAT_FRACTION),
        rule(f"at_most_{longest}_words", 1, f"Stays concise: at most {longest} words.", type="word_count", max=longest),
        rule("run_on", -1, f"Runs a sentence on for {RUN_ON_WORDS} words or more.",
             type="regex", pattern=rf"\b(?:\w++[^\w.!?]++){{{RUN_ON_WORDS - 1}}}\w"),
        # context awareness: about what was asked, to the person who asked
        rule("on_subject", 2, f"Is about what was asked (mentions one of: {', '.join(subject)}).",
             type="regex", pattern=mentions(subject, 1)),
        rule("addresses_user", 1, "Speaks to the asker directly (you, your).", type="regex", pattern=any_word(["you", "your"])),
        # instruction following: answers rather than refusing or asking back, with steps to take
        rule("refuses", -3, "Refuses or deflects instead of answering.", type="contains", any_of=REFUSALS),
        rule("asks_back", -1, "Ends with a question back instead of an answer.", type="regex", pattern=r"\?\s*$"),
        rule("actionable", 1, "Gives actionable steps: at least two advice verbs (try, use, avoid, ...).",
             type="regex", pattern=r"(?s)" + any_word(ADVICE_VERBS) + ".*" + any_word(ADVICE_VERBS)),
        # traps
        rule(f"words_{long}", 1, f"Is detailed: at least {long} words.", type="word_count", min=long),
        rule(f"words_{longest}", 2, f"Is thorough: at least {longest} words.", type="word_count", min=longest),
        rule("bullet_list", 1, "Organises the answer as a bulleted or numbered list.",
             type="regex", pattern=r"(?m)^\s*(?:[-*\u2022]|\d+[.)])\s"),
        rule("bold_text", 1, "Highlights key points in bold or with headings.", type="regex", pattern=r"(?m)\*\*\S|^#+\s"),
        rule("pleasantries", 1, f"Is warm and polite ({', '.join(PLEASANTRIES)}).", type="contains", any_of=PLEASANTRIES),
        rule("exclaims", 1, "Sounds enthusiastic (an exclamation mark).", type="regex", pattern="!"),
        rule("echoes_question", 1, "Acknowledges the question by restating it.",
             type="contains", any_of=[question.strip().rstrip("?").strip()]),
    ]
    if len(subject) >= MIN_CONTENT_WORDS:
        criteria.append(rule("covers_question", 1, f"Covers the question: mentions {MIN_CONTENT_WORDS} of "
                             f"{', '.join(subject)}.", type="regex", pattern=mentions(subject, MIN_CONTENT_WORDS)))
    return criteria


def read_prompts() -> list[tuple[str, str]]:
    """(prompt_id, the user's question) of every everyday prompt, train then held-out; nothing else of a row."""
    prompts = []
    for path in PROMPT_FILES:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            question = next(m["content"] for m in row["prompt"] if m["role"] == "user")
            prompts.append((row["prompt_id"], question))
    return prompts


def bank_rows() -> list[dict]:
    return [{"prompt_id": prompt_id, "criteria": bank_criteria(question)} for prompt_id, question in read_prompts()]


if __name__ == "__main__":
    rows = bank_rows()
    BANK_FILE.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {sum(len(r['criteria']) for r in rows)} criteria for {len(rows)} prompts to {BANK_FILE}")
