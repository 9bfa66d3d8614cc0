#!/usr/bin/env bash
# Reward over-optimization on the CPU default, and what a refined rubric does about it:
#   bash scripts/reproduce_overoptimization.sh OUTDIR [extra train_grpo.py flags]
# Trains SmolLM2-135M-Instruct twice from the same start, seed and steps, under the over-optimization monitor:
#   OUTDIR/prompt_only  the prompt-only rubric (configs/overopt_prompt_only.yaml): the monitor reports an onset;
#   OUTDIR/refined      the refined rubric (configs/overopt_refined.yaml): a later onset, or none.
# Then writes OUTDIR/comparison.png and OUTDIR/comparison.json, and prints both runs side by side.
set -euo pipefail
out="${1:?usage: bash scripts/reproduce_overoptimization.sh OUTDIR [extra train_grpo.py flags]}"
shift
cd "$(dirname "$0")/.."
for run in prompt_only refined; do
  accelerate launch scripts/train_grpo.py --config "configs/overopt_${run}.yaml" \
    --output_dir "$out/$run" --run_name "overopt_${run}" "$@"
done
rubric-rft overopt-report "$out/prompt_only" "$out/refined" --out "$out/comparison"
