"""ResNet trunks for the CNN baselines (He et al., CVPR 2016, https://arxiv.org/abs/1512.03385).

The trunk is torchvision's ResNet (its ``BasicBlock`` / ``Bottleneck`` classes, the same module
names ``conv1 bn1 relu maxpool layer1..layer4`` and the same initialisation) without the ImageNet
``avgpool``/``fc``, so torchvision's ImageNet state dicts load into it unchanged (``fc.*`` dropped).
Two additions that the CAM baselines need:

* **output stride** 32 (plain), 16 or 8: the stride of ``layer4`` (and, for 8, of ``layer3``) is
  removed. With ``dilate=True`` (default) the 3x3 convolutions of the unstrided stages are dilated
  instead, the DeepLab convention (Chen et al., https://arxiv.org/abs/1706.05587) that torchvision
  implements as ``replace_stride_with_dilation`` for Bottleneck networks: the first block's strided
  conv keeps the previous dilation, every other 3x3 conv of the stage gets the new one (x2 per
  removed stride). This module applies the same rule to BasicBlock (ResNet-18/34), which torchvision
  refuses to dilate. ``dilate=False`` only removes the stride (IRN's CAM network, Ahn et al., CVPR
  2019, https://arxiv.org/abs/1904.05044, uses ``strides=(2, 2, 2, 1)`` without dilation).
* **base width** (64 in torchvision): a narrower network of the same layout for CPU tests; the
  stage widths are ``base_width * (1, 2, 4, 8) * expansion``. ImageNet weights need 64.
* **stem pool** (True in torchvision): ``stem_pool=False`` drops the 3x3 max-pool after ``conv1``
  (it has no weights, so ImageNet weights still load), halving every stage's stride, the usual
  change for small images: on the 64 px toy world a 20-35 px object shrinks to 5-9 px in
  ``layer1`` with the pool, and a random-init ResNet-18 learns the toy shapes and localises them
  much faster without it (measured, ``tests/test_baselines_learning.py``). Output strides are
  then 4, 8 or 16.

Inputs are ImageNet-normalised RGB (the model wrapper normalises, ``IMAGENET_MEAN`` / ``_STD`` on
0-255 below); outputs are the four stage feature maps.
"""

from typing import List, Optional, Tuple, Type, Union

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from weclip.baselines.weights import is_random, load_weights

__all__ = ["ResNetTrunk", "RESNET_LAYOUTS", "IMAGENET_MEAN", "IMAGENET_STD"]

# torchvision's ImageNet normalisation, on 0-255 RGB (the model wrapper's pixel_mean / pixel_std).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: Tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)

Block = Type[Union[BasicBlock, Bottleneck]]
# arch -> (block class, blocks per stage), as torchvision.models.resnet{18,34,50,101}
RESNET_LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def _make_stage(
    block: Block, inplanes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """One stage as torchvision builds it (projection shortcut on the first block when needed)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * block.expansion, stride),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes))
    return nn.Sequential(*layers)


def _three_by_three_convs(block: nn.Module) -> List[nn.Conv2d]:
    """The 3x3 convolutions of a BasicBlock (conv1, conv2) or Bottleneck (conv2), in order."""
    names = ("conv1", "conv2") if isinstance(block, BasicBlock) else ("conv2",)
    return [getattr(block, n) for n in names]


def _unstride_stage(
    stage: nn.Sequential, previous_dilation: int, dilation: int, dilate: bool
) -> None:
    """Remove the stride of a stage; optionally dilate its 3x3 convs (rule in the module doc)."""
    for index, block in enumerate(stage):
        for conv in _three_by_three_convs(block):
            strided = conv.stride != (1, 1)
            if strided:
                conv.stride = (1, 1)
            if dilate:
                d = previous_dilation if (index == 0 and strided) else dilation
                conv.dilation, conv.padding = (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class ResNetTrunk(nn.Module):
    """torchvision ResNet without ``avgpool``/``fc``, with a configurable output stride.

    Args:
        arch (str): "resnet18", "resnet34", "resnet50" or "resnet101".
        output_stride (int): stride of the last feature map: 32, 16 or 8 (4 more without the stem
            pool: 16, 8 or 4). Default: 16.
        dilate (bool): dilate the unstrided stages (True) or only drop their stride. Default: True.
        base_width (int): width of ``conv1`` and ``layer1`` (64 = torchvision). Default: 64.
        weights (str): "random" or a local torchvision ImageNet state dict of the same arch (its
            ``fc.*`` is ignored). Never downloaded.
        stem_pool (bool): keep the stem max-pool. Default: True.

    Attributes:
        stage_channels (Tuple[int, int, int, int]): channels of layer1..layer4.
        stage_strides (Tuple[int, int, int, int]): strides of layer1..layer4 (4, 8, 16 or 8, ...).
        out_channels (int): channels of the last stage.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        output_stride: int = 16,
        dilate: bool = True,
        base_width: int = 64,
        weights: Optional[str] = "random",
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if arch not in RESNET_LAYOUTS:
            raise ValueError(
                f"unknown ResNet arch {arch!r}; expected one of {sorted(RESNET_LAYOUTS)}"
            )
        first = 4 if stem_pool else 2  # stride of layer1
        allowed = (2 * first, 4 * first, 8 * first)
        if output_stride not in allowed:
            raise ValueError(
                f"output_stride must be one of {allowed} "
                f"({'with' if stem_pool else 'without'} the stem pool), got {output_stride}"
            )
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        block, layout = RESNET_LAYOUTS[arch]
        self.arch = arch
        self.output_stride = int(output_stride)
        w = int(base_width)
        self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.stem_pool = bool(stem_pool)
        # no weights: dropping it keeps the state dict (and ImageNet files) unchanged
        self.maxpool = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem_pool else nn.Identity()
        )
        planes = (w, 2 * w, 4 * w, 8 * w)
        strides = (1, 2, 2, 2)
        inplanes = w
        stages = []
        for p, n, s in zip(planes, layout, strides):
            stages.append(_make_stage(block, inplanes, p, n, s))
            inplanes = p * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():  # torchvision's initialisation (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # unstrided stages: layer4 for stride 16, layer3 + layer4 for stride 8
        removed = allowed[::-1].index(self.output_stride)  # strides to remove: 0, 1 or 2
        unstrided = {0: (), 1: (4,), 2: (3, 4)}[removed]
        dilation = 1
        stride = first
        stage_strides = []
        for index, stage in enumerate(stages, start=1):
            if index > 1 and index not in unstrided:
                stride *= 2
            if index in unstrided:
                previous, dilation = dilation, dilation * 2
                _unstride_stage(stage, previous, dilation, dilate)
            stage_strides.append(stride)
        self.stage_strides: Tuple[int, ...] = tuple(stage_strides)
        self.stage_channels: Tuple[int, ...] = tuple(p * block.expansion for p in planes)
        self.out_channels = self.stage_channels[-1]
        if not is_random(weights):
            load_weights(
                self,
                weights,
                what=f"torchvision {arch} ImageNet weights (base width {w})",
                drop_prefixes=("fc.",),
            )

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Stage features.

        Args:
            images (torch.Tensor): (B, 3, H, W) normalised RGB.

        Returns:
            List[torch.Tensor]: layer1..layer4 outputs, (B, stage_channels[i], ceil-ish H / s_i,
            W / s_i) with s = ``stage_strides`` (torchvision's padding: H=65 at stride 16 gives 5).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ResNetTrunk expects (B, 3, H, W) images, got {tuple(images.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        feats = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            feats.append(x)
        return feats
