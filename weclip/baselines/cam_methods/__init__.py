"""CAM-improvement methods for the baseline CNN classifier, on plain tensors.

- `mix`: Mixup-CAM (mixup + entropy and concentration losses), Manifold Mixup, FMix.
- `sc_cam`: SC-CAM sub-category clustering, parent + sub-category losses, rounds, distillation.
- `seam`: SEAM's invertible affine transform, pixel correlation module, ER / ECR losses.
- `p2p`: pixel-to-prototype contrast (cross-view and intra-view InfoNCE) on top of SEAM.

See docs/cam_methods.md for the equations, the defaults and their sources, and the training-step
recipe of each method.
"""

from weclip.baselines.cam_methods.mix import (
    FMIX_DEFAULTS,
    MANIFOLD_MIXUP_DEFAULTS,
    MIXUP_CAM_DEFAULTS,
    MixResult,
    concentration_loss,
    entropy_loss,
    fmix,
    manifold_mixup,
    mixup,
    pixel_class_probs,
    sample_beta,
)
from weclip.baselines.cam_methods.p2p import P2P_DEFAULTS, ProjectionHead, p2p_losses
from weclip.baselines.cam_methods.sc_cam import (
    SC_CAM_DEFAULTS,
    distillation_loss,
    run_rounds,
    sc_cam_loss,
    subcategory_labels,
)
from weclip.baselines.cam_methods.seam import (
    SEAM_DEFAULTS,
    AffineTransform,
    PCMFeatures,
    pcm_affinity,
    pcm_input,
    pcm_refine,
    seam_classification_loss,
    seam_losses,
)
