"""WeCLIP+ building blocks (Zhang et al., "Frozen CLIP-DINO", TPAMI 2025), as modules on tensors.

See ``docs/official_code_plus.md`` for what the authors' ``WeCLIP+/`` code computes (cited as "doc §n").

- ``decoder``: the CLIP and DINO fusion heads and the shared transformer decoder (seg_clip, seg_dino).
- ``rfm_plus``: RFM+ (CAM x detached class probability, affinity from the concatenated features).
- ``losses``: the WeCLIP+ loss terms (bg/fg CE on the mean, affinity, cross-branch CE, Dice).
- ``self_training``: replacing pseudo-labels by confident predictions late in training.
- ``official_names``: the authors' parameter names <-> ours.
"""

from weclip.models.plus.decoder import FusionHead, PlusDecoderOutput, WeCLIPPlusDecoder
from weclip.models.plus.losses import cross_branch_loss, dice_loss, plus_total_loss
from weclip.models.plus.official_names import load_official_plus_decoder_state
from weclip.models.plus.rfm_plus import (
    class_probabilities,
    gate_cams,
    rfm_plus_num_layers,
    rfm_plus_refine,
    rfm_plus_transition,
)
from weclip.models.plus.self_training import self_training_active, self_training_labels
