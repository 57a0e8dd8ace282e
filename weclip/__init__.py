"""WeCLIP: frozen CLIP for weakly supervised semantic segmentation (CVPR 2024), reproduced."""

from weclip.config import load_config
from weclip.models.weclip import WeCLIP, build_weclip

__version__ = "0.1.0"
__all__ = ["WeCLIP", "build_weclip", "load_config", "__version__"]
