#!/bin/bash
# lr_finder.race as SLURM jobs, each one slurm/single_node.sbatch (preemption and requeue included) on one run
# directory: the range test, then one array task per candidate (side by side where the cluster has room), then the
# winner (it also trains any candidate whose task failed).
#   slurm/race.sh configs/fashion_mnist.yaml [key=value ...]
#   SBATCH_OPTS="--time=1:00:00 --partition=gpu" RUN_DIR=runs/my-race slurm/race.sh configs/cifar10_resnet9.yaml
set -euo pipefail
CONFIG=${1:?usage: slurm/race.sh CONFIG [key=value ...]}
shift
export RUN_DIR=${RUN_DIR:-runs/race-$(date +%Y%m%d-%H%M%S)}
PY="${VENV:-.venv}/bin/python"
COUNT=$("$PY" -m superconverge print-config --config "$CONFIG" lr_finder.race=true "$@" |
  "$PY" -c 'import sys, yaml; print(len(yaml.safe_load(sys.stdin)["lr_finder"]["race_factors"]))')
# shellcheck disable=SC2206  # SBATCH_OPTS is a list of options
SUBMIT=(sbatch --parsable --export=ALL ${SBATCH_OPTS:-})
JOB=slurm/single_node.sbatch
TEST=$("${SUBMIT[@]}" "$JOB" "$CONFIG" "$@" lr_finder.race=true lr_finder.race_run=range_test)
CANDIDATES=$("${SUBMIT[@]}" --dependency="afterok:$TEST" --array="0-$((COUNT - 1))" "$JOB" "$CONFIG" "$@" lr_finder.race=true lr_finder.race_run=array)
WINNER=$("${SUBMIT[@]}" --dependency="afterany:$CANDIDATES" "$JOB" "$CONFIG" "$@" lr_finder.race=true)
echo "race in $RUN_DIR: range test job $TEST, $COUNT candidates in array job $CANDIDATES, the winner in job $WINNER"
