#!/bin/bash
# One per node (started by srun in multi_node.sbatch, or by hand with the same variables):
# `superconverge launch` (Accelerate's launcher, exiting with the ranks' code) for this machine,
# with static rendezvous at HEAD_NODE:MAIN_PORT and the machine rank from SLURM_NODEID.
set -uo pipefail
CONFIG=${1:?usage: launch_node.sh CONFIG [key=value ...]}
shift
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
PER_NODE=${NPROC_PER_NODE:-$(( GPUS > 0 ? GPUS : 1 ))}
NNODES=${SLURM_NNODES:?}
superconverge launch --multi_gpu --num_machines "$NNODES" --machine_rank "${SLURM_NODEID:?}" \
  --num_processes $(( NNODES * PER_NODE )) --main_process_ip "${HEAD_NODE:?}" --main_process_port "${MAIN_PORT:?}" \
  --rdzv_backend static --same_network --dynamo_backend no \
  --config "$CONFIG" output_dir="${RUN_DIR:?}" trainer.resume=auto "$@" &
PID=$!
trap 'pkill -USR1 -P $PID' USR1
trap 'pkill -TERM -P $PID' TERM
while kill -0 "$PID" 2>/dev/null; do
  wait "$PID"   # returns early (>128) when a trapped signal arrives
done
# The launcher's own exit status (bash keeps it): a signal that lands just as it exits must not
# turn a finished run into a failed task.
wait "$PID"
