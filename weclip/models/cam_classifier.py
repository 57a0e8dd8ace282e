"""The CAM classifier as a model of the library: train on image-level labels, segment with its CAMs.

Class activation maps (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR
2016, https://arxiv.org/abs/1512.04150), the first stage of the classic multi-stage pipeline
(AffinityNet, https://arxiv.org/abs/1803.10464; IRN, https://arxiv.org/abs/1904.05044;
docs/baselines.md). The network is ``weclip.baselines.classifier``'s ResNet + GAP + 1x1 head
(``model.arch = "resnet"``) or its U-Net whose output is the CAM (``"unet"``, optionally with the
weak Dice term, ``loss.dice_weight``).

Geometry: the normalised image is zero-padded at the bottom/right to a multiple of the CAM stride s,
so that CAM cell (i, j) covers exactly pixels [s i, s i + s) x [s j, s j + s); CAMs are brought to the
image size by an exact x s upsampling and a crop (``weclip.baselines.maps``). Every image size works
(``patch_size = 1``); every output at the image size is aligned with it.

Modes (docs/architecture.md, "The model interface"):

* ``"loss"``: ``loss.kind`` "multilabel" (BCE, VOC / toy) or "single" (softmax CE, Oxford-IIIT Pet),
  plus ``loss.dice_weight`` x the weak Dice term for the U-Net (``cam_classifier_loss``).
* ``"predict"``: the CAM segmentation without labels: the classes the classifier predicts
  (``predicted_labels``) compete with the background threshold; ``seg_logits`` (B, C, H, W) are
  log-normalised scores (``score_logits``), so ``tools/infer.py`` scores raw CAMs.
* ``"pseudo"``: with the image-level labels: background score t = ``model.pseudo.threshold`` (or
  (1 - max)^alpha), argmax over it and the present classes' CAMs at ``out_size``; with
  ``model.pseudo.region_growing`` the labels of seeded region growing in feature space instead.
* pseudo-label rows for ``tools/eval_pseudo.py``: ``cam`` and ``cam_rg``.
"""

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from weclip.baselines.cam import multiscale_flip_cams, scores_with_background
from weclip.baselines.cam_methods.training import CAMMethod, build_cam_method, step_generator
from weclip.baselines.classifier import (
    CAMClassifier,
    UNetCAMClassifier,
    cam_classifier_loss,
    normalize_cams,
)
from weclip.baselines.maps import (
    grid_to_image,
    image_to_grid,
    pack_present,
    pad_to_multiple,
    pair_maps,
    predicted_labels,
    score_logits,
)
from weclip.baselines.region_growing import region_growing, region_scores
from weclip.errors import ConfigError, UserInputError
from weclip.models.base import SegmentationModel
from weclip.models.cam_classifier_config import CAMClassifierLossConfig, CAMClassifierModelConfig
from weclip.models.registry import register_model

__all__ = ["CAMClassifierModel", "build_cam_classifier", "CAM_ROWS", "build_cam_network"]

logger = logging.getLogger("weclip")

MODES = ("predict", "pseudo", "loss")
#: pseudo-label rows of tools/eval_pseudo.py (row -> title)
CAM_ROWS = {"cam": "CAM, background threshold", "cam_rg": "CAM + region growing"}


