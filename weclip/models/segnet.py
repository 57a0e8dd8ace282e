"""Segmentation networks trained on masks: the second stage of the CNN pipeline and its upper bound.

The last stage of the classic multi-stage WSSS pipeline (docs/baselines.md): a segmentation network
trained on pseudo-masks exported by an earlier stage (``tools/eval_pseudo.py ... --export-dir``;
``model.type = "SegNet"``), and the same network trained on the ground truth, the fully supervised
upper bound (``"FullySupervisedSegNet"``). Both read their targets from the training set's
``data.train_mask_dir`` (augmented with the image; the trainer passes them as ``targets``); the two
type names only keep the two kinds of rows apart in ``tools/report.py`` (one row per model type).

Networks (``weclip/baselines/segnet.py``, ``model.arch``): U-Net (Ronneberger et al., MICCAI 2015,
https://arxiv.org/abs/1505.04597), an FCN on a ResNet trunk (Long et al., CVPR 2015,
https://arxiv.org/abs/1411.4038) or torchvision's DeepLabV3-ResNet50 (Chen et al.,
https://arxiv.org/abs/1706.05587); loss: pixel CE or the focal loss (Lin et al., ICCV 2017,
https://arxiv.org/abs/1708.02002), ``loss.kind``.
"""

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from weclip.baselines.maps import pair_maps
from weclip.baselines.segnet import DeepLabV3ResNet50, FCNResNet, UNet, segmentation_loss
from weclip.errors import ConfigError, UserInputError
from weclip.models.base import SegmentationModel
from weclip.models.registry import register_model
from weclip.models.segnet_config import SEGNET_TYPES, SegNetLossConfig, SegNetModelConfig

__all__ = ["SegNetModel", "build_segnet"]

logger = logging.getLogger("weclip")

MODES = ("predict", "pseudo", "loss")


