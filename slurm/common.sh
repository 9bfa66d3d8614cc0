#!/usr/bin/env bash
# Helpers shared by the slurm/*.sbatch scripts: sourced, never run. Bash 4+.
#
# Pre-emption protocol (see rubric_rft/training/preemption.py):
#   * `#SBATCH --signal=B:USR1@300` makes Slurm send SIGUSR1 to the batch shell 300 s before the time limit
#     (clusters that pre-empt with `SlurmctldParameters=preempt_send_user_signal` send it on pre-emption too).
#   * The batch shell traps it and forwards it to the training processes; their CheckpointOnSignal callback saves
#     a checkpoint at the end of the step in progress and stops training; the main process then exits with 75
#     (EX_TEMPFAIL), which torchrun reports as its own exit code 1: either way, non-zero.
#   * The batch shell then runs `scontrol requeue $SLURM_JOB_ID`; the job restarts with the same id, finds the
#     checkpoint in output_dir and passes `--resume_from_checkpoint true`.
#   * SIGTERM (scancel, the hard time limit) is forwarded too, so training may still save, but never requeues:
#     a cancelled job stays cancelled.
# The launcher (accelerate launch / torchrun) runs with SIGUSR1 ignored: torchrun does not handle SIGUSR1 and its
# default action would kill it. The workers inherit "ignored", and CheckpointOnSignal installs its own handler.

