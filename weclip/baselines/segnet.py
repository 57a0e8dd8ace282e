"""Second-stage and fully supervised segmentation networks, and their losses.

* :class:`UNet`: U-Net (Ronneberger et al., MICCAI 2015, https://arxiv.org/abs/1505.04597): an
  encoder of ``depth`` double-conv levels with 2x2 max pooling, a decoder of 2x2 transposed
  convolutions whose outputs are concatenated with the encoder maps of the same size, and a 1x1
  classifier. Two modern changes, both usual today: "same" padding (the paper used unpadded convs
  and cropped the skips) and BatchNorm after every 3x3 conv. Widths are ``width * 2**level``.
  Any input size works: the input is zero-padded at the bottom/right to a multiple of
  ``2**depth`` and the output cropped back.
* :class:`FCNResNet`: the fully convolutional network of Long et al. (CVPR 2015,
  https://arxiv.org/abs/1411.4038) as torchvision builds ``fcn_resnet50``: a dilated ResNet trunk at
  output stride 8 and torchvision's ``FCNHead`` (3x3 conv to a quarter of the channels, BN, ReLU,
  dropout 0.1, 1x1 classifier), logits upsampled bilinearly to the input size. The trunk is this
  library's :class:`~weclip.baselines.resnet.ResNetTrunk`, so any depth, a narrower width and no stem
  pool are available for small images (the toy world's second stage, docs/baselines.md); torchvision
  ImageNet trunk weights load from a LOCAL file.
* :class:`DeepLabV3ResNet50`: torchvision's DeepLabV3 with a ResNet-50 trunk at output stride 8
  (Chen et al., https://arxiv.org/abs/1706.05587), random or from LOCAL files (never downloaded):
  a full torchvision DeepLabV3 state dict and/or ImageNet ResNet-50 weights for the trunk.
* :func:`segmentation_loss`: pixel cross-entropy with ``ignore_index`` (255), or the focal loss
  (Lin et al., ICCV 2017, https://arxiv.org/abs/1708.02002): FL(p_t) = -alpha_t (1 - p_t)^gamma
  log p_t, averaged over the non-ignored pixels; gamma = 0 and no alpha is exactly the CE.

Both networks map normalised images (B, 3, H, W) to logits (B, C, H, W) at the input size.
"""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from weclip.baselines.resnet import ResNetTrunk
from weclip.baselines.weights import is_random, load_weights

__all__ = [
    "UNet",
    "FCNResNet",
    "DeepLabV3ResNet50",
    "segmentation_loss",
    "focal_loss",
    "cross_entropy_loss",
]


