#!/bin/bash
# One node's part of a cluster/train.sbatch job; srun runs it on every node of the job.
#   cluster/node_launch.sh TRAINER ARGS...     (MAIN_HOST, MAIN_PORT from the batch script)
# It runs on the node itself, so SLURM_NODEID is this node's own machine rank (written into the
# batch script instead, it would be expanded once, on the first node: every node rank 0).
set -euo pipefail
PY=${VOC_PYTHON:-.venv/bin/python}  # the Python with the project installed
[[ -x $PY ]] || PY=python3
nodes=${SLURM_JOB_NUM_NODES:-1}
node=${SLURM_NODEID:-0}

# Processes here = the GPUs SLURM gave the job on this node (CUDA_VISIBLE_DEVICES), else CPU_PROCS_PER_NODE.
gpus=0  # no nvidia-smi, no NVIDIA GPU: skip a torch import (seconds) on CPU nodes
command -v nvidia-smi >/dev/null && gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
if (( gpus > 0 )); then
    procs=$gpus
    precision=fp16
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_bf16_supported() else 1)' && precision=bf16
else
    procs=${CPU_PROCS_PER_NODE:-1}
    precision=no
    export ACCELERATE_USE_CPU=true  # gloo
fi
total=$((procs * nodes))
first=$((node * procs))
echo "node $node = ${SLURMD_NODENAME:-$(hostname)}: global ranks $first-$((first + procs - 1)) of $total" \
     "($procs per node, $([[ $gpus -gt 0 ]] && echo "GPU, $precision" || echo "CPU, gloo"))"

# Stop signals are for the trainers (each installs its own handler: checkpoint, exit 0); the
# launcher ignores them (inherited from here) and then reports success. torchrun handles SIGTERM
# itself (forwards it, waits, reports failure) unless told otherwise: PET_SIGNALS_TO_HANDLE is
# its --signals-to-handle (recent torch; older ones still handle SIGTERM, not USR1).
trap '' USR1 TERM
export PET_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT
multi=()
(( total > 1 )) && multi=(--multi_gpu --machine_rank "$node" --same_network
    --main_process_ip "$MAIN_HOST" --main_process_port "$MAIN_PORT")
# shellcheck disable=SC2086  # VOC_TRAIN_ENTRY is a command line (test-only)
exec "$PY" -m trainer.launch ${multi[@]+"${multi[@]}"} --num_processes "$total" --num_machines "$nodes" \
    --mixed_precision "$precision" --dynamo_backend no ${VOC_TRAIN_ENTRY:-trainer/main.py} \
    --mixed-precision "$precision" "$@"
