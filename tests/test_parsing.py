"""Verdict parsing: every tolerated form, every error, and properties over random renderings and arbitrary text."""

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rubric_rft.judges.parsing import (
    TIE_WORDS,
    parse_batched,
    parse_pairwise,
    parse_single,
    parse_yes_no,
)
from rubric_rft.llm.answers import MalformedAnswer

LABELS = ["c1", "c2"]


@pytest.mark.parametrize(
    "text",
    [
        '{"c1": "yes", "c2": "no"}',
        '```json\n{"c1": "yes", "c2": "no"}\n```',
        'Here is my verdict:\n```\n{"c1": "yes", "c2": "no"}\n```\nThe first criterion is met.',
        'Sure. {"c1": "yes", "c2": "no"} Hope this helps.',
        "{'c1': 'yes', 'c2': 'no'}",
        '{"c1": "yes", "c2": "no",}',
        "{'c1': True, 'c2': False,}",
        '{"c1": true, "c2": false}',
        '{"c1": 1, "c2": 0}',
        '{"c1": 1.0, "c2": 0.0}',
        '{"c1": "1", "c2": "0"}',
        '{"c1": "met", "c2": "not met"}',
        '{"c1": "Satisfied", "c2": "Unsatisfied"}',
        '{"c1": "YES.", "c2": "No!"}',
        '{"c1": "satisfied", "c2": "not_satisfied"}',
        '{"c1": "pass", "c2": "unmet"}',
        "{c1: yes, c2: not met}",
        '{"c1": {"verdict": "yes", "reason": "it does"}, "c2": {"verdict": "no", "reason": "it does not"}}',
        '{"c1": {"satisfied": true}, "c2": {"answer": "no"}}',
        '{"C1": "yes", " c2 ": "no"}',
        '{"c1": "yes", "c2": "no", "summary": "mixed", "c3": "maybe"}',
        '{"c1": "yes", "C1": "Yes", "c2": "no"}',
        'Format: {label: verdict}. Answer: {"c1": "yes", "c2": "no"}',
        'Example {"x": "yes"}; answer {"c1": "yes", "c2": "no"}',
        '{"reason": "c2 is not met", "c1": "yes", "c2": "no"}',
    ],
)
def test_tolerated_forms(text):
    assert parse_batched(text, LABELS) == {"c1": True, "c2": False}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The response is good.", "no JSON object"),
        ("", "no JSON object"),
        ('{"c1": "yes", "c2": "n', "truncated"),
        ('```json\n{"c1": "yes", "c2": {"verdict": "no"', "truncated"),
        ('{"c1": "yes"}', "no verdict for c2"),
        ('{"verdict": "yes"}', "none of the expected keys"),
        ('{"c1": "yes", "c2": "maybe"}', "unrecognised verdict for c2"),
        ('{"c1": "yes", "c2": 2}', "unrecognised verdict for c2"),
        ('{"c1": "yes", "c2": null}', "unrecognised verdict for c2"),
        ('{"c1": "yes", "c2": ["no"]}', "unrecognised verdict for c2"),
        ('{"c1": "yes", "c2": {"reason": "no idea"}}', "no verdict key"),
        ('{"c1": "yes", "c2": {"verdict": "yes", "satisfied": "no"}}', "conflicting verdicts"),
        ('{"c1": "yes", "C1": "no", "c2": "no"}', "conflicting duplicate keys"),
        ('{"c1": "yes" "c2": "no"}', "invalid JSON"),
        ('{"c12": "yes", "c22": "no"}', "none of the expected keys"),
    ],
)
def test_errors(text, reason):
    with pytest.raises(MalformedAnswer, match=reason):
        parse_batched(text, LABELS)


def test_malformed_verdict_is_a_value_error():
    assert issubclass(MalformedAnswer, ValueError)


def test_labels_must_be_distinct_after_normalisation():
    with pytest.raises(ValueError, match="labels must differ"):
        parse_batched('{"c1": "yes"}', ["c1", " C1"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"satisfied": "yes"}', True),
        ('{"satisfied": "no"}', False),
        ('```json\n{"satisfied": true}\n```', True),
        ("I checked it. {'Satisfied': 'not met',} Done.", False),
        ('{"verdict": "yes", "reason": "mentions it"}', True),
        ("Yes", True),
        ("no.", False),
        ("`YES`", True),
    ],
)
def test_parse_single(text, expected):
    assert parse_single(text) is expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I think it probably is.", "no JSON object"),
        ('{"satisfied": "y', "truncated"),
        ('{"satisfied": "perhaps"}', "unrecognised"),
        ('{"satisfied": "yes", "verdict": "no"}', "conflicting"),
        ('{"reason": "fine"}', "none of the expected keys"),
    ],
)
def test_parse_single_errors(text, reason):
    with pytest.raises(MalformedAnswer, match=reason):
        parse_single(text)


