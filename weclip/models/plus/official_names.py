"""Parameter names of the authors' WeCLIP+ trainable parts <-> ours, and a loader for their files.

The authors' ``WeCLIP_Plus`` module (``WeCLIP+/WeCLIP_Plus/model_attn_aff_voc.py``) holds the CLIP
fusion head under ``decoder_fts_fuse``, the DINO fusion head under ``dino_decoder_fts_fuse`` (both
``SegFormerHead(index=1)``) and the shared transformer under ``decoder``; their saved files are
whole-model state dicts that also hold the frozen CLIP (``encoder.``, with
``encoder.visual.positional_embedding_new``), the frozen DINOv2 (``dino_encoder.``) and PAR's kernel
(``par.``). Per parameter (``<i>`` a layer index, ``<p>`` weight|bias), ours on the right
(:class:`weclip.models.plus.decoder.WeCLIPPlusDecoder`):

    decoder_fts_fuse.linears_modulelist.<i>.proj.<p>         clip_fusion.fusion_mlps.<i>.fc1.<p>
    decoder_fts_fuse.linears_modulelist.<i>.proj_2.<p>       clip_fusion.fusion_mlps.<i>.fc2.<p>
    decoder_fts_fuse.linear_fuse.<p>                         clip_fusion.fuse.<p>
    dino_decoder_fts_fuse.<same as above>                    dino_fusion.<same as above>
    decoder.<WeCLIP's transformer names>                     blocks.<i>... / classifier.<p>

The transformer part is WeCLIP's mapping (:mod:`weclip.models.official_names`); shapes are
identical on both sides, so conversion only renames.
"""

import logging
from collections import OrderedDict
from typing import Any, Dict, Mapping, Tuple

import torch
from torch import nn

from weclip.models.official_names import official_to_ours, ours_to_official

__all__ = [
    "IGNORED_OFFICIAL_PLUS_PREFIXES",
    "convert_official_plus_state",
    "load_official_plus_decoder_state",
    "plus_official_to_ours",
    "plus_ours_to_official",
    "to_official_plus_state",
]

logger = logging.getLogger("weclip")

#: Parts of the authors' state dict that are not trained: CLIP, DINOv2, PAR's constant kernel.
IGNORED_OFFICIAL_PLUS_PREFIXES: Tuple[str, ...] = ("encoder.", "dino_encoder.", "par.")

# (authors' head prefix, our head prefix); WeCLIP's mapping names the head "decoder_fts_fuse."
_HEADS = (("decoder_fts_fuse.", "clip_fusion."), ("dino_decoder_fts_fuse.", "dino_fusion."))
_WECLIP_HEAD = "decoder_fts_fuse."


def plus_official_to_ours(name: str) -> str:
    """Authors' WeCLIP+ parameter name -> ours (``dino_decoder_fts_fuse.linear_fuse.bias ->
    dino_fusion.fuse.bias``).

    Raises:
        KeyError: ``name`` is not a trained parameter of the authors' WeCLIP+.
    """
    for theirs, ours in _HEADS:
        if name.startswith(theirs):
            return ours + official_to_ours(_WECLIP_HEAD + name[len(theirs) :])
    if name.startswith("decoder."):
        return official_to_ours(name)
    raise KeyError(f"No official->ours name mapping for WeCLIP+ parameter '{name}'")


