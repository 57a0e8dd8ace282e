"""Config schema of AffinityNet refinement (``model.type = "AffinityNet"``): ``model`` and ``loss``.

Defaults are AffinityNet's (Ahn & Kwak, CVPR 2018, https://arxiv.org/abs/1803.10464, and their code,
github.com/jiwoon-ahn/psa; docs/baselines.md): confident regions from background powers 4 / 32, pairs
within radius 5, L1 mean over channels, loss weights 1/4, 1/4, 1/2, random walk beta = 8, t = 256 on the
CAMs with background power 16 (``walk.bg_mode="threshold"`` walks [t; CAMs] instead, t e.g. the
threshold ``tools/sweep_cams.py`` picked for the classifier).
"""

from typing import Any, Dict, Literal, Optional, Tuple

from weclip.baselines.box_seeds import DEFAULT_SEED_THRESHOLD, DEFAULT_SIGMA
from weclip.baselines.resnet import IMAGENET_MEAN, IMAGENET_STD
from weclip.errors import ConfigError
from weclip.schema import CRFConfig, key, section

__all__ = [
    "AffinityTrunkConfig",
    "AffinityHeadConfig",
    "ConfidentLabelConfig",
    "BoxSeedConfig",
    "RandomWalkConfig",
    "AffinityModelConfig",
    "AffinityLossConfig",
]


@section
class AffinityTrunkConfig:
    """``model.resnet``: the trunk of the affinity network (output stride 8, layer2..layer4)."""

    arch: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = key("resnet50")
    weights: str = key(
        "random",
        doc="'random', a local torchvision ImageNet file, or 'cam': the CAM classifier's trunk",
    )
    base_width: int = key(64, ge=1)
    stem_pool: bool = key(True, doc="False: affinity grid at stride 4 instead of 8 (small images)")


@section
class AffinityHeadConfig:
    """``model.head``: 1x1 reductions of layer2..layer4, concatenation, 1x1 mix (authors' widths)."""

    mid_channels: Tuple[int, int, int] = key((64, 128, 256), ge=1)
    out_channels: int = key(448, ge=1)


@section
class ConfidentLabelConfig:
    """``model.labels``: confident foreground / background of the CAMs (``seeds="cams"``)."""

    mode: Literal["power", "threshold"] = key("power", doc="psa: powers; IRN: thresholds")
    fg_value: Optional[float] = key(None, ge=0, doc="None: 4 (power) / 0.30 (threshold)")
    bg_value: Optional[float] = key(None, ge=0, doc="None: 32 (power) / 0.05 (threshold)")
    scales: Tuple[float, ...] = key(
        (1.0,), gt=0, nonempty=True, doc="CAM scales of the training crop (psa: MS, offline)"
    )
    flip: bool = key(False)
    # Ahn & Kwak, CVPR 2018 (https://arxiv.org/abs/1803.10464), Sec. 3.2, and psa's infer_cls.py
    # (la_crf / ha_crf, alpha 4 / 32): the confident regions are those of a dense CRF on the scores of
    # each background power. On the CI-size toy world (tests/test_baseline_pipeline.py) the CRF'd labels
    # walk to 34.6 mIoU, the uncorrected CAM > 0.7 / < 0.3 labels to 32.6 (first 200 train images,
    # 300 steps, walk t = 0.5 for 8 steps; docs/baselines.md)
    crf: bool = key(
        True,
        doc="dense CRF on both score maps before the confident regions (the paper, Sec. 3.2; psa's "
        "code, offline); False: the CAMs' regions as they are",
    )
    # psa's crf_inference: 10 mean-field steps, Gaussian sxy 3 / compat 3, bilateral sxy 80, srgb 13,
    # compat 10; scores clipped at 1e-5 before the -log
    crf_params: CRFConfig = key(
        CRFConfig(
            iter_max=10, pos_xy_std=3.0, pos_w=3.0, bi_xy_std=80.0, bi_rgb_std=13.0, bi_w=10.0
        )
    )


@section
class BoxSeedConfig:
    """``model.boxes``: the Gaussian box seeds (``seeds="boxes"``; ``weclip/baselines/box_seeds.py``)."""

    sigma: float = key(DEFAULT_SIGMA, gt=0, doc="Gaussian std / box side")
    threshold: float = key(DEFAULT_SEED_THRESHOLD, gt=0, lt=1, doc="seed where heat > this")


@section
class RandomWalkConfig:
    """``model.walk``: random-walk propagation of the CAMs (mode "pseudo", "predict", the rows)."""

    beta: float = key(8.0, gt=0)
    num_iters: int = key(256, ge=0, doc="t (psa: 2^logt = 256)")
    bg_mode: Literal["power", "threshold"] = key(
        "power", doc="background of the walked maps: (1 - max)^bg_value (psa), or bg_value"
    )
    bg_value: float = key(16.0, gt=0, doc="alpha (psa: 16), or a threshold t (e.g. the sweep's)")
    scales: Optional[Tuple[float, ...]] = key(
        None, gt=0, doc="CAM scales; None: the classifier's model.pseudo.scales"
    )
    flip: Optional[bool] = key(None, doc="None: the classifier's model.pseudo.flip")


@section
class AffinityModelConfig:
    """``model`` of ``type="AffinityNet"``."""

    type: Literal["AffinityNet"] = key()
    cam_checkpoint: str = key(
        doc="training checkpoint of the CAMClassifier (its config is read from it); frozen",
        nonempty=True,
    )
    seeds: Literal["cams", "boxes"] = key(
        "cams", doc="affinity labels from the CAMs, or from box seeds in data.train_mask_dir"
    )
    resnet: AffinityTrunkConfig = key(AffinityTrunkConfig())
    head: AffinityHeadConfig = key(AffinityHeadConfig())
    pixel_mean: Tuple[float, float, float] = key(IMAGENET_MEAN, doc="on 0-255 RGB")
    pixel_std: Tuple[float, float, float] = key(IMAGENET_STD, gt=0)
    radius: int = key(5, ge=2, doc="gamma: pairs with 0 < distance < radius")
    reduction: Literal["mean", "sum"] = key(
        "mean", doc="L1 over channels: psa code mean, paper sum"
    )
    interior_only: bool = key(True, doc="psa code: pairs from interior pixels only")
    labels: ConfidentLabelConfig = key(ConfidentLabelConfig())
    boxes: BoxSeedConfig = key(BoxSeedConfig())
    walk: RandomWalkConfig = key(RandomWalkConfig())

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if values["labels"]["mode"] == "threshold":
            for name in ("fg_value", "bg_value"):
                value = values["labels"][name]
                if value is not None and value > 1:
                    raise ConfigError(
                        f"config key '{prefix}.labels.{name}' = {value}: a threshold on "
                        "max-normalised CAMs lies in [0, 1]"
                    )
        walk = values["walk"]
        if walk["bg_mode"] == "threshold" and walk["bg_value"] > 1:
            raise ConfigError(
                f"config key '{prefix}.walk.bg_value' = {walk['bg_value']}: a threshold on "
                "max-normalised CAMs lies in [0, 1]"
            )


@section
class AffinityLossConfig:
    """``loss``: L = bg_weight L_bg+ + fg_weight L_fg+ + neg_weight L- (psa code: 1/4, 1/4, 1/2)."""

    bg_weight: float = key(0.25, ge=0)
    fg_weight: float = key(0.25, ge=0)
    neg_weight: float = key(0.5, ge=0)
