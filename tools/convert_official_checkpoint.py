"""Convert a checkpoint saved by the authors' WeCLIP code into a decoder checkpoint our tools load.

The authors save the whole model's state dict (spec §6, §12.11): the decoder under
``decoder_fts_fuse.*`` (fusion MLPs + fuse conv) and ``decoder.*`` (transformer + classifier), the frozen
CLIP under ``encoder.*`` (including the resized positional table ``encoder.visual.positional_embedding_new``)
and PAR's constant kernel under ``par.*``. Only the decoder is trained, so only the decoder is kept: its
tensors are renamed with the mapping of ``weclip.models.official_names`` and loaded, strictly, into the
decoder that ``--config`` describes (class count, widths, layers); CLIP comes from
``model.backbone.weights`` as for any of our checkpoints.

    python tools/convert_official_checkpoint.py WeCLIP_voc/iter_30000.pth work_dirs/official/voc_30000.pth
    python tools/convert_official_checkpoint.py coco_iter_80000.pth out.pth --config configs/coco.py
    # then, e.g.
    python tools/infer.py configs/voc.py work_dirs/official/voc_30000.pth

Output (written atomically), the decoder part of our training checkpoints (``weclip.engine.checkpoint``)::

    model      WeCLIPDecoder state dict (our names)
    config     the resolved config the decoder was built from (plain dict)
    iteration  --iteration, or the number in a file name like ``iter_30000.pth``, else None
    meta       {"source", "converted_from": "authors' WeCLIP code", "num_classes", "ignored_keys", "time",
                "torch", "weclip"}

It has no optimizer state: it is for inference and evaluation (``load_decoder_checkpoint``), not to resume.
"""

import argparse
import logging
import os
import re
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.config import DictAction

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, REPO)  # the repository, for `weclip`

import weclip  # noqa: E402
from weclip.config import load_config, to_plain  # noqa: E402
from weclip.models.decoder import WeCLIPDecoder, build_decoder  # noqa: E402
from weclip.models.official_names import (  # noqa: E402
    IGNORED_OFFICIAL_PREFIXES,
    load_official_decoder_state,
)
from weclip.utils.io import atomic_path  # noqa: E402

logger = logging.getLogger("weclip")

DEFAULT_CONFIG = os.path.join(REPO, "configs", "voc.py")


def clip_dims(arch: Any) -> Tuple[int, int]:
    """Width D and number of blocks N of the configured CLIP image tower, without loading weights.

    Args:
        arch: ``cfg.model.backbone.arch``: an open_clip model name or a dict of ``open_clip.CLIP`` kwargs.

    Returns:
        Tuple[int, int]: (D, N); the decoder takes the outputs of blocks 0..N-2 (N-1 inputs of width D).
    """
    if isinstance(arch, str):
        import open_clip

        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise ValueError(f"model.backbone.arch: unknown open_clip architecture {arch!r}")
    else:
        model_cfg = dict(arch)
    vision = dict(model_cfg.get("vision_cfg") or {})
    if "width" not in vision or "layers" not in vision:
        raise ValueError(f"model.backbone.arch: no vision_cfg width/layers in {model_cfg}")
    return int(vision["width"]), int(vision["layers"])


def read_official_state(path: str) -> Dict[str, torch.Tensor]:
    """Read the authors' saved state dict (tensors only, ``weights_only`` loading).

    Args:
        path (str): the authors' ``.pth`` file.

    Returns:
        Dict[str, torch.Tensor]: the state dict (wrappers ``state_dict``/``model`` and a ``module.``
        prefix are handled later by the name mapping).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Official checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise ValueError(
            f"Cannot read {path} as a torch checkpoint of tensors ({type(err).__name__}: {first}). "
            "Expected the state dict saved by the authors' training script (torch.save of "
            "model.state_dict())."
        ) from err
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path} holds a {type(state).__name__}, not a (non-empty) state dict")
    return dict(state)


def iteration_from_name(path: str) -> Optional[int]:
    """The iteration in a file name such as ``iter_30000.pth`` / ``model_iter_80000.pth``, else None."""
    match = re.search(r"iter[_-]?(\d+)", os.path.basename(path))
    return int(match.group(1)) if match else None


def convert(
    official: str,
    out: str,
    config: str = DEFAULT_CONFIG,
    cfg_options: Optional[Mapping[str, Any]] = None,
    iteration: Optional[int] = None,
) -> Dict[str, Any]:
    """Convert ``official`` into ``out``; returns the written checkpoint dict.

    Args:
        official (str): checkpoint saved by the authors' code.
        out (str): where to write ours (parent folders are created).
        config (str): our config describing the model (``data.num_classes``, ``model.decoder``,
            ``model.backbone.arch``).
        cfg_options (Mapping, optional): overrides of existing config keys.
        iteration (int, optional): stored as ``iteration``; default: parsed from the file name.

    Returns:
        Dict[str, Any]: ``{"model", "config", "iteration", "meta"}`` as written.
    """
    if os.path.abspath(official) == os.path.abspath(out):
        raise ValueError(
            f"Refusing to overwrite the official checkpoint {official} with the converted one"
        )
    cfg = load_config(config, cfg_options)
    width, blocks = clip_dims(cfg.model.backbone.arch)
    decoder: WeCLIPDecoder = build_decoder(
        cfg.model.get("decoder"), int(cfg.data.num_classes), width, blocks - 1
    )
    state = read_official_state(official)
    ignored = sorted(k for k in state if k.startswith(IGNORED_OFFICIAL_PREFIXES))
    try:
        load_official_decoder_state(decoder, state)
    except (KeyError, ValueError) as err:
        hint = ""
        if "linear_pred" in str(err):
            hint = f" (the class count differs: {config} has data.num_classes = {cfg.data.num_classes}; "
            hint += (
                "use the config of the dataset the checkpoint was trained on, e.g. configs/coco.py)"
            )
        raise type(err)(f"{official}: {err.args[0] if err.args else err}{hint}") from err

    checkpoint = {
        "model": {k: v.detach().clone() for k, v in decoder.state_dict().items()},
        "config": to_plain(cfg),
        "iteration": iteration if iteration is not None else iteration_from_name(official),
        "meta": {
            "source": os.path.abspath(official),
            "converted_from": "authors' WeCLIP code",
            "num_classes": int(cfg.data.num_classes),
            "ignored_keys": len(ignored),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__,
            "weclip": weclip.__version__,
        },
    }
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    values = sum(v.numel() for v in checkpoint["model"].values())
    logger.info(
        "Converted %s -> %s: %d decoder tensors (%s values); ignored %d CLIP/PAR entries",
        official,
        out,
        len(checkpoint["model"]),
        f"{values:,}",
        len(ignored),
    )
    return checkpoint


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert an authors' WeCLIP checkpoint into a decoder checkpoint for our tools."
    )
    parser.add_argument(
        "official", help="checkpoint saved by the authors' code (whole-model state dict)"
    )
    parser.add_argument("out", help="output checkpoint (e.g. work_dirs/official/voc_30000.pth)")
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config of the model (default: configs/voc.py)"
    )
    parser.add_argument(
        "--iteration",
        type=int,
        default=None,
        help="training iteration to record (default: from the file name)",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default=None,
        help="override existing config keys, e.g. data.num_classes=81",
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        ckpt = convert(args.official, args.out, args.config, args.cfg_options, args.iteration)
    except (FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 1
    names: List[str] = list(ckpt["model"])
    print(
        f"wrote {args.out}: {len(names)} decoder tensors, {ckpt['meta']['num_classes']} classes, "
        f"iteration {ckpt['iteration']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
