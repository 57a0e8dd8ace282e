"""Config schema of the WeCLIP+ model: the ``model`` and ``loss`` sections of ``type="WeCLIPPlus"``.

Defaults are the authors' VOC values (``docs/official_code_plus.md``, "doc §n"; WeCLIP's shared pieces
in ``docs/official_code.md``, "spec §n"). ``configs/_base_/models/weclip_plus_vitb16.py`` and the
dataset configs under ``configs/weclip_plus/`` spell every one of them out with its source; the COCO
and CLIP ViT-L/14 differences (doc §1.2, §4.1, §5.5) are set there.
"""

from typing import Any, Dict, Literal, Optional, Union

from weclip.errors import ConfigError
from weclip.models.weclip_config import (
    BackboneConfig,
    NormConstants,
    PARConfig,
    PseudoLabelConfig,
    TextConfig,
)
from weclip.schema import key, section

__all__ = [
    "DinoConfig",
    "PlusDecoderConfig",
    "PlusCamConfig",
    "PlusRefineConfig",
    "WeCLIPPlusModelConfig",
    "WeCLIPPlusLossConfig",
]


@section
class DinoConfig:
    """``model.dino``: the frozen DINOv2 (``weclip/models/dino_backbone.py``, doc §2)."""

    arch: Union[str, Dict[str, Any]] = key(
        "dinov2_vits14",
        doc="the authors' hub name (dinov2_vits14, dinov2_vitb14_reg, ...) or timm ViT kwargs",
    )
    weights: str = key(doc="weights file, 'hub:lvd142m' or 'random'", nonempty=True)
    allow_download: bool = key(False)
    pos_interp: Literal["official", "timm"] = key("official")
    seed: int = key(
        0, doc="seed of a 'random' DINOv2 (the same network in training and inference)", ge=0
    )


@section
class PlusDecoderConfig:
    """``model.decoder``: the two fusion heads and the shared transformer decoder (doc §3)."""

    embed_dim: int = key(256, ge=1)
    num_layers: int = key(3, ge=0)
    num_heads: int = key(8, ge=1)
    mlp_ratio: int = key(4, ge=1)
    dropout: float = key(0.1, ge=0, lt=1)
    clip_num_inputs: int = key(1, ge=1, doc="CLIP block outputs fused, counted back from N-2")

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if values["embed_dim"] % values["num_heads"]:
            raise ConfigError(
                f"config key '{prefix}.embed_dim' = {values['embed_dim']} is not divisible by "
                f"'{prefix}.num_heads' = {values['num_heads']}"
            )


@section
class PlusCamConfig:
    """``model.cam``: Grad-CAM on the last CLIP block (spec §3, doc §1.2)."""

    norm_eps: float = key(1e-7, ge=0)
    cam_norm_passes: int = key(2, ge=1)
    input_index: int = key(
        -2, le=-1, doc="which forward_blocks output feeds the last block: -2 = block N-3 (VOC)"
    )
    logit_scale_divisor: Optional[float] = key(
        None, gt=0, doc="None: the authors' rule, 4 for a 24-block CLIP (L/14), else 1"
    )


@section
class PlusRefineConfig:
    """``model.refine``: RFM+ (doc §4) and the static refinement of the ablation rows (spec §4.2)."""

    rfm_layers: int = key(6, ge=1, doc="last attention maps of RFM+: 6 VOC, 8 COCO, 12 L/14")
    layer_filter: Literal["signed", "abs"] = key("signed")
    filter_eps: float = key(1e-5, ge=0)
    sinkhorn_iters: int = key(3, ge=0)
    power: int = key(2, ge=1)
    box_mask: Literal["ones", "boxes"] = key("ones", doc="RFM+ box mask: ones (VOC), boxes (COCO)")
    box_threshold: float = key(0.4, ge=0, le=1)
    box_mode: Literal["official", "inclusive"] = key("official")
    norm_eps: float = key(1e-7, ge=0)
    static_layers: int = key(8, ge=1, doc="maps of the static rows of tools/eval_pseudo.py only")


@section
class WeCLIPPlusModelConfig:
    """``model`` of ``type="WeCLIPPlus"``."""

    type: Literal["WeCLIPPlus"] = key()
    normalize: str = key("imagenet", doc="key of norm_constants fed to CLIP and DINOv2 (doc §2.2)")
    norm_constants: Dict[str, NormConstants] = key(doc="named mean/std sets on 0-255 RGB")
    backbone: BackboneConfig = key()
    dino: DinoConfig = key()
    text: TextConfig = key(TextConfig())
    decoder: PlusDecoderConfig = key(PlusDecoderConfig())
    cam: PlusCamConfig = key(PlusCamConfig())
    refine: PlusRefineConfig = key(PlusRefineConfig())
    pseudo_label: PseudoLabelConfig = key(PseudoLabelConfig())
    par: PARConfig = key(PARConfig())

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if values["normalize"] not in values["norm_constants"]:
            raise ConfigError(
                f"config key '{prefix}.normalize' = {values['normalize']!r}: expected one of "
                f"{', '.join(map(repr, values['norm_constants']))} (the keys of "
                f"{prefix}.norm_constants)"
            )


@section
class WeCLIPPlusLossConfig:
    """``loss``: L = seg·L_seg + aff·L_aff + cross·(L_clip + L_dino) + dice·L_dice (doc §5)."""

    seg_weight: float = key(1.0, ge=0)
    aff_weight: float = key(0.1, ge=0)
    cross_weight: float = key(0.1, ge=0)
    dice_weight: float = key(1.0, ge=0)
    aff_radius: int = key(8, ge=0)
    ignore_index: int = key(255, ge=2, le=255)
    dice_ignore_in_denominator: bool = key(True, doc="the authors' Dice (doc §5.4); False = clean")
    self_training_start_iter: Optional[int] = key(
        18002, ge=1, doc="first 1-indexed iteration with self-training (doc §5.5); None = never"
    )
    self_training_threshold: float = key(0.75, ge=0, le=1)
    self_training_keep_ignore: bool = key(False)
