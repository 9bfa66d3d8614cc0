#!/usr/bin/env bash
# GPU checks of the training paths through scripts/train_grpo.py, on one CUDA GPU with the tiny model:
#   1a/1b GRPO with `generate` rollouts in bf16, LoRA and full fine-tuning (a reward logged at every step);
#   2     `--dtype bfloat16` reaches the model (the saved config and weights are bfloat16);
#   3     DeepSpeed ZeRO-3 (configs/accelerate/zero3.yaml, one process) with the monitor and best-by-gold;
#   4     a kill inside the save of checkpoint-4, then `--resume_from_checkpoint true`.
# Every check runs even after one fails. Writes $OUT/gpu_check.json (device, versions, each check's PASS/FAIL,
# figures and seconds) and $OUT/gpu_check.log; exits 1 if a check failed. Each run is cut off after 150 s.
# On a machine without a package registry, with the wheels of scripts/gpu_wheels.sh in .whl/:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit
OUT="${OUT:-outputs/gpu_check}"
WORK="$(mktemp -d)"
STARTED="$(date +%s)"
mkdir -p "$OUT"
rm -f "$OUT/gpu_check.json"
export OUT WORK STARTED RUBRIC_RFT_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DEADLINE=$((SECONDS + 480))  # runs are cut short in time for every check to be judged within 10 minutes

# train NAME RUN LAUNCHER...: scripts/train_grpo.py into $WORK/RUN, logged to $WORK/NAME.log; sets $rc.
train() {
  local name="$1" run="$2" left=$((DEADLINE - SECONDS))
  shift 2
  ((left > 150)) && left=150
  ((left < 10)) && left=10
  echo "=== $name: $*"
  timeout --kill-after=15 "$left" "$@" --model_name_or_path "$MODEL" --output_dir "$WORK/$run" \
    --dataset_path data/everyday/train_rules.jsonl --heldout_path data/everyday/heldout_rules.jsonl \
    --num_samples 2 --per_device_train_batch_size 4 --num_generations 4 --max_completion_length 16 \
    --learning_rate 1e-3 --save_steps 2 --report_to none --use_cpu false --bf16 true \
    --gradient_checkpointing false 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc"
}

# verdict NUMBER TITLE SECONDS CHECK ARGS...: prints PASS/FAIL with the figures, adds them to gpu_check.json.
verdict() { python3 "$WORK/verdict.py" "$@" || failed=1; }

cat > "$WORK/verdict.py" <<'PY'
import json, os, platform, re, subprocess, sys, time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

work, summary = Path(os.environ["WORK"]), Path(os.environ["OUT"]) / "gpu_check.json"


def steps(path):
    path = Path(path)
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def devices(pattern):
    """Where the tensors of a saved optimizer state were when they were saved (their storages' locations)."""
    import torch
    found = set()
    for path in work.glob(pattern):
        torch.load(path, map_location=lambda storage, location: found.add(location) or storage, weights_only=False)
    return sorted(found)


def grpo(run, rc, weights):
    metrics = (work / run / "metrics.jsonl").read_text().splitlines()
    rewards = {r["step"]: round(r["reward"], 4) for r in map(json.loads, metrics) if "reward" in r}
    saved = (work / run / weights).exists()
    figures = {"exit": int(rc), "reward_by_step": rewards, weights: saved,
               "optimizer_state_on": devices(f"{run}/checkpoint-2/optimizer.pt")}
    on_gpu = "cuda:0" in figures["optimizer_state_on"]
    return int(rc) == 0 and sorted(rewards) == [1, 2, 3] and saved and on_gpu, figures


def dtype(run):
    from safetensors.torch import load_file
    saved = json.loads((work / run / "config.json").read_text()).get("dtype")
    tensors = sorted({str(w.dtype) for w in load_file(work / run / "model.safetensors").values()})
    return saved == "bfloat16" and tensors == ["torch.bfloat16"], {"config_dtype": saved, "tensor_dtypes": tensors}


def zero3(run, rc, model):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    def shapes(path):
        return {name: tuple(w.shape) for name, w in load_file(path).items()}

    best = work / run / "best_gold"
    same = shapes(best / "model.safetensors") == shapes(Path(model) / "model.safetensors")
    figures = {"exit": int(rc), "overopt_steps": steps(work / run / "overopt.jsonl"),
               "best_gold_step": json.loads((best / "best_gold.json").read_text())["step"],
               "best_gold_shapes_match_start": same,
               "best_gold_parameters": AutoModelForCausalLM.from_pretrained(best).num_parameters(),
               "optimizer_state_on": devices(f"{run}/checkpoint-2/global_step2/*optim_states.pt")}
    return (int(rc) == 0 and figures["overopt_steps"] == [0, 2, 4] and figures["best_gold_step"] in (0, 2, 4)
            and same and "cuda:0" in figures["optimizer_state_on"]), figures


