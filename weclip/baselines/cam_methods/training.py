"""The CAM-improvement methods wired into the CAM classifier's training (``model.method``).

Each method is an object built from ``model.method`` (``weclip.baselines.cam_methods.config``) that the
``CAMClassifier`` model (``weclip.models.cam_classifier``) calls in ``mode="loss"``, and, for the methods
whose evaluated CAMs are not the plain ones (SEAM, P2P: the PCM-revised CAMs), when it computes CAMs.
Learned modules of a method (PCM, projection head, sub-category head) are attached to the classifier
network as ``net.method_heads``, so they are part of the trainable module and of every checkpoint;
a plain run's checkpoint keys are unchanged.

Methods and papers (equations, defaults and sources: docs/cam_methods.md):

* ``mixup_cam``: Mixup-CAM (Chang et al., BMVC 2020, https://arxiv.org/abs/2008.01201): mixup of images
  and labels, entropy and concentration losses on the per-pixel class distribution of the CAMs.
* ``manifold_mixup``: Manifold Mixup (Verma et al., ICML 2019, https://arxiv.org/abs/1806.05236): the
  same mixing of the hidden state before a random ResNet stage.
* ``fmix``: FMix (Harris et al., https://arxiv.org/abs/2002.12047): a Fourier mask instead of mixup.
* ``seam``: SEAM (Wang et al., CVPR 2020, https://arxiv.org/abs/2004.04581): a rescaled second view,
  the pixel correlation module (PCM), classification + ER + ECR (+ rvmin) losses.
* ``p2p``: pixel-to-prototype contrast (Du et al., CVPR 2022, https://arxiv.org/abs/2110.07110): SEAM
  with a fixed-size second view plus the cross-view and intra-view InfoNCE terms.
* ``sc_cam``: SC-CAM (Chang et al., CVPR 2020, https://arxiv.org/abs/2008.01183): k-means of each class's
  image features under the previous round's model, a second head on parent x sub-category labels
  (+ optional distillation from the previous round). One training run is one round.

Randomness: one ``torch.Generator`` per step, seeded by a draw from torch's global generator (which the
trainer seeds from ``train.seed`` + rank and restores on resume), passed to the phase-1 functions.
"""

import abc
import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weclip.baselines.cam_methods.config import METHOD_TITLES
from weclip.baselines.cam_methods.mix import (
    concentration_loss,
    entropy_loss,
    fmix,
    manifold_mixup,
    mixup,
    pixel_class_probs,
)
from weclip.baselines.cam_methods.p2p import ProjectionHead, align_to, p2p_losses
from weclip.baselines.cam_methods.sc_cam import (
    distillation_loss,
    image_features,
    sc_cam_loss,
    subcategory_labels,
)
from weclip.baselines.cam_methods.seam import (
    AffineTransform,
    PCMFeatures,
    pcm_affinity,
    pcm_input,
    pcm_refine,
    seam_classification_loss,
    seam_losses,
)
from weclip.baselines.classifier import CAMClassifier, classification_loss
from weclip.baselines.maps import grid_to_image, pad_to_multiple
from weclip.errors import ConfigError

__all__ = [
    "CAMMethod",
    "MixMethod",
    "SEAMMethod",
    "P2PMethod",
    "SCCAMMethod",
    "build_cam_method",
    "soft_classification_loss",
    "step_generator",
]

logger = logging.getLogger("weclip")


