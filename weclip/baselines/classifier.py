"""CAM classifiers: a ResNet with a GAP + linear head, and a U-Net whose output is the CAM.

Class activation maps (Zhou et al., "Learning Deep Features for Discriminative Localization",
CVPR 2016, https://arxiv.org/abs/1512.04150): with features f(x) (D channels per position x),
global average pooling and a linear classifier W (K x D), the class score is
s_k = W_k · mean_x f(x) = mean_x (W_k · f(x)); the map M_k(x) = W_k · f(x) is the CAM of class k.
Here the head is a bias-free 1x1 convolution (as in AffinityNet's and IRN's CAM networks), so
``logits == mean over positions of (W · f)`` exactly; :meth:`CAMClassifier.cams` returns
``ReLU(W · f) / (max_x ReLU(W · f) + eps)`` per map (eps = 1e-5, IRN's).

* :class:`CAMClassifier`: :class:`~weclip.baselines.resnet.ResNetTrunk` (ResNet-18/50, output
  stride 16 by default) + the 1x1 head over K foreground classes.
* :class:`UNetCAMClassifier`: a :class:`~weclip.baselines.segnet.UNet` with K output channels at
  the input resolution; those channels are the CAM logits, logits = GAP(ReLU(CAM logits))
  (+ an optional per-class bias, see the class). It can add the weak segmentation loss
  (:func:`weak_dice_loss`, weight 0.1): Dice between sigmoid(CAM logits of each labelled class)
  and its own 0.5-thresholded, detached mask.

Losses (pure functions): :func:`multilabel_loss` (BCE over the K classes, for multi-label
datasets such as VOC; equal to ``multilabel_soft_margin_loss``), :func:`single_label_loss`
(softmax CE, for single-label datasets such as Oxford-IIIT Pet), :func:`classification_loss` to
choose by name, :func:`cam_classifier_loss` for the total with the optional Dice term.

Image-level labels are (B, K) multi-hot over the foreground classes (class id - 1); inputs are
normalised images (the model wrapper normalises).
"""

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from weclip.baselines.resnet import ResNetTrunk
from weclip.baselines.segnet import UNet

__all__ = [
    "CAMClassifier",
    "UNetCAMClassifier",
    "normalize_cams",
    "multilabel_loss",
    "single_label_loss",
    "classification_loss",
    "weak_dice_loss",
    "cam_classifier_loss",
]

CAM_EPS = 1e-5  # added to the per-map max (IRN / AffinityNet code)


def normalize_cams(raw: torch.Tensor, eps: float = CAM_EPS) -> torch.Tensor:
    """Divide each map by its spatial maximum: (B, K, h, w) non-negative -> [0, 1).

    Args:
        raw (torch.Tensor): (B, K, h, w) non-negative maps (ReLU'd CAMs).
        eps (float): added to the maximum (an all-zero map stays zero).
    """
    if raw.dim() != 4:
        raise ValueError(f"CAMs are (B, K, h, w), got {tuple(raw.shape)}")
    peak = raw.flatten(2).amax(dim=2)[:, :, None, None]
    return raw / (peak + eps)


