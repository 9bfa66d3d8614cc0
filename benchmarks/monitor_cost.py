"""What the over-optimization monitor costs, and what an adaptive cadence saves, side by side in one run.

    python benchmarks/monitor_cost.py                    # the prompt-only reproduction, 24 steps, 4 settings
    python benchmarks/monitor_cost.py --steps 16 --settings fixed adaptive

Each setting trains the prompt-only arm of the over-optimization reproduction (configs/overopt_prompt_only.yaml:
SmolLM2-135M-Instruct with LoRA, the rubric with the loophole) through scripts/train_grpo.py in a fresh process,
with the same seed and steps, and only the monitor's cadence changed:
  fixed      every `monitor_steps` steps (the reproduction's setting);
  sparse     every 4 × `monitor_steps` steps (a cheaper fixed cadence, for comparison);
  adaptive   at the fixed cadence's steps only when the training reward or length moved (`monitor.cadence`);
  drift      adaptive, and also when the policy's KL from the start (on 4 of the start's answers, one forward pass
             at every check) moved by half its value at the last evaluation (`drift_move: 0.5`);
  vllm-generate  fixed, with rollouts from colocated vLLM (configs/cpu_vllm.yaml's settings) and the held-out
             answers sampled by transformers' generate (`monitor.engine: transformers`);
  vllm       the same run, the held-out answers sampled by the run's vLLM engine (`monitor.engine: vllm`).
It prints, per setting, the monitor's share of training wall time (`monitor_share` in overopt.json), the number of
evaluations, the peak / onset / detected steps, and the detection delay against the fixed cadence: whether the
cheaper cadence still sees the onset, and how much later; then where the monitor's time went, per evaluation
(`monitor_phase_seconds`: a vLLM engine's weight sync, sampling the held-out answers, the reference's forward pass
for the KL, grading, writing the outputs and the best model, and the drift probe), beside the mean training step.
Training is deterministic under the seed, so the settings differ in when the monitor looks, not in what the policy
does; the two vLLM settings train from vLLM's rollouts, so they compare with each other, not with the others. Their
wall time includes vLLM's start-up, not counted as training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "overopt_prompt_only.yaml"


VLLM_ROLLOUTS = ["--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_cpu_kv_cache_gib", "1",
                 "--vllm_max_model_length", "512"]
SETTINGS = ["fixed", "sparse", "adaptive", "drift", "vllm-generate", "vllm"]


def monitor_settings(monitor_steps: int) -> dict[str, tuple[dict, list[str]]]:
    """Each setting's monitor config and its other training flags."""
    base = {**yaml.safe_load(CONFIG.read_text())["monitor"], "monitor_steps": monitor_steps}
    return {
        "fixed": (base, []),
        "sparse": ({**base, "monitor_steps": 4 * monitor_steps}, []),
        "adaptive": ({**base, "cadence": {"adaptive": True}}, []),
        "drift": ({**base, "cadence": {"adaptive": True, "drift_move": 0.5}}, []),
        "vllm-generate": ({**base, "engine": "transformers"}, VLLM_ROLLOUTS),
        "vllm": ({**base, "engine": "vllm"}, VLLM_ROLLOUTS),
    }


def train(setting: str, monitor: dict, flags: list[str], steps: int, out: Path) -> dict:
    run = out / setting
    subprocess.run(
        ["accelerate", "launch", "scripts/train_grpo.py", "--config", str(CONFIG), "--max_steps", str(steps),
         "--monitor", json.dumps(monitor), "--output_dir", str(run), "--report_to", "none",
         "--save_steps", str(steps), *flags],
        cwd=ROOT, check=True)
    summary = json.loads((run / "overopt.json").read_text())
    step_times = [log["step_time"] for log in json.loads((run / "trainer_state.json").read_text())["log_history"]
                  if "step_time" in log]
    keys = ("monitor_share", "evaluations", "peak_step", "onset_step", "detected_step", "monitor_phase_seconds")
    return {**{key: summary[key] for key in keys}, "step_s": sum(step_times) / len(step_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="training steps per setting (default: 24)")
    parser.add_argument("--monitor-steps", type=int, default=2, help="the fixed cadence (default: 2)")
    parser.add_argument("--settings", nargs="+", default=SETTINGS[:4], choices=SETTINGS,
                        help="which settings to run, in this order (default: the four cadences)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    settings = monitor_settings(args.monitor_steps)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        results = {name: train(name, *settings[name], args.steps, out) for name in args.settings}
    reference = results.get("fixed", {}).get("detected_step")
    print(f"{'setting':<14} {'monitor_share':>13} {'evaluations':>11} {'peak':>5} {'onset':>6} {'detected':>9} "
          f"{'delay vs fixed':>15}")
    for name, r in results.items():
        delay = "-" if reference is None or r["detected_step"] is None else r["detected_step"] - reference
        print(f"{name:<14} {r['monitor_share']:>13.3f} {r['evaluations']:>11} {r['peak_step']!s:>5} "
              f"{r['onset_step']!s:>6} {r['detected_step']!s:>9} {delay!s:>15}")
    phases = ("sync", "sample", "kl", "grade", "write", "drift")
    print(f"\nseconds per evaluation {' '.join(f'{p:>7}' for p in phases)}   training step")
    for name, r in results.items():
        spent = [r["monitor_phase_seconds"].get(p, 0.0) / r["evaluations"] for p in phases]
        print(f"{name:<22} {' '.join(f'{s:>7.2f}' for s in spent)}   {r['step_s']:>13.2f}")
    for name, r in results.items():
        print(f"monitor_share[{name}]: {r['monitor_share']:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
