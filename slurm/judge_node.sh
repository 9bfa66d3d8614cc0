#!/usr/bin/env bash
# Judge replicas on this node: one `vllm serve JUDGE_MODEL` per JUDGE_TP of the node's GPUs, on ports JUDGE_FIRST_PORT,
# JUDGE_FIRST_PORT+1, ...; stays up until its replicas exit or it is signalled (then it stops them).
# Started by slurm/train_multinode.sbatch (through srun, on each judge node) and slurm/serve_judge.sbatch.
#   JUDGE_MODEL=Qwen/Qwen2.5-7B-Instruct JUDGE_TP=1 JUDGE_FIRST_PORT=8001 LOG_PREFIX=logs/x bash slurm/judge_node.sh
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(pwd)}"
# shellcheck source=slurm/common.sh
source slurm/common.sh
: "${JUDGE_MODEL:?set JUDGE_MODEL}"
JUDGE_TP="${JUDGE_TP:-1}"
JUDGE_FIRST_PORT="${JUDGE_FIRST_PORT:-8001}"
LOG_PREFIX="${LOG_PREFIX:-logs/judge-${SLURM_JOB_ID:-local}}"
HOST="${SLURMD_NODENAME:-$(hostname)}"
mkdir -p "$(dirname "$LOG_PREFIX")"
trap 'stop_servers; exit 0' TERM INT USR1
mapfile -t GPUS < <(visible_gpus)
start_judge_replicas "$JUDGE_MODEL" "$HOST" "$JUDGE_FIRST_PORT" "$JUDGE_TP" "$LOG_PREFIX-$HOST" "${GPUS[@]}"
log "judge replicas on $HOST: ${JUDGE_BASE_URLS[*]}"
rc=0
wait -n || rc=$? # the servers are this shell's only background jobs (bash 4.3+)
log "a judge replica on $HOST exited ($rc); stopping the others"
stop_servers
exit "$rc"
