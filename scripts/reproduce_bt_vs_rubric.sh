#!/usr/bin/env bash
# A Bradley-Terry reward model against the refined rubric, under the same over-optimization monitor:
#   bash scripts/reproduce_bt_vs_rubric.sh OUTDIR [extra train_grpo.py flags]
# 1. OUTDIR/reward_model  a BT reward model trained on the off-policy pairs (configs/bt_reward_model.yaml), where
#                         the opener "Great question!" goes with the better answers; bt_eval.json holds its held-out
#                         accuracy and how often it prefers the artifact alone.
# 2. OUTDIR/bt            SmolLM2-135M-Instruct trained on that reward (configs/bt_vs_rubric_bt.yaml);
#    OUTDIR/rubric        the same start, seed and steps on the refined rubric (configs/overopt_refined.yaml);
#                         both checked against the same gold rubric, which ignores the artifact.
# Then writes OUTDIR/comparison.png and OUTDIR/comparison.json, and prints both runs side by side.
set -euo pipefail
out="${1:?usage: bash scripts/reproduce_bt_vs_rubric.sh OUTDIR [extra train_grpo.py flags]}"
shift
cd "$(dirname "$0")/.."
python scripts/train_reward_model.py --config configs/bt_reward_model.yaml --output_dir "$out/reward_model"
accelerate launch scripts/train_grpo.py --config configs/bt_vs_rubric_bt.yaml --output_dir "$out/bt" \
  --run_name bt_vs_rubric_bt --reward "{\"type\": \"bt\", \"model\": \"$out/reward_model\"}" "$@"
accelerate launch scripts/train_grpo.py --config configs/overopt_refined.yaml --output_dir "$out/rubric" \
  --run_name bt_vs_rubric_rubric "$@"
rubric-rft overopt-report "$out/bt" "$out/rubric" --out "$out/comparison"
