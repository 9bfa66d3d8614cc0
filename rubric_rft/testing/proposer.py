"""The scripted judge server as a proposer: it reads this project's proposer prompts and answers them.

`read_proposer_question` recovers what a prompt of `rubric_rft.rubricgen.prompts` asks (write a rubric, refine
one from preferred pairs, rewrite a draft) from its fences, the way `read_question` reads judge prompts.
`keyword_proposer`, the server's default proposer policy, answers without a model, in a way the default judge
policy (a criterion with a quoted keyword is met when the response contains it) can grade:

- write: "Mentions 'w'." (weight 2) for up to 3 words of the prompt, "Mentions 'w'." (weight 1) for up to 2
  words of the reference answer, and the pitfall "Deflects instead of answering ('as an ai')." (weight -3);
- refine: counts, for each word no criterion quotes yet, the pairs whose better response alone uses it less the
  pairs whose worse response alone does; adds "Mentions 'w'." (weight 1) for the (up to) 2 words with the
  highest positive counts and the pitfall "Says 'w'." (weight -1) for the word with the most negative count
  (ties in order of appearance); no edits when every count is zero;
- rewrite: the draft without repeated sentences, ending with a full stop.

Words are lowercase runs of letters, at least 3 long, that are not in `STOPWORDS`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Task = Literal["generate", "refine", "rewrite"]

STOPWORDS = frozenset(
    """about add after again all also and any are because been before being best better both but can could did does
    doing don done each even every few find for from get gets getting give go goes good got had has have having her
    here him his how into its just keep know let like look lot make many may might more most much must need not now
    off once one only other our out over own put really same see she should some such take than that the their them
    then there these they thing things this those through too try under until use used using very want was way well
    were what when where which while who why will with would
    yet you your yours it's i'm
    """.split()
)

_WORD = re.compile(r"[a-z]+")
_QUOTED = re.compile(r"(?<!\w)'(.+?)'(?!\w)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class ProposerQuestion:
    """A proposer prompt: `criteria` are the current rubric's `{id, text, weight}` and `pairs` the (better, worse)
    responses of a refinement; `reference` and `draft` belong to generation and rewriting."""

    task: Task
    prompt: str
    reference: str | None = None
    criteria: tuple[dict, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    draft: str = ""


ProposerPolicy = Callable[[ProposerQuestion], str]


def read_proposer_question(messages: list[dict]) -> ProposerQuestion | None:
    """Recover the question from messages built by `rubric_rft.rubricgen.prompts`; None if they are not ours."""
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    opening = re.search(r"<<<PROMPT-([0-9a-f]+)>>>\n", user) if isinstance(user, str) else None
    if opening is None:
        return None
    nonce = opening.group(1)
    prompt = _fenced(user, "PROMPT", nonce)
    if prompt is None:
        return None
    draft = _fenced(user, "DRAFT", nonce)
    if draft is not None:
        return ProposerQuestion("rewrite", prompt, draft=draft)
    rubric = _fenced(user, "RUBRIC", nonce)
    if rubric is not None:
        pairs = []
        while (better := _fenced(user, f"BETTER-{len(pairs) + 1}", nonce)) is not None:
            worse = _fenced(user, f"WORSE-{len(pairs) + 1}", nonce)
            if worse is None:
                return None
            pairs.append((better, worse))
        return ProposerQuestion("refine", prompt, criteria=tuple(json.loads(rubric)["criteria"]), pairs=tuple(pairs))
    if f"<<<RESPONSE-{nonce}>>>" in user or f"<<<RESPONSE-A-{nonce}>>>" in user or '"criteria"' not in user:
        return None
    return ProposerQuestion("generate", prompt, reference=_fenced(user, "REFERENCE", nonce))


def _fenced(text: str, tag: str, nonce: str) -> str | None:
    opening, closing = f"<<<{tag}-{nonce}>>>\n", f"\n<<<END-{tag}-{nonce}>>>"
    start = text.find(opening)
    end = text.find(closing, start + len(opening)) if start != -1 else -1
    return None if end == -1 else text[start + len(opening) : end]


def words(text: str) -> list[str]:
    """Content words in order of first appearance (see the module docstring)."""
    found = [w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in STOPWORDS]
    return list(dict.fromkeys(found))


def keyword_proposer(question: ProposerQuestion) -> str:
    """The default proposer policy; see the module docstring."""
    if question.task == "generate":
        return json.dumps({"criteria": _written(question)})
    if question.task == "refine":
        return json.dumps(_refined(question))
    return _rewritten(question.draft)


def _mentions(word: str, weight: float) -> dict:
    return {"id": f"mentions-{word}", "text": f"Mentions '{word}'.", "weight": weight}


def _written(question: ProposerQuestion) -> list[dict]:
    subject = words(question.prompt)[:3]
    criteria = [_mentions(w, 2) for w in subject]
    if question.reference:
        criteria += [_mentions(w, 1) for w in [w for w in words(question.reference) if w not in subject][:2]]
    if not criteria:
        criteria = [{"id": "answers", "text": "Answers the question.", "weight": 2}]
    return [*criteria, {"id": "deflects", "text": "Deflects instead of answering ('as an ai').", "weight": -3}]


def _refined(question: ProposerQuestion) -> dict:
    known = {m.lower() for c in question.criteria for m in _QUOTED.findall(c["text"])}
    net: Counter[str] = Counter()  # pairs whose better response alone has the word, less those whose worse alone has
    order: dict[str, int] = {}
    for better, worse in question.pairs:
        better_words, worse_words = words(better), words(worse)
        for word in better_words + worse_words:
            order.setdefault(word, len(order))
        net.update(w for w in better_words if w not in set(worse_words) and w not in known)
        net.subtract(w for w in worse_words if w not in set(better_words) and w not in known)
    added = sorted((w for w in net if net[w] > 0), key=lambda w: (-net[w], order[w]))[:2]
    pitfall = sorted((w for w in net if net[w] < 0), key=lambda w: (net[w], order[w]))[:1]
    if not added and not pitfall:
        return {"reason": "The better and worse responses differ in no word.", "edits": []}
    reasons = []
    if added:
        reasons.append(f"The better responses mention {', '.join(map(repr, added))}; the worse ones do not.")
    if pitfall:
        reasons.append(f"The worse responses say {pitfall[0]!r}; the better ones do not.")
    edits = [{"op": "add", "criterion": _mentions(w, 1)} for w in added]
    edits += [{"op": "add", "criterion": {"id": f"says-{w}", "text": f"Says '{w}'.", "weight": -1}} for w in pitfall]
    return {"reason": " ".join(reasons), "edits": edits}


def _rewritten(draft: str) -> str:
    sentences = [s.strip() for s in _SENTENCE.split(draft.strip()) if s.strip()]
    kept = list(dict.fromkeys(sentences))
    text = " ".join(kept) or draft.strip()
    return text if re.search(r"[.!?)]$", text) else text + "."
