"""AffinityNet refinement as a model of the library: learn pixel affinities, random-walk the CAMs.

Ahn & Kwak, "Learning Pixel-level Semantic Affinity with Image-level Supervision for Weakly Supervised
Semantic Segmentation", CVPR 2018, https://arxiv.org/abs/1803.10464 (details from their code,
github.com/jiwoon-ahn/psa; the pieces are ``weclip/baselines/affinitynet.py``, docs/baselines.md).

The trained module is the affinity network (ResNet trunk + head on layer2..layer4, feature grid at
stride s = 8, or 4 without the stem pool). A CAM classifier of this library is loaded FROZEN from its
training checkpoint (``model.cam_checkpoint``; the checkpoint's own config rebuilds it) and provides:

* the affinity labels, ``model.seeds = "cams"``: on each training crop, its CAMs (``model.labels``
  scales) -> confident foreground (background power 4) / confident background (power 32) / neutral,
  neutral on crop padding -> the affinity-grid labels (nearest) -> pair labels within ``radius``;
  ``"boxes"``: the labels are box seeds instead (Gaussian maps in the boxes thresholded,
  ``weclip.baselines.box_seeds``), read as the training targets from ``data.train_mask_dir`` (written by
  ``weclip.baselines.box_seeds.write_box_seed_masks``), so they are augmented with the image;
* the maps to propagate, in modes "pseudo" / "predict" and the ``rw`` (``box_rw``) row: its CAMs at the
  image size with background (1 - max)^16 (or a threshold t, ``model.walk.bg_mode``), average-pooled to the affinity grid, walked with
  T = D^-1 A^beta (beta 8, t = 256), upsampled by s and cropped back, argmax (psa's ``infer_aff.py``).

"predict" walks the CAMs of the classes the classifier predicts (no labels), so ``tools/infer.py``
scores refined CAMs too. Loss: L = L_bg+/4 + L_fg+/4 + L-/2 (``loss`` weights).
"""

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from weclip.baselines.affinitynet import (
    AffinityNet,
    affinity_labels,
    affinity_loss,
    confident_labels,
    crf_confident_labels,
    dense_affinity,
    downsample_labels,
    pair_affinities,
    random_walk,
)
from weclip.baselines.cam import mask_absent, scores_with_background
from weclip.baselines.classifier import normalize_cams
from weclip.baselines.maps import (
    IGNORE_INDEX,
    grid_to_image,
    image_to_grid,
    pack_present,
    pad_to_multiple,
    pair_maps,
    score_logits,
)
from weclip.errors import CheckpointError, ConfigError, UserInputError
from weclip.models.affinity_config import AffinityLossConfig, AffinityModelConfig
from weclip.models.base import SegmentationModel
from weclip.models.registry import register_model

__all__ = ["AffinityNetModel", "build_affinitynet", "load_cam_model", "AFFINITY_ROWS"]

logger = logging.getLogger("weclip")

MODES = ("predict", "pseudo", "loss")
#: the pseudo-label row of each seed source (row -> title)
AFFINITY_ROWS = {
    "cams": {"rw": "AffinityNet random walk"},
    "boxes": {"box_rw": "box-seeded AffinityNet random walk"},
}


def load_cam_model(path: str, num_classes: int) -> nn.Module:
    """The CAM classifier of a training checkpoint, rebuilt from the checkpoint's config, frozen, eval.

    Args:
        path (str): ``WORK_DIR/checkpoints/iter_N.pth`` of a ``CAMClassifier`` run.
        num_classes (int): C the AffinityNet config expects (``data.num_classes``).

    Raises:
        MissingFileError / CheckpointError: no such file, not a training checkpoint, another model type,
            another class count, or weights that do not fit.
    """
    from weclip.config import validate_config
    from weclip.engine.checkpoint import load_checkpoint, load_weights
    from weclip.models.registry import build_model

    ckpt = load_checkpoint(path)
    try:
        cam_cfg = validate_config(ckpt["config"])
    except ConfigError as err:
        raise CheckpointError(f"model.cam_checkpoint {path}: its stored config: {err}") from None
    if cam_cfg.model.type != "CAMClassifier":
        raise CheckpointError(
            f"model.cam_checkpoint {path} is a {cam_cfg.model.type!r} checkpoint, expected a "
            "'CAMClassifier' one"
        )
    if int(cam_cfg.data.num_classes) != int(num_classes):
        raise CheckpointError(
            f"model.cam_checkpoint {path} has {cam_cfg.data.num_classes} classes, the config "
            f"{num_classes} (data.num_classes)"
        )
    cam_model = build_model(cam_cfg)
    load_weights(cam_model, path)
    cam_model.requires_grad_(False)
    return cam_model.eval()


