"""Models: the registry (``model.type`` -> builder) and the library's models (docs/architecture.md).

Importing this package registers the built-in models.
"""

from weclip.models.affinity import AffinityNetModel, build_affinitynet
from weclip.models.cam_classifier import CAMClassifierModel, build_cam_classifier
from weclip.models.clip_backbone import FrozenCLIP, build_backbone, build_clip_model
from weclip.models.decoder import WeCLIPDecoder
from weclip.models.official_names import load_official_decoder_state
from weclip.models.registry import build_model, register_model, registered_models
from weclip.models.segnet import SegNetModel, build_segnet
from weclip.models.text_encoder import prompt_embeddings
from weclip.models.weclip import WeCLIP, build_weclip
from weclip.models.weclip_plus import WeCLIPPlus, build_weclip_plus
