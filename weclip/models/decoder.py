"""The WeCLIP decoder: multi-layer feature fusion + a small transformer decoder (spec §6).

References:
    - WeCLIP (CVPR 2024), the authors' ``SegFormerHead`` (``index=11``) and ``DecoderTransformer``,
      described in docs/official_code.md §6 (this file is written from that description).
    - SegFormer's all-MLP fusion head (Xie et al., NeurIPS 2021), https://arxiv.org/abs/2105.15203.

Layout (spec §6, App. B for a 320x320 crop):
    N-1 CLIP block outputs (B, L, D), CLS dropped -> one token-wise MLP each -> (B, 256, h, w) each
    concat in block order                         -> (B, (N-1)*256, h, w)
    1x1 conv -> Dropout2d(0.1)                    -> F (B, 256, h, w)  (also A_f = σ(FᵀF), §4.1)
    3 pre-LN transformer layers on n = h*w tokens -> (B, 256, h, w)
    1x1 conv                                      -> seg logits (B, C, h, w), 1/16 of the input size
"""

import logging
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WeCLIPDecoder"]

logger = logging.getLogger("weclip")


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)`` (spec §1.1; the decoder MLP, §6.2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class TokenMLP(nn.Module):
    """Token-wise ``Linear -> ReLU -> Linear`` on the patch tokens of one CLIP block (spec §6.1).

    Args:
        in_dim (int): token width of the CLIP block output (768 for ViT-B/16).
        out_dim (int): output width (256).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, in_dim) -> (B, n, out_dim)."""
        return self.fc2(F.relu(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed q/k/v in-projection (spec §6.2).

    Parameter layout and initialisation are those of ``torch.nn.MultiheadAttention``, which the
    authors' attention module mirrors: ``in_proj_weight`` (3D, D) xavier-uniform, ``in_proj_bias``
    zeros, ``out_proj`` a default ``nn.Linear`` whose bias is then zeroed. No mask, no dropout.

    Args:
        dim (int): token width D.
        num_heads (int): number of heads; D must be divisible by it.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, D) -> (B, n, D)."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, n, 3D), rows q | k | v
        qkv = qkv.view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, n, D/heads) each
        # softmax((q / sqrt(head_dim)) k^T) v, over all n keys
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, d)
        # The authors ran this projection in fp16 (spec §1.1); fp32 here is the reference.
        return self.out_proj(out)


