"""WeCLIP model components (see docs/architecture.md, "weclip/models")."""

from weclip.models.decoder import WeCLIPDecoder, build_decoder
from weclip.models.official_names import load_official_decoder_state
