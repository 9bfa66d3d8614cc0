"""rubric_rft.llm.generation on the tiny model: greedy and seeded answers in one process, and the same answers from
two processes (`accelerate launch`, CPU), each generating its share."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rubric_rft.llm.generation import generate, generate_on_every_rank
from rubric_rft.training.monitor.policy import reference_of, sample_policy

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    [{"role": "user", "content": "How do I make tea?"}],
    [{"role": "user", "content": "Why is the sky blue? Answer in one sentence, please."}],
    [{"role": "user", "content": "Name a fruit."}],
]


def spread(model):
    """The tiny model with its weights x10: at their initial scale every greedy answer repeats one token."""
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.mul_(10)
    return model


@pytest.fixture
def tiny(tiny_model_path):
    return spread(AutoModelForCausalLM.from_pretrained(tiny_model_path)), AutoTokenizer.from_pretrained(tiny_model_path)


def direct(model, tokenizer, prompts, max_new_tokens: int, **sampling) -> torch.Tensor:
    """The new tokens of one left-padded `model.generate` call on the rendered chats."""
    chats = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    inputs = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling = sampling or {"do_sample": False}
    output = model.eval().generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                   **sampling)
    return output[:, inputs["input_ids"].shape[1] :]


def decoded(tokenizer, tokens) -> list[str]:
    return [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def test_greedy_answers_are_one_direct_generate_call_and_settings_are_restored(tiny):
    model, tokenizer = tiny
    expected = decoded(tokenizer, direct(model, tokenizer, PROMPTS, 8))
    tokenizer.padding_side = "right"
    model.train()
    answers = generate(model, tokenizer, PROMPTS, max_new_tokens=8)
    assert answers.texts == expected and answers.lengths == [8, 8, 8]
    assert tokenizer.padding_side == "right" and model.training


def test_a_completion_ends_at_its_first_end_of_sequence_token(tiny):
    model, tokenizer = tiny
    tokens = direct(model, tokenizer, PROMPTS[:1], 8)[0].tolist()
    cut = next(i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i])
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(tokens[cut])  # generate goes on past it; the answer ends
    answers = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=8)
    assert answers.texts == decoded(tokenizer, [tokens[:cut]]) and answers.lengths == [cut + 1]


def test_seeded_sampling_repeats_and_leaves_the_global_random_state_alone(tiny):
    model, tokenizer = tiny
    options = {"max_new_tokens": 8, "samples_per_prompt": 2, "batch_size": 4, "temperature": 1.0}
    state = torch.random.get_rng_state()
    first = generate(model, tokenizer, PROMPTS, seed=5, **options)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate(model, tokenizer, PROMPTS, seed=5, **options).texts == first.texts
    assert generate(model, tokenizer, PROMPTS, seed=6, **options).texts != first.texts
    # batch b is sampled with seed + b: the second batch (the last prompt's two samples) under seed 6
    torch.manual_seed(6)
    second_batch = direct(model, tokenizer, [PROMPTS[2]] * 2, 8, do_sample=True, temperature=1.0, top_p=1.0)
    assert first.texts[4:] == decoded(tokenizer, second_batch)


def test_one_process_on_every_rank_is_the_plain_function(tiny):
    model, tokenizer = tiny
    options = {"max_new_tokens": 6, "samples_per_prompt": 2, "batch_size": 4, "temperature": 0.7, "seed": 3}
    rows = generate_on_every_rank(model, tokenizer, PROMPTS, measure=lambda _, batch: batch.sequences.tolist(),
                                  **options)
    assert rows == generate(model, tokenizer, PROMPTS, measure=lambda _, batch: batch.sequences.tolist(), **options)


def test_the_monitor_measures_kl_on_the_samples_it_returns(tiny, tiny_model_path):
    model, tokenizer = tiny
    options = {"samples_per_prompt": 2, "max_new_tokens": 6, "temperature": 0.7, "seed": 11, "batch_size": 4}
    start = spread(AutoModelForCausalLM.from_pretrained(tiny_model_path))
    unmoved = sample_policy(model, tokenizer, PROMPTS, reference=reference_of(model, start), **options)
    expected = generate(model, tokenizer, PROMPTS, top_k=0, **options)
    assert unmoved.texts == expected.texts and unmoved.lengths == expected.lengths
    assert all(0 <= kl < 1e-4 for kl in unmoved.kl)  # 0 up to rounding: decoding with a cache vs a full forward
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    moved = sample_policy(model, tokenizer, PROMPTS, reference=reference_of(model, start), **options)
    assert all(kl > 0 for kl in moved.kl)


def test_token_logprobs_are_the_sampling_distribution_of_each_token(tiny):
    """What the monitor's KL takes as the policy's side: the same as a forward pass over the finished samples."""
    from rubric_rft.training.monitor.policy import token_logps

    model, tokenizer = tiny
    batches = []
    options = {"max_new_tokens": 6, "temperature": 0.7, "top_k": 0, "samples_per_prompt": 2, "seed": 3}
    generate(model, tokenizer, PROMPTS, token_logprobs=True, measure=lambda _, b: batches.append(b) or [0] * 6,
             batch_size=6, **options)
    [batch] = batches
    with torch.no_grad():
        forward = token_logps(model, batch, 0.7)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(batch.token_logprobs[mask], forward[mask], atol=1e-4, rtol=1e-4)
    assert (batch.token_logprobs[mask] < 0).all()
    with pytest.raises(ValueError, match="plain sampling"):
        generate(model, tokenizer, PROMPTS, token_logprobs=True, max_new_tokens=2, temperature=0.7, top_k=50)


DRIVER = """
import json, sys
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerControl, TrainerState

