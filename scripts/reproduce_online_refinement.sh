#!/usr/bin/env bash
# Does refining the rubric during training stop over-optimization? One command:
#   bash scripts/reproduce_online_refinement.sh OUTDIR [extra train_grpo.py flags]
# Trains SmolLM2-135M-Instruct three times from the same start, seed and steps (80) under the over-optimization
# monitor:
#   OUTDIR/static        the prompt-only rubric as it is (configs/overopt_prompt_only.yaml, its loophole included);
#   OUTDIR/online        the same run with online refinement (configs/overopt_online_refinement.yaml: bank proposer,
#                        the training prompts' gold rubrics ordering pairs, never a reward), fresh samples off:
#                        a prompt is refined on the answers of its own visits only;
#   OUTDIR/online_fresh  the same with fresh samples on, as the config has it: when the monitor fires, prompts not
#                        answered lately are answered at once and refined.
# Then writes OUTDIR/comparison.png and OUTDIR/comparison.json and prints the runs side by side: onset, gold at
# the end, answer length, refinements made and what they cost, wall time.
set -euo pipefail
out="${1:?usage: bash scripts/reproduce_online_refinement.sh OUTDIR [extra train_grpo.py flags]}"
shift
cd "$(dirname "$0")/.."
steps=80
online=configs/overopt_online_refinement.yaml
visits_only="$(python -c 'import json, sys, yaml
refinement = yaml.safe_load(open(sys.argv[1]))["refinement"]
refinement["fresh_samples"]["enabled"] = False
print(json.dumps(refinement))' "$online")"
accelerate launch scripts/train_grpo.py --config configs/overopt_prompt_only.yaml --max_steps "$steps" \
  --output_dir "$out/static" --run_name overopt_static "$@"
accelerate launch scripts/train_grpo.py --config "$online" --refinement "$visits_only" --max_steps "$steps" \
  --output_dir "$out/online" --run_name overopt_online "$@"
accelerate launch scripts/train_grpo.py --config "$online" --max_steps "$steps" \
  --output_dir "$out/online_fresh" --run_name overopt_online_fresh "$@"
rubric-rft overopt-report "$out/static" "$out/online" "$out/online_fresh" --out "$out/comparison"
