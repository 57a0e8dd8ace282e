"""WeCLIP: frozen CLIP for weakly supervised semantic segmentation (CVPR 2024), reproduced."""

__version__ = "0.1.0"