class SegNetModel(SegmentationModel):
    """A segmentation network behind the model interface.

    Args:
        net (nn.Module): ``UNet``, ``FCNResNet`` or ``DeepLabV3ResNet50`` (normalised images ->
            (B, C, H, W) logits).
        loss_cfg (Mapping): the validated ``loss`` section.
        pixel_mean (Sequence[float]): (3,) on 0-255 RGB.
        pixel_std (Sequence[float]): (3,).
        class_names (Sequence[str], optional): C names.
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        loss_cfg: Mapping[str, Any],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, class_names=class_names)
        self.net = net
        self.loss_cfg = dict(loss_cfg)

    @property
    def num_classes(self) -> int:
        """C, including background."""
        return self.net.num_classes

    @property
    def patch_size(self) -> int:
        """1: the networks take any size and return logits at the input size."""
        return 1

    def trainable_module(self) -> nn.Module:
        """The whole network."""
        return self.net

    def loss(self, seg_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``segmentation_loss`` with the ``loss`` section (CE or focal, ignore 255)."""
        c = self.loss_cfg
        return segmentation_loss(
            seg_logits, targets, c["kind"], c["gamma"], c["alpha"], c["ignore_index"]
        )

    def forward(
        self,
        images: torch.Tensor,
        cls_labels: Optional[torch.Tensor] = None,
        *,
        mode: str = "predict",
        iteration: Optional[int] = None,
        out_size: Optional[Tuple[int, int]] = None,
        valid: Optional[torch.Tensor] = None,
        targets: Optional[torch.Tensor] = None,
    ) -> Dict[str, Any]:
        """Segment; with masks, the loss; with image-level labels, label-restricted pseudo-labels.

        Args:
            images (torch.Tensor): (B, 3, H, W) uint8 (or float 0-255) RGB.
            cls_labels (torch.Tensor, optional): (B, C-1) multi-hot ("pseudo"; unused by "loss").
            mode (str): "predict", "pseudo" or "loss".
            iteration (int, optional): unused (no schedule inside the model).
            out_size (tuple, optional): (H_out, W_out) of the pseudo-labels; default (H, W).
            valid (torch.Tensor, optional): unused: padding is already 255 in ``targets``.
            targets (torch.Tensor, optional): (B, H, W) class ids / 255 ("loss": required).

        Returns:
            dict: ``seg_logits`` (B, C, H, W); "loss" adds ``loss``, ``log`` (``seg_loss``) and
            ``pseudo_labels`` = the targets (the trainer's pixel accuracy and image panels);
            "pseudo" adds ``pseudo_labels`` (B, H_out, W_out): the argmax over the background and the
            present classes, ``cams``/``cams_refined`` (P, H, W) / (P, H_out, W_out): the softmax
            probabilities of the present classes, ``batch_index``/``class_index`` (P,).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        seg_logits = self.net(self.preprocess(images))
        out: Dict[str, Any] = {"seg_logits": seg_logits}
        if mode == "predict":
            return out
        if mode == "loss":
            if targets is None:
                raise ValueError(
                    "the segmentation network trains on masks: set data.train_mask_dir (exported "
                    "pseudo-masks, or the ground truth) so that the trainer passes targets"
                )
            loss = self.loss(seg_logits, targets)
            out.update(loss=loss, log={"seg_loss": loss.detach()}, pseudo_labels=targets)
            return out
        if cls_labels is None:
            raise ValueError("mode='pseudo' needs the image-level labels cls_labels")
        probs = seg_logits.float().softmax(dim=1)
        keep = torch.cat([torch.ones_like(cls_labels[:, :1]), (cls_labels > 0).float()], dim=1)
        scores = probs * keep[:, :, None, None]
        size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
        resized = scores
        if tuple(scores.shape[-2:]) != size:
            resized = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        cams, batch_index, class_index = pair_maps(scores[:, 1:], cls_labels)
        refined, _, _ = pair_maps(resized[:, 1:], cls_labels)
        out.update(
            pseudo_labels=resized.argmax(dim=1),
            cams=cams,
            cams_refined=refined,
            batch_index=batch_index,
            class_index=class_index,
        )
        return out


@register_model("SegNet", model_schema=SegNetModelConfig, loss_schema=SegNetLossConfig)
@register_model(
    "FullySupervisedSegNet", model_schema=SegNetModelConfig, loss_schema=SegNetLossConfig
)
def build_segnet(cfg: Mapping[str, Any]) -> SegNetModel:
    """Build the segmentation network from a validated config (``model``, ``loss``, ``data``), on CPU.

    ``FullySupervisedSegNet`` must train on the ground truth (``data.train_mask_dir`` =
    ``data.mask_dir``) and ``SegNet`` on something else (pseudo-masks), so that a report row's name
    says what the network was trained on.
    """
    model_cfg, loss_cfg, data_cfg = cfg["model"], cfg["loss"], cfg["data"]
    kind, num_classes = model_cfg["type"], int(data_cfg["num_classes"])
    assert kind in SEGNET_TYPES
    train_masks = data_cfg.get("train_mask_dir")
    if kind == "FullySupervisedSegNet" and train_masks != data_cfg["mask_dir"]:
        raise ConfigError(
            f"config key 'data.train_mask_dir' = {train_masks!r}: the fully supervised upper bound "
            f"trains on the ground truth, data.mask_dir = {data_cfg['mask_dir']!r} (model.type "
            "'SegNet' is the network trained on pseudo-masks)"
        )
    if kind == "SegNet" and train_masks == data_cfg["mask_dir"]:
        raise ConfigError(
            f"config key 'data.train_mask_dir' = {train_masks!r} is the ground truth: use "
            "model.type='FullySupervisedSegNet' for the fully supervised upper bound"
        )
    alpha = loss_cfg["alpha"]
    if alpha is not None and len(alpha) != num_classes:
        raise ConfigError(
            f"config key 'loss.alpha' has {len(alpha)} weights, expected {num_classes} (one per class)"
        )
    if model_cfg["arch"] == "unet":
        net: nn.Module = UNet(
            num_classes, 3, model_cfg["unet"]["width"], model_cfg["unet"]["depth"]
        )
    elif model_cfg["arch"] == "fcn_resnet":
        f = model_cfg["fcn"]
        try:
            net = FCNResNet(
                num_classes, f["arch"], f["output_stride"], f["base_width"], f["weights"],
                f["stem_pool"],
            )  # fmt: skip
        except UserInputError:  # the weights file's own error names it
            raise
        except ValueError as err:
            raise ConfigError(f"config section 'model.fcn': {err}") from None
    else:
        d = model_cfg["deeplab"]
        net = DeepLabV3ResNet50(num_classes, d["weights"], d["backbone_weights"], d["load_head"])
    logger.info(
        "%s: %s, %d classes, %s loss, %s trainable parameters",
        kind,
        model_cfg["arch"],
        num_classes,
        loss_cfg["kind"],
        f"{sum(p.numel() for p in net.parameters()):,}",
    )
    return SegNetModel(
        net=net,
        loss_cfg=loss_cfg,
        pixel_mean=model_cfg["pixel_mean"],
        pixel_std=model_cfg["pixel_std"],
        class_names=data_cfg["class_names"],
    )
