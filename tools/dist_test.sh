#!/usr/bin/env bash
# Distributed inference with torchrun: tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/infer.py args...]
#   The images are sharded over the GPUS processes and the confusion matrices summed (one metrics.json).
#   TOOL=tools/eval_pseudo.py tools/dist_test.sh ... runs the pseudo-label rows the same way.
#   Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as for tools/dist_train.sh.
# Example: tools/dist_test.sh configs/voc.py work_dirs/voc/checkpoints/iter_30000.pth 4 --crf --crf-workers 4
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/infer.py arguments...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
TOOL=${TOOL:-"$(dirname "$0")/infer.py"}

exec "$PYTHON" -m weclip.utils.launch \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOL" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch \
    "${@:4}"
