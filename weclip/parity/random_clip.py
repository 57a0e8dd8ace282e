"""Random CLIP ViT-B/16 weights in the layout of OpenAI's ``ViT-B-16.pt`` (for parity checks).

OpenAI's archive (https://github.com/openai/CLIP, the file the WeCLIP authors load) cannot be
downloaded in tests, so the parity fixtures are recorded with a stand-in that has the same keys,
shapes and fp16 storage, saved as a plain state dict (``torch.save``), which both the authors'
``clip.load`` and our ``build_clip_model`` accept. The values:

- every random tensor comes from its own ``torch.Generator`` seeded with the first 8 bytes of
  ``sha256(key)``, so no value depends on the order tensors are drawn in or on any library's
  initialisation code;
- standard deviations follow CLIP's own initialisation scheme (attention ``width^-0.5``, output
  projections ``width^-0.5 * (2 layers)^-0.5``, MLP input ``(2 width)^-0.5``, token embedding 0.02,
  text positions 0.01), LayerNorm weights 1, biases 0, ``logit_scale = ln 100``;
- ``qk_scale`` multiplies the query and key rows of every *vision* block's ``in_proj_weight``: a
  plain random init gives nearly uniform attention maps, which would make the refinement stages
  trivial to match; the recorded fixtures use ``qk_scale = 4``.

The generator is the team's ``make_random_clip.py`` (which recorded the first fixture), rewritten
here as a library function; it must keep producing exactly the same tensors, which
:func:`content_sha256` checks (``3fbcfa31adc6db3c...`` for ``qk_scale = 4``)::

    python -m weclip.parity.random_clip /tmp/clip_qk4.pt --qk-scale 4
"""

import argparse
import hashlib
import math
from collections import OrderedDict
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from weclip.utils.io import atomic_path

__all__ = [
    "QK4_CONTENT_SHA256_PREFIX",
    "tensor_specs",
    "make_random_clip",
    "content_sha256",
    "write_random_clip",
]

#: Content hash prefix of ``make_random_clip(qk_scale=4)`` (the weights of every recorded fixture).
QK4_CONTENT_SHA256_PREFIX = "3fbcfa31adc6db3c"

# ViT-B/16 image tower and the CLIP text tower (OpenAI's ViT-B-16.pt)
_VISION_WIDTH, _VISION_LAYERS, _PATCH, _GRID = 768, 12, 16, 14
_TEXT_WIDTH, _TEXT_LAYERS, _CONTEXT, _VOCAB, _EMBED = 512, 12, 77, 49408, 512

# An initialiser: a standard deviation (normal), or one of these names.
Init = Union[float, str]
_ONES, _ZEROS, _LOG100 = "ones", "zeros", "log100"


def _residual_block(
    prefix: str, width: int, layers: int
) -> List[Tuple[str, Tuple[int, ...], Init]]:
    """The 12 tensors of one residual attention block, in the archive's order."""
    out_std = width**-0.5 * (2 * layers) ** -0.5  # same expression as the original generator
    return [
        (f"{prefix}.attn.in_proj_weight", (3 * width, width), width**-0.5),
        (f"{prefix}.attn.in_proj_bias", (3 * width,), _ZEROS),
        (f"{prefix}.attn.out_proj.weight", (width, width), out_std),
        (f"{prefix}.attn.out_proj.bias", (width,), _ZEROS),
        (f"{prefix}.ln_1.weight", (width,), _ONES),
        (f"{prefix}.ln_1.bias", (width,), _ZEROS),
        (f"{prefix}.mlp.c_fc.weight", (4 * width, width), (2 * width) ** -0.5),
        (f"{prefix}.mlp.c_fc.bias", (4 * width,), _ZEROS),
        (f"{prefix}.mlp.c_proj.weight", (width, 4 * width), out_std),
        (f"{prefix}.mlp.c_proj.bias", (width,), _ZEROS),
        (f"{prefix}.ln_2.weight", (width,), _ONES),
        (f"{prefix}.ln_2.bias", (width,), _ZEROS),
    ]


