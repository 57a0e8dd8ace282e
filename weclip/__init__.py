"""WeCLIP: frozen CLIP for weakly supervised semantic segmentation (CVPR 2024), reproduced.

The public API (``weclip.apis``): :func:`init_model`, :func:`segment`, :func:`pseudo_labels`.
"""

__version__ = "0.1.0"  # before the imports: weclip.engine.checkpoint records it

from weclip.apis import PseudoLabels, Segmentation, init_model, pseudo_labels, read_image, segment
from weclip.config import load_config
from weclip.models.registry import build_model

__all__ = [
    "init_model",
    "segment",
    "pseudo_labels",
    "read_image",
    "Segmentation",
    "PseudoLabels",
    "load_config",
    "build_model",
    "__version__",
]
