"""WeCLIP model components (see docs/architecture.md, "weclip/models")."""

from weclip.models.clip_backbone import FrozenCLIP, build_backbone, build_clip_model
from weclip.models.decoder import WeCLIPDecoder, build_decoder
from weclip.models.official_names import load_official_decoder_state
from weclip.models.text_encoder import prompt_embeddings
from weclip.models.weclip import WeCLIP, build_weclip
