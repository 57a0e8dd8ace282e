"""Config schema of the CAM-improvement methods: ``model.method`` of a ``CAMClassifier`` config.

``model.method.type`` picks one method (default "none" = the plain CAM classifier); the section of that
method holds its keys. Defaults are the phase-1 modules' ``*_DEFAULTS`` (the sources' values, see
docs/cam_methods.md, whose tables name the source of each number); the wiring is
``weclip.baselines.cam_methods.training``.
"""

from typing import Any, Dict, Literal, Optional, Tuple

from weclip.baselines.cam_methods.mix import (
    FMIX_DEFAULTS,
    MANIFOLD_MIXUP_DEFAULTS,
    MIXUP_CAM_DEFAULTS,
)
from weclip.baselines.cam_methods.p2p import P2P_DEFAULTS
from weclip.baselines.cam_methods.sc_cam import SC_CAM_DEFAULTS
from weclip.baselines.cam_methods.seam import SEAM_DEFAULTS
from weclip.errors import ConfigError
from weclip.schema import key, section

__all__ = [
    "METHOD_TYPES",
    "METHOD_TITLES",
    "MixupCAMConfig",
    "MixRegularisersConfig",
    "ManifoldMixupConfig",
    "FMixConfig",
    "SEAMConfig",
    "P2PConfig",
    "SCCAMConfig",
    "CAMMethodConfig",
]

METHOD_TYPES = ("none", "mixup_cam", "manifold_mixup", "fmix", "seam", "p2p", "sc_cam")
#: the methods' names in logs and report rows
METHOD_TITLES = {
    "none": "CAM",
    "mixup_cam": "Mixup-CAM",
    "manifold_mixup": "Manifold Mixup",
    "fmix": "FMix-CAM",
    "seam": "SEAM",
    "p2p": "Pixel-to-Prototype",
    "sc_cam": "SC-CAM",
}


@section
class MixupCAMConfig:
    """``model.method.mixup_cam``: mixup of images and labels + entropy / concentration losses (Mixup-CAM,
    Chang et al., BMVC 2020, https://arxiv.org/abs/2008.01201)."""

    alpha: float = key(
        MIXUP_CAM_DEFAULTS["alpha"], gt=0, doc="lambda ~ Beta(alpha, alpha); not verified"
    )
    ent_weight: float = key(
        MIXUP_CAM_DEFAULTS["ent_weight"], ge=0, doc="entropy loss; not verified"
    )
    con_weight: float = key(
        MIXUP_CAM_DEFAULTS["con_weight"], ge=0, doc="concentration; not verified"
    )
    con_eps: float = key(MIXUP_CAM_DEFAULTS["con_eps"], ge=0, doc="SCOPS' epsilon")
    bg_score: Optional[float] = key(
        None, doc="constant background score channel of the per-pixel softmax (None: no channel)"
    )
    mask_absent: bool = key(False, doc="softmax over the (mixed) labels' classes only")


@section
class MixRegularisersConfig:
    """The Mixup-CAM regularisers as an option of the other mixing methods (weights 0 = off); the keys of
    ``model.method.manifold_mixup`` and ``model.method.fmix`` that follow their own."""

    ent_weight: float = key(0.0, ge=0, doc="Mixup-CAM entropy loss (0 = off)")
    con_weight: float = key(0.0, ge=0, doc="Mixup-CAM concentration loss (0 = off)")
    con_eps: float = key(MIXUP_CAM_DEFAULTS["con_eps"], ge=0)
    bg_score: Optional[float] = key(None, doc="as model.method.mixup_cam.bg_score")
    mask_absent: bool = key(False)


