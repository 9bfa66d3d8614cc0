#!/usr/bin/env bash
# One training node's part of a multi-node run: `accelerate launch` (torchrun) of the node's GPUs, as machine
# SLURM_PROCID of NUM_MACHINES. Started by slurm/train_multinode.sbatch through srun, one task per training node, with
#   ACCELERATE_CONFIG NUM_MACHINES GPUS_PER_NODE MAIN_PROCESS_IP MAIN_PROCESS_PORT
# in the environment; its arguments go to scripts/train_grpo.py.
# srun forwards the signals it gets (SIGUSR1 from the batch script's trap) to this script, which passes them on to
# the training processes; the launcher itself runs with SIGUSR1 ignored (see slurm/common.sh).
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(pwd)}"
# shellcheck source=slurm/common.sh
source slurm/common.sh
: "${ACCELERATE_CONFIG:?}" "${NUM_MACHINES:?}" "${GPUS_PER_NODE:?}" "${MAIN_PROCESS_IP:?}" "${MAIN_PROCESS_PORT:?}"
MACHINE_RANK="${SLURM_PROCID:?run through srun, one task per node}"
trap 'log "SIGUSR1 on $(hostname)"; signal_workers USR1' USR1
trap 'log "SIGTERM on $(hostname)"; signal_workers TERM' TERM
log "machine $MACHINE_RANK of $NUM_MACHINES on $(hostname), main process at $MAIN_PROCESS_IP:$MAIN_PROCESS_PORT"
run_ignoring_usr1 accelerate launch \
  --config_file "$ACCELERATE_CONFIG" \
  --num_machines "$NUM_MACHINES" \
  --num_processes "$((NUM_MACHINES * GPUS_PER_NODE))" \
  --machine_rank "$MACHINE_RANK" \
  --main_process_ip "$MAIN_PROCESS_IP" \
  --main_process_port "$MAIN_PROCESS_PORT" \
  scripts/train_grpo.py "$@"
rc=0
wait_for_pid "$LAUNCHER_PID" || rc=$?
exit "$rc"
