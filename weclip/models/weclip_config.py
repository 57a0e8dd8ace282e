"""Config schema of the WeCLIP model: the ``model`` and ``loss`` sections (spec sections in the docs).

Defaults are the authors' values (docs/official_code.md, "spec"); ``configs/_base_/models/weclip_vitb16.py``
spells every one of them out with its source.
"""

from typing import Any, Dict, Literal, Tuple, Union

from weclip.errors import ConfigError
from weclip.schema import key, section

__all__ = [
    "NormConstants",
    "BackboneConfig",
    "TextConfig",
    "DecoderConfig",
    "CamConfig",
    "RefineConfig",
    "PseudoLabelConfig",
    "PARConfig",
    "WeCLIPModelConfig",
    "WeCLIPLossConfig",
]


@section
class NormConstants:
    """Per-channel mean and std on 0-255 RGB."""

    mean: Tuple[float, float, float] = key()
    std: Tuple[float, float, float] = key(gt=0)


@section
class BackboneConfig:
    """``model.backbone``: the frozen CLIP (``weclip/models/clip_backbone.py``, spec §1)."""

    arch: Union[str, Dict[str, Any]] = key(doc="open_clip model name or open_clip.CLIP kwargs")
    weights: str = key(doc="weights file, 'hub:<tag>' or 'random'", nonempty=True)
    allow_download: bool = key(False)
    precision: Literal["fp32", "bf16"] = key("fp32")


@section
class TextConfig:
    """``model.text``: prompt template(s) (spec §2)."""

    template: Union[str, Tuple[str, ...]] = key("a clean origami {}.")


@section
class DecoderConfig:
    """``model.decoder``: fusion + transformer decoder (spec §6)."""

    embed_dim: int = key(256, ge=1)
    num_layers: int = key(3, ge=0)
    num_heads: int = key(8, ge=1)
    mlp_ratio: int = key(4, ge=1)
    dropout: float = key(0.1, ge=0, lt=1)

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if values["embed_dim"] % values["num_heads"]:
            raise ConfigError(
                f"config key '{prefix}.embed_dim' = {values['embed_dim']} is not divisible by "
                f"'{prefix}.num_heads' = {values['num_heads']}"
            )


@section
class CamConfig:
    """``model.cam``: Grad-CAM min-max normalisation (spec §3)."""

    norm_eps: float = key(1e-7, ge=0)
    cam_norm_passes: int = key(2, ge=1)


@section
class RefineConfig:
    """``model.refine``: static refinement and the RFM (spec §4)."""

    static_layers: int = key(8, ge=1)
    rfm_layers: int = key(6, ge=1)
    layer_filter: Literal["signed", "abs"] = key("signed")
    filter_eps: float = key(1e-5, ge=0)
    rfm_start_iter: int = key(9145, ge=1)
    sinkhorn_iters: int = key(3, ge=0)
    power: int = key(2, ge=1)
    box_threshold: float = key(0.4, ge=0, le=1)
    box_mode: Literal["official", "inclusive"] = key("official")
    norm_eps: float = key(1e-7, ge=0)


@section
class PseudoLabelConfig:
    """``model.pseudo_label``: background score and crop padding (spec §5)."""

    bg_power: float = key(1.0, gt=0)
    ignore_padding: bool = key(False)


@section
class PARConfig:
    """``model.par``: pixel-adaptive refinement (spec §5.1)."""

    num_iter: int = key(20, ge=0)
    dilations: Tuple[int, ...] = key((1, 2, 4, 8, 12, 24), ge=1, nonempty=True)
    temperature: float = key(0.3, gt=0)
    pos_weight: float = key(0.01, ge=0)
    eps: float = key(1e-8, ge=0)


@section
class WeCLIPModelConfig:
    """``model`` of ``type="WeCLIP"``."""

    type: Literal["WeCLIP"] = key()
    normalize: str = key("imagenet", doc="key of norm_constants fed to CLIP (spec §1.2)")
    norm_constants: Dict[str, NormConstants] = key(doc="named mean/std sets on 0-255 RGB")
    backbone: BackboneConfig = key()
    text: TextConfig = key(TextConfig())
    decoder: DecoderConfig = key(DecoderConfig())
    cam: CamConfig = key(CamConfig())
    refine: RefineConfig = key(RefineConfig())
    pseudo_label: PseudoLabelConfig = key(PseudoLabelConfig())
    par: PARConfig = key(PARConfig())

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if values["normalize"] not in values["norm_constants"]:
            raise ConfigError(
                f"config key '{prefix}.normalize' = {values['normalize']!r}: expected one of "
                f"{', '.join(map(repr, values['norm_constants']))} (the keys of {prefix}.norm_constants)"
            )


@section
class WeCLIPLossConfig:
    """``loss``: L = seg_weight * L_seg + aff_weight * L_aff (spec §7)."""

    seg_weight: float = key(1.0, ge=0)
    aff_weight: float = key(0.1, ge=0)
    aff_radius: int = key(8, ge=0)
    ignore_index: int = key(255, ge=2, le=255)