def plus_ours_to_official(name: str) -> str:
    """Our :class:`WeCLIPPlusDecoder` parameter name -> the authors' (inverse of the above).

    Raises:
        KeyError: ``name`` is not a :class:`WeCLIPPlusDecoder` parameter name.
    """
    for theirs, ours in _HEADS:
        if name.startswith(ours):
            weclip_name = ours_to_official(name[len(ours) :])  # KeyError if not a head parameter
            if weclip_name.startswith(_WECLIP_HEAD):
                return theirs + weclip_name[len(_WECLIP_HEAD) :]
            break
    else:
        if name.startswith(("blocks.", "classifier.")):
            return ours_to_official(name)
    raise KeyError(f"No ours->official name mapping for WeCLIP+ parameter '{name}'")


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept ``{"state_dict": sd}`` / ``{"model": sd}`` wrappers and a ``module.`` prefix."""
    for wrapper in ("state_dict", "model"):
        inner = state_dict.get(wrapper)
        if isinstance(inner, Mapping) and all(isinstance(k, str) for k in inner):
            state_dict = inner
            break
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        state_dict = OrderedDict((k[len("module.") :], v) for k, v in state_dict.items())
    return state_dict


def convert_official_plus_state(
    state_dict: Mapping[str, Any],
) -> "OrderedDict[str, torch.Tensor]":
    """Select and rename the trained entries of an authors' WeCLIP+ state dict (no shape checks).

    Keys under :data:`IGNORED_OFFICIAL_PLUS_PREFIXES` are skipped with one logged note; any other
    key that is not a trained parameter raises ``KeyError`` naming it.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (a mapping), got {type(state_dict).__name__}")
    converted: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    ignored: Dict[str, int] = {}
    for key, value in _unwrap(state_dict).items():
        prefix = next((p for p in IGNORED_OFFICIAL_PLUS_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            ignored[prefix] = ignored.get(prefix, 0) + 1
            continue
        try:
            ours = plus_official_to_ours(key)
        except KeyError:
            raise KeyError(
                f"Unexpected key '{key}' in the official WeCLIP+ checkpoint: not a trained "
                "parameter (decoder_fts_fuse.* / dino_decoder_fts_fuse.* / decoder.*) and not "
                f"under {IGNORED_OFFICIAL_PLUS_PREFIXES}"
            ) from None
        converted[ours] = torch.as_tensor(value)
    if ignored:
        logger.info(
            "Official WeCLIP+ checkpoint: ignored %s (frozen CLIP, frozen DINOv2, PAR kernel)",
            ", ".join(f"{n} '{p}*' entries" for p, n in ignored.items()),
        )
    return converted


def to_official_plus_state(
    decoder_state: Mapping[str, torch.Tensor],
) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``WeCLIPPlusDecoder.state_dict()`` to the authors' names (same tensors)."""
    return OrderedDict((plus_ours_to_official(k), v) for k, v in decoder_state.items())


def load_official_plus_decoder_state(decoder: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Load the trained weights of an authors' WeCLIP+ file into ``decoder`` (strict).

    Args:
        decoder (nn.Module): a :class:`WeCLIPPlusDecoder`.
        state_dict (Mapping[str, Any]): their saved state dict (whole model or trained parts).

    Raises:
        KeyError: a parameter is missing or unexpected (named, with the authors' name).
        ValueError: a shape differs (names the key and both shapes: e.g. another DINO size or
            number of classes).
    """
    converted = convert_official_plus_state(state_dict)
    own = decoder.state_dict()
    missing = [k for k in own if k not in converted]
    if missing:
        raise KeyError(
            "Official WeCLIP+ checkpoint lacks parameter(s): "
            + ", ".join(f"'{plus_ours_to_official(k)}' (ours '{k}')" for k in missing)
        )
    unexpected = [k for k in converted if k not in own]
    if unexpected:
        raise KeyError(
            "Official WeCLIP+ checkpoint has parameter(s) this decoder does not have (another "
            "number of decoder layers?): "
            + ", ".join(f"'{plus_ours_to_official(k)}'" for k in unexpected)
        )
    for key, value in converted.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"Shape mismatch for '{plus_ours_to_official(key)}' (ours '{key}'): checkpoint "
                f"{tuple(value.shape)}, decoder {tuple(own[key].shape)}"
            )
    decoder.load_state_dict(converted, strict=True)
    logger.info("Loaded %d official WeCLIP+ decoder tensors", len(converted))
