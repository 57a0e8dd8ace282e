"""WeCLIP: frozen CLIP + decoder + online pseudo-labels (Zhang et al., CVPR 2024; spec App. A).

One forward (spec §8, "per-iteration order"): the frozen CLIP runs blocks 0..N-2 without a graph; the decoder
fuses their outputs into F and predicts segmentation logits; A_f = σ(FᵀF); given the image-level labels, the
pseudo-label engine computes Grad-CAMs on the last CLIP block, refines them (static CLIP-ES refinement or the
RFM, which filters CLIP attention with the detached A_f) and turns them into pseudo-labels with PAR.

Reference: https://github.com/zbf1991/WeCLIP (the authors' code, described in the spec).
"""

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from weclip.models.clip_backbone import FrozenCLIP, build_backbone
from weclip.models.decoder import WeCLIPDecoder, build_decoder
from weclip.models.text_encoder import prompt_embeddings
from weclip.refine.engine import PseudoLabelEngine, rfm_active

__all__ = ["WeCLIP", "build_weclip"]


class WeCLIP(nn.Module):
    """The WeCLIP model.

    Arguments:
        backbone (FrozenCLIP): the frozen CLIP (never trained, never in an optimizer).
        decoder (WeCLIPDecoder): the trainable fusion + transformer decoder.
        engine (PseudoLabelEngine): Grad-CAM, refinement and PAR.
        text_fg (torch.Tensor): (C-1)xE foreground prompt embeddings.
        text_bg (torch.Tensor): NBxE background prompt embeddings.
        rfm_start_iter (int): first 1-indexed training iteration that uses the RFM (spec §4.2).
    """

    def __init__(
        self,
        *,
        backbone: FrozenCLIP,
        decoder: WeCLIPDecoder,
        engine: PseudoLabelEngine,
        text_fg: torch.Tensor,
        text_bg: torch.Tensor,
        rfm_start_iter: int,
    ) -> None:
        super().__init__()
        if text_fg.shape[0] + 1 != decoder.num_classes:
            raise ValueError(
                f"{text_fg.shape[0]} foreground prompts but the decoder predicts {decoder.num_classes} classes "
                "(foreground + background)"
            )
        self.backbone = backbone
        self.decoder = decoder
        self.engine = engine
        self.rfm_start_iter = rfm_start_iter
        # Not persistent: rebuilt from the CLIP weights and the prompts, never saved in checkpoints (spec §2).
        self.register_buffer("text_fg", text_fg, persistent=False)
        self.register_buffer("text_bg", text_bg, persistent=False)

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    def forward(
        self,
        images: torch.Tensor,
        cls_labels: Optional[torch.Tensor] = None,
        iteration: Optional[int] = None,
        out_size: Optional[Tuple[int, int]] = None,
        valid: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Segmentation logits, decoder affinity and (given labels) pseudo-labels.

        Arguments:
            images (torch.Tensor): Bx3xHxW normalised images, H and W multiples of the patch size.
            cls_labels (torch.Tensor, optional): Bx(C-1) multi-hot image-level labels. Without them only the
                decoder runs (inference).
            iteration (int, optional): 1-indexed training iteration; selects static refinement or the RFM
                (``model.refine.rfm_start_iter``). None (validation, inference) always uses the RFM.
            out_size (tuple, optional): (H_out, W_out) of the refined CAMs and pseudo-labels; default (H, W).
            valid (torch.Tensor, optional): BxH_outxW_out bool, False on crop padding
                (used when ``model.pseudo_label.ignore_padding`` is set).

        Returns:
            dict: ``seg_logits`` BxCxhxw (1/p resolution, not upsampled), ``aff`` Bxnxn (σ(FᵀF), with grad),
            and with ``cls_labels``: ``pseudo_labels`` BxH_outxW_out long, ``cams`` Pxhxw (initial CAMs),
            ``cams_refined`` PxH_outxW_out, ``batch_index`` (P,), ``class_index`` (P,) foreground ids,
            ``box_masks`` Pxhxw, ``use_rfm`` (bool tensor).
        """
        feats, attns = self.backbone.forward_blocks(images)
        grid = self.backbone.grid_size(images.shape[-2], images.shape[-1])

        # Decoder on the features of blocks 0..N-2 (spec §6)
        seg_logits, fused = self.decoder(feats, grid)
        aff = self.decoder.affinity(fused)  # A_f, trained by the affinity loss (spec §4.1, §7.2)
        out: Dict[str, torch.Tensor] = {"seg_logits": seg_logits, "aff": aff}
        if cls_labels is None:
            return out

        # Online pseudo-labels (spec §3-§5); the RFM uses a detached A_f
        use_rfm = rfm_active(iteration, self.rfm_start_iter)
        pseudo = self.engine(
            self.backbone,
            images,
            cls_labels,
            feats,
            attns,
            self.text_fg,
            self.text_bg,
            aff=aff.detach() if use_rfm else None,
            use_rfm=use_rfm,
            out_size=out_size,
            valid=valid,
        )
        out.update(pseudo)
        out["use_rfm"] = torch.tensor(use_rfm)
        return out


def build_weclip(cfg: Mapping[str, Any]) -> WeCLIP:
    """Build WeCLIP from a full config (``model``, ``data`` sections), on CPU.

    The prompt embeddings are computed once here: ``model.text.template`` formatted with
    ``data.prompt_class_names`` and ``data.prompt_bg_names`` (spec §2).
    """
    model_cfg, data_cfg = cfg["model"], cfg["data"]
    backbone = build_backbone(model_cfg["backbone"])
    num_classes = int(data_cfg["num_classes"])
    prompt_names = list(data_cfg["prompt_class_names"])
    if len(prompt_names) != num_classes - 1:
        raise ValueError(
            f"data.prompt_class_names has {len(prompt_names)} names, expected data.num_classes - 1 = "
            f"{num_classes - 1}"
        )
    template = model_cfg["text"]["template"]
    text_fg = prompt_embeddings(backbone, prompt_names, template)
    text_bg = prompt_embeddings(backbone, list(data_cfg["prompt_bg_names"]), template)
    for key in ("static_layers", "rfm_layers"):
        if not 1 <= int(model_cfg["refine"][key]) <= backbone.num_blocks:
            raise ValueError(
                f"model.refine.{key} = {model_cfg['refine'][key]} but the CLIP has {backbone.num_blocks} blocks "
                "(attention maps available)"
            )
    decoder = build_decoder(
        model_cfg.get("decoder"), num_classes, backbone.width, backbone.num_blocks - 1
    )
    engine = PseudoLabelEngine.from_config(model_cfg)
    return WeCLIP(
        backbone=backbone,
        decoder=decoder,
        engine=engine,
        text_fg=text_fg,
        text_bg=text_bg,
        rfm_start_iter=int(model_cfg["refine"]["rfm_start_iter"]),
    )
