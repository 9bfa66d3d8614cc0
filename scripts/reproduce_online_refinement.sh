#!/usr/bin/env bash
# Does refining the rubric during training stop over-optimization? One command:
#   bash scripts/reproduce_online_refinement.sh OUTDIR [extra train_grpo.py flags]
#   SEEDS="1 2 3" STEPS=30 MONITOR_STEPS=3 bash scripts/reproduce_online_refinement.sh OUTDIR      # the defaults
# Trains SmolLM2-135M-Instruct from the same start for STEPS steps under the over-optimization monitor, once per
# seed and arm:
#   static       the prompt-only rubric as it is (configs/overopt_prompt_only.yaml, its loophole included);
#   online       the same with online refinement (configs/overopt_online_refinement.yaml): the independent bank, the
#                gold-free pooled trigger, fresh samples and transfer; the training prompts' gold rubrics order pairs;
#   refined      the offline-refined rubric (configs/overopt_refined.yaml): the reference a good rubric reaches;
#   gold_reward  the gold rubric as the reward (configs/overopt_gold_reward.yaml): what the gold costs when it
#                grades every answer.
# The monitor measures each run on the 8 held-out prompts (data/everyday/heldout_gold.jsonl), which nothing in the
# online arm reads; after training, scripts/evaluate.py compares each run's greedy answers with the starting
# policy's on the 16 test prompts (data/everyday/test_gold.jsonl), which no run trains on, refines on or monitors.
# Runs already finished in OUTDIR are kept, so a stopped experiment resumes. Ends with
# scripts/summarize_online_refinement.py OUTDIR (the table, OUTDIR/summary.json and OUTDIR/summary.png).
set -euo pipefail
out="${1:?usage: bash scripts/reproduce_online_refinement.sh OUTDIR [extra train_grpo.py flags]}"
shift
cd "$(dirname "$0")/.."
seeds="${SEEDS:-1 2 3}"
steps="${STEPS:-30}"
monitor_steps="${MONITOR_STEPS:-3}"
declare -A configs=(
  [static]=configs/overopt_prompt_only.yaml
  [online]=configs/overopt_online_refinement.yaml
  [refined]=configs/overopt_refined.yaml
  [gold_reward]=configs/overopt_gold_reward.yaml
)
for arm in static online refined gold_reward; do  # arm by arm: static against online is complete first
  for seed in $seeds; do
    run="$out/seed$seed/$arm"
    if [ ! -f "$run/overopt.json" ] || [ ! -f "$run/adapter_config.json" ]; then
      monitor="$(python -c 'import json, sys, yaml
monitor = yaml.safe_load(open(sys.argv[1]))["monitor"]
monitor["monitor_steps"] = int(sys.argv[2])
print(json.dumps(monitor))' "${configs[$arm]}" "$monitor_steps")"
      accelerate launch scripts/train_grpo.py --config "${configs[$arm]}" --max_steps "$steps" --seed "$seed" \
        --monitor "$monitor" --output_dir "$run" --run_name "online_experiment_${arm}_seed$seed" --report_to none "$@"
    fi
    if [ ! -f "$run/test_eval.json" ]; then
      python scripts/evaluate.py --model "$run" --prompts data/everyday/test_gold.jsonl --judge '{"backend": "rubric"}' \
        --max_new_tokens 64 --out "$run/test_eval.json"
    fi
  done
done
python scripts/summarize_online_refinement.py "$out"
