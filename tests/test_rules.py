"""Rule checks: each check type on plain and edge-case responses, plus properties that hold for any text."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from rubric_rft.rubrics.format import Criterion, RuleCheck
from rubric_rft.rubrics.rules import check_rule, grade_rules

CHECK = TypeAdapter(RuleCheck)


def check(**fields) -> RuleCheck:
    return CHECK.validate_python(fields)


def passes(response: str, **fields) -> bool:
    return check_rule(check(**fields), response)


# --- regex --------------------------------------------------------------------------------------------------


def test_regex_searches_anywhere_ignoring_case_by_default():
    assert passes("Boil it for 7 Minutes.", type="regex", pattern=r"\d+ minutes")
    assert not passes("Boil it for 7 Minutes.", type="regex", pattern=r"\d+ minutes", ignore_case=False)
    assert not passes("Boil it for seven minutes.", type="regex", pattern=r"\d+ minutes")


def test_regex_anchors_apply_to_the_whole_response():
    finished = {"type": "regex", "pattern": r"[.!?]\s*$"}
    assert passes("Done.\n", **finished)
    assert not passes("Done. And then", **finished)
    assert not passes("", **finished)


# --- contains / not_contains -------------------------------------------------------------------------------


def test_contains_counts_distinct_phrases_against_min_matches():
    on_topic = {"type": "contains", "any_of": ["water", "boil", "minutes"], "min_matches": 2}
    assert passes("Boil the water.", **on_topic)
    assert not passes("Water, water and more water.", **on_topic)


def test_contains_counts_repeated_phrases_once():
    # repeated phrases count once, so asking for more matches than distinct phrases can never pass: invalid
    for phrases in (["water", "water"], ["water", "WATER"]):
        with pytest.raises(ValidationError, match="exceeds the 1 distinct phrases"):
            passes("water", type="contains", any_of=phrases, min_matches=2)
    assert passes("water WATER", type="contains", any_of=["water", "WATER"], min_matches=2, case_sensitive=True)


def test_contains_is_case_insensitive_unless_told():
    assert passes("As an AI, I cannot.", type="contains", any_of=["as an ai"])
    assert not passes("As an AI, I cannot.", type="contains", any_of=["as an ai"], case_sensitive=True)


def test_contains_matches_substrings_not_only_whole_words():
    assert passes("Use screens less.", type="contains", any_of=["screen"])


def test_not_contains_fails_on_any_phrase():
    no_bleach = {"type": "not_contains", "none_of": ["bleach", "ammonia"]}
    assert passes("Use white vinegar.", **no_bleach)
    assert not passes("Never mix BLEACH with vinegar.", **no_bleach)
    assert passes("Never mix BLEACH with vinegar.", **no_bleach, case_sensitive=True)


PHRASES = st.text(min_size=1).filter(str.strip)


@given(st.text(), PHRASES, st.text())
def test_a_phrase_inside_the_response_is_always_found(before, phrase, after):
    response = before + phrase + after
    assert passes(response, type="contains", any_of=[phrase], case_sensitive=True)
    assert not passes(response, type="not_contains", none_of=[phrase], case_sensitive=True)


@given(st.text(), st.lists(PHRASES, min_size=1, max_size=4), st.booleans())
def test_not_contains_is_the_negation_of_contains_one(response, phrases, case_sensitive):
    contains = passes(response, type="contains", any_of=phrases, case_sensitive=case_sensitive)
    assert passes(response, type="not_contains", none_of=phrases, case_sensitive=case_sensitive) is not contains


# --- word_count / char_count ---------------------------------------------------------------------------------


def test_word_count_bounds_are_inclusive_and_optional():
    assert passes("one two three", type="word_count", min=3, max=3)
    assert not passes("one two three", type="word_count", min=4)
    assert not passes("one two three", type="word_count", max=2)
    assert passes("", type="word_count", max=0)
    assert passes("  one\n\ttwo  ", type="word_count", min=2, max=2)


def test_char_count_ignores_surrounding_whitespace():
    assert passes("  hello \n", type="char_count", min=5, max=5)
    assert not passes("hello world", type="char_count", max=10)


@given(st.text(), st.integers(0, 30), st.integers(0, 30))
def test_word_count_agrees_with_str_split(response, low, high):
    low, high = min(low, high), max(low, high)
    assert passes(response, type="word_count", min=low, max=high) is (low <= len(response.split()) <= high)


@given(st.text(), st.integers(0, 30))
def test_char_count_agrees_with_len_of_stripped_text(response, high):
    assert passes(response, type="char_count", max=high) is (len(response.strip()) <= high)


# --- no_repetition ------------------------------------------------------------------------------------------


def test_a_repeated_sentence_fails_whatever_its_case_and_spacing():
    assert not passes("I love tea. i  LOVE tea!", type="no_repetition", max_repeat_fraction=1.0)
    assert not passes("- Drink water\n- Sleep early\n- drink water", type="no_repetition", max_repeat_fraction=1.0)
    assert passes("I love tea. I love coffee.", type="no_repetition", max_repeat_fraction=1.0)


def test_empty_sentences_from_runs_of_punctuation_do_not_count_as_repeats():
    assert passes("Wait... What?! Really.\n\n\nYes.", type="no_repetition")


def test_repeated_ngram_fraction_is_compared_with_the_bound():
    # 3-grams of "a b c a b c": abc, bca, cab, abc -> one repeat out of four.
    assert passes("a b c a b c", type="no_repetition", ngram=3, max_repeat_fraction=0.25)
    assert not passes("a b c a b c", type="no_repetition", ngram=3, max_repeat_fraction=0.2)


def test_ngrams_ignore_case_and_surrounding_punctuation():
    # "tea," and "Tea" are the same word: 2-grams "i like", "like tea", "tea i", "i like", "like tea" -> 2 of 5.
    assert not passes("I like tea, i like Tea", type="no_repetition", ngram=2, max_repeat_fraction=0.3)
    assert passes("I like tea, i like Tea", type="no_repetition", ngram=2, max_repeat_fraction=0.4)


def test_responses_shorter_than_one_ngram_pass_the_ngram_part():
    assert passes("", type="no_repetition", ngram=3, max_repeat_fraction=0.0)
    assert passes("yes yes", type="no_repetition", ngram=3, max_repeat_fraction=0.0)
    assert not passes("yes yes yes", type="no_repetition", ngram=1, max_repeat_fraction=0.5)


@given(st.lists(st.text("abcdefghij", min_size=1, max_size=8), min_size=1, max_size=40, unique=True), st.integers(1, 4))
def test_distinct_words_never_repeat(words, ngram):
    assert passes(" ".join(words), type="no_repetition", ngram=ngram, max_repeat_fraction=0.0)


@given(st.lists(st.text("abcdefghij", min_size=1, max_size=8), min_size=1, max_size=10))
def test_saying_a_sentence_twice_always_fails(words):
    sentence = " ".join(words) + "."
    assert not passes(f"{sentence} {sentence}", type="no_repetition", max_repeat_fraction=1.0)


# --- grade_rules --------------------------------------------------------------------------------------------


RULES = [
    Criterion(
        id="water", text="Mentions water.", weight=2, kind="rule", check={"type": "contains", "any_of": ["water"]}
    ),
    Criterion(id="short", text="At most 5 words.", weight=1, kind="rule", check={"type": "word_count", "max": 5}),
]


def test_grade_rules_gives_a_verdict_per_criterion_id():
    assert grade_rules(RULES, "Boil the water.") == {"water": True, "short": True}
    assert grade_rules(RULES, "Boil it for a good ten minutes.") == {"water": False, "short": False}
    assert grade_rules([], "anything") == {}


def test_grade_rules_refuses_llm_criteria():
    judged = Criterion(id="steep", text="Says how long to steep.", weight=3)
    with pytest.raises(ValueError, match="criterion 'steep' has kind 'llm'"):
        grade_rules([*RULES, judged], "Boil the water.")