log() { printf '%s [%s] %s\n' "$(date '+%F %T')" "${SLURM_JOB_ID:-local}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Environment: a virtualenv or conda setup named by RUBRIC_RFT_ENV (a file to source), if any.
activate_env() {
  if [[ -n "${RUBRIC_RFT_ENV:-}" ]]; then
    # a user-chosen activation script, which shellcheck cannot follow
    # shellcheck source=/dev/null
    source "$RUBRIC_RFT_ENV"
  fi
}

# W&B reads everything from the environment (WANDB_API_KEY, WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE, ...); no key is
# ever written in these scripts. A requeued job keeps its Slurm id, so it keeps appending to the same W&B run.
configure_wandb_resume() {
  export WANDB_RUN_ID="${WANDB_RUN_ID:-rubric-rft-${SLURM_JOB_ID:-local}}"
  export WANDB_RESUME="${WANDB_RESUME:-allow}"
}

# The GPU ids this job may use, one per line: CUDA_VISIBLE_DEVICES when Slurm set it, else every GPU nvidia-smi lists.
visible_gpus() {
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES"
  else
    nvidia-smi --query-gpu=index --format=csv,noheader
  fi
}

# join_by SEP ITEM... -> ITEMs joined with SEP
join_by() {
  local sep="$1" out="" item
  shift
  for item in "$@"; do out+="${out:+$sep}$item"; done
  printf '%s\n' "$out"
}

# wait_for_http URL TIMEOUT_S [PID...]: poll URL (every HEALTH_POLL_S, default 5 s) until it answers 200; fail when
# the time is up or one of the PIDs (the servers being waited for) has died.
wait_for_http() {
  local url="$1" timeout_s="$2" pid
  shift 2
  local deadline=$((SECONDS + timeout_s))
  log "waiting for $url (up to ${timeout_s}s)"
  until curl --silent --fail --max-time 5 --output /dev/null "$url"; do
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null || die "the server for $url (pid $pid) exited before it was ready; see its log"
    done
    ((SECONDS < deadline)) || die "$url did not answer within ${timeout_s}s"
    sleep "${HEALTH_POLL_S:-5}"
  done
  log "$url is up"
}

# yaml_get CONFIG KEY [SUBKEY]: a top-level value (or one inside a mapping) of a YAML file; empty if absent.
yaml_get() {
  python - "$@" <<'PY'
import sys, yaml
value = yaml.safe_load(open(sys.argv[1]))
for key in sys.argv[2:]:
    value = value.get(key) if isinstance(value, dict) else None
print("" if value is None else value)
PY
}

# judge_json CONFIG URL...: the config's `judge:` mapping as JSON, with base_urls replaced by the URLs given, for
# `--judge` (a command-line --judge replaces the whole mapping, so every other field is carried over).
judge_json() {
  python - "$@" <<'PY'
import json, sys, yaml
judge = (yaml.safe_load(open(sys.argv[1])) or {}).get("judge")
if not isinstance(judge, dict):
    sys.exit(f"{sys.argv[1]} has no judge: mapping to take the other judge settings from")
judge["base_urls"] = sys.argv[2:]
print(json.dumps(judge))
PY
}

# resume_args OUTPUT_DIR: `--resume_from_checkpoint true` when output_dir holds a checkpoint whose trainer_state.json
# was written (the trainer writes it after the weights and optimizer state). If the newest checkpoint was cut short,
# the newest complete one is named instead.
resume_args() {
  local output_dir="$1" newest="" step
  [[ -d "$output_dir" ]] || return 0
  while IFS= read -r step; do
    [[ -n "$newest" ]] || newest="$step"
    if [[ -f "$output_dir/checkpoint-$step/trainer_state.json" ]]; then
      if [[ "$step" == "$newest" ]]; then
        log "resuming from the last checkpoint in $output_dir (checkpoint-$step)"
        printf '%s\n' --resume_from_checkpoint true
      else
        log "checkpoint-$newest is incomplete; resuming from checkpoint-$step"
        printf '%s\n' --resume_from_checkpoint "$output_dir/checkpoint-$step"
      fi
      return 0
    fi
  done < <(find "$output_dir" -mindepth 1 -maxdepth 1 -type d -name 'checkpoint-*' -printf '%f\n' |
    sed -n 's/^checkpoint-\([0-9][0-9]*\)$/\1/p' | sort -nr)
  if [[ -n "$newest" ]]; then
    log "no complete checkpoint in $output_dir; starting from scratch"
  fi
}

# run_ignoring_usr1 CMD...: CMD in the background with SIGUSR1 ignored (see the protocol above); sets LAUNCHER_PID.
run_ignoring_usr1() {
  (
    trap '' USR1
    exec "$@"
  ) &
  LAUNCHER_PID=$!
}

# signal_workers SIGNAL: deliver SIGNAL to the training worker processes, the launcher's children.
signal_workers() {
  local sig="$1"
  [[ -n "${LAUNCHER_PID:-}" ]] || return 0
  pkill "-$sig" -P "$LAUNCHER_PID" || true
}

# wait_for_pid PID: returns PID's exit status, waiting on through the traps that interrupt `wait`.
#   rc=0; wait_for_pid "$pid" || rc=$?
wait_for_pid() {
  local pid="$1" rc
  while :; do
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || return "$rc"
  done
}

# Installed by the sbatch scripts: USR1 sets PREEMPTED and is forwarded; TERM is forwarded only.
PREEMPTED=0
on_usr1() {
  PREEMPTED=1
  log "SIGUSR1: the job is about to end; asking training to checkpoint and stop"
  "${FORWARD_SIGNAL:-signal_workers}" USR1
}
on_term() {
  log "SIGTERM: forwarding to training (no requeue)"
  "${FORWARD_SIGNAL:-signal_workers}" TERM
}

# finish RC: requeue when SIGUSR1 came and training stopped early (non-zero exit: EX_TEMPFAIL from a single
# process, 1 from torchrun); otherwise exit with RC.
finish() {
  local rc="$1"
  if ((PREEMPTED)) && ((rc != 0)); then
    log "training stopped for pre-emption (exit $rc); requeueing job ${SLURM_JOB_ID:-?}"
    scontrol requeue "${SLURM_JOB_ID:?}"
    exit 0
  fi
  if ((PREEMPTED)); then
    log "SIGUSR1 came but training had finished (exit 0); not requeueing"
  fi
  log "training exited with $rc"
  exit "$rc"
}

# rollout_server_command MODEL HOST PORT TP: sets ROLLOUT_SERVER_CMD to the vLLM server that generates the policy's
# rollouts, tensor-parallel over TP GPUs, with ROLLOUT_GPU_MEMORY_UTILIZATION (0.9) and ROLLOUT_MAX_MODEL_LEN (4096)
# from the environment; run it with CUDA_VISIBLE_DEVICES set, or as an srun step. It is vLLM's own `vllm serve`, as
# TRL 1.16 documents it (it deprecates `trl vllm-serve`, which now only runs this command):
#   * VLLM_SERVER_DEV_MODE=1 exposes the weight-transfer and /reset_prefix_cache endpoints TRL's client calls;
#   * --weight-transfer-config: the NCCL engine that loads the policy's weights after every step;
#   * --logprobs-mode processed_logprobs: logprobs after temperature scaling, which TRL's importance-sampling
#     correction compares with the trainer's; --max-logprobs -1: no cap on logprobs per token.
# TRL adds --enable-scale-out too on vLLM >= 0.30: only multimodal prompts use what it enables.
ROLLOUT_SERVER_CMD=()
rollout_server_command() {
  local model="$1" host="$2" port="$3" tp="$4"
  [[ -n "$model" ]] || die "no model for the rollout server"
  # shellcheck disable=SC2034 # run by the sbatch scripts
  ROLLOUT_SERVER_CMD=(
    env VLLM_SERVER_DEV_MODE=1 vllm serve "$model"
    --host "$host" --port "$port"
    --tensor-parallel-size "$tp"
    --gpu-memory-utilization "${ROLLOUT_GPU_MEMORY_UTILIZATION:-0.9}"
    --max-model-len "${ROLLOUT_MAX_MODEL_LEN:-4096}"
    --weight-transfer-config '{"backend": "nccl"}'
    --logprobs-mode processed_logprobs
    --max-logprobs -1
  )
}

# start_judge_replicas MODEL HOST FIRST_PORT TP LOG_PREFIX GPU...: one `vllm serve` of the judge MODEL per TP of
# the GPUs given, on ports FIRST_PORT, FIRST_PORT+1, ...; appends their pids to SERVER_PIDS and their base URLs
# (http://HOST:PORT/v1) to JUDGE_BASE_URLS. A judge needs its own plain `vllm serve`: the rollout server's
# weights are overwritten by the policy's at every step.
SERVER_PIDS=()
JUDGE_BASE_URLS=()
start_judge_replicas() {
  local model="$1" host="$2" port="$3" tp="$4" log_prefix="$5"
  shift 5
  local gpus=("$@") i
  ((${#gpus[@]} > 0 && ${#gpus[@]} % tp == 0)) || die "judge: ${#gpus[@]} GPUs do not split into replicas of $tp"
  for ((i = 0; i < ${#gpus[@]}; i += tp)); do
    log "judge replica on GPUs $(join_by , "${gpus[@]:i:tp}") -> http://$host:$port/v1 (log: $log_prefix-judge-$port.log)"
    # JUDGE_API_KEY (from the environment) becomes the replica's key: vLLM reads VLLM_API_KEY, so the key never
    # appears on a command line; empty means no authentication
    VLLM_API_KEY="${JUDGE_API_KEY:-}" CUDA_VISIBLE_DEVICES="$(join_by , "${gpus[@]:i:tp}")" vllm serve "$model" \
      --served-model-name "$model" \
      --host 0.0.0.0 --port "$port" \
      --tensor-parallel-size "$tp" \
      --gpu-memory-utilization "${JUDGE_GPU_MEMORY_UTILIZATION:-0.9}" \
      --max-model-len "${JUDGE_MAX_MODEL_LEN:-8192}" \
      --max-num-seqs "${JUDGE_MAX_NUM_SEQS:-256}" \
      --enable-prefix-caching \
      >"$log_prefix-judge-$port.log" 2>&1 &
    SERVER_PIDS+=("$!")
    JUDGE_BASE_URLS+=("http://$host:$port/v1")
    port=$((port + 1))
  done
}

# stop_servers: SIGTERM to every server this shell started (vLLM shuts its workers down on SIGTERM).
stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
