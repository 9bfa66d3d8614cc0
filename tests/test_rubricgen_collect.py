"""Candidate collection: sources tagged by generator, concurrent over HTTP, resumable, failures reported."""

import asyncio
import json

import pytest

from rubric_rft.llm.endpoint import ChatEndpointConfig
from rubric_rft.rubricgen.records import PromptRow, errors_path, load_candidates, read_appended
from rubric_rft.rubricgen.responses import ChatSource, JsonlSource, PolicySource, collect_responses, load_source
from rubric_rft.rubrics.format import RubricFileError
from rubric_rft.testing.judge_server import DEFAULT_MODEL

PROMPTS = [
    PromptRow("tea", [{"role": "user", "content": "How do I make tea?"}]),
    PromptRow(
        "egg", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I boil an egg?"}]
    ),
]


def endpoint(server, **options) -> dict:
    settings = {"timeout_s": 5.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **options}
    return {"model": DEFAULT_MODEL, "base_urls": [server.base_url], **settings}


def answer_last_question(messages: list[dict]) -> str:
    """A chat model that restates the question, so each answer shows what it was asked."""
    return f"Answer to: {messages[-1]['content']} Step one. Step one."


def collect(sources, out, prompts=PROMPTS):
    return asyncio.run(collect_responses(prompts, [load_source(s) for s in sources], out, progress=False))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_every_source_is_tagged_and_rewrites_see_earlier_sources(start_judge_server, tmp_path):
    seen = []
    server = start_judge_server(responder=lambda messages: seen.append(messages) or answer_last_question(messages))
    existing = write_jsonl(
        tmp_path / "human.jsonl",
        [
            {"prompt_id": "tea", "response": "Boil water. Steep three minutes.", "label": 0.9},
            {"prompt_id": "tea", "response": "Tea bags work."},
            {"prompt_id": "egg", "generator": "chef", "index": 4, "response": "Simmer nine minutes"},
            {"prompt_id": "unknown", "response": "Not one of our prompts."},
        ],
    )
    out = tmp_path / "responses.jsonl"
    summary = collect(
        [
            {"type": "jsonl", "path": existing},
            {"type": "openai", "name": "chat", "samples": 2, "endpoint": endpoint(server)},
            {"type": "rewrite", "name": "improve", "endpoint": endpoint(server), "of": ["chat", "chef"]},
        ],
        out,
    )
    candidates = {c.key: c for c in load_candidates(out)}
    assert summary.written == {"human": 2, "chef": 1, "chat": 4, "improve/chat": 4, "improve/chef": 1}
    assert candidates[("tea", "human", 1)].response == "Tea bags work." and candidates[("tea", "human", 0)].label == 0.9
    assert candidates[("egg", "chat", 1)].response == "Answer to: How do I boil an egg? Step one. Step one."
    assert [m for m in seen[0] if m["role"] == "system"] in ([], [{"role": "system", "content": "Be brief."}])
    rewrite = candidates[("egg", "improve/chat", 1)]
    assert rewrite.response == "Answer to: How do I boil an egg? Step one." and rewrite.rewrite_of == {
        "generator": "chat",
        "index": 1,
    }
    assert candidates[("egg", "improve/chef", 4)].response == "Simmer nine minutes."
    # 4 chat answers, 1 rewrite of chef's; the two chat samples of a prompt are the same text (this chat model
    # restates the question), so their rewrites are one question, asked once (single flight at temperature 0)
    assert (summary.skipped, summary.errors, summary.costs.calls, summary.costs.cache_hits) == (0, [], 7, 2)
    assert server.stats.requests == 7 and not errors_path(out).exists()


def test_a_rerun_skips_what_is_there_and_fills_what_failed(start_judge_server, tmp_path):
    broken = start_judge_server(responder=answer_last_question, fail_first_n=1, fail_status=400)
    out = tmp_path / "responses.jsonl"
    source = {"type": "openai", "name": "chat", "samples": 2, "endpoint": endpoint(broken, max_concurrency=1)}
    summary = collect([source], out)
    assert sum(summary.written.values()) == 3 and len(summary.errors) == 1
    [(_, failure)] = read_appended(errors_path(out))
    assert failure["prompt_id"] == "tea" and failure["generator"] == "chat" and "HTTP 400" in failure["error"]
    with out.open("a") as handle:
        handle.write('{"prompt_id": "tea", "gener')  # a crash mid-write
    again = collect([source], out)
    assert sum(again.written.values()) == 1 and again.skipped == 3 and again.errors == []
    assert sorted(c.key for c in load_candidates(out)) == sorted(
        (p, "chat", i) for p in ("tea", "egg") for i in range(2)
    )
    assert not errors_path(out).exists() and broken.stats.requests == 5
    assert collect([source], out).written == {} and broken.stats.requests == 5


