#!/usr/bin/env bash
# A Bradley-Terry reward model against the refined rubric, under the same over-optimization monitor:
#   bash scripts/reproduce_bt_vs_rubric.sh OUTDIR [extra train_grpo.py flags]
#   ARTIFACT=list bash scripts/reproduce_bt_vs_rubric.sh OUTDIR      # the bulleted-list style instead of the opener
# 1. OUTDIR/pairs         off-policy preference pairs (data/everyday/make_bt_pairs.py), where an artifact the gold
#                         ignores goes with the better answers: the opener "Great question!" (ARTIFACT=opener, the
#                         default: the shipped pair files) or one sentence a line after "- " (ARTIFACT=list).
#    OUTDIR/reward_model  a BT reward model trained on them (configs/bt_reward_model.yaml); bt_eval.json holds its
#                         held-out accuracy and how often it prefers the artifact alone.
# 2. OUTDIR/bt            SmolLM2-135M-Instruct trained on that reward (configs/bt_vs_rubric_bt.yaml);
#    OUTDIR/rubric        the same start, seed and steps on the refined rubric (configs/overopt_refined.yaml);
#                         both checked against the same gold rubric, which ignores the artifact.
# Then writes OUTDIR/comparison.png and OUTDIR/comparison.json, and prints both runs side by side, with the share of
# each run's held-out samples that carry the artifact.
set -euo pipefail
out="${1:?usage: [ARTIFACT=opener|list] bash scripts/reproduce_bt_vs_rubric.sh OUTDIR [extra train_grpo.py flags]}"
shift
artifact="${ARTIFACT:-opener}"
case "$artifact" in  # how the comparison finds the artifact in the policies' held-out samples
  opener) pattern="Great question" ;;
  list) pattern='^\s*([-*]|\d+[.)])\s' ;;  # a bulleted or a numbered list item: the policy may write either
  *) echo "ARTIFACT must be opener or list, not $artifact" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
python data/everyday/make_bt_pairs.py "$out/pairs" --artifact "$artifact"
python scripts/train_reward_model.py --config configs/bt_reward_model.yaml --output_dir "$out/reward_model" \
  --offpolicy_pairs "$out/pairs/bt_pairs_offpolicy.jsonl" --eval_pairs "$out/pairs/bt_pairs_heldout.jsonl"
accelerate launch scripts/train_grpo.py --config configs/bt_vs_rubric_bt.yaml --output_dir "$out/bt" \
  --run_name "bt_vs_rubric_bt_$artifact" --reward "{\"type\": \"bt\", \"model\": \"$out/reward_model\"}" "$@"
accelerate launch scripts/train_grpo.py --config configs/overopt_refined.yaml --output_dir "$out/rubric" \
  --run_name bt_vs_rubric_rubric "$@"
rubric-rft overopt-report "$out/bt" "$out/rubric" --out "$out/comparison" --pattern "$pattern"