def resume(run, killed_rc, rc):
    log = (work / "resumed.log").read_text(errors="replace")
    restored = re.search(r"monitor: resumed from \S*checkpoint-2 with 2 evaluations", log) is not None
    final_state = json.loads((work / run / "checkpoint-6" / "trainer_state.json").read_text())
    figures = {"killed_exit": int(killed_rc), "overopt_steps_when_killed": steps(work / "killed-overopt.jsonl"),
               "checkpoint4_weights_written": "model.safetensors" in (work / "killed-checkpoint-4.txt").read_text(),
               "resumed_exit": int(rc), "checkpoint4_reported_incomplete": "checkpoint-4 is incomplete" in log,
               "monitor_restored_from_checkpoint2": restored, "overopt_steps": steps(work / run / "overopt.jsonl"),
               "final_global_step": final_state["global_step"],
               "optimizer_state_on": devices(f"{run}/checkpoint-6/optimizer.pt")}
    expected = {"killed_exit": 137, "overopt_steps_when_killed": [0, 2, 4], "checkpoint4_weights_written": True,
                "resumed_exit": 0, "checkpoint4_reported_incomplete": True, "monitor_restored_from_checkpoint2": True,
                "overopt_steps": [0, 2, 4, 6], "final_global_step": 6, "optimizer_state_on": ["cuda:0"]}
    return figures == expected, figures


def environment():
    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        device = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        device = None
    names = ["torch", "transformers", "accelerate", "trl", "deepspeed", "peft", "datasets", "pyarrow", "fsspec",
             "pydantic", "typing-extensions", "anyio", "idna"]
    return {"device": device, "python": platform.python_version(),
            "versions": {name: installed(name) for name in names}, "checks": []}


if sys.argv[1] == "env":
    summary.write_text(json.dumps(environment(), indent=1) + "\n")
    sys.exit(0)
number, title, seconds, check, *args = sys.argv[1:]
try:
    ok, figures = globals()[check](*args)
except Exception as exc:  # a missing file or a failed load fails the check, with the reason
    ok, figures = False, {"error": f"{type(exc).__name__}: {exc}"}
result = "PASS" if ok else "FAIL"
print(f"[{number}] {result} {title} ({seconds} s): {json.dumps(figures)}", flush=True)
record = json.loads(summary.read_text())
record["checks"].append({"check": number, "title": title, "result": result, "seconds": int(seconds), **figures})
record["passed"] = sum(c["result"] == "PASS" for c in record["checks"])
record["failed"] = len(record["checks"]) - record["passed"]
record["elapsed_s"] = round(time.time() - int(os.environ["STARTED"]))
summary.write_text(json.dumps(record, indent=1) + "\n")
sys.exit(0 if ok else 1)
PY

main() {
  failed=0
  nvidia-smi || true
  python3 "$WORK/verdict.py" env
  MODEL="$(python3 -c 'from rubric_rft.llm.weights import resolve_model, TINY_MODEL_ID
print(resolve_model(TINY_MODEL_ID))' | tail -n 1)"  # the last line: the tokenizer's training prints blank ones
  echo "tiny model: $MODEL"
  local launch=(python3 -m accelerate.commands.launch)  # `accelerate launch`, whichever bin folder is on PATH
  local single=("${launch[@]}" --config_file configs/accelerate/single_gpu.yaml scripts/train_grpo.py)
  local monitor='{"heldout_path": "data/everyday/heldout_prompt_only.jsonl", "monitor_steps": 2,
    "gold": {"rubrics_path": "data/everyday/heldout_rules.jsonl"}, "num_prompts": 3, "samples_per_prompt": 2,
    "max_new_tokens": 8}'

  local start=$SECONDS
  train lora lora "${single[@]}" --use_peft true --lora_target_modules all-linear --max_steps 3
  verdict 1a "GRPO, generate rollouts, bf16, LoRA" $((SECONDS - start)) grpo lora "$rc" adapter_model.safetensors

  start=$SECONDS
  train full full "${single[@]}" --use_peft false --dtype bfloat16 --max_steps 3
  verdict 1b "GRPO, generate rollouts, bf16, full fine-tuning" $((SECONDS - start)) grpo full "$rc" model.safetensors
  verdict 2 "--dtype bfloat16 reaches the model" 0 dtype full

  start=$SECONDS
  train zero3 zero3 "${launch[@]}" --config_file configs/accelerate/zero3.yaml --num_processes 1 \
    scripts/train_grpo.py --use_peft false --monitor "$monitor" --max_steps 4
  verdict 3 "ZeRO-3 on one GPU, monitor and best-by-gold" $((SECONDS - start)) zero3 zero3 "$rc" "$MODEL"

  # The driver of tests/test_checkpoints.py: the process dies while writing checkpoint-4's trainer_state.json.
  start=$SECONDS
  python3 -c 'import sys; sys.path.insert(0, "tests")
from test_checkpoints import KILLED_INSIDE_THE_SAVE; print(KILLED_INSIDE_THE_SAVE)' > "$WORK/killed_inside_the_save.py"
  train killed resume python3 "$WORK/killed_inside_the_save.py" scripts/train_grpo.py --use_peft false \
    --monitor "$monitor" --max_steps 6
  local killed=$rc
  cp "$WORK/resume/overopt.jsonl" "$WORK/killed-overopt.jsonl"  # what the killed run left behind
  ls "$WORK/resume/checkpoint-4" > "$WORK/killed-checkpoint-4.txt"
  train resumed resume python3 scripts/train_grpo.py --use_peft false --monitor "$monitor" --max_steps 6 \
    --resume_from_checkpoint true
  verdict 4 "kill inside a checkpoint save, then resume" $((SECONDS - start)) resume resume "$killed" "$rc"

  echo "=== summary after $SECONDS s"
  cat "$OUT/gpu_check.json"
  return "$failed"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