class CAMClassifier(nn.Module):
    """ResNet trunk + bias-free 1x1 classifier over K foreground classes; CAMs from its weights.

    Args:
        num_classes (int): K, foreground classes (VOC 20, Pets species 2 / breeds 37).
        arch (str): trunk, "resnet18" / "resnet50" (see ``ResNetTrunk``). Default: "resnet50".
        weights (str): "random" or a local torchvision ImageNet file for the trunk.
        output_stride (int): 32, 16 or 8. Default: 16 (the last stage unstrided, as IRN).
        dilate (bool): dilate the unstrided stages. Default: True.
        base_width (int): trunk width (64 = torchvision; smaller for CPU tests).
        head_bias (bool): give the 1x1 head a bias (its CAM then omits it). Default: False.
        stem_pool (bool): keep the trunk's stem max-pool (False for small images). Default: True.

    Attributes:
        trunk (ResNetTrunk), head (nn.Conv2d (K, D, 1, 1)), num_classes, output_stride.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet50",
        weights: Optional[str] = "random",
        output_stride: int = 16,
        dilate: bool = True,
        base_width: int = 64,
        head_bias: bool = False,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes (foreground) must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.trunk = ResNetTrunk(arch, output_stride, dilate, base_width, weights, stem_pool)
        self.output_stride = self.trunk.output_stride
        self.head = nn.Conv2d(self.trunk.out_channels, self.num_classes, 1, bias=head_bias)
        # a new layer: xavier-uniform, as AffinityNet's CAM network initialises its 1x1 classifier
        nn.init.xavier_uniform_(self.head.weight)
        if head_bias:
            nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Classify.

        Args:
            images (torch.Tensor): (B, 3, H, W) normalised.

        Returns:
            dict: ``logits`` (B, K) = head(GAP(features)), ``features`` (B, D, h, w) (last stage,
            h = ceil(H / output_stride) for torchvision's padding), ``stages`` (the 4 stage maps).
        """
        stages = self.trunk(images)
        features = stages[-1]
        pooled = features.mean(dim=(2, 3), keepdim=True)
        logits = self.head(pooled).flatten(1)
        return {"logits": logits, "features": features, "stages": stages}

    def raw_cams(self, features: torch.Tensor) -> torch.Tensor:
        """ReLU(W · f): (B, D, h, w) -> (B, K, h, w), the head applied per position, no bias."""
        return F.relu(F.conv2d(features, self.head.weight))

    def cams(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised CAMs (B, K, h, w) in [0, 1): :meth:`raw_cams` / (per-map max + 1e-5)."""
        return normalize_cams(self.raw_cams(features))


class UNetCAMClassifier(nn.Module):
    """U-Net whose K output channels are the CAM logits; logits = GAP(ReLU(CAM logits)) + b.

    ``logit_bias`` (default True) adds a learned per-class offset b after the pooling. Without it
    (the literal "ReLU -> GAP -> logits" form) every logit is >= 0, so a sigmoid can never drop
    below 0.5 and the multi-label BCE cannot express "absent"; with the softmax CE of single-label
    data a shared offset cancels and either form works. The offset does not enter the CAM.

    Args:
        num_classes (int): K foreground classes.
        width (int): U-Net width. Default: 32.
        depth (int): U-Net depth. Default: 4.
        logit_bias (bool): per-class offset after the GAP. Default: True.
    """

    def __init__(
        self, num_classes: int, width: int = 32, depth: int = 4, logit_bias: bool = True
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.output_stride = 1
        self.unet = UNet(self.num_classes, in_channels=3, width=width, depth=depth)
        self.logit_bias = nn.Parameter(torch.zeros(self.num_classes)) if logit_bias else None

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Classify.

        Returns:
            dict: ``logits`` (B, K), ``features`` (B, K, H, W) = the CAM logits (pre-ReLU), so
            :meth:`cams` takes them as :class:`CAMClassifier.cams` takes its features.
        """
        cam_logits = self.unet(images)
        logits = F.relu(cam_logits).mean(dim=(2, 3))
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return {"logits": logits, "features": cam_logits}

    def raw_cams(self, features: torch.Tensor) -> torch.Tensor:
        """ReLU of the CAM logits (B, K, H, W)."""
        return F.relu(features)

    def cams(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised CAMs (B, K, H, W) in [0, 1)."""
        return normalize_cams(self.raw_cams(features))


def _check_pair(logits: torch.Tensor, cls_labels: torch.Tensor) -> None:
    if logits.dim() != 2 or tuple(cls_labels.shape) != tuple(logits.shape):
        raise ValueError(
            f"expected logits (B, K) and cls_labels (B, K); got {tuple(logits.shape)} and "
            f"{tuple(cls_labels.shape)}"
        )


def multilabel_loss(logits: torch.Tensor, cls_labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the B x K (image, class) pairs (multi-label data).

    Equal to ``F.multilabel_soft_margin_loss`` (the loss of AffinityNet's / IRN's classifiers).

    Args:
        logits (torch.Tensor): (B, K).
        cls_labels (torch.Tensor): (B, K) multi-hot {0, 1}.
    """
    _check_pair(logits, cls_labels)
    return F.binary_cross_entropy_with_logits(logits.float(), cls_labels.float())


def single_label_loss(logits: torch.Tensor, cls_labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy against the one labelled class of each image (single-label data).

    Args:
        logits (torch.Tensor): (B, K).
        cls_labels (torch.Tensor): (B, K) one-hot: exactly one positive per row.

    Raises:
        ValueError: a row has zero or several positive classes (multi-label data needs
            :func:`multilabel_loss`).
    """
    _check_pair(logits, cls_labels)
    positives = (cls_labels > 0).sum(dim=1)
    if bool((positives != 1).any()):
        row = int((positives != 1).nonzero()[0, 0])
        raise ValueError(
            f"single-label loss: image {row} of the batch has {int(positives[row])} labelled "
            "classes, expected exactly 1 (use the multi-label loss for multi-label data)"
        )
    return F.cross_entropy(logits.float(), cls_labels.argmax(dim=1))


def classification_loss(logits: torch.Tensor, cls_labels: torch.Tensor, kind: str) -> torch.Tensor:
    """``kind`` "multilabel" (BCE, VOC/COCO) or "single" (softmax CE, Pets)."""
    if kind == "multilabel":
        return multilabel_loss(logits, cls_labels)
    if kind == "single":
        return single_label_loss(logits, cls_labels)
    raise ValueError(f"classification loss kind must be 'multilabel' or 'single', got {kind!r}")


def weak_dice_loss(
    cam_logits: torch.Tensor,
    cls_labels: torch.Tensor,
    threshold: float = 0.5,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Dice loss between sigmoid(CAM logits) and its own thresholded mask, labelled classes only.

    For every labelled (image b, class k): p = sigmoid(cam_logits[b, k]), m = (p > threshold)
    detached, Dice = 1 - (2 sum(p m) + smooth) / (sum(p) + sum(m) + smooth); the loss is the mean
    over the labelled pairs (0 when there is none). The mask is the network's own prediction, so
    the term sharpens the maps towards 0 / 1 (a self-training term, no pixel label is used).
    ``smooth`` (1, the usual Laplace smoothing) keeps an empty mask finite.

    Args:
        cam_logits (torch.Tensor): (B, K, H, W) pre-ReLU CAM logits.
        cls_labels (torch.Tensor): (B, K) multi-hot.
        threshold (float): mask threshold on the sigmoid. Default: 0.5.
        smooth (float): Default: 1.

    Returns:
        torch.Tensor: scalar.
    """
    if cam_logits.dim() != 4 or tuple(cls_labels.shape) != tuple(cam_logits.shape[:2]):
        raise ValueError(
            f"expected cam_logits (B, K, H, W) and cls_labels (B, K); got "
            f"{tuple(cam_logits.shape)} and {tuple(cls_labels.shape)}"
        )
    b_index, k_index = (cls_labels > 0).nonzero(as_tuple=True)
    if b_index.numel() == 0:
        return cam_logits.sum() * 0.0
    p = torch.sigmoid(cam_logits[b_index, k_index].float()).flatten(1)  # (P, H*W)
    m = (p > threshold).float().detach()
    dice = (2 * (p * m).sum(1) + smooth) / (p.sum(1) + m.sum(1) + smooth)
    return (1.0 - dice).mean()


def cam_classifier_loss(
    logits: torch.Tensor,
    cls_labels: torch.Tensor,
    kind: str = "multilabel",
    cam_logits: Optional[torch.Tensor] = None,
    dice_weight: float = 0.0,
) -> Dict[str, torch.Tensor]:
    """Total classifier loss: classification + ``dice_weight`` x weak Dice (0.1 when enabled).

    Args:
        logits (torch.Tensor): (B, K).
        cls_labels (torch.Tensor): (B, K).
        kind (str): "multilabel" or "single".
        cam_logits (torch.Tensor, optional): (B, K, H, W), needed when ``dice_weight > 0``.
        dice_weight (float): weight of :func:`weak_dice_loss`; 0 disables it.

    Returns:
        dict: ``loss`` (with grad), ``cls_loss`` and, when enabled, ``dice_loss``.
    """
    cls = classification_loss(logits, cls_labels, kind)
    out = {"cls_loss": cls}
    loss = cls
    if dice_weight > 0:
        if cam_logits is None:
            raise ValueError("dice_weight > 0 needs the CAM logits (cam_logits)")
        dice = weak_dice_loss(cam_logits, cls_labels)
        out["dice_loss"] = dice
        loss = loss + float(dice_weight) * dice
    out["loss"] = loss
    return out