class AffinityNetModel(SegmentationModel):
    """AffinityNet behind the model interface (see the module docstring).

    Args:
        net (AffinityNet): the trained affinity network.
        cam_model (nn.Module): the frozen CAM classifier (``CAMClassifierModel``).
        seeds (str): "cams" or "boxes".
        radius (int): gamma.
        reduction (str): "mean" (psa code) or "sum" (paper).
        interior_only (bool): psa's pair crop.
        labels_cfg (Mapping): ``model.labels``.
        walk_cfg (Mapping): ``model.walk``.
        loss_cfg (Mapping): ``loss`` weights.
        pixel_mean (Sequence[float]): (3,) on 0-255 RGB.
        pixel_std (Sequence[float]): (3,).
        class_names (Sequence[str], optional): C names.
    """

    # the random walk runs in modes "pseudo" / "predict" only: training never reads it
    inference_only_keys = ("model.walk",)

    def __init__(
        self,
        *,
        net: AffinityNet,
        cam_model: nn.Module,
        seeds: str,
        radius: int,
        reduction: str,
        interior_only: bool,
        labels_cfg: Mapping[str, Any],
        walk_cfg: Mapping[str, Any],
        loss_cfg: Mapping[str, Any],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, class_names=class_names)
        self.net = net
        self.cam_model = cam_model
        self.seeds = seeds
        self.radius, self.reduction, self.interior_only = int(radius), reduction, interior_only
        self.labels_cfg, self.walk_cfg = dict(labels_cfg), dict(walk_cfg)
        self.loss_cfg = dict(loss_cfg)

    # ------------------------------------------------------------------ the model interface
    @property
    def num_classes(self) -> int:
        """C, including background (the classifier's)."""
        return self.cam_model.num_classes

    @property
    def patch_size(self) -> int:
        """1: any size (padded to the affinity stride inside)."""
        return 1

    @property
    def stride(self) -> int:
        """s, the stride of the affinity grid (layer2's)."""
        return int(self.net.feature_stride)

    def trainable_module(self) -> nn.Module:
        """The affinity network (the CAM classifier stays frozen and is never saved here)."""
        return self.net

    def train(self, mode: bool = True) -> "AffinityNetModel":
        """Train mode for the affinity network only: the frozen classifier stays in eval mode."""
        super().train(mode)
        self.cam_model.eval()
        return self

    # ------------------------------------------------------------------ pieces
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Affinity features f (B, D, ceil(H/s), ceil(W/s)) of the zero-padded normalised images."""
        return self.net(pad_to_multiple(self.preprocess(images), self.stride))

    @torch.no_grad()
    def classifier_cams(
        self,
        images: torch.Tensor,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The frozen classifier's normalised CAMs (B, K, H, W) and logits (B, K) of the images."""
        cam = self.cam_model
        x = cam.preprocess(images)
        net_out = cam.classify(x)
        return cam.cam_maps(x, scales, flip, net_out=net_out), net_out["logits"]

    def seed_labels(
        self,
        images: torch.Tensor,
        cams: torch.Tensor,
        cls_labels: torch.Tensor,
        valid: Optional[torch.Tensor],
        targets: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Confident labels (B, H, W): 0 background, 1..K foreground, 255 neutral (padding included),
        from the classifier's CAMs (B, K, H, W) of the uint8 crop ``images`` (B, 3, H, W; with
        ``model.labels.crf`` the CRF sees them), or the box seed ``targets``."""
        if self.seeds == "boxes":
            if targets is None:
                raise ValueError(
                    "model.seeds='boxes' trains on box seeds: set data.train_mask_dir to the folder "
                    "written by weclip.baselines.box_seeds.write_box_seed_masks"
                )
            return targets.long()
        cfg = self.labels_cfg
        if cfg["crf"]:
            labels = crf_confident_labels(
                images, cams, cls_labels, cfg["crf_params"], cfg["mode"], cfg["fg_value"],
                cfg["bg_value"],
            )  # fmt: skip
        else:
            labels = confident_labels(
                cams, cls_labels, cfg["mode"], cfg["fg_value"], cfg["bg_value"]
            )
        if valid is not None:
            labels = labels.masked_fill(~valid.bool(), IGNORE_INDEX)
        return labels

    def walk(
        self, images: torch.Tensor, cams: torch.Tensor, *label_sets: torch.Tensor
    ) -> Tuple[torch.Tensor, ...]:
        """Random-walk scores (B, C, H, W) at the image size, one per label set (B, K).

        ``model.walk.bg_mode = "power"`` (psa): [bg = (1 - max)^alpha; CAMs of the labelled classes] are
        pooled to the affinity grid, propagated with T = D^-1 A^beta, upsampled by s and cropped.
        ``"threshold"``: the labelled classes' CAMs alone are walked the same way, each walked map is
        max-normalised again and the background is the constant t (walking a constant changes nothing,
        but the walk spreads and lowers the CAMs, so t applies to them renormalised). One affinity
        matrix serves every label set.
        """
        w = self.walk_cfg
        power = w["bg_mode"] == "power"
        maps = [
            scores_with_background(cams, labels, "power", w["bg_value"])
            if power
            else mask_absent(cams, labels)
            for labels in label_sets
        ]
        f = self.features(images)
        affinity = dense_affinity(f, self.radius, self.reduction, self.interior_only)
        grid = image_to_grid(torch.cat(maps, dim=1), self.stride)
        walked = random_walk(grid, affinity, w["beta"], w["num_iters"])
        walked = grid_to_image(walked, self.stride, images.shape[-2:])
        if power:
            return walked.split(cams.shape[1] + 1, dim=1)
        parts = walked.split(cams.shape[1], dim=1)
        return tuple(
            scores_with_background(
                normalize_cams(p.clamp_min(0)), labels, "threshold", w["bg_value"]
            )
            for p, labels in zip(parts, label_sets)
        )

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
        """Affinity loss, or CAMs propagated by the random walk.

        Args:
            images (torch.Tensor): (B, 3, H, W) uint8 (or float 0-255) RGB, any size.
            cls_labels (torch.Tensor, optional): (B, C-1) multi-hot ("pseudo", "loss").
            mode (str): "predict", "pseudo" or "loss".
            iteration (int, optional): required by "loss" (unused otherwise).
            out_size (tuple, optional): (H_out, W_out) of the pseudo-labels; default (H, W).
            valid (torch.Tensor, optional): (B, H, W) bool, False on crop padding ("loss", CAM seeds:
                neutral there).
            targets (torch.Tensor, optional): (B, H, W) box seed labels ("loss" with seeds="boxes").

        Returns:
            dict: "loss": ``loss``, ``log`` (``bg_loss``, ``fg_loss``, ``neg_loss``), ``pseudo_labels``
            (B, H, W) = the confident labels (the trainer's panels) and ``seg_logits`` (B, C, H, W) =
            the classifier's CAM segmentation with the labels; "predict": ``seg_logits`` (B, C, H, W),
            log-normalised walked scores of the predicted classes; "pseudo": also ``pseudo_labels``
            (B, H_out, W_out), ``cams`` (P, H, W) (the classifier's), ``cams_refined``
            (P, H_out, W_out) (walked, max-normalised), ``batch_index``/``class_index`` (P,).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "loss":
            if cls_labels is None or iteration is None:
                raise ValueError("mode='loss' needs cls_labels and the 1-indexed iteration")
            cams, _ = self.classifier_cams(
                images, self.labels_cfg["scales"], self.labels_cfg["flip"]
            )
            seeds = self.seed_labels(images, cams, cls_labels, valid, targets)
            f = self.features(images)
            padded = F.pad(
                seeds,
                (
                    0,
                    f.shape[-1] * self.stride - seeds.shape[-1],
                    0,
                    f.shape[-2] * self.stride - seeds.shape[-2],
                ),
                value=IGNORE_INDEX,
            )
            pairs = affinity_labels(
                downsample_labels(padded, f.shape[-2:]), self.radius, self.interior_only
            )
            terms = affinity_loss(pair_affinities(f, self.radius, self.reduction), pairs)
            c = self.loss_cfg
            loss = (
                c["bg_weight"] * terms["bg_loss"]
                + c["fg_weight"] * terms["fg_loss"]
                + c["neg_weight"] * terms["neg_loss"]
            )
            with torch.no_grad():  # for the trainer's image panels only
                seg_logits = score_logits(self.cam_model.threshold_scores(cams, cls_labels))
            log = {k: terms[k].detach() for k in ("bg_loss", "fg_loss", "neg_loss")}
            return {"loss": loss, "log": log, "pseudo_labels": seeds, "seg_logits": seg_logits}

        w = self.walk_cfg
        cams, logits = self.classifier_cams(images, w["scales"], w["flip"])
        present = self.cam_model.predict_labels(logits)
        if mode == "predict":
            (predicted,) = self.walk(images, cams, present)
            return {"seg_logits": score_logits(predicted)}
        if cls_labels is None:
            raise ValueError("mode='pseudo' needs the image-level labels cls_labels")
        predicted, scores = self.walk(images, cams, present, cls_labels)
        out: Dict[str, Any] = {"seg_logits": score_logits(predicted)}
        size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
        if tuple(scores.shape[-2:]) != size:
            scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        pair_cams, batch_index, class_index = pair_maps(cams, cls_labels)
        refined = normalize_cams(scores[:, 1:].clamp_min(0))
        refined, _, _ = pair_maps(refined, cls_labels)
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
        """The random-walk row of this seed source (row -> title)."""
        return dict(AFFINITY_ROWS[self.seeds])

    @property
    def trained_rows(self) -> Tuple[str, ...]:
        """The row needs the trained affinity network."""
        return tuple(AFFINITY_ROWS[self.seeds])

    @torch.no_grad()
    def pseudo_label_scores(
        self,
        images: torch.Tensor,
        cls_labels: torch.Tensor,
        rows: Sequence[str],
        out_size: Tuple[int, int],
        fit: str = "crop",
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """Packed walked scores [bg; present classes] at ``out_size`` (= ``mode="pseudo"``'s labels);
        ``fit`` is accepted for the interface and unused."""
        known = AFFINITY_ROWS[self.seeds]
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ValueError(f"unknown pseudo-label row(s) {unknown}; known: {', '.join(known)}")
        w = self.walk_cfg
        cams, _ = self.classifier_cams(images, w["scales"], w["flip"])
        (scores,) = self.walk(images, cams, cls_labels)
        if tuple(scores.shape[-2:]) != tuple(out_size):
            scores = F.interpolate(
                scores, size=tuple(out_size), mode="bilinear", align_corners=False
            )
        packed, keys = pack_present(scores, cls_labels)
        return {row: packed for row in rows}, keys


@register_model("AffinityNet", model_schema=AffinityModelConfig, loss_schema=AffinityLossConfig)
def build_affinitynet(cfg: Mapping[str, Any]) -> AffinityNetModel:
    """Build AffinityNet from a validated config; loads the frozen classifier from ``model.cam_checkpoint``."""
    model_cfg, data_cfg = cfg["model"], cfg["data"]
    num_classes = int(data_cfg["num_classes"])
    if model_cfg["seeds"] == "cams" and data_cfg.get("train_mask_dir") is not None:
        raise ConfigError(
            f"config key 'data.train_mask_dir' = {data_cfg['train_mask_dir']!r}: AffinityNet with "
            "model.seeds='cams' learns from the classifier's CAMs only; set it to None"
        )
    cam_model = load_cam_model(model_cfg["cam_checkpoint"], num_classes)
    r, head = model_cfg["resnet"], model_cfg["head"]
    weights = "random" if r["weights"] == "cam" else r["weights"]
    try:
        net = AffinityNet(
            r["arch"], weights, 8, r["base_width"], head["mid_channels"], head["out_channels"],
            r["stem_pool"],
        )  # fmt: skip
    except UserInputError:  # the weights file's own error names it
        raise
    except ValueError as err:
        raise ConfigError(f"config section 'model.resnet': {err}") from None
    if r["weights"] == "cam":
        trunk = getattr(cam_model.trainable_module(), "trunk", None)
        if trunk is None:
            raise ConfigError(
                "config key 'model.resnet.weights' = 'cam': the classifier has no ResNet trunk (U-Net)"
            )
        try:
            net.trunk.load_state_dict(trunk.state_dict())
        except RuntimeError as err:
            raise ConfigError(
                "config key 'model.resnet.weights' = 'cam': the classifier's trunk does not fit "
                f"model.resnet (arch, base_width): {str(err).splitlines()[0]}"
            ) from None
    walk = dict(model_cfg["walk"])
    if walk["scales"] is None:
        walk["scales"] = cam_model.scales
    if walk["flip"] is None:
        walk["flip"] = cam_model.flip
    logger.info(
        "AffinityNet: %s trunk (%s), affinity grid stride %d, seeds from %s, %s trainable parameters",
        r["arch"],
        r["weights"],
        net.feature_stride,
        model_cfg["seeds"],
        f"{sum(p.numel() for p in net.parameters()):,}",
    )
    return AffinityNetModel(
        net=net,
        cam_model=cam_model,
        seeds=model_cfg["seeds"],
        radius=model_cfg["radius"],
        reduction=model_cfg["reduction"],
        interior_only=model_cfg["interior_only"],
        labels_cfg=model_cfg["labels"],
        walk_cfg=walk,
        loss_cfg=cfg["loss"],
        pixel_mean=model_cfg["pixel_mean"],
        pixel_std=model_cfg["pixel_std"],
        class_names=data_cfg["class_names"],
    )
