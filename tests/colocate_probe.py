"""Train a model a few GRPO steps with rollouts from colocated vLLM, then measure whether vLLM follows the policy.

    python tests/colocate_probe.py MODEL_DIR OUT.json [--lora] [--sync-failures]

Run in a process of its own (a vLLM engine and its process group live as long as the process). vLLM gets a 1 GiB KV
cache, as configs/cpu_vllm.yaml gives it. After training, the weights are synced once more and the log-probability
of every token of a fixed text is taken three ways: from vLLM (`prompt_logprobs`), from the trained policy and from
the starting model. If the weights reach vLLM, vLLM's numbers sit near the trained policy's and away from the
start's. Writes the mean absolute gaps and the trainer's log history; with --sync-failures, then also what a sync
raises when the policy's weights leave one of vLLM's out, and when they name one vLLM does not have.
"""

import json
import sys

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer
from vllm import SamplingParams

from rubric_rft.training.rollouts import set_cpu_kv_cache_size, use_cpu_weight_reload

TEXT = "How do I make tea? Boil the water, pour it over the leaves and wait three minutes."
PROMPTS = ["How do I make tea?", "How do I boil an egg?", "How do I save money?", "How do I sleep better?"]


def letter_e_reward(completions, **_):
    """Any reward that moves the weights will do; this one is cheap and never flat."""
    return [float(completion[0]["content"].count("e")) for completion in completions]


def token_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def vllm_token_logprobs(llm, ids: list[int]) -> torch.Tensor:
    (output,) = llm.generate(
        [{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
    )
    pairs = zip(output.prompt_logprobs[1:], ids[1:], strict=True)
    return torch.tensor([entry[token].logprob for entry, token in pairs])


def sync_failures(generation) -> dict[str, str]:
    """What one sync raises (type: message) when the policy's weights lack one of vLLM's, and when they carry one
    vLLM does not have."""
    weights = list(generation._iter_named_params())
    extra = ("model.layers.0.mlp.extra_proj.weight", torch.zeros(2, 2))
    failures = {}
    for case, fed in {"missing": weights[1:], "unknown": [*weights, extra]}.items():
        generation._iter_named_params = lambda fed=fed: iter(fed)
        try:
            generation.sync_weights()
        except Exception as exc:
            failures[case] = f"{type(exc).__name__}: {exc}"
    return failures


def main(model_dir: str, out: str, lora: bool, failures: bool) -> None:
    set_cpu_kv_cache_size(1)
    args = GRPOConfig(
        output_dir=f"{out}.run", use_cpu=True, bf16=False, seed=0, learning_rate=1e-2, max_steps=3,
        per_device_train_batch_size=8, num_generations=8, max_completion_length=16, logging_steps=1,
        report_to="none", gradient_checkpointing=False, save_strategy="no",
        use_vllm=True, vllm_mode="colocate", vllm_max_model_length=256,
    )
    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM") if lora else None
    trainer = GRPOTrainer(
        model=model_dir, reward_funcs=[letter_e_reward], args=args, peft_config=peft_config,
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS]),
    )
    installed = use_cpu_weight_reload(trainer)
    trainer.train()
    trainer.vllm_generation.sync_weights()  # the last optimizer step came after the last sync

    ids = trainer.processing_class(TEXT)["input_ids"]
    policy = trainer.accelerator.unwrap_model(trainer.model).eval()
    trained = token_logprobs(policy, ids)
    start = token_logprobs(AutoModelForCausalLM.from_pretrained(model_dir), ids)
    served = vllm_token_logprobs(trainer.vllm_generation.llm, ids)
    report = {
        "installed": installed,
        "vllm_vs_trained": (served - trained).abs().mean().item(),
        "vllm_vs_start": (served - start).abs().mean().item(),
        "trained_vs_start": (trained - start).abs().mean().item(),
        "log_history": trainer.state.log_history,
    }
    if failures:
        report["sync_failures"] = sync_failures(trainer.vllm_generation)
    with open(out, "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--lora" in sys.argv[3:], "--sync-failures" in sys.argv[3:])