def step_generator() -> torch.Generator:
    """A CPU generator for one training step, seeded by one draw from torch's global (CPU) generator (the
    phase-1 functions draw on the generator's device and move the draws to the data's)."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator().manual_seed(seed)


def soft_classification_loss(logits: Tensor, targets: Tensor, kind: str) -> Tensor:
    """The classifier's loss on soft (mixed) targets: BCE for "multilabel", soft-target CE for "single".

    Both are linear in the target, so on ``lam * y1 + (1 - lam) * y2`` they equal
    ``lam * L(y1) + (1 - lam) * L(y2)``; on hard targets they are ``classification_loss``.

    Args:
        logits (Tensor): (B, K).
        targets (Tensor): (B, K) in [0, 1] (one-hot mixtures summing to 1 for "single").
        kind (str): "multilabel" or "single".
    """
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    if kind == "single":
        return -(targets.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
    raise ValueError(f"classification loss kind must be 'multilabel' or 'single', got {kind!r}")


class CAMMethod(abc.ABC):
    """Base of the methods (abstract: :meth:`loss`); by default no learned modules and plain CAMs.

    Args:
        kind (str): the classifier's loss kind ("multilabel" / "single").
    """

    name = "none"
    #: whether :meth:`grid_cams` replaces the plain CAMs at inference
    revises_cams = False

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @property
    def title(self) -> str:
        """The method's name in logs and report rows."""
        return METHOD_TITLES[self.name]

    def heads(self, net: nn.Module) -> Dict[str, nn.Module]:
        """Learned modules of the method (attached to ``net.method_heads``)."""
        return {}

    @abc.abstractmethod
    def loss(
        self, model: nn.Module, x: Tensor, cls_labels: Tensor, generator: torch.Generator
    ) -> Tuple[Dict[str, Tensor], Mapping[str, Any]]:
        """The training loss of one batch.

        Args:
            model (nn.Module): the ``CAMClassifierModel`` (its ``net``, ``stride``, ``kind``).
            x (Tensor): (B, 3, H, W) normalised images (unpadded).
            cls_labels (Tensor): (B, K) multi-hot.
            generator (torch.Generator): this step's randomness.

        Returns:
            tuple: the terms (``loss`` = the total, the rest logged) and the network output of the
            batch shown in the trainer's panels (``model.classify`` of some view of ``x``).
        """

    def grid_cams(self, net: nn.Module, x_padded: Tensor, net_out: Mapping[str, Any]) -> Tensor:
        """CAMs on the grid (B, K, h, w) of the padded normalised images (plain: ReLU(W f))."""
        return net.raw_cams(net_out["features"])


def _check_resnet(net: nn.Module, method: str) -> None:
    if not isinstance(net, CAMClassifier):
        raise ConfigError(
            f"config key 'model.method.type' = {method!r} needs the ResNet CAM classifier "
            "(model.arch='resnet')"
        )


def _cam_scores(net: nn.Module, features: Tensor) -> Tensor:
    """Raw CAMs ReLU(W f) (B, K, h, w) of network features (the maps the regularisers see)."""
    return net.raw_cams(features)


class MixMethod(CAMMethod):
    """Mixup-CAM, Manifold Mixup and FMix-CAM: mixed images (or hidden states) and labels, the soft
    classification loss, optionally the entropy and concentration losses on the CAMs of the mixed batch.

    Args:
        name (str): "mixup_cam", "manifold_mixup" or "fmix".
        cfg (Mapping): ``model.method.<name>``.
        kind (str): classification loss kind.
    """

    def __init__(self, name: str, cfg: Mapping[str, Any], kind: str) -> None:
        super().__init__(kind)
        self.name = name
        self.cfg = dict(cfg)

    def _mix(self, model: nn.Module, x: Tensor, cls_labels: Tensor, generator: torch.Generator):
        net, c = model.net, self.cfg
        xp = pad_to_multiple(x, model.stride)
        y = cls_labels.float()
        if self.name == "mixup_cam":
            mix = mixup(xp, y, generator=generator, alpha=c["alpha"])
            return mix, net(mix.inputs)
        if self.name == "fmix":
            mix = fmix(
                xp,
                y,
                generator=generator,
                alpha=c["alpha"],
                decay_power=c["decay_power"],
                max_soft=c["max_soft"],
                label_weight=c["label_weight"],
            )
            return mix, net(mix.inputs)
        trunk = net.trunk

        def stem_layer1(z: Tensor) -> Tensor:
            return trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(z)))))

        stages: List[Any] = [stem_layer1, trunk.layer2, trunk.layer3, trunk.layer4]
        # mixing points 0..3: the input, after layer1, layer2, layer3 (the head follows layer4)
        mix = manifold_mixup(
            stages, xp, y, generator=generator, layers=c["layers"], alpha=c["alpha"]
        )
        features = mix.inputs
        logits = net.head(features.mean(dim=(2, 3), keepdim=True)).flatten(1)
        return mix, {"logits": logits, "features": features}

    def heads(self, net: nn.Module) -> Dict[str, nn.Module]:
        if self.name == "manifold_mixup":
            _check_resnet(net, self.name)
        return {}

    def loss(self, model, x, cls_labels, generator):
        mix, out = self._mix(model, x, cls_labels, generator)
        c = self.cfg
        terms = {"cls_loss": soft_classification_loss(out["logits"], mix.labels, self.kind)}
        total = terms["cls_loss"]
        if c["ent_weight"] > 0 or c["con_weight"] > 0:
            probs = pixel_class_probs(
                _cam_scores(model.net, out["features"]),
                cls_labels=mix.labels if c["mask_absent"] else None,
                bg_score=c["bg_score"],
            )
            offset = 1 if c["bg_score"] is not None else 0
            terms["ent_loss"] = entropy_loss(probs)
            terms["con_loss"] = concentration_loss(
                probs, mix.labels, eps=c["con_eps"], class_offset=offset
            )
            total = (
                total + c["ent_weight"] * terms["ent_loss"] + c["con_weight"] * terms["con_loss"]
            )
        terms["loss"] = total
        return terms, out