from rubric_rft.llm.generation import generate, generate_on_every_rank
from rubric_rft.training.monitor.callback import OverOptimizationMonitor
from rubric_rft.training.monitor.config import load_monitor_config

model_path, out, heldout, gold = sys.argv[1:]
rank = PartialState(cpu=True).process_index  # the process group on CPU, as training with use_cpu makes it
tokenizer = AutoTokenizer.from_pretrained(model_path)
model = AutoModelForCausalLM.from_pretrained(model_path)
with torch.no_grad():  # greedy answers that differ from prompt to prompt (see `spread`)
    for name, weight in model.named_parameters():
        if "norm" not in name:
            weight.mul_(10)
calls = []
plain_generate = model.generate
model.generate = lambda **inputs: calls.append(len(inputs["input_ids"])) or plain_generate(**inputs)

prompts = [[{"role": "user", "content": f"Tell me about the number {i}."}] for i in range(5)]
greedy = generate_on_every_rank(model, tokenizer, prompts, max_new_tokens=8, batch_size=2,
                                measure=lambda _, batch: [rank] * len(batch.sequences))
greedy_calls = len(calls)
sampling = {"max_new_tokens": 8, "batch_size": 4, "samples_per_prompt": 2, "temperature": 1.0, "seed": 7}
sampled = generate_on_every_rank(model, tokenizer, prompts[:3], **sampling)
alone = {"greedy": generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=2).texts,
         "sampled": generate(model, tokenizer, prompts[:3], **sampling).texts}

with torch.no_grad():  # the policy has moved from its start: the monitor's KL is not 0
    model.lm_head.weight.mul_(1.5)
config = load_monitor_config({"heldout_path": heldout, "gold": {"rubrics_path": gold}, "monitor_steps": 1,
                              "num_prompts": 3, "samples_per_prompt": 2, "max_new_tokens": 8, "batch_size": 3,
                              "keep_best": False})
monitor = OverOptimizationMonitor(config, str(Path(out) / "monitor"), start_model_path=model_path)
state, control, before = TrainerState(is_world_process_zero=rank == 0), TrainerControl(), len(calls)
monitor.on_train_begin(None, state, control, model=model, processing_class=tokenizer)
state.global_step = 1
monitor.on_step_end(None, state, control, model=model, processing_class=tokenizer)
state.global_step = 2
monitor.on_train_end(None, state, control, model=model, processing_class=tokenizer)
monitor_rows = sum(calls[before:])
alone["monitor"] = [
    generate(model, tokenizer, [row["prompt"] for row in monitor.graders.rows], max_new_tokens=8, batch_size=3,
             samples_per_prompt=2, temperature=config.temperature, top_k=0, seed=config.seed + step).texts
    for step in (0, 1, 2)
]
record = {"greedy": greedy.texts, "greedy_by_rank": greedy.measured, "greedy_calls": greedy_calls,
          "sampled": sampled.texts, "monitor_rows": monitor_rows, "alone": alone}
Path(out, f"rank{rank}.json").write_text(json.dumps(record))
PartialState().destroy_process_group()  # left to the interpreter's exit, gloo's threads can abort the process
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_the_generation_and_answer_as_one_does(tmp_path, tiny_model_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    everyday = ROOT / "data" / "everyday"
    command = [
        "accelerate", "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port", str(free_port()), str(driver), tiny_model_path, str(tmp_path),
        str(everyday / "heldout_prompt_only.jsonl"), str(everyday / "heldout_rules.jsonl"),
    ]  # fmt: skip
    cache = str(Path(tiny_model_path).parent)  # the session's cache, where the fixture built the tiny model
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RUBRIC_RFT_CACHE": cache}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]

    # 5 prompts in batches of 2: rank 0 answers batches 0 and 1, rank 1 batch 2 and then repeats it, so that both
    # make as many generate calls (generation under ZeRO-3 keeps ranks in step); every rank gets every answer, in
    # prompt order, the answers one process gives
    assert [r["greedy_by_rank"] for r in ranks] == [[0, 0, 0, 0, 1]] * 2
    assert [r["greedy_calls"] for r in ranks] == [2, 2]
    for rank in ranks:
        assert rank["greedy"] == rank["alone"]["greedy"] and rank["sampled"] == rank["alone"]["sampled"]
    assert ranks[0]["greedy"] == ranks[1]["greedy"]

    # the monitor samples on both ranks (3 evaluations of 3 prompts x 2 samples in batches of 3: one batch each)
    # and the main process records what one process samples
    assert [r["monitor_rows"] for r in ranks] == [9, 9]
    history = [json.loads(line) for line in (tmp_path / "monitor" / "overopt.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [0, 1, 2] and all(r["kl"] > 0 for r in history)
    samples = [json.loads(line) for line in (tmp_path / "monitor" / "overopt_samples.jsonl").read_text().splitlines()]
    assert [[s["response"] for s in samples if s["step"] == step] for step in (0, 1, 2)] == ranks[0]["alone"]["monitor"]