class CAMClassifierModel(SegmentationModel):
    """A CAM classifier of ``weclip.baselines.classifier`` behind the model interface.

    Args:
        net (nn.Module): ``CAMClassifier`` or ``UNetCAMClassifier`` (the trained module).
        kind (str): classification loss, "multilabel" or "single".
        dice_weight (float): weak Dice weight (U-Net only; 0 = off).
        threshold (float): background threshold t (or alpha with ``bg_mode="power"``).
        bg_mode (str): "threshold" or "power" (``weclip.baselines.cam.background_scores``).
        scales (Sequence[float]): CAM scales of "pseudo", "predict" and the rows (first = 1.0 view).
        flip (bool): add the mirrored image's CAMs.
        use_region_growing (bool): "pseudo" labels by region growing.
        region_growing_cfg (Mapping): ``model.region_growing``.
        presence_threshold (float): "predict": sigmoid threshold of the predicted classes.
        pixel_mean (Sequence[float]): (3,) on 0-255 RGB.
        pixel_std (Sequence[float]): (3,).
        class_names (Sequence[str], optional): C names.
        method (CAMMethod, optional): ``model.method`` (``weclip.baselines.cam_methods.training``):
            the training loss of a CAM-improvement method and, for SEAM / P2P, the CAMs.
    """

    # the CAMs' background rule and region growing make pseudo-labels; the training loss never reads them
    inference_only_keys = ("model.pseudo", "model.region_growing")

    def __init__(
        self,
        *,
        net: nn.Module,
        kind: str,
        dice_weight: float,
        threshold: float,
        bg_mode: str,
        scales: Sequence[float],
        flip: bool,
        use_region_growing: bool,
        region_growing_cfg: Mapping[str, Any],
        presence_threshold: float,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        class_names: Optional[Sequence[str]] = None,
        method: Optional[CAMMethod] = None,
    ) -> None:
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, class_names=class_names)
        self.net = net
        self.method = method
        self.kind = kind
        self.dice_weight = float(dice_weight)
        self.threshold, self.bg_mode = float(threshold), bg_mode
        self.scales, self.flip = tuple(float(s) for s in scales), bool(flip)
        self.use_region_growing = bool(use_region_growing)
        self.rg = dict(region_growing_cfg)
        self.presence_threshold = float(presence_threshold)

    # ------------------------------------------------------------------ the model interface
    @property
    def num_classes(self) -> int:
        """C: the K foreground classes of the head + background."""
        return self.net.num_classes + 1

    @property
    def patch_size(self) -> int:
        """1: any input size (the model pads to the CAM stride itself)."""
        return 1

    @property
    def stride(self) -> int:
        """s, the stride of the CAM grid (1 for the U-Net)."""
        return int(self.net.output_stride)

    def trainable_module(self) -> nn.Module:
        """The classifier network (trunk + head, or the U-Net)."""
        return self.net

    # ------------------------------------------------------------------ CAMs
    def classify(self, x: torch.Tensor) -> Dict[str, Any]:
        """The network on the padded normalised images: ``logits`` (B, K), ``features`` and, for the
        ResNet, ``stages``, on the grid of the padded input."""
        return self.net(pad_to_multiple(x, self.stride))

    def raw_cams(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (ReLU'd, unnormalised) CAMs (B, K, H, W) at the size of the normalised input ``x``."""
        return grid_to_image(self.grid_cams(x, self.classify(x)), self.stride, x.shape[-2:])

    def grid_cams(self, x: torch.Tensor, net_out: Mapping[str, Any]) -> torch.Tensor:
        """Raw CAMs (B, K, h, w) on the grid of :meth:`classify`'s output ``net_out`` of ``x``: ReLU(W f),
        or the method's (SEAM / P2P: PCM-revised)."""
        if self.method is not None and self.method.revises_cams:
            return self.method.grid_cams(self.net, pad_to_multiple(x, self.stride), net_out)
        return self.net.raw_cams(net_out["features"])

    def cam_maps(
        self,
        x: torch.Tensor,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
        net_out: Optional[Mapping[str, Any]] = None,
    ) -> torch.Tensor:
        """Max-normalised CAMs (B, K, H, W) of the normalised images ``x`` at their size: the sum of
        the raw CAMs over ``scales`` (and mirror images), IRN's ``make_cam`` (``multiscale_flip_cams``).

        Args:
            x (torch.Tensor): (B, 3, H, W) normalised images.
            scales (Sequence[float], optional): default ``model.pseudo.scales``.
            flip (bool, optional): default ``model.pseudo.flip``.
            net_out (Mapping, optional): :meth:`classify` of ``x``, reused for the single-scale,
                unflipped case (the same numbers, one forward less).
        """
        scales = self.scales if scales is None else tuple(scales)
        flip = self.flip if flip is None else bool(flip)
        if net_out is not None and scales == (1.0,) and not flip:
            raw = grid_to_image(self.grid_cams(x, net_out), self.stride, x.shape[-2:])
            return normalize_cams(raw)
        return multiscale_flip_cams(self.raw_cams, x, scales, flip, tuple(x.shape[-2:]))

    def threshold_scores(self, cams: torch.Tensor, cls_labels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W): [background score; CAMs of the present classes, absent ones 0]."""
        return scores_with_background(cams, cls_labels, self.bg_mode, self.threshold)

    def grown_scores(
        self,
        x: torch.Tensor,
        cams: torch.Tensor,
        cls_labels: torch.Tensor,
        net_out: Optional[Mapping[str, Any]] = None,
    ) -> torch.Tensor:
        """Region-growing scores (B, C, H, W) at the image size (``region_scores``: their argmax is the
        grown regions' labels, overlaps to the highest CAM), grown on the CAM grid.

        Features: the ResNet's stage ``model.region_growing.stage`` (resized bilinearly to the CAM grid
        when coarser or finer), or the U-Net's CAM logits (``net_out``: :meth:`classify` of ``x``).
        """
        out = self.classify(x) if net_out is None else net_out
        if "stages" in out:
            features = out["stages"][int(self.rg["stage"]) - 1]
        else:
            features = out["features"]
        grid_cams = image_to_grid(cams, self.stride)
        if features.shape[-2:] != grid_cams.shape[-2:]:
            features = F.interpolate(
                features, size=grid_cams.shape[-2:], mode="bilinear", align_corners=False
            )
        masks = region_growing(
            grid_cams,
            features,
            cls_labels,
            seed_threshold=self.rg["seed_threshold"],
            sim_threshold=self.rg["sim_threshold"],
            num_iters=self.rg["num_iters"],
            connectivity=self.rg["connectivity"],
            center=self.rg["center"],
        )
        return grid_to_image(region_scores(masks, grid_cams), self.stride, x.shape[-2:])

    def predict_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Image-level labels predicted from the logits (``weclip.baselines.maps.predicted_labels``)."""
        return predicted_labels(logits, self.kind, self.presence_threshold)

    # ------------------------------------------------------------------ forward
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
        """Classification loss, CAM segmentation and CAM pseudo-labels.

        Args:
            images (torch.Tensor): (B, 3, H, W) uint8 (or float 0-255) RGB, any size.
            cls_labels (torch.Tensor, optional): (B, C-1) multi-hot ("pseudo", "loss").
            mode (str): "predict", "pseudo" or "loss".
            iteration (int, optional): 1-indexed training iteration ("loss"; unused otherwise).
            out_size (tuple, optional): (H_out, W_out) of ``cams_refined``/``pseudo_labels``; default
                (H, W).
            valid (torch.Tensor, optional): unused (the loss is image-level).
            targets (torch.Tensor, optional): must be None: the classifier never sees masks.

        Returns:
            dict: ``seg_logits`` (B, C, H, W) (the label-free CAM segmentation, log-normalised
            scores); "pseudo" adds ``pseudo_labels`` (B, H_out, W_out), ``cams`` (P, H, W) (the CAMs
            of the present pairs), ``cams_refined`` (P, H_out, W_out) (the maps that decide the
            labels), ``batch_index``/``class_index`` (P,); "loss" adds ``loss`` and ``log``
            (``cls_loss``, and ``dice_loss`` when enabled).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if targets is not None:
            raise ValueError(
                "the CAM classifier learns from image-level labels only, but got pixel targets "
                "(unset data.train_mask_dir)"
            )
        x = self.preprocess(images)
        if mode == "loss":
            if cls_labels is None or iteration is None:
                raise ValueError("mode='loss' needs cls_labels and the 1-indexed iteration")
            if self.method is not None:
                losses, out = self.method.loss(self, x, cls_labels, step_generator())
            else:
                out = self.classify(x)
                losses = cam_classifier_loss(
                    out["logits"],
                    cls_labels,
                    self.kind,
                    out["features"] if self.dice_weight > 0 else None,
                    self.dice_weight,
                )
            with torch.no_grad():  # for the trainer's image panels only
                cams = grid_to_image(self.net.cams(out["features"]), self.stride, x.shape[-2:])
                present = self.predict_labels(out["logits"])
                seg_logits = score_logits(self.threshold_scores(cams, present))
            log = {k: v.detach() for k, v in losses.items() if k != "loss"}
            return {"seg_logits": seg_logits, "loss": losses["loss"], "log": log}

        net_out = self.classify(x)
        cams = self.cam_maps(x, net_out=net_out)  # (B, K, H, W)
        present = self.predict_labels(net_out["logits"])
        seg_logits = score_logits(self.threshold_scores(cams, present))
        out: Dict[str, Any] = {"seg_logits": seg_logits}
        if mode == "predict":
            return out
        if cls_labels is None:
            raise ValueError("mode='pseudo' needs the image-level labels cls_labels")
        size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
        if self.use_region_growing:
            scores = self.grown_scores(x, cams, cls_labels, net_out)
        else:
            scores = self.threshold_scores(cams, cls_labels)
        if tuple(scores.shape[-2:]) != size:
            scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        pair_cams, batch_index, class_index = pair_maps(cams, cls_labels)
        refined, _, _ = pair_maps(scores[:, 1:], cls_labels)
        out.update(
            pseudo_labels=scores.argmax(dim=1),
            cams=pair_cams,
            cams_refined=refined,
            batch_index=batch_index,
            class_index=class_index,
        )
        return out

    # ------------------------------------------------------------------ ablation rows
    @property
    def pseudo_rows(self) -> Dict[str, str]:
        """Rows of :meth:`pseudo_label_scores` (row -> title)."""
        return dict(CAM_ROWS)

    #: both rows need the trained classifier
    trained_rows = tuple(CAM_ROWS)

    @torch.no_grad()
    def pseudo_label_scores(
        self,
        images: torch.Tensor,
        cls_labels: torch.Tensor,
        rows: Sequence[str],
        out_size: Tuple[int, int],
        fit: str = "crop",
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """Packed scores [bg; present classes] of every requested row at ``out_size``.

        ``cam``: the threshold rule's scores (= ``mode="pseudo"`` without region growing); ``cam_rg``:
        the region-growing scores (= ``mode="pseudo"`` with it). ``fit`` is accepted for the interface
        and unused (any size is padded, nothing is cropped).

        Returns:
            tuple: row -> (B, 1 + Kmax, H_out, W_out), and ``keys`` (B, 1 + Kmax).
        """
        unknown = [r for r in rows if r not in CAM_ROWS]
        if unknown:
            raise ValueError(f"unknown pseudo-label row(s) {unknown}; known: {', '.join(CAM_ROWS)}")
        x = self.preprocess(images)
        net_out = self.classify(x)
        cams = self.cam_maps(x, net_out=net_out)
        found: Dict[str, torch.Tensor] = {}
        if "cam" in rows:
            found["cam"] = self.threshold_scores(cams, cls_labels)
        if "cam_rg" in rows:
            found["cam_rg"] = self.grown_scores(x, cams, cls_labels, net_out)
        scores: Dict[str, torch.Tensor] = {}
        keys = None
        for row, full in found.items():
            if tuple(full.shape[-2:]) != tuple(out_size):
                full = F.interpolate(
                    full, size=tuple(out_size), mode="bilinear", align_corners=False
                )
            scores[row], keys = pack_present(full, cls_labels)
        assert keys is not None
        return scores, keys


def build_cam_network(model_cfg: Mapping[str, Any], num_foreground: int) -> nn.Module:
    """The classifier network of a validated ``model`` section (ConfigError for a bad trunk setting)."""
    if model_cfg["arch"] == "unet":
        u = model_cfg["unet"]
        return UNetCAMClassifier(num_foreground, u["width"], u["depth"], u["logit_bias"])
    r = model_cfg["resnet"]
    try:
        return CAMClassifier(
            num_foreground,
            r["arch"],
            r["weights"],
            r["output_stride"],
            r["dilate"],
            r["base_width"],
            r["head_bias"],
            r["stem_pool"],
        )
    except UserInputError:  # the weights file's own error names it
        raise
    except ValueError as err:
        raise ConfigError(f"config section 'model.resnet': {err}") from None


@register_model(
    "CAMClassifier", model_schema=CAMClassifierModelConfig, loss_schema=CAMClassifierLossConfig
)
def build_cam_classifier(cfg: Mapping[str, Any]) -> CAMClassifierModel:
    """Build the CAM classifier from a validated config (``model``, ``loss``, ``data``), on CPU."""
    model_cfg, loss_cfg, data_cfg = cfg["model"], cfg["loss"], cfg["data"]
    if data_cfg.get("train_mask_dir") is not None:
        raise ConfigError(
            f"config key 'data.train_mask_dir' = {data_cfg['train_mask_dir']!r}: the CAM classifier "
            "learns from image-level labels only; set it to None"
        )
    if loss_cfg["dice_weight"] > 0 and model_cfg["arch"] != "unet":
        raise ConfigError(
            f"config key 'loss.dice_weight' = {loss_cfg['dice_weight']}: the weak Dice term needs "
            "the U-Net CAM classifier (model.arch='unet')"
        )
    if loss_cfg["dice_weight"] > 0 and model_cfg["method"]["type"] != "none":
        raise ConfigError(
            f"config key 'loss.dice_weight' = {loss_cfg['dice_weight']}: the weak Dice term is not "
            f"combined with model.method.type = {model_cfg['method']['type']!r}"
        )
    net = build_cam_network(model_cfg, int(data_cfg["num_classes"]) - 1)
    method = build_cam_method(model_cfg["method"], net, loss_cfg["kind"], data_cfg)
    logger.info(
        "CAM classifier: %s, CAM stride %d, %s loss, %s trainable parameters",
        model_cfg["resnet"]["arch"] if model_cfg["arch"] == "resnet" else "U-Net",
        net.output_stride,
        loss_cfg["kind"],
        f"{sum(p.numel() for p in net.parameters()):,}",
    )
    pseudo = model_cfg["pseudo"]
    return CAMClassifierModel(
        net=net,
        kind=loss_cfg["kind"],
        dice_weight=loss_cfg["dice_weight"],
        threshold=pseudo["threshold"],
        bg_mode=pseudo["bg_mode"],
        scales=pseudo["scales"],
        flip=pseudo["flip"],
        use_region_growing=pseudo["region_growing"],
        region_growing_cfg=model_cfg["region_growing"],
        presence_threshold=model_cfg["presence_threshold"],
        pixel_mean=model_cfg["pixel_mean"],
        pixel_std=model_cfg["pixel_std"],
        class_names=data_cfg["class_names"],
        method=method,
    )