# --- properties ---------------------------------------------------------------------------------------------

YES_FORMS = ["yes", "Yes", "YES", "true", "True", "met", "Met", "satisfied", "1", "pass"]
NO_FORMS = ["no", "No", "NO", "false", "False", "not met", "Not Met", "unsatisfied", "0", "fail"]

labels_strategy = st.one_of(
    st.integers(1, 8).map(lambda n: [f"c{i}" for i in range(1, n + 1)]),
    st.lists(st.text("abcdefgxyz0123456789_", min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
)


@st.composite
def rendered_answers(draw):
    """A judge answer for random labels and verdicts, in a random mix of the tolerated styles."""
    labels = draw(labels_strategy)
    verdicts = {label: draw(st.booleans()) for label in labels}
    quote = draw(st.sampled_from(['"', "'"]))

    def string(text):
        return f"{quote}{text}{quote}"

    def key(label):
        cased = "".join(c.upper() if draw(st.booleans()) else c for c in label)
        return string(draw(st.sampled_from(["", " "])) + cased + draw(st.sampled_from(["", " ", "  "])))

    def value(satisfied, styles=("word", "bool", "number", "nested")):
        style = draw(st.sampled_from(styles))
        if style == "word":
            return string(draw(st.sampled_from(YES_FORMS if satisfied else NO_FORMS)))
        if style == "bool":
            return draw(st.sampled_from(["true", "True"] if satisfied else ["false", "False"]))
        if style == "number":
            return "1" if satisfied else "0"
        verdict_key = string(draw(st.sampled_from(["verdict", "satisfied", "answer"])))
        verdict = value(satisfied, ("word", "bool", "number"))
        return "{" + f"{verdict_key}: {verdict}, {string('reason')}: {string('because')}" + "}"

    members = [f"{key(label)}: {value(ok)}" for label, ok in verdicts.items()]
    extras = draw(st.lists(st.sampled_from(["notes", "summary", "overall"]), max_size=2, unique=True))
    members += [f"{string(extra)}: {string('anything, even maybe')}" for extra in extras]
    members = draw(st.permutations(members))
    body = "{" + ", ".join(members) + draw(st.sampled_from(["", ","])) + "}"
    prose = st.text(st.characters(blacklist_characters="{}", blacklist_categories=["Cs"]), max_size=30)
    wrapper = draw(st.sampled_from(["bare", "fence", "prose"]))
    if wrapper == "fence":
        body = f"```json\n{body}\n```"
    elif wrapper == "prose":
        body = f"{draw(prose)}\n{body}\n{draw(prose)}"
    return body, labels, verdicts


@settings(max_examples=300, deadline=None)
@given(rendered_answers())
def test_random_renderings_parse_to_exactly_their_verdicts(case):
    text, labels, verdicts = case
    assert parse_batched(text, labels) == verdicts


json_like_text = st.text(st.sampled_from(list("{}[]\":,' \n`cC12yesnotrufalYN.")), max_size=80)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), json_like_text))
def test_arbitrary_text_gives_exact_labels_or_malformed_verdict(text):
    try:
        result = parse_batched(text, LABELS)
    except MalformedAnswer:
        return
    assert set(result) == set(LABELS)
    squeezed = "".join(text.split()).lower()
    assert all(label in squeezed for label in result)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), json_like_text))
def test_arbitrary_text_gives_a_bool_or_malformed_verdict_for_single(text):
    with contextlib.suppress(MalformedAnswer):
        assert isinstance(parse_single(text), bool)


def test_labels_round_trip_through_json_dumps():
    labels = [f"c{i}" for i in range(1, 13)]
    verdicts = {label: i % 3 == 0 for i, label in enumerate(labels)}
    text = json.dumps({label: "yes" if ok else "no" for label, ok in reversed(verdicts.items())}, indent=2)
    assert parse_batched(text, labels) == verdicts