@section
class ManifoldMixupConfig(MixRegularisersConfig):
    """``model.method.manifold_mixup``: mixup of the hidden state before a random stage (Verma et al., ICML
    2019, https://arxiv.org/abs/1806.05236); the Mixup-CAM regularisers are optional (weights 0 = off)."""

    alpha: float = key(MANIFOLD_MIXUP_DEFAULTS["alpha"], gt=0, doc="Manifold Mixup's mixup_alpha")
    layers: Tuple[int, ...] = key(
        tuple(MANIFOLD_MIXUP_DEFAULTS["layers"]),
        ge=0,
        le=3,
        nonempty=True,
        doc="mixing points: 0 = input, k = after ResNet stage k (official: 0, 1, 2)",
    )


@section
class FMixConfig(MixRegularisersConfig):
    """``model.method.fmix``: FMix masks instead of mixup (Harris et al. 2020,
    https://arxiv.org/abs/2002.12047), labels mixed by the mask area; regularisers optional."""

    alpha: float = key(FMIX_DEFAULTS["alpha"], gt=0, doc="FMix code: alpha=1")
    decay_power: float = key(FMIX_DEFAULTS["decay_power"], gt=0, doc="FMix code: decay_power=3")
    max_soft: float = key(FMIX_DEFAULTS["max_soft"], ge=0, le=0.5, doc="FMix code: 0 (binary)")
    label_weight: Literal["area", "lambda"] = key(
        "area", doc="'area' (labels mixed by the mask's area) or 'lambda' (FMix's code)"
    )


@section
class SEAMConfig:
    """``model.method.seam``: equivariance of the CAMs under a rescale, the pixel correlation module and
    its losses (SEAM, Wang et al., CVPR 2020, https://arxiv.org/abs/2004.04581; official code values)."""

    scale: float = key(
        SEAM_DEFAULTS["scale"], gt=0, doc="second view = image rescaled by this (0.3)"
    )
    hflip: bool = key(False, doc="also mirror the second view (SEAM: no)")
    rot90: int = key(0, ge=0, le=3, doc="quarter turns of the second view (SEAM: 0)")
    angle: float = key(0.0, doc="small rotation of the second view, degrees (SEAM: 0)")
    er_weight: float = key(SEAM_DEFAULTS["er_weight"], ge=0, doc="L_ER")
    ecr_weight: float = key(SEAM_DEFAULTS["ecr_weight"], ge=0, doc="L_ECR")
    ecr_top_ratio: float = key(SEAM_DEFAULTS["ecr_top_ratio"], gt=0, le=1, doc="ECR top-k ratio")
    ecr_target: Literal["max_onehot", "plain"] = key(
        SEAM_DEFAULTS["ecr_target"], doc="'max_onehot' (code) or 'plain' (the paper's L1)"
    )
    rvmin: bool = key(SEAM_DEFAULTS["rvmin"], doc="adaptive min-pooling loss on the revised CAMs")
    pcm_stages: Tuple[int, ...] = key(
        (2, 3), ge=1, le=4, nonempty=True, doc="ResNet stages of the PCM (ResNet-38 conv4/5 ~ 2, 3)"
    )
    pcm_hidden: Tuple[int, ...] = key(tuple(SEAM_DEFAULTS["pcm_hidden"]), ge=1, nonempty=True)
    pcm_out: int = key(SEAM_DEFAULTS["pcm_out"], ge=1)
    cams: Literal["revised", "raw"] = key(
        "revised", doc="CAMs of predict/pseudo/sweep: PCM-revised (infer_SEAM.py) or raw"
    )

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if len(values["pcm_stages"]) != len(values["pcm_hidden"]):
            raise ConfigError(
                f"config keys '{prefix}.pcm_stages' {values['pcm_stages']} and '{prefix}.pcm_hidden' "
                f"{values['pcm_hidden']}: one width per stage"
            )
        if values["rot90"] % 2 == 1 and values["scale"] != 1.0:
            # the transform resizes the rotated map; the two views' grids would not match
            raise ConfigError(f"config key '{prefix}.rot90': odd quarter turns need scale 1.0")


