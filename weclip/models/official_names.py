"""Parameter names of the authors' WeCLIP decoder <-> ours, and a loader for their checkpoints.

The authors' model (spec §6) keeps the fusion head under ``decoder_fts_fuse`` and the transformer
decoder under ``decoder``; their saved files are whole-model state dicts that also hold the CLIP
weights under ``encoder.`` (including ``encoder.visual.positional_embedding_new``, spec §12.11) and
PAR's constant kernel under ``par.``. Per parameter (``<i>`` a layer index, ``<p>`` weight|bias):

    authors: decoder_fts_fuse.                        ours: WeCLIPDecoder.
    linears_modulelist.<i>.proj.<p>                   fusion_mlps.<i>.fc1.<p>
    linears_modulelist.<i>.proj_2.<p>                 fusion_mlps.<i>.fc2.<p>
    linear_fuse.<p>                                   fuse.<p>

    authors: decoder.                                 ours: WeCLIPDecoder.
    transformer.resblocks.<i>.attn.in_proj_<p>        blocks.<i>.attn.in_proj_<p>
    transformer.resblocks.<i>.attn.out_proj.<p>       blocks.<i>.attn.out_proj.<p>
    transformer.resblocks.<i>.ln_1.<p>                blocks.<i>.norm1.<p>
    transformer.resblocks.<i>.ln_2.<p>                blocks.<i>.norm2.<p>
    transformer.resblocks.<i>.mlp.c_fc.<p>            blocks.<i>.mlp.fc1.<p>
    transformer.resblocks.<i>.mlp.c_proj.<p>          blocks.<i>.mlp.fc2.<p>
    linear_pred.<p>                                   classifier.<p>

Shapes are identical on both sides (their fusion MLPs are ``nn.Linear``, their fuse conv and
classifier 1x1 ``nn.Conv2d``, like ours), so conversion only renames.
"""

import logging
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import nn

__all__ = [
    "IGNORED_OFFICIAL_PREFIXES",
    "convert_official_decoder_state",
    "load_official_decoder_state",
    "official_to_ours",
    "ours_to_official",
    "to_official_decoder_state",
]

logger = logging.getLogger("weclip")

# (authors' name pattern, our name pattern); "{i}" is a layer index, "{p}" is weight|bias.
_RULES: Tuple[Tuple[str, str], ...] = (
    ("decoder_fts_fuse.linears_modulelist.{i}.proj.{p}", "fusion_mlps.{i}.fc1.{p}"),
    ("decoder_fts_fuse.linears_modulelist.{i}.proj_2.{p}", "fusion_mlps.{i}.fc2.{p}"),
    ("decoder_fts_fuse.linear_fuse.{p}", "fuse.{p}"),
    ("decoder.transformer.resblocks.{i}.attn.in_proj_{p}", "blocks.{i}.attn.in_proj_{p}"),
    ("decoder.transformer.resblocks.{i}.attn.out_proj.{p}", "blocks.{i}.attn.out_proj.{p}"),
    ("decoder.transformer.resblocks.{i}.ln_1.{p}", "blocks.{i}.norm1.{p}"),
    ("decoder.transformer.resblocks.{i}.ln_2.{p}", "blocks.{i}.norm2.{p}"),
    ("decoder.transformer.resblocks.{i}.mlp.c_fc.{p}", "blocks.{i}.mlp.fc1.{p}"),
    ("decoder.transformer.resblocks.{i}.mlp.c_proj.{p}", "blocks.{i}.mlp.fc2.{p}"),
    ("decoder.linear_pred.{p}", "classifier.{p}"),
)

# Parts of the authors' whole-model state dict that are not the decoder: the frozen CLIP (with the
# resized positional table ``encoder.visual.positional_embedding_new``) and PAR's constant kernel.
IGNORED_OFFICIAL_PREFIXES: Tuple[str, ...] = ("encoder.", "par.")

_Rules = List[Tuple["re.Pattern[str]", str]]


def _compile(pattern: str) -> "re.Pattern[str]":
    regex = re.escape(pattern)
    regex = regex.replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(regex + r"\Z")


_OFFICIAL_TO_OURS: _Rules = [(_compile(a), b) for a, b in _RULES]
_OURS_TO_OFFICIAL: _Rules = [(_compile(b), a) for a, b in _RULES]


def _translate(name: str, rules: _Rules, direction: str) -> str:
    for regex, target in rules:
        match = regex.match(name)
        if match:
            return target.format(**match.groupdict())
    raise KeyError(f"No {direction} name mapping for parameter '{name}'")


