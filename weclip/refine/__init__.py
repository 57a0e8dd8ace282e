"""CAM refinement and pseudo-labels: boxes, transition matrices (static / RFM), propagation, PAR, and the
pipeline that composes them (spec §4-§5).

`crf.py` (DenseCRF, spec §9) lives here too but is imported on its own (pydensecrf is optional).
"""

from weclip.refine.boxes import box_masks, component_boxes, threshold_cams
from weclip.refine.par import PAR
from weclip.refine.pipeline import REFINEMENTS, PseudoLabelPipeline, rfm_active
from weclip.refine.propagate import propagate_cams, resize_cams
from weclip.refine.pseudo_label import pack_scores, scores_to_labels
from weclip.refine.transition import (
    patch_attention,
    rfm_affinity,
    sinkhorn_normalize,
    static_affinity,
    transition_matrix,
)