# --- pairwise -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"winner": "A"}', "A"),
        ('{"winner": "b"}', "B"),
        ('{"winner": "tie"}', "tie"),
        ('```json\n{"winner": "B"}\n```', "B"),
        ('Both are fine, but the first is more precise.\n{"winner": "Response A"}\nThat is my verdict.', "A"),
        ("{'Winner': 'response_b',}", "B"),
        ('{"reason": "B is longer", "winner": "A"}', "A"),
        ('{"better": "Assistant B"}', "B"),
        ('{"winner": "Draw"}', "tie"),
        ('{"winner": "A", "verdict": "a"}', "A"),
        ('Example {"x": "B"}; answer {"winner": "A"}', "A"),
        ("A", "A"),
        ("b.", "B"),
        ("Response B", "B"),
        ("[[A]]", "A"),
        ("`tie`", "tie"),
        ("**B**", "B"),
    ],
)
def test_parse_pairwise(text, expected):
    assert parse_pairwise(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Response A is clearly better.", "no JSON object"),
        ("", "no JSON object"),
        ('{"winner": "A', "truncated"),
        ('{"winner": "C"}', "unrecognised winner"),
        ('{"winner": "A and B"}', "unrecognised winner"),
        ('{"winner": 1}', "unrecognised winner"),
        ('{"winner": null}', "unrecognised winner"),
        ('{"winner": "A", "better": "B"}', "conflicting winners"),
        ('{"winner": "A", "Winner": "tie"}', "conflicting winners"),
        ('{"reason": "A is better"}', "none of the expected keys"),
    ],
)
def test_parse_pairwise_errors(text, reason):
    with pytest.raises(MalformedAnswer, match=reason):
        parse_pairwise(text)


WINNER_FORMS = {
    "A": ["A", "a", "Response A", "response a", "response_a", "Assistant A", "answer A"],
    "B": ["B", "b", "Response B", "RESPONSE B", "response_b", "Assistant B", "output b"],
    "tie": ["tie", "Tie", "TIE", "draw", "equal", "a tie"],
}


@st.composite
def rendered_pairwise_answers(draw):
    """A pairwise answer for a random winner in a random mix of the tolerated styles."""
    winner = draw(st.sampled_from(sorted(WINNER_FORMS)))
    quote = draw(st.sampled_from(['"', "'"]))
    key = draw(st.sampled_from(["winner", "Winner", " winner ", "better", "preferred", "choice"]))
    members = [f"{quote}{key}{quote}: {quote}{draw(st.sampled_from(WINNER_FORMS[winner]))}{quote}"]
    members += [f"{quote}{extra}{quote}: {quote}A or B, maybe a tie{quote}" for extra in draw(
        st.lists(st.sampled_from(["reason", "explanation", "notes"]), max_size=2, unique=True)
    )]  # fmt: skip
    body = "{" + ", ".join(draw(st.permutations(members))) + draw(st.sampled_from(["", ","])) + "}"
    prose = st.text(st.characters(blacklist_characters="{}", blacklist_categories=["Cs"]), max_size=30)
    wrapper = draw(st.sampled_from(["bare", "fence", "prose"]))
    if wrapper == "fence":
        body = f"```json\n{body}\n```"
    elif wrapper == "prose":
        body = f"{draw(prose)}\n{body}\n{draw(prose)}"
    return body, winner


@settings(max_examples=300, deadline=None)
@given(rendered_pairwise_answers())
def test_random_pairwise_renderings_parse_to_their_winner(case):
    text, winner = case
    assert parse_pairwise(text) == winner


pairwise_like_text = st.text(st.sampled_from(list("{}[]\":,' \n`*wineroABbtTdawqul_")), max_size=60)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=60), pairwise_like_text))
def test_arbitrary_text_gives_a_stated_winner_or_malformed_verdict(text):
    try:
        winner = parse_pairwise(text)
    except MalformedAnswer:
        return
    lowered = text.lower()
    if winner == "tie":
        assert any(word in lowered for word in TIE_WORDS)
    else:
        assert winner.lower() in lowered


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", True),
        ("No", False),
        ("no.", False),
        ("Yes, the response gives a time.", True),
        ("**No**, it does not.", False),
        ("  yes", True),
        ('"No"', False),
    ],
)
def test_parse_yes_no_reads_the_first_word(text, expected):
    assert parse_yes_no(text) is expected


@pytest.mark.parametrize("text", ["The criterion is satisfied", "Yesterday it was", "", "1", "Nope"])
def test_parse_yes_no_rejects_answers_that_do_not_start_with_yes_or_no(text):
    with pytest.raises(MalformedAnswer, match="does not start with yes or no"):
        parse_yes_no(text)