class _DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) x 2, "same" padding."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net for dense prediction (see the module docstring).

    Args:
        num_classes (int): output channels C.
        in_channels (int): input channels. Default: 3.
        width (int): channels of the first level (64 in the paper). Default: 32.
        depth (int): number of 2x poolings (4 in the paper). Default: 4.

    Shapes:
        images (B, in_channels, H, W) -> logits (B, C, H, W), any H, W >= 1.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, width: int = 32, depth: int = 4
    ) -> None:
        super().__init__()
        if num_classes < 1 or width < 1 or depth < 1:
            raise ValueError(
                f"UNet needs num_classes, width, depth >= 1; got {num_classes}, {width}, {depth}"
            )
        self.num_classes = int(num_classes)
        self.depth = int(depth)
        channels = [int(width) * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList([_DoubleConv(in_channels, channels[0])])
        for i in range(1, depth + 1):
            self.encoders.append(_DoubleConv(channels[i - 1], channels[i]))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.ups.append(nn.ConvTranspose2d(channels[i], channels[i - 1], 2, stride=2))
            self.decoders.append(_DoubleConv(2 * channels[i - 1], channels[i - 1]))
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) for images (B, in_channels, H, W)."""
        if images.dim() != 4:
            raise ValueError(f"UNet expects (B, C, H, W) images, got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        x = F.pad(images, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else images
        skips = []
        for index, encoder in enumerate(self.encoders):
            if index > 0:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)[:, :, :height, :width]


class FCNResNet(nn.Module):
    """FCN on a ResNet trunk (see the module docstring): normalised images -> logits at the input size.

    Args:
        num_classes (int): output channels C.
        arch (str): "resnet18", "resnet34", "resnet50" or "resnet101". Default: "resnet50".
        output_stride (int): stride of the trunk's last map (8 as torchvision's FCN; 4 more choices
            without the stem pool, see ``ResNetTrunk``). Default: 8.
        base_width (int): width of ``conv1`` / ``layer1`` (64 = torchvision). Default: 64.
        weights (str): "random" or a local torchvision ImageNet state dict for the trunk.
        stem_pool (bool): keep the stem max-pool. Default: True.

    Shapes:
        images (B, 3, H, W) -> logits (B, C, H, W).
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet50",
        output_stride: int = 8,
        base_width: int = 64,
        weights: Optional[str] = "random",
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        from torchvision.models.segmentation.fcn import FCNHead

        if num_classes < 1:
            raise ValueError(f"FCNResNet needs num_classes >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.trunk = ResNetTrunk(arch, output_stride, True, base_width, weights, stem_pool)
        self.head = FCNHead(self.trunk.out_channels, self.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) for normalised images (B, 3, H, W)."""
        logits = self.head(self.trunk(images)[-1])
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3ResNet50(nn.Module):
    """torchvision's DeepLabV3-ResNet50 (output stride 8) returning logits at the input size.

    Args:
        num_classes (int): C.
        weights (str): "random" or a local state dict of torchvision's ``deeplabv3_resnet50``
            (e.g. ``deeplabv3_resnet50_coco-cd0a2569.pth``). Its ``aux_classifier.*`` is ignored
            when ``aux_loss`` is False.
        backbone_weights (str): "random" or local torchvision ResNet-50 ImageNet weights for the
            trunk (``fc.*`` ignored); applied before ``weights`` when both are given.
        load_head (bool): with ``weights``, also load the last 1x1 classifier (``classifier.4``);
            False keeps it random, e.g. to start from COCO weights with another class count.
        aux_loss (bool): build torchvision's auxiliary FCN head on ``layer3`` (returned as
            ``aux`` by :meth:`forward_dict`). Default: False.

    Note: the ASPP image-pooling branch has a BatchNorm on a 1x1 map, so training needs batches
    of at least 2 images (torchvision's model, unchanged).
    """

    def __init__(
        self,
        num_classes: int,
        weights: Optional[str] = "random",
        backbone_weights: Optional[str] = "random",
        load_head: bool = True,
        aux_loss: bool = False,
    ) -> None:
        super().__init__()
        from torchvision.models.segmentation import deeplabv3_resnet50

        self.num_classes = int(num_classes)
        # weights=None and weights_backbone=None: torchvision builds a random network, no download
        self.net = deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=self.num_classes, aux_loss=aux_loss
        )
        if not is_random(backbone_weights):
            load_weights(
                self.net.backbone,
                backbone_weights,
                what="torchvision resnet50 ImageNet weights",
                drop_prefixes=("fc.",),
            )
        if not is_random(weights):
            drop = [] if aux_loss else ["aux_classifier."]
            target: nn.Module = self.net
            if not load_head:
                drop.append("classifier.4.")
                target = _WithoutHead(self.net)
            load_weights(
                target,
                weights,
                what=f"torchvision deeplabv3_resnet50 weights with {self.num_classes} classes",
                drop_prefixes=drop,
            )

    def forward_dict(self, images: torch.Tensor) -> dict:
        """torchvision's output dict: ``out`` (B, C, H, W) and, with ``aux_loss``, ``aux``."""
        return self.net(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) for normalised images (B, 3, H, W)."""
        return self.net(images)["out"]


class _WithoutHead(nn.Module):
    """View of a DeepLabV3 whose state dict omits ``classifier.4`` (for ``load_head=False``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.backbone = net.backbone
        self.classifier = nn.Sequential(*list(net.classifier.children())[:4])
        if getattr(net, "aux_classifier", None) is not None:
            self.aux_classifier = net.aux_classifier


def cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Mean pixel CE over the non-ignored pixels (0 when every pixel is ignored).

    Args:
        logits (torch.Tensor): (B, C, H, W).
        labels (torch.Tensor): (B, H, W) class ids or ``ignore_index``.
    """
    if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]) or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match"
        )
    labels = labels.long()
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    alpha: Optional[Sequence[float]] = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Focal loss, mean over the non-ignored pixels (Lin et al. 2017, alpha-balanced form).

    FL = -alpha_t * (1 - p_t)**gamma * log p_t with p_t = softmax(logits)[label]. ``gamma = 2`` is
    the paper's default; ``alpha`` (per-class weights, default none = 1) is the paper's
    alpha-balancing. An all-ignored batch gives 0 (with a gradient of 0).

    Args:
        logits (torch.Tensor): (B, C, H, W).
        labels (torch.Tensor): (B, H, W) integer class ids or ``ignore_index``.
        gamma (float): focusing parameter >= 0.
        alpha (Sequence[float], optional): C class weights.
        ignore_index (int): label of ignored pixels.

    Returns:
        torch.Tensor: scalar.
    """
    if logits.dim() != 4 or labels.dim() != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits (B, C, H, W) and labels (B, H, W); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
        raise ValueError(
            f"logits {tuple(logits.shape[-2:])} and labels {tuple(labels.shape[-2:])} differ in "
            "size; use segmentation_loss (it upsamples) or resize first"
        )
    if gamma < 0:
        raise ValueError(f"focal loss gamma must be >= 0, got {gamma}")
    labels = labels.long()
    valid = labels != ignore_index
    num_classes = logits.shape[1]
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"labels hold values outside 0..{num_classes - 1} and != ignore {ignore_index}: "
            f"{labels[bad].unique()[:5].tolist()}"
        )
    safe = labels.masked_fill(~valid, 0)
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = log_p.gather(1, safe[:, None]).squeeze(1)  # (B, H, W)
    loss = -log_pt
    if gamma != 0:
        loss = loss * (1.0 - log_pt.exp()).clamp(min=0.0).pow(gamma)
    if alpha is not None:
        weights = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
        if weights.shape != (num_classes,):
            raise ValueError(f"alpha needs {num_classes} class weights, got {tuple(weights.shape)}")
        loss = loss * weights[safe]
    loss = loss * valid
    return loss.sum() / valid.sum().clamp(min=1)


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    kind: str = "ce",
    gamma: float = 2.0,
    alpha: Optional[Sequence[float]] = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """CE or focal loss, after upsampling the logits (bilinear) to the label size if they differ.

    Args:
        logits (torch.Tensor): (B, C, h, w).
        labels (torch.Tensor): (B, H, W) class ids, ``ignore_index`` = ignored.
        kind (str): "ce" or "focal".
        gamma (float): focal gamma (focal only). Default: 2 (Lin et al.).
        alpha (Sequence[float], optional): focal class weights (focal only).
        ignore_index (int): Default: 255.

    Returns:
        torch.Tensor: scalar.
    """
    if logits.dim() != 4 or labels.dim() != 3:
        raise ValueError(
            f"expected logits (B, C, h, w) and labels (B, H, W); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if kind == "ce":
        return cross_entropy_loss(logits, labels, ignore_index)
    if kind == "focal":
        return focal_loss(logits, labels, gamma=gamma, alpha=alpha, ignore_index=ignore_index)
    raise ValueError(f"segmentation loss kind must be 'ce' or 'focal', got {kind!r}")