def official_to_ours(name: str) -> str:
    """Authors' decoder parameter name -> ours (``decoder.linear_pred.bias -> classifier.bias``).

    Raises:
        KeyError: ``name`` is not a decoder parameter of the authors' model.
    """
    return _translate(name, _OFFICIAL_TO_OURS, "official->ours")


def ours_to_official(name: str) -> str:
    """Our decoder parameter name -> the authors' (the inverse of :func:`official_to_ours`).

    Raises:
        KeyError: ``name`` is not a :class:`WeCLIPDecoder` parameter name.
    """
    return _translate(name, _OURS_TO_OFFICIAL, "ours->official")


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


def convert_official_decoder_state(
    state_dict: Mapping[str, Any],
) -> "OrderedDict[str, torch.Tensor]":
    """Select and rename the decoder entries of an authors' state dict (no shape checks here).

    Keys under :data:`IGNORED_OFFICIAL_PREFIXES` (CLIP, PAR) are skipped with one logged note. Any
    other key that is not an authors' decoder parameter raises.

    Args:
        state_dict (Mapping[str, Any]): the authors' whole-model (or decoder-only) state dict;
            values are tensors or arrays.

    Returns:
        OrderedDict[str, torch.Tensor]: our names -> tensors.

    Raises:
        KeyError: an unexpected key (named in the message).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (a mapping), got {type(state_dict).__name__}")
    state_dict = _unwrap(state_dict)
    converted: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    ignored: Dict[str, int] = {}
    for key, value in state_dict.items():
        prefix = next((p for p in IGNORED_OFFICIAL_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            ignored[prefix] = ignored.get(prefix, 0) + 1
            continue
        try:
            ours = official_to_ours(key)
        except KeyError:
            raise KeyError(
                f"Unexpected key '{key}' in the official checkpoint: not a decoder parameter "
                f"(decoder_fts_fuse.* / decoder.*) and not under {IGNORED_OFFICIAL_PREFIXES}"
            ) from None
        converted[ours] = torch.as_tensor(value)
    if ignored:
        logger.info(
            "Official checkpoint: ignored %s (frozen CLIP incl. positional_embedding_new, PAR "
            "kernel: not decoder weights)",
            ", ".join(f"{n} '{p}*' entries" for p, n in ignored.items()),
        )
    return converted


def to_official_decoder_state(
    decoder_state: Mapping[str, torch.Tensor],
) -> "OrderedDict[str, torch.Tensor]":
    """Rename our decoder state dict to the authors' names (e.g. to feed their code our weights).

    Args:
        decoder_state (Mapping[str, torch.Tensor]): ``WeCLIPDecoder.state_dict()``.

    Returns:
        OrderedDict[str, torch.Tensor]: authors' names -> the same tensors.
    """
    return OrderedDict((ours_to_official(k), v) for k, v in decoder_state.items())


def load_official_decoder_state(decoder: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Load the decoder weights of an authors' checkpoint into ``decoder`` (strict).

    Args:
        decoder (nn.Module): a :class:`weclip.models.decoder.WeCLIPDecoder`.
        state_dict (Mapping[str, Any]): the authors' saved state dict (whole model: CLIP under
            ``encoder.`` and PAR under ``par.`` are ignored with a logged note), or only its
            decoder entries.

    Raises:
        KeyError: a decoder parameter is missing from the checkpoint, or the checkpoint has an
            unexpected key (each named, with the authors' name).
        ValueError: a tensor's shape differs (names the key and both shapes, e.g. 21 vs 81
            classes).
    """
    converted = convert_official_decoder_state(state_dict)
    own = decoder.state_dict()
    missing = [k for k in own if k not in converted]
    if missing:
        raise KeyError(
            "Official checkpoint lacks decoder parameter(s): "
            + ", ".join(f"'{ours_to_official(k)}' (ours '{k}')" for k in missing)
        )
    unexpected = [k for k in converted if k not in own]
    if unexpected:
        raise KeyError(
            "Official checkpoint has decoder parameter(s) this decoder does not have (another "
            "number of layers?): " + ", ".join(f"'{ours_to_official(k)}'" for k in unexpected)
        )
    for key, value in converted.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"Shape mismatch for '{ours_to_official(key)}' (ours '{key}'): checkpoint "
                f"{tuple(value.shape)}, decoder {tuple(own[key].shape)}"
            )
    decoder.load_state_dict(converted, strict=True)
    logger.info("Loaded %d official decoder tensors", len(converted))
