"""Config schema of the segmentation networks (``model.type = "SegNet"`` / ``"FullySupervisedSegNet"``).

Defaults: U-Net of width 32 and depth 4 (``weclip/baselines/segnet.py``; the paper's width is 64),
torchvision's ImageNet normalisation, pixel cross-entropy; the focal loss's gamma = 2 is Lin et al.'s
(https://arxiv.org/abs/1708.02002).
"""

from typing import Literal, Optional, Tuple

from weclip.baselines.resnet import IMAGENET_MEAN, IMAGENET_STD
from weclip.schema import key, section

__all__ = [
    "UNetConfig",
    "FCNConfig",
    "DeepLabConfig",
    "SegNetModelConfig",
    "SegNetLossConfig",
    "SEGNET_TYPES",
]

#: the registered types: the same network, named by its training targets so that reports keep the rows
#: of the weakly supervised second stage and of the fully supervised upper bound apart
SEGNET_TYPES = ("SegNet", "FullySupervisedSegNet")


@section
class UNetConfig:
    """``model.unet`` (``weclip.baselines.segnet.UNet``)."""

    width: int = key(32, ge=1, doc="channels of the first level (64 in the paper)")
    depth: int = key(4, ge=1, doc="number of 2x poolings (4 in the paper)")


@section
class FCNConfig:
    """``model.fcn`` (``weclip.baselines.segnet.FCNResNet``: a ResNet trunk + torchvision's FCNHead)."""

    arch: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = key("resnet50")
    weights: str = key("random", doc="'random' or a local torchvision ImageNet file for the trunk")
    base_width: int = key(64, ge=1, doc="64 = torchvision (ImageNet weights need it)")
    stem_pool: bool = key(True, doc="False: every stage at half the stride (small images)")
    output_stride: int = key(8, doc="8 (torchvision's FCN); 4, 8 or 16 without the stem pool")


@section
class DeepLabConfig:
    """``model.deeplab`` (``weclip.baselines.segnet.DeepLabV3ResNet50``, output stride 8)."""

    weights: str = key("random", doc="local torchvision deeplabv3_resnet50 state dict, or 'random'")
    backbone_weights: str = key("random", doc="local torchvision resnet50 ImageNet file")
    load_head: bool = key(True, doc="with weights: also load classifier.4 (same class count)")


@section
class SegNetModelConfig:
    """``model`` of ``type="SegNet"`` (trained on pseudo-masks) or ``"FullySupervisedSegNet"`` (on the
    ground truth); both read their targets from ``data.train_mask_dir``."""

    type: Literal["SegNet", "FullySupervisedSegNet"] = key()
    arch: Literal["unet", "fcn_resnet", "deeplabv3_resnet50"] = key("unet")
    unet: UNetConfig = key(UNetConfig())
    fcn: FCNConfig = key(FCNConfig())
    deeplab: DeepLabConfig = key(DeepLabConfig())
    pixel_mean: Tuple[float, float, float] = key(IMAGENET_MEAN, doc="on 0-255 RGB")
    pixel_std: Tuple[float, float, float] = key(IMAGENET_STD, gt=0)


@section
class SegNetLossConfig:
    """``loss``: pixel CE or focal loss over the non-ignored target pixels."""

    kind: Literal["ce", "focal"] = key("ce")
    gamma: float = key(2.0, ge=0, doc="focal: focusing parameter (Lin et al.: 2)")
    alpha: Optional[Tuple[float, ...]] = key(None, ge=0, doc="focal: C per-class weights")
    ignore_index: int = key(255, ge=0, le=255)
