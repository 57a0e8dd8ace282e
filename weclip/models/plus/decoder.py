"""The WeCLIP+ decoder: a CLIP fusion head, a DINO fusion head and one shared transformer decoder.

WeCLIP+ (Zhang et al., TPAMI 2025, https://ieeexplore.ieee.org/document/10891864), as the authors'
``WeCLIP+/WeCLIP_Plus/model_attn_aff_voc.py: WeCLIP_Plus.forward`` computes it (doc §3):

    CLIP: output of block N-2 (B, 1+h·w, Dc), CLS dropped -> TokenMLP -> 1x1 conv -> Dropout2d
          -> F_clip (B, 256, h, w)
    DINO: normalised patch tokens (B, Dd, hd, wd) -> TokenMLP -> 1x1 conv -> Dropout2d (at the DINO
          grid) -> bilinear, align_corners=False, to (h, w) -> F_dino (B, 256, h, w)
    shared transformer decoder + 1x1 classifier, applied to each: seg_clip, seg_dino (B, C, h, w)
    prediction seg = 0.5·seg_clip + 0.5·seg_dino (training and inference)
    affinity A = sigmoid(Fᵀ F) with F = concat(F_clip, F_dino) (B, 512, h, w) -> (B, h·w, h·w)

For a 320x320 crop, CLIP ViT-B/16 and DINOv2 ViT-S/14: h = w = 20, hd = wd = 22, Dc = 768, Dd = 384.
The fusion heads are the authors' ``SegFormerHead`` with ``index=1`` (one input); the transformer is
the WeCLIP decoder's (spec §6.2), built from the same blocks as :class:`WeCLIPDecoder`.
"""

from typing import List, NamedTuple, Sequence, Tuple

import torch
from torch import nn

from weclip.models.decoder import DecoderBlock, TokenMLP
from weclip.models.dino_backbone import resize_to_grid

__all__ = ["FusionHead", "PlusDecoderOutput", "WeCLIPPlusDecoder"]


class FusionHead(nn.Module):
    """SegFormer-style fusion of k token maps: one TokenMLP each, concat, 1x1 conv, Dropout2d.

    The authors' ``SegFormerHead`` (``WeCLIP+/WeCLIP_Plus/segformer_head.py``); WeCLIP+ uses it with
    one input for CLIP and one for DINO (``index=1``).

    Args:
        in_dim (int): token width of the inputs.
        num_inputs (int): k, the number of token maps fused.
        embed_dim (int): output width (256).
        dropout (float): Dropout2d probability after the fuse conv (0.1).
    """

    def __init__(
        self, in_dim: int, num_inputs: int = 1, embed_dim: int = 256, dropout: float = 0.1
    ):
        super().__init__()
        if num_inputs < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.num_inputs = num_inputs
        self.embed_dim = embed_dim
        self.fusion_mlps = nn.ModuleList(TokenMLP(in_dim, embed_dim) for _ in range(num_inputs))
        self.fuse = nn.Conv2d(num_inputs * embed_dim, embed_dim, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, tokens: Sequence[torch.Tensor], grid: Tuple[int, int]) -> torch.Tensor:
        """Fuse k token maps.

        Args:
            tokens (Sequence[torch.Tensor]): k tensors (B, h·w, in_dim), row-major, no CLS.
            grid (Tuple[int, int]): (h, w).

        Returns:
            torch.Tensor: (B, embed_dim, h, w), after Dropout2d (active in training mode only).
        """
        h, w = int(grid[0]), int(grid[1])
        if len(tokens) != self.num_inputs:
            raise ValueError(f"FusionHead expects {self.num_inputs} inputs, got {len(tokens)}")
        dtype = self.fuse.weight.dtype
        maps: List[torch.Tensor] = []
        for index, (tok, mlp) in enumerate(zip(tokens, self.fusion_mlps)):
            if tok.dim() != 3 or tok.shape[1] != h * w or tok.shape[2] != self.in_dim:
                raise ValueError(
                    f"fusion input {index} has shape {tuple(tok.shape)}; expected "
                    f"(B, {h * w}, {self.in_dim}) for grid {h}x{w}"
                )
            out = mlp(tok.to(dtype))  # (B, n, E)
            maps.append(out.transpose(1, 2).reshape(out.shape[0], self.embed_dim, h, w))
        return self.dropout(self.fuse(torch.cat(maps, dim=1)))


class PlusDecoderOutput(NamedTuple):
    """What :class:`WeCLIPPlusDecoder` returns (all at the CLIP grid (h, w)).

    Attributes:
        seg (torch.Tensor): (B, C, h, w), 0.5·seg_clip + 0.5·seg_dino: the prediction.
        seg_clip (torch.Tensor): (B, C, h, w), the shared decoder on F_clip.
        seg_dino (torch.Tensor): (B, C, h, w), the shared decoder on F_dino.
        clip_fused (torch.Tensor): (B, E, h, w), F_clip (after Dropout2d).
        dino_fused (torch.Tensor): (B, E, h, w), F_dino (after Dropout2d, resized to the CLIP grid).
        fused (torch.Tensor): (B, 2E, h, w), concat(F_clip, F_dino): the input of ``affinity``.
    """

    seg: torch.Tensor
    seg_clip: torch.Tensor
    seg_dino: torch.Tensor
    clip_fused: torch.Tensor
    dino_fused: torch.Tensor
    fused: torch.Tensor


