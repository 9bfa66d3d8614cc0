"""The CPU default run with different rollouts, over several seeds: does a faster rollout keep the reward rise?

    python benchmarks/default_run_seeds.py                          # TRL's rollouts vs bf16 (the default), seeds 42-44
    python benchmarks/default_run_seeds.py --arms trl "trl, lora_dropout 0" --seeds 42 43

Each run is README command 1 (configs/cpu_default.yaml: SmolLM2-135M-Instruct with LoRA, 20 GRPO steps of 8
completions x 64 tokens, a rules-only rubric) through scripts/train_grpo.py in a fresh process, without W&B, held-out
samples or checkpoints. Arms, run in turn for each seed so that a slow spell of a shared machine falls on all:
  trl                   TRL's own transformers rollouts (`rollout_dtype: null`: in training mode, LoRA dropout on);
  bf16                  rollouts from bfloat16 copies of the weights with the adapters folded (the default's
                        `rollout_dtype: bfloat16`);
  folded                the same in float32;
  trl, lora_dropout 0   TRL's rollouts with the LoRA dropout off (what folding also leaves out).
Printed per run and per arm (mean and range over seeds): mean reward over the first and the last 10% of steps
(steps 1-2 and 19-20 of 20, as the README's table), over steps 16-20, the steady step time (TRL's `step_time`,
first step left out) and the training wall time. The last line is `bf16_step_speedup`: TRL's steady step time over
bf16's, from the same seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = {
    "trl": ["--rollout_dtype", "null"],
    "bf16": ["--rollout_dtype", "bfloat16"],
    "folded": ["--rollout_dtype", "float32"],
    "trl, lora_dropout 0": ["--rollout_dtype", "null", "--lora_dropout", "0"],
}


@dataclass
class Run:
    arm: str
    seed: int
    rewards: list[float]
    step_times: list[float]
    train_s: float

    def mean_reward(self, first: int, last: int) -> float:
        """Mean reward over steps first..last (1-based, inclusive)."""
        return statistics.mean(self.rewards[first - 1:last])

    @property
    def steady_s(self) -> float:
        return statistics.mean(self.step_times[1:])


def train(arm: str, seed: int, steps: int, workdir: Path) -> Run:
    output_dir = workdir / f"{arm.replace(' ', '_').replace(',', '')}-{seed}"
    command = [sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--config",
               str(ROOT / "configs" / "cpu_default.yaml"), *ARMS[arm], "--seed", str(seed), "--max_steps", str(steps),
               "--output_dir", str(output_dir), "--report_to", "none", "--num_samples", "0", "--save_strategy", "no"]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    steps_logged = [entry for entry in history if "reward" in entry]
    train_s = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    return Run(arm, seed, [e["reward"] for e in steps_logged], [e["step_time"] for e in steps_logged], train_s)


def spread(values: list[float], digits: int = 2) -> str:
    """`mean [min, max]` of values."""
    return f"{statistics.mean(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["trl", "bf16"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    tenth = max(1, args.steps // 10)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            for arm in args.arms:
                run = train(arm, seed, args.steps, Path(workdir))
                runs.append(run)
                print(f"{arm:20s} seed {seed}: reward first {tenth} steps {run.mean_reward(1, tenth):.2f}, last "
                      f"{tenth} {run.mean_reward(args.steps - tenth + 1, args.steps):.2f}; steady step "
                      f"{run.steady_s:.1f} s; training {run.train_s:.0f} s", flush=True)
    seeds = " ".join(map(str, args.seeds))
    print(f"\n{len(args.seeds)} seeds ({seeds}), {args.steps} steps; mean [min, max] over seeds")
    print(f"{'arm':20s} {'reward first 10%':>20s} {'reward last 10%':>20s} {'reward 16-20':>20s} "
          f"{'steady step s':>20s} {'training s':>20s}")
    for arm in args.arms:
        mine = [run for run in runs if run.arm == arm]
        print(f"{arm:20s} {spread([r.mean_reward(1, tenth) for r in mine]):>20s} "
              f"{spread([r.mean_reward(args.steps - tenth + 1, args.steps) for r in mine]):>20s} "
              f"{spread([r.mean_reward(max(1, args.steps - 4), args.steps) for r in mine]):>20s} "
              f"{spread([r.steady_s for r in mine], 1):>20s} {spread([r.train_s for r in mine], 0):>20s}")
    if {"trl", "bf16"} <= set(args.arms):
        trl = statistics.mean(r.steady_s for r in runs if r.arm == "trl")
        bf16 = statistics.mean(r.steady_s for r in runs if r.arm == "bf16")
        print(f"bf16_step_speedup: {trl / bf16:.2f}")


if __name__ == "__main__":
    main()