def test_without_a_responder_the_server_refuses_plain_chats(judge_server, tmp_path):
    summary = collect([{"type": "openai", "endpoint": endpoint(judge_server)}], tmp_path / "responses.jsonl")
    assert sum(summary.written.values()) == 0 and len(summary.errors) == 2
    assert all("HTTP 400" in e["error"] and "not a judge prompt" in e["error"] for e in summary.errors)


def test_samples_of_a_chat_model_are_cached_by_index(start_judge_server, tmp_path):
    server = start_judge_server(responder=answer_last_question)
    source = {"type": "openai", "samples": 2, "endpoint": endpoint(server, cache_path=str(tmp_path / "c.sqlite"))}
    collect([source], tmp_path / "a.jsonl")
    summary = collect([source], tmp_path / "b.jsonl")
    assert summary.costs.cache_hits == 4 and server.stats.requests == 4
    assert {c.generator for c in load_candidates(tmp_path / "b.jsonl")} == {DEFAULT_MODEL}


def test_sources_are_validated_and_name_the_field(tmp_path):
    assert isinstance(load_source({"type": "jsonl", "path": "x.jsonl"}), JsonlSource)
    config = load_source({"type": "openai", "endpoint": {"model": "m", "base_urls": ["http://127.0.0.1:9/v1"]}})
    assert isinstance(config, ChatSource) and isinstance(config.endpoint, ChatEndpointConfig)
    path = tmp_path / "policy.yaml"
    path.write_text("type: policy\nmodel: rubric-rft/tiny-llama\nsamples: 2\ntemperature: 1.0\n")
    assert load_source(str(path)) == PolicySource(model="rubric-rft/tiny-llama", samples=2, temperature=1.0)
    with pytest.raises(ValueError, match=r"response source: jsonl\.paths: Extra inputs"):
        load_source({"type": "jsonl", "path": "x", "paths": "x"})
    with pytest.raises(ValueError, match=r"openai\.endpoint: .*base_urls: Field required"):
        load_source({"type": "openai", "endpoint": {"model": "m"}})
    with pytest.raises(ValueError, match=r"'policy', 'openai', 'rewrite', 'jsonl'"):
        load_source({"type": "human"})


def test_two_sources_with_one_name_are_refused(tmp_path):
    sources = [{"type": "jsonl", "path": "a.jsonl", "name": "x"}, {"type": "jsonl", "path": "b.jsonl", "name": "x"}]
    with pytest.raises(ValueError, match=r"generator name\(s\) \['x'\]"):
        collect(sources, tmp_path / "out.jsonl")


def test_bad_records_name_the_file_and_line(tmp_path):
    existing = write_jsonl(tmp_path / "in.jsonl", [{"prompt_id": "tea", "response": "ok"}, {"prompt_id": "tea"}])
    with pytest.raises(RubricFileError, match=r"in\.jsonl:2: response: Field required"):
        collect([{"type": "jsonl", "path": existing}], tmp_path / "out.jsonl")


def test_a_local_policy_samples_several_answers(tiny_model_path, tmp_path):
    out = tmp_path / "responses.jsonl"
    source = {
        "type": "policy",
        "model": tiny_model_path,
        "name": "tiny",
        "samples": 2,
        "temperature": 1.0,
        "max_new_tokens": 6,
    }
    summary = collect([source], out)
    assert summary.written == {"tiny": 4}
    first = load_candidates(out)
    assert sorted(c.key for c in first) == sorted((p, "tiny", i) for p in ("tea", "egg") for i in range(2))
    collect([source], tmp_path / "again.jsonl")
    assert [c.response for c in load_candidates(tmp_path / "again.jsonl")] == [c.response for c in first]  # seeded
    greedy = collect([{"type": "policy", "model": tiny_model_path, "max_new_tokens": 6}], out)
    assert greedy.written == {tiny_model_path: 2} and collect([source], out).written == {}
    with pytest.raises(ValueError, match="greedy decoding gives one answer"):
        collect([{"type": "policy", "model": tiny_model_path, "samples": 2}], out)
