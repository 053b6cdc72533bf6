# Shared by the sbatch scripts: forward SLURM's early-warning signal to the training processes
# and requeue the job when the trainer stopped on it (exit 75, or summary.json says "preempted": true).
TRAIN_PID=
FORWARD_TO_STEPS=0
STARTED=$(date +%s)
forward_signal() {
  echo "$(date -Is) got $1: asking the trainer to checkpoint and stop"
  if [ "$FORWARD_TO_STEPS" = 1 ]; then
    scancel --signal="$1" "$SLURM_JOB_ID"   # to every node's srun task
  else
    # The workers are children of `superconverge launch`, which leaves USR1 to them (it passes on INT and TERM).
    pkill "-$1" -P "$TRAIN_PID" 2>/dev/null || true
  fi
}
trap 'forward_signal USR1' USR1
trap 'forward_signal TERM' TERM

wait_and_requeue() {
  TRAIN_PID=$1
  while kill -0 "$TRAIN_PID" 2>/dev/null; do
    wait "$TRAIN_PID"   # returns early (>128) when a trapped signal arrives
  done
  wait "$TRAIN_PID"   # its own exit status (bash keeps it), not that of an interrupted wait
  local status=$?
  # The launcher's requeue code (75), or this job's own summary (a stale one from an earlier chunk must not requeue a
  # crash); a race's candidate writes its summary in its own folder, so its code is what tells.
  if [ "$status" = 75 ] || python -c "import json, os, sys; p = sys.argv[1]; sys.exit(0 if os.path.getmtime(p) >= float(sys.argv[2]) and json.load(open(p)).get('preempted') else 1)" \
      "$RUN_DIR/summary.json" "$STARTED" 2>/dev/null; then
    echo "$(date -Is) checkpoint saved: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  exit "$status"
}
