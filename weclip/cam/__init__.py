"""Initial CAMs: batched softmax Grad-CAM on the frozen CLIP classifier (spec §3)."""

from weclip.cam.gradcam import (
    GRADCAM_STRATEGIES,
    GradCAMResult,
    gradcam,
    gradcam_from_activations,
    minmax_normalize,
    present_pairs,
)
