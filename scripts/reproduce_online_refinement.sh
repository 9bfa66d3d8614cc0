#!/usr/bin/env bash
# Does refining the rubric during training stop over-optimization? One command:
#   bash scripts/reproduce_online_refinement.sh OUTDIR [extra train_grpo.py flags]
# Trains SmolLM2-135M-Instruct twice from the same start, seed and steps (80) under the over-optimization monitor:
#   OUTDIR/static  the prompt-only rubric as it is (configs/overopt_prompt_only.yaml, its loophole included);
#   OUTDIR/online  the same run with online refinement (configs/overopt_online_refinement.yaml): bank proposer, the
#                  training prompts' gold rubrics as the gold that orders pairs (never as a reward).
# Then writes OUTDIR/comparison.png and OUTDIR/comparison.json and prints both runs side by side: onset, gold at
# the end, answer length, refinements made and what they cost, wall time.
set -euo pipefail
out="${1:?usage: bash scripts/reproduce_online_refinement.sh OUTDIR [extra train_grpo.py flags]}"
shift
cd "$(dirname "$0")/.."
steps=80
accelerate launch scripts/train_grpo.py --config configs/overopt_prompt_only.yaml --max_steps "$steps" \
  --output_dir "$out/static" --run_name overopt_static "$@"
accelerate launch scripts/train_grpo.py --config configs/overopt_online_refinement.yaml --max_steps "$steps" \
  --output_dir "$out/online" --run_name overopt_online "$@"
rubric-rft overopt-report "$out/static" "$out/online" --out "$out/comparison"
