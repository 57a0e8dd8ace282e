"""Random DINOv2 ViT-S/14 weights in the layout of the official ``dinov2_vits14_pretrain.pth``.

WeCLIP+ (https://github.com/zbf1991/WeCLIP, folder ``WeCLIP+/``) loads DINOv2 with
``torch.hub.load('facebookresearch/dinov2', 'dinov2_vits14')``, which downloads the LVD-142M file
(https://github.com/facebookresearch/dinov2, ``dinov2/hub/backbones.py``). The parity fixtures use a
stand-in with the same 175 keys and shapes, stored in float32 like the official file, which the
official hub builder loads strictly (``model.load_state_dict(state, strict=True)``) and our
:func:`weclip.models.dino_backbone.build_dino_backbone` reads as an official file. The values:

- every tensor comes from its own ``torch.Generator`` seeded with the first 8 bytes of
  ``sha256("dinov2_vits14:" + key)``, so no value depends on the order tensors are drawn in or on
  any library's initialisation code;
- each tensor is ``mean + std * N(0, 1)``: weights of linear and convolution layers std
  ``fan_in^-0.5`` (unit-scale activations, attention logits of order 1), biases std 0.02,
  LayerNorm weights 1 ± 0.1 and biases std 0.02 (so the affine parameters matter), LayerScale
  0.3 ± 0.05, CLS token std 0.02, positional table std 0.05 (so its bicubic resize from 37x37 to
  the 22x22 grid of a 308-pixel input is visible), mask token 0 (never used at inference).

The content hash (:func:`weclip.parity.random_clip.content_sha256` over keys and float32 values)
identifies the weights every WeCLIP+ fixture was recorded with (``DINO_CONTENT_SHA256_PREFIX``)::

    python -m weclip.parity.random_dino /tmp/dinov2_vits14_pretrain.pth
"""

import argparse
import hashlib
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch

from weclip.parity.random_clip import content_sha256
from weclip.utils.io import atomic_path

__all__ = [
    "DINO_CONTENT_SHA256_PREFIX",
    "DINO_FILE_NAME",
    "dino_tensor_specs",
    "make_random_dino",
    "write_random_dino",
]

#: Content hash prefix of :func:`make_random_dino` (the DINOv2 weights of the WeCLIP+ fixtures).
DINO_CONTENT_SHA256_PREFIX = "57207fc51b19ab6a"
#: The official file name (what the hub code's URL ends with; the harness checks it).
DINO_FILE_NAME = "dinov2_vits14_pretrain.pth"

_WIDTH, _DEPTH, _PATCH, _GRID, _MLP = 384, 12, 14, 37, 4

# (mean, std) of one tensor: value = mean + std * N(0, 1)
Init = Tuple[float, float]


def _linear(fan_in: int) -> Init:
    return (0.0, fan_in**-0.5)


_BIAS: Init = (0.0, 0.02)
_LN_WEIGHT: Init = (1.0, 0.1)
_LN_BIAS: Init = (0.0, 0.02)
_LAYER_SCALE: Init = (0.3, 0.05)


def dino_tensor_specs() -> List[Tuple[str, Tuple[int, ...], Init]]:
    """(key, shape, (mean, std)) of every tensor, in the order of the official state dict.

    Returns:
        list: 175 entries (22,056,576 values) for DINOv2 ViT-S/14 (width 384, 12 blocks, 6 heads,
        MLP 1536, a 37x37 positional table plus the CLS row).
    """
    w = _WIDTH
    specs: List[Tuple[str, Tuple[int, ...], Init]] = [
        ("cls_token", (1, 1, w), (0.0, 0.02)),
        ("pos_embed", (1, 1 + _GRID * _GRID, w), (0.0, 0.05)),
        ("mask_token", (1, w), (0.0, 0.0)),
        ("patch_embed.proj.weight", (w, 3, _PATCH, _PATCH), _linear(3 * _PATCH * _PATCH)),
        ("patch_embed.proj.bias", (w,), _BIAS),
    ]
    for i in range(_DEPTH):
        p = f"blocks.{i}"
        specs += [
            (f"{p}.norm1.weight", (w,), _LN_WEIGHT),
            (f"{p}.norm1.bias", (w,), _LN_BIAS),
            (f"{p}.attn.qkv.weight", (3 * w, w), _linear(w)),
            (f"{p}.attn.qkv.bias", (3 * w,), _BIAS),
            (f"{p}.attn.proj.weight", (w, w), _linear(w)),
            (f"{p}.attn.proj.bias", (w,), _BIAS),
            (f"{p}.ls1.gamma", (w,), _LAYER_SCALE),
            (f"{p}.norm2.weight", (w,), _LN_WEIGHT),
            (f"{p}.norm2.bias", (w,), _LN_BIAS),
            (f"{p}.mlp.fc1.weight", (_MLP * w, w), _linear(w)),
            (f"{p}.mlp.fc1.bias", (_MLP * w,), _BIAS),
            (f"{p}.mlp.fc2.weight", (w, _MLP * w), _linear(_MLP * w)),
            (f"{p}.mlp.fc2.bias", (w,), _BIAS),
            (f"{p}.ls2.gamma", (w,), _LAYER_SCALE),
        ]
    specs += [("norm.weight", (w,), _LN_WEIGHT), ("norm.bias", (w,), _LN_BIAS)]
    return specs


def _key_seed(key: str) -> int:
    digest = hashlib.sha256(f"dinov2_vits14:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_random_dino() -> "OrderedDict[str, torch.Tensor]":
    """The random DINOv2 ViT-S/14 state dict (official key layout, float32).

    Returns:
        OrderedDict[str, torch.Tensor]: key -> tensor, in :func:`dino_tensor_specs` order.
    """
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, shape, (mean, std) in dino_tensor_specs():
        generator = torch.Generator().manual_seed(_key_seed(key))
        state[key] = torch.randn(shape, generator=generator) * std + mean
    return state


def write_random_dino(path: str) -> str:
    """Write :func:`make_random_dino` to ``path`` (``torch.save``, atomically; ~88 MB: use a
    temporary folder) and return its content hash (hex).

    The file name should be :data:`DINO_FILE_NAME` when the authors' hub call is redirected to it
    (:class:`weclip.parity.official_plus.OfficialWeCLIPPlus` checks it).
    """
    state = make_random_dino()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return content_sha256(state)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write random DINOv2 ViT-S/14 weights in the official "
        "dinov2_vits14_pretrain.pth layout (float32)."
    )
    parser.add_argument("out", help=f"output file (~88 MB; name it {DINO_FILE_NAME})")
    args = parser.parse_args(argv)
    digest = write_random_dino(args.out)
    print(f"wrote {args.out}: {len(dino_tensor_specs())} tensors, content sha256 {digest}")


if __name__ == "__main__":
    main()