@section
class P2PConfig:
    """``model.method.p2p``: pixel-to-prototype contrast on top of SEAM (Du et al., CVPR 2022,
    https://arxiv.org/abs/2110.07110; official code values). The SEAM terms come from
    ``model.method.seam`` (its ``scale`` is replaced by the fixed ``view_size``)."""

    view_size: Tuple[int, int] = key(tuple(P2P_DEFAULTS["view_size"]), ge=8, doc="second view size")
    proj_dim: int = key(P2P_DEFAULTS["proj_dim"], ge=1, doc="projection head width")
    temperature: float = key(P2P_DEFAULTS["temperature"], gt=0)
    bg_threshold: float = key(P2P_DEFAULTS["bg_threshold"], ge=0, le=1)
    top_k_divisor: int = key(
        P2P_DEFAULTS["top_k_divisor"], ge=1, doc="prototype top-k = h*w // this"
    )
    cross_weight: float = key(P2P_DEFAULTS["cross_weight"], ge=0)
    cross_label_weight: float = key(P2P_DEFAULTS["cross_label_weight"], ge=0)
    intra_weight: float = key(P2P_DEFAULTS["intra_weight"], ge=0)
    semi_hard: bool = key(True, doc="semi-hard prototype mining (needs > 3 + 1 prototypes)")
    hard_pixels: bool = key(True, doc="hard pixel sampling of the intra-view term")


@section
class SCCAMConfig:
    """``model.method.sc_cam``: sub-category exploration (SC-CAM, Chang et al., CVPR 2020,
    https://arxiv.org/abs/2008.01183; official code values). One training run is one round; the
    previous round's checkpoint (a plain CAM classifier for round 1) clusters the features."""

    previous: Optional[str] = key(
        None, doc="checkpoint of the previous round (round 1: a plain CAMClassifier run); required"
    )
    k: int = key(SC_CAM_DEFAULTS["k"], ge=1, doc="sub-categories per class (--k_cluster 10)")
    sub_weight: float = key(SC_CAM_DEFAULTS["sub_weight"], ge=0, doc="--subcls_loss_weight 5")
    kmeans_max_iter: int = key(SC_CAM_DEFAULTS["kmeans_max_iter"], ge=1)
    kmeans_n_init: int = key(SC_CAM_DEFAULTS["kmeans_n_init"], ge=1)
    kmeans_seed: int = key(SC_CAM_DEFAULTS["kmeans_seed"], ge=0)
    max_images: Optional[int] = key(None, ge=1, doc="cluster the first N training images only")
    distill: bool = key(
        SC_CAM_DEFAULTS["distill"], doc="previous round as a teacher (this project's)"
    )
    kd_temperature: float = key(SC_CAM_DEFAULTS["kd_temperature"], gt=0, doc="this project's")
    kd_weight: float = key(SC_CAM_DEFAULTS["kd_weight"], ge=0, doc="this project's")


@section
class CAMMethodConfig:
    """``model.method``: the CAM-improvement method of the classifier's training ("none" = plain CAM)."""

    type: Literal["none", "mixup_cam", "manifold_mixup", "fmix", "seam", "p2p", "sc_cam"] = key(
        "none"
    )
    mixup_cam: MixupCAMConfig = key(MixupCAMConfig())
    manifold_mixup: ManifoldMixupConfig = key(ManifoldMixupConfig())
    fmix: FMixConfig = key(FMixConfig())
    seam: SEAMConfig = key(SEAMConfig())
    p2p: P2PConfig = key(P2PConfig())
    sc_cam: SCCAMConfig = key(SCCAMConfig())

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        if values["type"] == "sc_cam" and not values["sc_cam"]["previous"]:
            raise ConfigError(
                f"config key '{prefix}.sc_cam.previous' is not set: SC-CAM clusters the features of "
                "the previous round's checkpoint (round 1: a plain CAMClassifier checkpoint)"
            )
