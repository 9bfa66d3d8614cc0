"""Train a Bradley-Terry reward model with TRL's `RewardTrainer` on preference pairs.

    python scripts/train_reward_model.py                                          # configs/bt_reward_model.yaml
    python scripts/train_reward_model.py --output_dir outputs/bt/reward_model --num_train_epochs 3
    python scripts/train_reward_model.py --sources both --onpolicy_pairs outputs/onpolicy_pairs.jsonl

A pair is a JSONL record `{prompt, chosen, rejected}` in TRL's preference format (chat messages, or plain text);
`sources` picks the off-policy pairs (responses written for the prompts), the on-policy pairs (the policy's own
samples, ranked), or both. Every `RewardConfig` field is a YAML key or a `--flag` (TRL's `TrlParser`). The model
is `AutoModelForSequenceClassification` with one output on top of `model_name_or_path`, fully fine-tuned. Writes,
in `output_dir`: the model and its tokenizer (`save_pretrained` layout: the `model:` of `reward: {type: bt}` in a
GRPO config), TRL's `trainer_state.json`, and with `eval_pairs` `bt_eval.json`: the saved model's pairwise
accuracy on those pairs, in all and per value of their `probe` field.

Run it with `python` on a CPU (a lone process under `accelerate launch` gets one thread).
"""

import json
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from datasets import Dataset
from transformers import AutoTokenizer
from trl import RewardConfig, RewardTrainer, TrlParser

from rubric_rft.llm.weights import resolve_model
from rubric_rft.logs import setup_logging
from rubric_rft.reward.bt import PAIR_FIELDS, BTReward, pairwise_accuracy, read_pairs

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bt_reward_model.yaml"
SOURCE_FIELDS = {
    "offpolicy": ["offpolicy_pairs"],
    "onpolicy": ["onpolicy_pairs"],
    "both": ["offpolicy_pairs", "onpolicy_pairs"],
}

logger = logging.getLogger("train_reward_model")


@dataclass
class PairArguments:
    model_name_or_path: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Base model: a local folder or hub id."}
    )
    offpolicy_pairs: str | None = field(default=None, metadata={"help": "Off-policy preference pairs (JSONL)."})
    onpolicy_pairs: str | None = field(default=None, metadata={"help": "Pairs of the policy's own samples (JSONL)."})
    sources: Literal["offpolicy", "onpolicy", "both"] = field(
        default="offpolicy", metadata={"help": "Which pairs to train on."}
    )
    eval_pairs: str | None = field(
        default=None, metadata={"help": "Held-out pairs for bt_eval.json: accuracy in all and per `probe` value."}
    )


def main(script_args: PairArguments, training_args: RewardConfig) -> None:
    setup_logging()
    train_dataset = Dataset.from_list(_training_pairs(script_args))
    model_path = resolve_model(script_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = RewardTrainer(
        model=model_path, args=training_args, train_dataset=train_dataset, processing_class=tokenizer
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if script_args.eval_pairs and trainer.accelerator.is_main_process:
        _write_eval(script_args.eval_pairs, training_args.output_dir)


def _training_pairs(script_args: PairArguments) -> list[dict]:
    """The pairs of every selected source, reduced to TRL's columns so that sources of any extra fields mix."""
    pairs = []
    for name in SOURCE_FIELDS[script_args.sources]:
        path = getattr(script_args, name)
        if not path:
            raise ValueError(f"sources: {script_args.sources} trains on {name}, but no --{name} file is set")
        pairs += [{key: pair[key] for key in PAIR_FIELDS} for pair in read_pairs(path)]
    return pairs


def _write_eval(eval_path: str, model_dir: str) -> None:
    """Pairwise accuracy of the saved model, scored the way GRPO will score completions with it."""
    pairs = read_pairs(eval_path)
    reward = BTReward(model_dir)
    by_probe = defaultdict(list)
    for pair in pairs:
        by_probe[pair.get("probe", "all")].append(pair)
    accuracies = {probe: pairwise_accuracy(reward, rows) for probe, rows in by_probe.items()}
    report = {
        "eval_pairs": eval_path,
        "pairs": len(pairs),
        "accuracy": sum(accuracies[probe] * len(rows) for probe, rows in by_probe.items()) / len(pairs),
        "by_probe": {probe: {"pairs": len(rows), "accuracy": accuracies[probe]} for probe, rows in by_probe.items()},
    }
    (Path(model_dir) / "bt_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("pairwise accuracy on %s: %s", eval_path, json.dumps(report["by_probe"]))


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--config" not in argv:
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    parser = TrlParser((PairArguments, RewardConfig))
    main(*parser.parse_args_and_config(args=argv))
