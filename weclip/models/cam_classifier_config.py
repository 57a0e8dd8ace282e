"""Config schema of the CAM classifier (``model.type = "CAMClassifier"``): ``model`` and ``loss``.

Defaults are the sources' values (docs/baselines.md): IRN's CAM network for the ResNet (output stride
16, background threshold 0.15, https://arxiv.org/abs/1904.05044), torchvision's ImageNet
normalisation, the issue's 0.1 weight for the U-Net's weak Dice term.
"""

from typing import Any, Dict, Literal, Tuple

from weclip.baselines.cam_methods.config import CAMMethodConfig
from weclip.baselines.resnet import IMAGENET_MEAN, IMAGENET_STD
from weclip.errors import ConfigError
from weclip.schema import key, section

__all__ = [
    "ResNetConfig",
    "UNetCAMConfig",
    "CAMPseudoConfig",
    "RegionGrowingConfig",
    "CAMClassifierModelConfig",
    "CAMClassifierLossConfig",
]

ResNetArch = Literal["resnet18", "resnet34", "resnet50", "resnet101"]


@section
class ResNetConfig:
    """``model.resnet``: the trunk (``weclip/baselines/resnet.py``) and the 1x1 CAM head."""

    arch: ResNetArch = key("resnet50")
    weights: str = key("random", doc="'random' or a local torchvision ImageNet file")
    output_stride: int = key(
        16, ge=4, doc="stride of the CAM grid: 8, 16, 32 (4, 8, 16 with stem_pool=False)"
    )
    dilate: bool = key(True, doc="dilate the unstrided stages (False: IRN's strides only)")
    base_width: int = key(64, ge=1, doc="64 = torchvision (ImageNet weights need it)")
    stem_pool: bool = key(True, doc="False for small images (the toy world)")
    head_bias: bool = key(False, doc="bias of the 1x1 head (the CAM omits it)")


@section
class UNetCAMConfig:
    """``model.unet``: the U-Net CAM classifier (``UNetCAMClassifier``)."""

    width: int = key(32, ge=1)
    depth: int = key(4, ge=1)
    logit_bias: bool = key(True, doc="per-class offset after the GAP (needed by the BCE)")


@section
class CAMPseudoConfig:
    """``model.pseudo``: CAM -> pseudo-labels (``mode="pseudo"``, the ``cam`` row, ``predict``)."""

    threshold: float = key(
        0.15, ge=0, doc="background t (IRN's cam_eval_thres) or alpha with bg_mode='power'"
    )
    bg_mode: Literal["threshold", "power"] = key("threshold")
    scales: Tuple[float, ...] = key((1.0,), gt=0, nonempty=True, doc="IRN: 1.0, 0.5, 1.5, 2.0")
    flip: bool = key(False, doc="add the mirrored image's CAMs (IRN: True)")
    region_growing: bool = key(False, doc="mode='pseudo' labels by region growing (row cam_rg)")


@section
class RegionGrowingConfig:
    """``model.region_growing``: growth of CAM seeds in feature space (``region_growing.py``)."""

    seed_threshold: float = key(0.30, ge=0, le=1, doc="IRN's conf_fg_thres")
    sim_threshold: float = key(0.8, ge=-1, le=1)
    num_iters: int = key(10, ge=0)
    connectivity: Literal[4, 8] = key(4)
    stage: int = key(4, ge=1, le=4, doc="ResNet stage whose features are compared (U-Net: CAMs)")
    center: bool = key(
        True, doc="cosine of mean-subtracted features (ReLU features: raw cosines ~1)"
    )


@section
class CAMClassifierModelConfig:
    """``model`` of ``type="CAMClassifier"``."""

    type: Literal["CAMClassifier"] = key()
    arch: Literal["resnet", "unet"] = key("resnet", doc="ResNet + GAP + 1x1 head, or U-Net CAM")
    resnet: ResNetConfig = key(ResNetConfig())
    unet: UNetCAMConfig = key(UNetCAMConfig())
    pixel_mean: Tuple[float, float, float] = key(IMAGENET_MEAN, doc="on 0-255 RGB")
    pixel_std: Tuple[float, float, float] = key(IMAGENET_STD, gt=0)
    pseudo: CAMPseudoConfig = key(CAMPseudoConfig())
    region_growing: RegionGrowingConfig = key(RegionGrowingConfig())
    presence_threshold: float = key(
        0.5, gt=0, lt=1, doc="mode='predict': classes with sigmoid(logit) > this (multilabel)"
    )
    # CAM-improvement method of the training (docs/cam_methods.md); type "none" = the plain classifier
    method: CAMMethodConfig = key(CAMMethodConfig())

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if values["pseudo"]["bg_mode"] == "threshold" and values["pseudo"]["threshold"] > 1:
            raise ConfigError(
                f"config key '{prefix}.pseudo.threshold' = {values['pseudo']['threshold']}: a "
                "background threshold on max-normalised CAMs lies in [0, 1]"
            )


@section
class CAMClassifierLossConfig:
    """``loss``: classification (+ ``dice_weight`` x weak Dice for the U-Net)."""

    kind: Literal["multilabel", "single"] = key(
        "multilabel", doc="BCE (VOC, toy) or softmax CE (Oxford-IIIT Pet)"
    )
    dice_weight: float = key(0.0, ge=0, doc="weak Dice term, U-Net only (0.1 when enabled)")