class _PCMHead(nn.Module):
    """SEAM's PCM feature branch on ResNet stages ``stages`` (1-indexed)."""

    def __init__(self, net: CAMClassifier, stages, hidden, out: int) -> None:
        super().__init__()
        self.stages = tuple(int(s) for s in stages)
        chans = [net.trunk.stage_channels[s - 1] for s in self.stages]
        self.features = PCMFeatures(chans, hidden, out, with_image=True)

    def forward(self, image: Tensor, stages: List[Tensor], size: Tuple[int, int]) -> Tensor:
        return self.features(image, [stages[s - 1] for s in self.stages], size)


class SEAMMethod(CAMMethod):
    """SEAM: two views (the image and its affine transform), PCM-revised CAMs, SEAM's losses.

    Args:
        seam_cfg (Mapping): ``model.method.seam``.
        kind (str): classification loss kind (SEAM's is the multi-label soft margin; "single" uses the
            classifier's softmax CE on both views instead).
    """

    name = "seam"

    def __init__(self, seam_cfg: Mapping[str, Any], kind: str) -> None:
        super().__init__(kind)
        self.cfg = dict(seam_cfg)
        self.revises_cams = self.cfg["cams"] == "revised"

    def transform(self) -> AffineTransform:
        """The second view's transform A."""
        c = self.cfg
        return AffineTransform(
            scale=c["scale"], hflip=c["hflip"], rot90=c["rot90"], angle=c["angle"]
        )

    def heads(self, net):
        _check_resnet(net, self.name)
        c = self.cfg
        return {"pcm": _PCMHead(net, c["pcm_stages"], c["pcm_hidden"], c["pcm_out"])}

    def _view(self, net: nn.Module, image: Tensor, stride: int) -> Dict[str, Any]:
        """One view: padded forward, raw CAM and revised CAM on the grid, both at the view's size."""
        xp = pad_to_multiple(image, stride)
        out = net(xp)
        cam_grid = F.conv2d(out["features"], net.head.weight)  # W f before the ReLU
        rv_grid = self.revise(net, xp, out, cam_grid)
        size = tuple(image.shape[-2:])
        return {
            "out": out,
            "cam": grid_to_image(F.relu(cam_grid), stride, size),
            "rv": grid_to_image(rv_grid, stride, size),
            "rv_grid": rv_grid,
        }

    def revise(
        self, net: nn.Module, xp: Tensor, out: Mapping[str, Any], cam_grid: Tensor
    ) -> Tensor:
        """PCM output (B, K + 1, h, w) (background first) of a view's grid CAMs."""
        grid = tuple(cam_grid.shape[-2:])
        feats = net.method_heads["pcm"](xp, out["stages"], grid)
        return pcm_refine(pcm_input(cam_grid), pcm_affinity(feats))

    def _cls(self, logits_o: Tensor, logits_t: Tensor, cls_labels: Tensor) -> Tensor:
        if self.kind == "multilabel":
            return seam_classification_loss(logits_o, logits_t, cls_labels)
        return 0.5 * (
            classification_loss(logits_o, cls_labels, self.kind)
            + classification_loss(logits_t, cls_labels, self.kind)
        )

    def _seam_terms(self, model, x, cls_labels, t: AffineTransform):
        net, c = model.net, self.cfg
        v_o = self._view(net, x, model.stride)
        v_t = self._view(net, t.apply(x), model.stride)
        terms = seam_losses(
            v_o["cam"],
            v_t["cam"],
            v_o["rv"],
            v_t["rv"],
            cls_labels,
            t,
            top_ratio=c["ecr_top_ratio"],
            target_mode=c["ecr_target"],
            use_valid_mask=c["angle"] != 0.0,
        )
        out = {"cls_loss": self._cls(v_o["out"]["logits"], v_t["out"]["logits"], cls_labels)}
        out["er_loss"], out["ecr_loss"] = terms["er"], terms["ecr"]
        total = out["cls_loss"] + c["er_weight"] * terms["er"] + c["ecr_weight"] * terms["ecr"]
        if c["rvmin"]:
            out["rvmin_loss"] = terms["rvmin"]
            total = total + terms["rvmin"]
        out["loss"] = total
        return out, v_o, v_t

    def loss(self, model, x, cls_labels, generator):
        terms, v_o, _ = self._seam_terms(model, x, cls_labels, self.transform())
        return terms, v_o["out"]

    def grid_cams(self, net, x_padded, net_out):
        if not self.revises_cams:
            return super().grid_cams(net, x_padded, net_out)
        cam_grid = F.conv2d(net_out["features"], net.head.weight)
        return F.relu(self.revise(net, x_padded, net_out, cam_grid)[:, 1:])