class DecoderBlock(nn.Module):
    """Pre-LN transformer layer: ``x + Attn(LN1(x))``, then ``x + MLP(LN2(x))`` (spec §6.2).

    Args:
        dim (int): token width (256).
        num_heads (int): attention heads (8).
        mlp_ratio (int): hidden width of the MLP as a multiple of ``dim`` (4 -> 1024).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, dim * mlp_ratio))
        self.mlp.add_module("act", QuickGELU())
        self.mlp.add_module("fc2", nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, D) -> (B, n, D)."""
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class WeCLIPDecoder(nn.Module):
    """WeCLIP's trainable decoder: multi-layer fusion + transformer decoder (spec §6).

    No positional encoding, no attention mask, no dropout inside the transformer, no class queries
    (spec §6.2). Initialisation is PyTorch's default for Linear/Conv2d/LayerNorm plus the
    MultiheadAttention rules, as in the authors' code (spec §6.2); their exact initial weights can
    be loaded with ``weclip.models.official_names.load_official_decoder_state``.

    Args:
        in_dim (int): width D of the CLIP block outputs (768 for ViT-B/16).
        num_inputs (int): number of CLIP block outputs fed to the decoder, N-1 (11: blocks 0..10).
        embed_dim (int): fusion and transformer width (256).
        num_heads (int): attention heads of the transformer layers (8).
        num_layers (int): transformer layers (3).
        mlp_ratio (int): transformer MLP hidden width / embed_dim (4).
        num_classes (int): C, classes including background (21 VOC, 81 COCO).
        dropout (float): Dropout2d probability after the fuse conv (0.1, spec §6.1).
    """

    def __init__(
        self,
        *,
        in_dim: int = 768,
        num_inputs: int = 11,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_layers: int = 3,
        mlp_ratio: int = 4,
        num_classes: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_inputs < 1 or num_classes < 1 or num_layers < 0:
            raise ValueError(
                f"need num_inputs >= 1, num_classes >= 1, num_layers >= 0; got {num_inputs}, "
                f"{num_classes}, {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.num_inputs = num_inputs
        self.embed_dim = embed_dim
        self.num_classes = num_classes

        # Multi-layer fusion (spec §6.1): one MLP per CLIP block, concat, 1x1 conv, Dropout2d.
        self.fusion_mlps = nn.ModuleList(TokenMLP(in_dim, embed_dim) for _ in range(num_inputs))
        self.fuse = nn.Conv2d(num_inputs * embed_dim, embed_dim, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)
        # Transformer decoder (spec §6.2).
        self.blocks = nn.ModuleList(
            DecoderBlock(embed_dim, num_heads, mlp_ratio) for _ in range(num_layers)
        )
        self.classifier = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    @property
    def device(self) -> torch.device:
        return self.classifier.weight.device

    def fuse_features(self, feats: Sequence[torch.Tensor], grid: Tuple[int, int]) -> torch.Tensor:
        """Fusion MLPs + 1x1 fuse conv, *before* the dropout (spec §6.1).

        Args:
            feats (Sequence[torch.Tensor]): ``num_inputs`` tensors Bx(1+h*w)xD, the CLIP block
                outputs in block order, CLS token first (dropped here). Any float dtype; cast to the
                decoder's dtype.
            grid (Tuple[int, int]): (h, w), the patch grid; tokens are row-major.

        Returns:
            torch.Tensor: Bx(embed_dim)xhxw, the fused feature before Dropout2d (a view of
            token-major memory: channels innermost).
        """
        h, w = int(grid[0]), int(grid[1])
        if len(feats) != self.num_inputs:
            raise ValueError(
                f"WeCLIPDecoder expects {self.num_inputs} CLIP block outputs, got {len(feats)}"
            )
        dtype = self.fuse.weight.dtype
        tokens: List[torch.Tensor] = []
        for index, (feat, mlp) in enumerate(zip(feats, self.fusion_mlps)):
            if feat.dim() != 3 or feat.shape[1] != h * w + 1 or feat.shape[2] != self.in_dim:
                raise ValueError(
                    f"CLIP block output {index} has shape {tuple(feat.shape)}; expected "
                    f"(B, {h * w + 1}, {self.in_dim}) for grid {h}x{w} (CLS first)"
                )
            tokens.append(mlp(feat[:, 1:, :].to(dtype)))  # (B, n, E), CLS dropped
        # The 1x1 fuse conv over the block-ordered concatenation is a linear map of each token's
        # (N-1)*E channels: computed on the tokens, without channel-first copies.
        fused = F.linear(torch.cat(tokens, dim=-1), self.fuse.weight.flatten(1), self.fuse.bias)
        return fused.transpose(1, 2).unflatten(2, (h, w))  # (B, E, h, w)

    def decode(self, fused: torch.Tensor) -> torch.Tensor:
        """Transformer decoder + classifier on the (dropped-out) fused feature F (spec §6.2).

        Args:
            fused (torch.Tensor): Bx(embed_dim)xhxw, F.

        Returns:
            torch.Tensor: BxCxhxw segmentation logits (no upsampling).
        """
        b, e, h, w = fused.shape
        x = fused.flatten(2).transpose(1, 2)  # (B, n, E), tokens row-major
        for block in self.blocks:
            x = block(x)
        # the 1x1 classifier conv as a linear map of each token
        logits = F.linear(x, self.classifier.weight.flatten(1), self.classifier.bias)  # (B, n, C)
        return logits.transpose(1, 2).reshape(b, self.num_classes, h, w)

    def forward(
        self, feats: Sequence[torch.Tensor], grid: Tuple[int, int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits and the fused feature F.

        Args:
            feats (Sequence[torch.Tensor]): ``num_inputs`` tensors Bx(1+h*w)xD, CLIP blocks
                0..N-2, CLS first.
            grid (Tuple[int, int]): (h, w).

        Returns:
            seg_logits (torch.Tensor): BxCxhxw.
            fused (torch.Tensor): Bx(embed_dim)xhxw, F after Dropout2d (the input of
                :meth:`affinity`, spec §4.1). Dropout is active in training mode only.
        """
        fused = self.dropout(self.fuse_features(feats, grid))
        return self.decode(fused), fused

    @staticmethod
    def affinity(fused: torch.Tensor) -> torch.Tensor:
        """A_f = sigmoid(F^T F), raw dot products, no normalisation or temperature (spec §4.1).

        Args:
            fused (torch.Tensor): BxExhxw, F.

        Returns:
            torch.Tensor: Bxnxn with n = h*w, entries in (0, 1), symmetric.
        """
        flat = fused.flatten(2)  # (B, E, n)
        return torch.sigmoid(flat.transpose(1, 2) @ flat)
