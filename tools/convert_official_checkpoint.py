"""Convert a checkpoint saved by the authors' code into a checkpoint of this library (decoder only).

The authors save the whole model's state dict (spec §6, §12.11): for WeCLIP the decoder under
``decoder_fts_fuse.*`` / ``decoder.*``, the frozen CLIP under ``encoder.*`` (with the resized positional table
``encoder.visual.positional_embedding_new``) and PAR's constant kernel under ``par.*``. Only the trained part is
kept, renamed by the model (``load_official_state``; WeCLIP: ``weclip.models.official_names``) and checked
strictly against the model the config describes; CLIP comes from ``model.backbone.weights`` as for any
checkpoint. (``init_model`` and every tool also load the authors' files directly; converting once saves the
renaming and gives a file that says where it came from.)

    python tools/convert_official_checkpoint.py configs/voc.py WeCLIP_voc/iter_30000.pth work_dirs/official/voc.pth
    python tools/convert_official_checkpoint.py configs/coco.py coco_iter_80000.pth out.pth
    python tools/infer.py configs/voc.py work_dirs/official/voc.pth

Output (atomic): ``model`` (the trainable module's state dict, our names), ``config`` (plain dict),
``iteration`` (``--iteration``, or the number in a name like ``iter_30000.pth``, else None), ``meta``. It has no
optimiser state: it is for inference and evaluation, not to resume.
"""

import argparse
import logging
import os
import re
import time
from typing import Any, Dict, List, Optional

import torch

import weclip
from weclip.apis import init_model
from weclip.config import load_config, to_plain
from weclip.engine.checkpoint import load_weights, trainable_state_dict
from weclip.errors import UserInputError
from weclip.utils.cli import run_main
from weclip.utils.io import atomic_path

logger = logging.getLogger("weclip")


def iteration_from_name(path: str) -> Optional[int]:
    """The iteration in a file name such as ``iter_30000.pth`` / ``model_iter_80000.pth``, else None."""
    match = re.search(r"iter[_-]?(\d+)", os.path.basename(path))
    return int(match.group(1)) if match else None


def convert(
    config: str, official: str, out: str, iteration: Optional[int] = None
) -> Dict[str, Any]:
    """Convert ``official`` into ``out`` with the model ``config`` describes; returns the written dict."""
    if os.path.abspath(official) == os.path.abspath(out):
        raise UserInputError(
            f"refusing to overwrite the authors' checkpoint {official} with the converted one"
        )
    cfg = load_config(config)
    # the CLIP weights are not part of the output: a random CLIP of the configured architecture will do
    model = init_model(config, None, "cpu", cfg_options={"model.backbone.weights": "random"})
    if not load_weights(model, official)["official"]:
        raise UserInputError(
            f"{official} is not a checkpoint of the authors' code (it has our key names)"
        )
    checkpoint = {
        "model": trainable_state_dict(model),
        "config": to_plain(cfg),
        "iteration": iteration if iteration is not None else iteration_from_name(official),
        "meta": {
            "source": os.path.abspath(official),
            "converted_from": "the authors' code",
            "num_classes": int(model.num_classes),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__,
            "weclip": weclip.__version__,
        },
    }
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    return checkpoint


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert an authors' checkpoint into a checkpoint of this library."
    )
    parser.add_argument("config", help="config of the model, e.g. configs/voc.py")
    parser.add_argument(
        "official", help="checkpoint saved by the authors' code (whole-model state dict)"
    )
    parser.add_argument("out", help="output checkpoint (e.g. work_dirs/official/voc_30000.pth)")
    parser.add_argument("--iteration", type=int, default=None, help="iteration to record")
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    ckpt = convert(args.config, args.official, args.out, args.iteration)
    print(
        f"wrote {args.out}: {len(ckpt['model'])} tensors, {ckpt['meta']['num_classes']} classes, "
        f"iteration {ckpt['iteration']}"
    )
    return ckpt


if __name__ == "__main__":
    run_main(main)