class P2PMethod(SEAMMethod):
    """Pixel-to-prototype contrast: SEAM's step on a fixed-size second view plus the contrast terms.

    Args:
        seam_cfg (Mapping): ``model.method.seam`` (its ``scale`` is not used).
        p2p_cfg (Mapping): ``model.method.p2p``.
        kind (str): classification loss kind.
    """

    name = "p2p"

    def __init__(self, seam_cfg: Mapping[str, Any], p2p_cfg: Mapping[str, Any], kind: str) -> None:
        super().__init__(seam_cfg, kind)
        self.p2p = dict(p2p_cfg)

    def transform(self) -> AffineTransform:
        return AffineTransform(size=tuple(self.p2p["view_size"]))

    def heads(self, net):
        heads = super().heads(net)
        heads["proj"] = ProjectionHead(net.trunk.out_channels, self.p2p["proj_dim"])
        return heads

    def loss(self, model, x, cls_labels, generator):
        terms, v_o, v_t = self._seam_terms(model, x, cls_labels, self.transform())
        proj, p = model.net.method_heads["proj"], self.p2p
        f_o, f_t = proj(v_o["out"]["features"]), proj(v_t["out"]["features"])
        grid = tuple(v_t["rv_grid"].shape[-2:])
        f1, rv1 = align_to(f_o, grid), align_to(v_o["rv_grid"], grid)
        top_k = max(1, (grid[0] * grid[1]) // int(p["top_k_divisor"]))
        nce = p2p_losses(
            f1,
            f_t,
            rv1,
            v_t["rv_grid"],
            cls_labels,
            generator=generator,
            temperature=p["temperature"],
            bg_threshold=p["bg_threshold"],
            top_k=top_k,
            cross_weight=p["cross_weight"],
            cross_label_weight=p["cross_label_weight"],
            intra_weight=p["intra_weight"],
            semi_hard=p["semi_hard"],
            hard_pixels=p["hard_pixels"],
        )
        terms["cross_nce"], terms["cross_label_nce"] = nce["cross"], nce["cross_label"]
        terms["intra_nce"] = nce["intra"]
        terms["loss"] = terms["loss"] + nce["nce"]
        return terms, v_o["out"]


class _SubCategoryHead(nn.Module):
    """SC-CAM's second 1x1 head (K * k outputs) on the pooled features, and the cluster centres of the
    round (buffers, saved in the checkpoint: ``centers`` (K, k, D), ``counts`` (K,), ``ready``)."""

    def __init__(self, in_channels: int, num_classes: int, k: int) -> None:
        super().__init__()
        self.k = int(k)
        self.head = nn.Conv2d(in_channels, num_classes * self.k, 1, bias=False)
        nn.init.xavier_uniform_(self.head.weight)  # a new layer, as the parent head
        self.register_buffer("centers", torch.zeros(num_classes, self.k, in_channels))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    def forward(self, features: Tensor) -> Tensor:
        """(B, D, h, w) -> sub-category logits (B, K * k)."""
        return self.head(features.mean(dim=(2, 3), keepdim=True)).flatten(1)

    def assign(self, feats: Tensor, cls_labels: Tensor) -> Tensor:
        """Sub-category labels (B, K * k): for each present class c, the nearest of its centres.

        Args:
            feats (Tensor): (B, D) image features (``image_features``) of the previous round's model.
            cls_labels (Tensor): (B, K).
        """
        b, num_classes = cls_labels.shape
        dist = torch.cdist(
            feats[:, None, None, :].expand(b, num_classes, 1, -1), self.centers[None]
        )
        dist = dist[:, :, 0, :]  # (B, K, k)
        unused = torch.arange(self.k, device=feats.device)[None, :] >= self.counts[:, None]
        dist = dist.masked_fill(unused[None], float("inf"))
        nearest = dist.argmin(dim=2)  # (B, K)
        labels = torch.zeros(b, num_classes * self.k, device=feats.device)
        rows, cols = torch.nonzero(cls_labels > 0, as_tuple=True)
        labels[rows, cols * self.k + nearest[rows, cols]] = 1.0
        return labels


class SCCAMMethod(CAMMethod):
    """SC-CAM, one round: the previous round's frozen model clusters the training images' features per
    class (k-means, at the first training step); each step, the images' sub-categories are the nearest
    centres of their features under that model, and the loss is parent + sub_weight x sub-category
    (+ kd_weight x distillation from the previous round's parent logits).

    Deviation from SC-CAM's code, which labels each training image once from its unaugmented features:
    the training batches carry no image index, so each batch is labelled from the features of its
    augmented crops (the same labels as SC-CAM's for unaugmented images: k-means labels are the nearest
    centres at convergence).

    Args:
        cfg (Mapping): ``model.method.sc_cam``.
        kind (str): classification loss kind.
        data_cfg (Mapping): ``cfg.data`` (the training split that is clustered).
    """

    name = "sc_cam"

    def __init__(self, cfg: Mapping[str, Any], kind: str, data_cfg: Mapping[str, Any]) -> None:
        super().__init__(kind)
        self.cfg = dict(cfg)
        self.data_cfg = data_cfg
        self.teacher: Optional[nn.Module] = None

    def heads(self, net):
        num_classes = net.num_classes
        if isinstance(net, CAMClassifier):
            channels = net.trunk.out_channels
        else:
            channels = num_classes  # the U-Net's features are its K CAM logits
        return {"sub": _SubCategoryHead(channels, num_classes, self.cfg["k"])}

    def _load_teacher(self, model: nn.Module) -> nn.Module:
        from weclip.models.affinity import load_cam_model

        teacher = load_cam_model(self.cfg["previous"], model.num_classes).to(
            model.pixel_mean.device
        )
        same = torch.equal(teacher.pixel_mean, model.pixel_mean) and torch.equal(
            teacher.pixel_std, model.pixel_std
        )
        if not same:
            raise ConfigError(
                f"config key 'model.method.sc_cam.previous' = {self.cfg['previous']!r}: its "
                "pixel_mean/pixel_std differ from this config's"
            )
        return teacher

    @torch.no_grad()
    def _features(self, teacher: nn.Module, x: Tensor) -> Tensor:
        return image_features(teacher.classify(x)["features"])

    @torch.no_grad()
    def cluster(self, model: nn.Module) -> None:
        """k-means of the previous round's features of every training image (SC-CAM steps 1-3): fills
        the sub-category head's centres."""
        from tqdm import tqdm

        from weclip.data import build_dataset

        sub = model.net.method_heads["sub"]
        dataset = build_dataset(
            self.data_cfg, self.data_cfg["train_split"], train=False, with_labels=True
        )
        n = (
            len(dataset)
            if self.cfg["max_images"] is None
            else min(len(dataset), self.cfg["max_images"])
        )
        feats, labels = [], []
        device = model.pixel_mean.device
        for i in tqdm(range(n), desc="SC-CAM features", leave=False):
            item = dataset[i]
            x = model.preprocess(item["image"][None].to(device))
            feats.append(self._features(self.teacher, x)[0].cpu())
            labels.append(item["cls_labels"].float())
        subcats = subcategory_labels(
            torch.stack(feats),
            torch.stack(labels),
            k=self.cfg["k"],
            generator=torch.Generator().manual_seed(int(self.cfg["kmeans_seed"])),
            n_init=self.cfg["kmeans_n_init"],
            max_iter=self.cfg["kmeans_max_iter"],
        )
        sub.centers.zero_()
        for c, centers in enumerate(subcats.centers):
            if centers is not None:
                sub.centers[c, : centers.shape[0]] = centers.to(sub.centers)
        sub.counts.copy_(torch.tensor(subcats.clusters, dtype=torch.long))
        sub.ready.fill_(True)
        logger.info(
            "SC-CAM: %d images of %s clustered with %s; clusters per class %s",
            n,
            self.data_cfg["train_split"],
            self.cfg["previous"],
            subcats.clusters,
        )

    def loss(self, model, x, cls_labels, generator):
        sub = model.net.method_heads["sub"]
        if self.teacher is None:
            self.teacher = self._load_teacher(model)
        if not bool(sub.ready):
            self.cluster(model)
        sub_labels = sub.assign(self._features(self.teacher, x), cls_labels)
        out = model.classify(x)
        sc = sc_cam_loss(
            out["logits"],
            sub(out["features"]),
            cls_labels,
            sub_labels,
            sub_weight=self.cfg["sub_weight"],
            loss="multilabel_soft_margin" if self.kind == "multilabel" else "cross_entropy",
        )
        terms = {"cls_loss": sc["parent"], "sub_loss": sc["sub"], "loss": sc["loss"]}
        if self.cfg["distill"]:
            with torch.no_grad():
                teacher_logits = self.teacher.classify(x)["logits"]
            terms["kd_loss"] = distillation_loss(
                out["logits"],
                teacher_logits,
                temperature=self.cfg["kd_temperature"],
                mode="sigmoid" if self.kind == "multilabel" else "softmax",
            )
            terms["loss"] = terms["loss"] + self.cfg["kd_weight"] * terms["kd_loss"]
        return terms, out


def build_cam_method(
    method_cfg: Mapping[str, Any], net: nn.Module, kind: str, data_cfg: Mapping[str, Any]
) -> Optional[CAMMethod]:
    """The method of a validated ``model.method`` (None for "none"); attaches its learned modules to
    ``net.method_heads``.

    Raises:
        ConfigError: a method that needs the ResNet classifier on the U-Net.
    """
    name = method_cfg["type"]
    if name == "none":
        return None
    if name in ("mixup_cam", "manifold_mixup", "fmix"):
        method: CAMMethod = MixMethod(name, method_cfg[name], kind)
    elif name == "seam":
        method = SEAMMethod(method_cfg["seam"], kind)
    elif name == "p2p":
        method = P2PMethod(method_cfg["seam"], method_cfg["p2p"], kind)
    elif name == "sc_cam":
        method = SCCAMMethod(method_cfg["sc_cam"], kind, data_cfg)
    else:
        raise ConfigError(f"config key 'model.method.type': unknown method {name!r}")
    heads = method.heads(net)
    if heads:
        net.method_heads = nn.ModuleDict(heads)
    logger.info("CAM method: %s", method.title)
    return method
