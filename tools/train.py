"""Train WeCLIP (the decoder; CLIP stays frozen).

1 GPU (the authors' setting: batch 4 on one GPU, spec §8):
    python tools/train.py configs/voc.py

N GPUs on one machine (train.batch_size is the TOTAL batch, split evenly over the GPUs):
    tools/dist_train.sh configs/voc.py 4                      # 4 GPUs x 1 image

2 machines x 4 GPUs (run on every machine, NODE_RANK 0 on the one at MASTER_ADDR):
    NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh configs/coco.py 4 \
        --cfg-options train.batch_size=8
    NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh configs/coco.py 4 \
        --cfg-options train.batch_size=8

CPU (tests, the toy world):
    python tools/train.py configs/toy.py --device cpu

Resume: ``--resume`` (= ``--resume auto``) continues from WORK_DIR/checkpoints/latest (fresh start if none);
``--resume PATH`` from that checkpoint. Outputs in WORK_DIR (CLI --work-dir > ``work_dir`` in the config >
work_dirs/<config name>): config.py (resolved), <timestamp>.log, tb/ (TensorBoard), checkpoints/.
"""

import argparse
import logging
import os
import sys

from weclip.config import dump_config, load_config, resolve_work_dir
from weclip.engine.trainer import run_training
from weclip.utils.cli import add_runtime_args, run_main
from weclip.utils.dist import cleanup, init_distributed
from weclip.utils.logging import add_log_file

logger = logging.getLogger("weclip")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train WeCLIP", formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("config", help="config file, e.g. configs/voc.py")
    parser.add_argument("--work-dir", help="where logs, TensorBoard and checkpoints go")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|PATH",
        help="'auto' (the default when the flag is given without a value): continue from\n"
        "WORK_DIR/checkpoints/latest, or start fresh if there is none; PATH: that checkpoint",
    )
    add_runtime_args(
        parser,
        cfg_options_help="override existing config keys, e.g. train.max_iters=1000 "
        "data.root=/data/VOC2012",
    )
    parser.add_argument(
        "--amp", action="store_true", help="bf16 autocast of the forward on CUDA (sets train.amp)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="overrides train.seed (each rank uses seed + rank)"
    )
    # torch.distributed.launch passes --local-rank; torchrun uses the LOCAL_RANK variable instead.
    parser.add_argument(
        "--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    dist_info = init_distributed(args.launcher, args.device)
    try:
        options = dict(args.cfg_options)
        if args.seed is not None:
            options["train.seed"] = args.seed
        if args.amp:
            options["train.amp"] = True
        cfg = load_config(args.config, options)
        work_dir = resolve_work_dir(cfg, args.config, args.work_dir)
        cfg.work_dir = work_dir
        log_file = add_log_file(work_dir, rank=dist_info.rank)
        if dist_info.rank == 0:
            config_path = dump_config(cfg, work_dir)
            logger.info("Command: %s", " ".join(sys.argv))
            logger.info("Config %s -> %s; log %s", args.config, config_path, log_file)
        run_training(cfg, work_dir, dist_info, resume=args.resume)
    finally:
        cleanup()


if __name__ == "__main__":
    run_main(main)