class WeCLIPPlusDecoder(nn.Module):
    """WeCLIP+'s trainable part: CLIP and DINO fusion heads and one shared transformer decoder.

    The authors' parameter names are mapped by :mod:`weclip.models.plus.official_names`.

    Args:
        clip_dim (int): CLIP width Dc (768 for ViT-B/16, 1024 for ViT-L/14).
        dino_dim (int): DINOv2 width Dd (384 / 768 / 1024 for S / B / L; their
            ``dino_fts_fuse_dim``).
        clip_num_inputs (int): how many CLIP block outputs the CLIP head fuses, counted back from
            block N-2 (1: only block N-2, the authors' ``index=1``).
        embed_dim (int): fusion and transformer width (256).
        num_heads (int): attention heads of the transformer (8).
        num_layers (int): transformer layers (3 with DINOv2 S/B, 5 with L: their ``decoder_layer``).
        mlp_ratio (int): transformer MLP hidden width / embed_dim (4).
        num_classes (int): C including background.
        dropout (float): Dropout2d probability in both heads (0.1).
    """

    def __init__(
        self,
        *,
        clip_dim: int = 768,
        dino_dim: int = 384,
        clip_num_inputs: int = 1,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_layers: int = 3,
        mlp_ratio: int = 4,
        num_classes: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_layers < 0:
            raise ValueError(
                f"need num_classes >= 1, num_layers >= 0; got {num_classes}, {num_layers}"
            )
        self.clip_dim = clip_dim
        self.dino_dim = dino_dim
        self.clip_num_inputs = clip_num_inputs
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.clip_fusion = FusionHead(clip_dim, clip_num_inputs, embed_dim, dropout)
        self.dino_fusion = FusionHead(dino_dim, 1, embed_dim, dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(embed_dim, num_heads, mlp_ratio) for _ in range(num_layers)
        )
        self.classifier = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    @property
    def device(self) -> torch.device:
        return self.classifier.weight.device

    def decode(self, fused: torch.Tensor) -> torch.Tensor:
        """The shared transformer decoder + classifier (spec §6.2) on one branch's feature.

        Args:
            fused (torch.Tensor): (B, E, h, w).

        Returns:
            torch.Tensor: (B, C, h, w) logits (no upsampling).
        """
        b, e, h, w = fused.shape
        x = fused.flatten(2).transpose(1, 2)  # (B, n, E), row-major
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.transpose(1, 2).reshape(b, e, h, w))

    def forward(
        self,
        clip_feats: Sequence[torch.Tensor],
        dino_map: torch.Tensor,
        grid: Tuple[int, int],
    ) -> PlusDecoderOutput:
        """Both branches through the shared decoder (doc §3).

        The order of operations is the authors' (it fixes the order of the two dropout draws): CLIP
        head, DINO head, DINO resize, decoder on F_clip, decoder on F_dino.

        Args:
            clip_feats (Sequence[torch.Tensor]): the last ``clip_num_inputs`` CLIP block outputs up
                to block N-2, each (B, 1 + h·w, Dc), CLS first (dropped here).
            dino_map (torch.Tensor): (B, Dd, hd, wd), ``FrozenDINOv2`` output.
            grid (Tuple[int, int]): (h, w), the CLIP patch grid.

        Returns:
            PlusDecoderOutput
        """
        h, w = int(grid[0]), int(grid[1])
        if len(clip_feats) != self.clip_num_inputs:
            raise ValueError(
                f"WeCLIPPlusDecoder expects {self.clip_num_inputs} CLIP block output(s), got "
                f"{len(clip_feats)}"
            )
        for index, feat in enumerate(clip_feats):
            if feat.dim() != 3 or feat.shape[1] != h * w + 1:
                raise ValueError(
                    f"CLIP block output {index} has shape {tuple(feat.shape)}; expected "
                    f"(B, {h * w + 1}, {self.clip_dim}) for grid {h}x{w} (CLS first)"
                )
        if dino_map.dim() != 4 or dino_map.shape[1] != self.dino_dim:
            raise ValueError(
                f"dino_map has shape {tuple(dino_map.shape)}; expected (B, {self.dino_dim}, hd, wd)"
            )
        clip_fused = self.clip_fusion([f[:, 1:, :] for f in clip_feats], (h, w))
        hd, wd = dino_map.shape[-2:]
        dino_tokens = dino_map.flatten(2).transpose(1, 2)  # (B, hd·wd, Dd)
        dino_fused = resize_to_grid(self.dino_fusion([dino_tokens], (hd, wd)), (h, w))
        seg_clip = self.decode(clip_fused)
        seg_dino = self.decode(dino_fused)
        return PlusDecoderOutput(
            seg=0.5 * seg_clip + 0.5 * seg_dino,
            seg_clip=seg_clip,
            seg_dino=seg_dino,
            clip_fused=clip_fused,
            dino_fused=dino_fused,
            fused=torch.cat([clip_fused, dino_fused], dim=1),
        )

    @staticmethod
    def affinity(fused: torch.Tensor) -> torch.Tensor:
        """A = sigmoid(Fᵀ F) of the concatenated features (doc §4.2), raw dot products.

        Args:
            fused (torch.Tensor): (B, 2E, h, w), ``PlusDecoderOutput.fused``.

        Returns:
            torch.Tensor: (B, h·w, h·w) in (0, 1), symmetric. Equal to
            sigmoid(F_clipᵀF_clip + F_dinoᵀF_dino).
        """
        flat = fused.flatten(2)  # (B, 2E, n)
        return torch.sigmoid(flat.transpose(1, 2) @ flat)