def tensor_specs() -> List[Tuple[str, Tuple[int, ...], Init]]:
    """(key, shape, initialiser) of every tensor, in the order they are stored and hashed.

    Returns:
        list: 302 entries; the initialiser is a normal standard deviation or "ones" / "zeros" /
        "log100".
    """
    w, t = _VISION_WIDTH, _TEXT_WIDTH
    specs: List[Tuple[str, Tuple[int, ...], Init]] = [
        ("positional_embedding", (_CONTEXT, t), 0.01),
        ("text_projection", (t, _EMBED), t**-0.5),
        ("logit_scale", (), _LOG100),
        ("visual.class_embedding", (w,), w**-0.5),
        ("visual.positional_embedding", (_GRID * _GRID + 1, w), w**-0.5),
        ("visual.proj", (w, _EMBED), w**-0.5),
        ("visual.conv1.weight", (w, 3, _PATCH, _PATCH), (3 * _PATCH * _PATCH) ** -0.5),
        ("visual.ln_pre.weight", (w,), _ONES),
        ("visual.ln_pre.bias", (w,), _ZEROS),
    ]
    for i in range(_VISION_LAYERS):
        specs += _residual_block(f"visual.transformer.resblocks.{i}", w, _VISION_LAYERS)
    specs += [("visual.ln_post.weight", (w,), _ONES), ("visual.ln_post.bias", (w,), _ZEROS)]
    for i in range(_TEXT_LAYERS):
        specs += _residual_block(f"transformer.resblocks.{i}", t, _TEXT_LAYERS)
    specs += [
        ("token_embedding.weight", (_VOCAB, t), 0.02),
        ("ln_final.weight", (t,), _ONES),
        ("ln_final.bias", (t,), _ZEROS),
    ]
    return specs


def _key_seed(key: str) -> int:
    """The generator seed of one tensor: the first 8 bytes of sha256(key), little endian, 63 bits."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)


def _draw(key: str, shape: Sequence[int], init: Init) -> torch.Tensor:
    """One float32 tensor (before the qk sharpening and the fp16 cast)."""
    if init == _ONES:
        return torch.ones(shape)
    if init == _ZEROS:
        return torch.zeros(shape)
    if init == _LOG100:
        return torch.tensor(math.log(100.0))
    generator = torch.Generator().manual_seed(_key_seed(key))
    return torch.randn(shape, generator=generator) * init


def _iter_tensors(qk_scale: float) -> Iterator[Tuple[str, torch.Tensor]]:
    for key, shape, init in tensor_specs():
        value = _draw(key, shape, init)
        if qk_scale != 1.0 and key.startswith("visual.") and key.endswith("attn.in_proj_weight"):
            value[: 2 * _VISION_WIDTH] *= qk_scale  # query and key rows; values untouched
        yield key, value.to(torch.float16)


def make_random_clip(qk_scale: float = 1.0) -> "OrderedDict[str, torch.Tensor]":
    """The random CLIP ViT-B/16 state dict (OpenAI key layout, fp16), ~150M values.

    Args:
        qk_scale (float): factor on the query/key projections of the 12 vision blocks (4 for the
            fixtures; 1 = CLIP's plain init).

    Returns:
        OrderedDict[str, torch.Tensor]: key -> fp16 tensor, in :func:`tensor_specs` order.
    """
    return OrderedDict(_iter_tensors(float(qk_scale)))


def content_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the keys and float32 values of a state dict, in its order (hex digest).

    The hash of the values rather than of the file: ``torch.save`` output depends on the torch
    version, the values do not.
    """
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.float().numpy().tobytes())
    return digest.hexdigest()


def write_random_clip(path: str, qk_scale: float = 1.0) -> str:
    """Write :func:`make_random_clip` to ``path`` (``torch.save``, atomically) and return its
    :func:`content_sha256` (~300 MB: write it to a temporary folder, never into the repository).

    Args:
        path (str): output file.
        qk_scale (float): see :func:`make_random_clip`.

    Returns:
        str: the content hash (hex).
    """
    state = make_random_clip(qk_scale)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return content_sha256(state)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write random CLIP ViT-B/16 weights in OpenAI's ViT-B-16.pt layout (fp16)."
    )
    parser.add_argument("out", help="output file (~300 MB)")
    parser.add_argument(
        "--qk-scale", type=float, default=1.0, help="sharpen the vision attention (fixtures: 4)"
    )
    args = parser.parse_args(argv)
    digest = write_random_clip(args.out, args.qk_scale)
    print(f"wrote {args.out}: {len(tensor_specs())} tensors, content sha256 {digest}")


if __name__ == "__main__":
    main()
