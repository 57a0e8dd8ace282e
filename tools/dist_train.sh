#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG GPUS [tools/train.py args...]
#   GPUS = processes on THIS machine (one per GPU; with --device cpu, CPU processes on gloo).
#   Multi-node: set NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR (address of node 0) and PORT on every node.
#   train.batch_size is the TOTAL batch over all NNODES x GPUS processes.
# Example: NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 tools/dist_train.sh configs/voc.py 4 --resume
# A failing process prints its error (a user error: one "error:" line on rank 0); this script then prints one
# summary line and exits with that process's code (WECLIP_DEBUG=1: torchrun's full report).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

exec "$PYTHON" -m weclip.utils.launch \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch \
    "${@:3}"
