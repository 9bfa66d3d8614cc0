"""GRPO step time with rollouts from `model.generate` (float32 and bfloat16) and from colocated vLLM, side by side.

    python benchmarks/rollout_engines.py                 # SmolLM2-135M-Instruct + LoRA, 8 x 64 tokens, 8 steps each
    python benchmarks/rollout_engines.py --steps 12 --rounds 2 --eager

Each engine trains the CPU default (configs/cpu_default.yaml: SmolLM2 with LoRA r=16, 8 completions of up to 64
tokens a step, a rules-only rubric) through scripts/train_grpo.py in a fresh process, with the same seed; the rounds
alternate the engines so that a slow spell of a shared machine falls on all of them. `generate` is TRL's own
(`rollout_dtype: null`);
`generate folded` decodes with the LoRA adapters folded into float32 weights (`rollout_dtype: float32`), `generate
bf16` into bfloat16 copies (`rollout_dtype: bfloat16`). The
step times are TRL's own (`step_time` in the log history). vLLM compiles the model with inductor while it starts
(vLLM's CPU default); with --eager it also runs as the tests run it, `VLLM_CPU_CI_ENV=1` (dynamo + eager: a short
start, traced in the first step). The first step is reported apart as warm-up; the steady state is the mean of
the later steps. vLLM keeps what it compiled for the next run (`VLLM_CACHE_ROOT`, here a folder of the benchmark's
own): `vllm (cold cache)` starts with it emptied, `vllm` right after with what that run left, as every run after
the first does. The last lines are `folded_rollout_speedup`, `bf16_rollout_speedup`, `vllm_speedup` (generate's
steady step time over that engine's: above 1, faster than TRL's generate) and `vllm_warm_start_speedup` (vLLM's
start-up with an empty cache over its start-up with a warm one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VLLM_FLAGS = ["--use_vllm", "true", "--vllm_mode", "colocate", "--rollout_dtype", "null"]  # as configs/cpu_vllm.yaml
ENGINES = {
    "generate": (["--use_vllm", "false", "--rollout_dtype", "null"], {}),
    "generate folded": (["--use_vllm", "false", "--rollout_dtype", "float32"], {}),
    "generate bf16": (["--use_vllm", "false", "--rollout_dtype", "bfloat16"], {}),
    "vllm (cold cache)": (VLLM_FLAGS, {"VLLM_CPU_CI_ENV": "0"}),  # compiles, into an emptied cache
    "vllm": (VLLM_FLAGS, {"VLLM_CPU_CI_ENV": "0"}),  # right after: loads what the cold run compiled
    "vllm (eager)": (VLLM_FLAGS, {"VLLM_CPU_CI_ENV": "1"}),  # vLLM's switch for dynamo + eager instead of inductor
}


@dataclass
class Run:
    engine: str
    wall_s: float
    step_times: list[float]

    @property
    def steady_s(self) -> float:
        return statistics.mean(self.step_times[1:])

    @property
    def startup_s(self) -> float:
        """Everything that is not a training step: imports, model and engine load, saving."""
        return self.wall_s - sum(self.step_times)


def train(engine: str, steps: int, workdir: Path, compile_cache: Path) -> Run:
    flags, env = ENGINES[engine]
    output_dir = workdir / engine.replace(" ", "_").replace("(", "").replace(")", "")
    if engine == "vllm (cold cache)":
        shutil.rmtree(compile_cache, ignore_errors=True)
    env = {**env, "VLLM_CACHE_ROOT": str(compile_cache), "TORCHINDUCTOR_CACHE_DIR": str(compile_cache / "inductor")}
    command = [
        sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--config", str(ROOT / "configs" / "cpu_vllm.yaml"),
        *flags, "--max_steps", str(steps), "--output_dir", str(output_dir), "--report_to", "none",
        "--num_samples", "0", "--save_strategy", "no",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return Run(engine, wall_s, [entry["step_time"] for entry in history if "step_time" in entry])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="GRPO steps per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per engine, alternating")
    parser.add_argument("--eager", action="store_true", help="also vLLM in eager mode, as the tests run it")
    args = parser.parse_args()
    engines = [name for name in ENGINES if args.eager or name != "vllm (eager)"]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(args.rounds):
            for engine in engines:
                run = train(engine, args.steps, Path(workdir) / str(round_index), Path(workdir) / "compile_cache")
                runs.append(run)
                steps = " ".join(f"{t:.1f}" for t in run.step_times)
                print(f"{engine:17s} round {round_index}: step times (s) {steps}", flush=True)
    print(f"\n{'engine':17s} {'start-up s':>10s} {'first step s':>12s} {'steady step s':>13s} {'wall s':>7s}")
    steady = {}
    for engine in engines:
        mine = [run for run in runs if run.engine == engine]
        steady[engine] = statistics.mean(run.steady_s for run in mine)
        print(
            f"{engine:17s} {statistics.mean(r.startup_s for r in mine):10.1f} "
            f"{statistics.mean(r.step_times[0] for r in mine):12.1f} {steady[engine]:13.2f} "
            f"{statistics.mean(r.wall_s for r in mine):7.1f}"
        )
    if "vllm (eager)" in steady:
        print(f"vllm_eager_speedup: {steady['generate'] / steady['vllm (eager)']:.2f}")
    print(f"folded_rollout_speedup: {steady['generate'] / steady['generate folded']:.2f}")
    print(f"bf16_rollout_speedup: {steady['generate'] / steady['generate bf16']:.2f}")
    print(f"vllm_speedup: {steady['generate'] / steady['vllm']:.2f}")
    startup = {engine: statistics.mean(r.startup_s for r in runs if r.engine == engine) for engine in engines}
    print(f"vllm_warm_start_speedup: {startup['vllm (cold cache)'] / startup['vllm']:.2f}")


if __name__ == "__main__":
    main()
