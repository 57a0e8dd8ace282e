"""The frozen DINOv2 backbone of WeCLIP+, built on timm.

WeCLIP+ (Zhang et al., "Frozen CLIP-DINO: A Strong Backbone for Weakly Supervised Semantic
Segmentation", TPAMI 2025, https://ieeexplore.ieee.org/document/10891864) puts a frozen DINOv2 beside
the frozen CLIP. The authors load it with ``torch.hub.load('facebookresearch/dinov2', name)``; this
module builds the same network from timm's ``vit_*_patch14(_reg4)_dinov2`` models and computes what
their DINO branch computes (``docs/official_code_plus.md`` §2):

1. the (already normalised) image is resized to the largest multiple of 14 below its size, bilinear,
   align_corners=False, no antialias (320x320 -> 308x308);
2. the positional table (stored for a 37x37 grid) is resized to the patch grid the way the official
   hub code does it (``interpolate_pos_encoding``): bicubic, with a +0.1 offset in the scale factor
   and no antialias for the plain models, and with antialias and no offset for the ``_reg`` models.
   timm's own dynamic-size resampling (bicubic, antialias, exact size) equals the official one for
   the ``_reg`` models only; ``pos_interp="timm"`` selects it for all (see :func:`resize_pos_embed`);
3. the transformer runs and the final LayerNorm output of the patch tokens is returned (the official
   ``x_norm_patchtokens``; CLS and register tokens dropped), as a (B, D, h, w) map.

The authors then run their DINO fusion head on that map and only afterwards resize the fused
features to the CLIP grid (bilinear, align_corners=False); :func:`resize_to_grid` is that resize.

Weights: the official ``dinov2_vit*14*_pretrain.pth`` files (converted with timm's own checkpoint
filter), timm-layout ``.safetensors`` / ``.pth`` files (e.g. timm's files on the Hugging Face hub),
``"hub:lvd142m"`` (a file already in the local torch-hub or Hugging Face cache; downloads only with
``allow_download``), or ``"random"`` (tests). Nothing is downloaded unless ``allow_download`` is set.

Shapes for a 320x320 crop and DINOv2 ViT-S/14 (D = 384):
    images (B, 3, 320, 320) -> resized (B, 3, 308, 308) -> 1 + 22·22 tokens (+4 registers for _reg)
    -> patch tokens (B, 384, 22, 22) -> [fusion head, 256 channels] -> resize_to_grid -> (B, 256, 20, 20)

References:
    https://github.com/zbf1991/WeCLIP (folder ``WeCLIP+/``, the authors' code)
    https://github.com/facebookresearch/dinov2 (``dinov2/models/vision_transformer.py``, ``hub/``)
    https://github.com/huggingface/pytorch-image-models (``timm/models/vision_transformer.py``)
"""

import logging
import os
from typing import Any, Dict, Mapping, Tuple, Union

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from weclip.config import to_plain

logger = logging.getLogger("weclip")

__all__ = [
    "DINOV2_VARIANTS",
    "POS_INTERP_MODES",
    "FrozenDINOv2",
    "build_dino_backbone",
    "build_dinov2_model",
    "describe_dinov2_state",
    "dinov2_pos_interp",
    "load_dinov2_state_dict",
    "resize_pos_embed",
    "resize_to_grid",
    "resize_to_patch_multiple",
]

#: The authors' hub names (``dino_init.dino_model`` in their configs) -> timm model names.
DINOV2_VARIANTS: Dict[str, str] = {
    "dinov2_vits14": "vit_small_patch14_dinov2",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2",
    "dinov2_vitb14": "vit_base_patch14_dinov2",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2",
    "dinov2_vitl14": "vit_large_patch14_dinov2",
    "dinov2_vitl14_reg": "vit_large_patch14_reg4_dinov2",
}
_TIMM_TO_OFFICIAL = {v: k for k, v in DINOV2_VARIANTS.items()}
# token width -> size letter of the official names (for naming what a weights file looks like)
_WIDTH_TO_SIZE = {384: "s", 768: "b", 1024: "l", 1536: "g"}

#: "official": the hub code's per-variant setting (see :func:`dinov2_pos_interp`);
#: "timm": timm's dynamic-size resampling (bicubic, antialias, exact output size) for every variant.
POS_INTERP_MODES = ("official", "timm")

ArchSpec = Union[str, Mapping[str, Any]]


# ----------------------------------------------------------------------------- geometry helpers
def resize_to_patch_multiple(images: torch.Tensor, patch_size: int = 14) -> torch.Tensor:
    """Resize to (H//p·p, W//p·p), bilinear, align_corners=False, no antialias (doc §2.2).

    The identity when H and W are already multiples of ``patch_size``.

    Args:
        images (torch.Tensor): (B, 3, H, W) normalised images.
        patch_size (int): DINOv2's patch size (14).

    Returns:
        torch.Tensor: (B, 3, H', W') with H' = (H // p)·p, W' = (W // p)·p.
    """
    h, w = images.shape[-2:]
    size = ((h // patch_size) * patch_size, (w // patch_size) * patch_size)
    if size[0] == 0 or size[1] == 0:
        raise ValueError(f"image size {h}x{w} is smaller than the DINO patch size {patch_size}")
    if size == (h, w):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def resize_to_grid(features: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Resize DINO-grid features to the CLIP grid: bilinear, align_corners=False (doc §3.2).

    Args:
        features (torch.Tensor): (B, C, h_dino, w_dino).
        grid (Tuple[int, int]): (h, w) of the CLIP patch grid.

    Returns:
        torch.Tensor: (B, C, h, w); the input itself when the grids already agree.
    """
    if tuple(features.shape[-2:]) == tuple(grid):
        return features
    return F.interpolate(features, size=tuple(grid), mode="bilinear", align_corners=False)


def dinov2_pos_interp(num_register_tokens: int, mode: str = "official") -> Tuple[float, bool]:
    """(offset, antialias) of the positional-table resize of a DINOv2 variant (doc §2.3).

    The official hub builders (``dinov2/hub/backbones.py``) give the plain models offset 0.1 and no
    antialias, and the ``_reg`` models offset 0 and antialias; every version of the hub code since
    its first release agrees on this for the variants WeCLIP+ uses. timm resamples with antialias and
    an exact output size (offset 0) for all of them.

    Args:
        num_register_tokens (int): 0 for the plain models, 4 for ``_reg``.
        mode (str): "official" | "timm".

    Returns:
        Tuple[float, bool]: (offset, antialias) for :func:`resize_pos_embed`.
    """
    if mode not in POS_INTERP_MODES:
        raise ValueError(f"pos_interp must be one of {POS_INTERP_MODES}, got {mode!r}")
    if mode == "timm" or num_register_tokens > 0:
        return 0.0, True
    return 0.1, False


def resize_pos_embed(
    table: torch.Tensor, grid: Tuple[int, int], offset: float, antialias: bool
) -> torch.Tensor:
    """Resize a square positional table of patch rows to ``grid`` as DINOv2's hub code does.

    With ``offset > 0`` the resize is specified by scale factors ((h + offset)/M, (w + offset)/M)
    (output size floor(M·s) = (h, w), but the sampling positions follow the slightly larger scale,
    the historical work-around of facebookresearch/dino#8); with ``offset == 0`` by the output size.
    Bicubic (a = -0.75), align_corners=False, computed in float32. A table whose grid already equals
    ``grid`` is returned unchanged (the official code skips the resize then, offset or not).

    Args:
        table (torch.Tensor): (M·M, D) patch rows only (no CLS row), row-major.
        grid (Tuple[int, int]): target (h, w).
        offset (float): 0.1 (plain official models) or 0.
        antialias (bool): antialiased bicubic (the ``_reg`` models, and timm).

    Returns:
        torch.Tensor: (h·w, D), row-major, in the dtype of ``table``.
    """
    m = int(round(table.shape[0] ** 0.5))
    if m * m != table.shape[0]:
        raise ValueError(f"positional table of {table.shape[0]} patch rows is not a square grid")
    h, w = int(grid[0]), int(grid[1])
    if (h, w) == (m, m):
        return table
    x = table.float().reshape(1, m, m, -1).permute(0, 3, 1, 2)  # (1, D, M, M)
    if offset:
        x = F.interpolate(
            x,
            scale_factor=((h + offset) / m, (w + offset) / m),
            mode="bicubic",
            antialias=antialias,
        )
    else:
        x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=antialias)
    if tuple(x.shape[-2:]) != (h, w):  # cannot happen for offsets in [0, 1); guards other values
        raise ValueError(f"positional table resize gave {tuple(x.shape[-2:])}, expected {(h, w)}")
    return x.permute(0, 2, 3, 1).reshape(h * w, -1).to(table.dtype)


# ----------------------------------------------------------------------------- building / loading
def _timm_name(arch: str) -> str:
    if arch in DINOV2_VARIANTS:
        return DINOV2_VARIANTS[arch]
    if arch in _TIMM_TO_OFFICIAL:
        return arch
    raise ValueError(
        f"Unknown DINOv2 variant '{arch}'. Use one of the authors' names {sorted(DINOV2_VARIANTS)} "
        f"(or timm's {sorted(_TIMM_TO_OFFICIAL)}), or a dict of timm VisionTransformer kwargs."
    )


def _describe_arch(arch: ArchSpec) -> str:
    if isinstance(arch, str):
        name = _timm_name(arch)
        return f"{_TIMM_TO_OFFICIAL[name]} (timm {name})"
    return "custom DINOv2 " + str(dict(arch))


def _create_architecture(arch: ArchSpec) -> VisionTransformer:
    """A randomly initialised timm DINOv2 ViT (no download); its table is stored for a 37x37 grid."""
    if isinstance(arch, str):
        model = timm.create_model(_timm_name(arch), pretrained=False, num_classes=0)
    else:
        kwargs = dict(arch)
        kwargs.setdefault("patch_size", 14)
        kwargs.setdefault("init_values", 1e-5)  # DINOv2 blocks have LayerScale
        kwargs.setdefault("no_embed_class", int(kwargs.get("reg_tokens", 0)) > 0)
        model = VisionTransformer(num_classes=0, **kwargs)
    if not isinstance(model, VisionTransformer) or model.cls_token is None:
        raise ValueError(
            f"{_describe_arch(arch)}: a timm VisionTransformer with a CLS token is needed"
        )
    if bool(model.no_embed_class) != (model.num_reg_tokens > 0):
        raise ValueError(
            f"{_describe_arch(arch)}: DINOv2 layouts have register tokens exactly when the CLS token "
            "carries its own position (no_embed_class); got "
            f"reg_tokens={model.num_reg_tokens}, no_embed_class={model.no_embed_class}"
        )
    return model


def _read_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a torch checkpoint (.pth/.pt/.bin) or a .safetensors file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"DINOv2 weights file not found: {path}. Expected an official dinov2_vit*14*_pretrain.pth "
            "file (https://github.com/facebookresearch/dinov2#pretrained-models), a timm-layout "
            ".safetensors/.pth file, 'hub:lvd142m' or 'random'."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as e:  # safetensors raises several error types for damaged files
            raise ValueError(
                f"Could not read DINOv2 weights from {path} (truncated or corrupt safetensors "
                f"file?): {e}"
            ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"Could not read DINOv2 weights from {path} (truncated or corrupt file?): "
            f"{e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        ) from e
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a DINOv2 state dict (found {type(obj).__name__})")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def describe_dinov2_state(state: Mapping[str, torch.Tensor]) -> str:
    """Name the DINOv2 variant a state dict (official or timm layout) looks like.

    Returns e.g. ``"dinov2_vitb14_reg (width 768, 12 blocks, 4 register tokens)"``, or a shape
    summary when the layout is not a DINOv2 ViT.
    """
    cls = state.get("cls_token")
    if cls is None or cls.dim() != 3:
        return "not a DINOv2 ViT state dict (no cls_token of shape (1, 1, D))"
    width = int(cls.shape[-1])
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.") and k.count(".") >= 2}
    depth = len(blocks)
    regs = state.get("register_tokens", state.get("reg_token"))
    num_regs = int(regs.shape[1]) if regs is not None else 0
    size = _WIDTH_TO_SIZE.get(width)
    name = f"dinov2_vit{size}14{'_reg' if num_regs else ''}" if size else "an unknown DINOv2 size"
    regs_text = f"{num_regs} register tokens" if num_regs else "no registers"
    return f"{name} (width {width}, {depth} blocks, {regs_text})"


def _to_timm_layout(
    state: Dict[str, torch.Tensor], model: VisionTransformer, path: str
) -> Dict[str, torch.Tensor]:
    """Official or timm layout -> timm keys, through timm's own checkpoint filter."""
    if "embeddings.patch_embeddings.projection.weight" in state:
        raise ValueError(
            f"{path} is a Hugging Face transformers Dinov2Model file, which is not supported; use "
            "the official dinov2_vit*14*_pretrain.pth file or timm's model.safetensors "
            "(hf hub timm/vit_*_patch14*_dinov2.lvd142m)."
        )
    if "pos_embed" not in state or "cls_token" not in state:
        raise ValueError(
            f"DINOv2 weights in {path} have no cls_token / pos_embed: not a DINOv2 ViT state dict "
            f"(keys start with {sorted(state)[:4]})"
        )
    # The table must be stored for the model's grid (37x37); timm's filter would resample it
    # silently, the official loader (strict load_state_dict) would refuse it. Official files always
    # hold a CLS row; timm files only for the plain models.
    has_cls_row = "mask_token" in state or "reg_token" not in state
    file_rows = state["pos_embed"].shape[-2] - int(has_cls_row)
    own_rows = model.pos_embed.shape[1] - (0 if model.no_embed_class else 1)
    if file_rows != own_rows:
        raise ValueError(
            f"DINOv2 weights in {path} store a positional table of {file_rows} patch rows, the model "
            f"{own_rows} ({int(round(own_rows**0.5))}x{int(round(own_rows**0.5))} grid): another "
            "image size than the official 518 px"
        )
    return checkpoint_filter_fn(dict(state), model)


def load_dinov2_state_dict(model: VisionTransformer, path: str, arch: ArchSpec) -> None:
    """Load a DINOv2 weights file into a timm model, with one clear error for each kind of problem.

    Args:
        model (VisionTransformer): from :func:`build_dinov2_model` (random).
        path (str): official ``dinov2_vit*14*_pretrain.pth`` or a timm-layout ``.pth`` /
            ``.safetensors`` file.
        arch (str | Mapping): the architecture the model was built for (named in errors).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable / truncated file, not a DINOv2 state dict, or weights of another
            variant (the message names the variant the file looks like).
    """
    raw = _read_weights_file(path)
    looks_like = describe_dinov2_state(raw)
    expected = model.state_dict()
    wanted = describe_dinov2_state(expected)
    if "cls_token" in raw and looks_like != wanted:  # another size, depth or register count
        raise ValueError(
            f"DINOv2 weights in {path} do not fit {_describe_arch(arch)}: the file looks like "
            f"{looks_like}, the model is {wanted}"
        )
    try:
        state = _to_timm_layout(raw, model, path)
    except ValueError:
        raise  # already names the file and the problem
    except Exception as e:  # timm's filter fails on foreign layouts with various errors
        raise ValueError(
            f"DINOv2 weights in {path} could not be converted to {_describe_arch(arch)}; the file "
            f"looks like {looks_like} ({e.__class__.__name__}: {e})"
        ) from e
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            details.append("shape mismatches: " + "; ".join(mismatched[:3]))
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        raise ValueError(
            f"DINOv2 weights in {path} do not fit {_describe_arch(arch)}: the file looks like "
            f"{looks_like} | {' | '.join(details)}"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def _cached_hub_file(arch: str, tag: str, allow_download: bool) -> str:
    """The official file in torch-hub's cache, or timm's file in the Hugging Face cache."""
    name = _timm_name(arch)
    cfg = timm.models.get_pretrained_cfg(f"{name}.{tag}")
    if cfg is None:
        raise ValueError(f"timm has no pretrained tag '{tag}' for {name} (DINOv2's is 'lvd142m')")
    looked = []
    if cfg.url:  # the file torch.hub.load('facebookresearch/dinov2', ...) downloads and caches
        local = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
        if os.path.isfile(local):
            return local
        looked.append(local)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg.hf_hub_id, fname)
            if isinstance(hit, str):
                return hit
            looked.append(f"hf://{cfg.hf_hub_id}/{fname}")
    if allow_download and cfg.url:
        torch.hub.load_state_dict_from_url(cfg.url, map_location="cpu", progress=True)
        return looked[0]
    raise FileNotFoundError(
        f"DINOv2 weights '{arch}' / '{tag}' are not in the local cache (looked for {looked}). Set "
        "allow_download=True to download the official file, or point the weights to a local file."
    )


def build_dinov2_model(
    arch: ArchSpec, weights: str, allow_download: bool = False
) -> VisionTransformer:
    """Build a timm DINOv2 ViT in fp32 and load its weights.

    Args:
        arch (str | Mapping): the authors' name (``"dinov2_vits14"``, ``"dinov2_vitb14_reg"``, ...),
            a timm name (``"vit_small_patch14_dinov2"``), or timm ``VisionTransformer`` kwargs for a
            custom (e.g. tiny) model (``patch_size`` defaults to 14, ``init_values`` to 1e-5,
            ``no_embed_class`` to ``reg_tokens > 0``).
        weights (str): a file path, ``"hub:<tag>"`` (``"hub:lvd142m"``) or ``"random"``.
        allow_download (bool): let ``hub:`` download the official file when it is not cached.

    Returns:
        VisionTransformer: fp32, on CPU, in eval mode.
    """
    model = _create_architecture(arch)
    if weights == "random":
        logger.info("DINOv2 %s: random initialisation", _describe_arch(arch))
    elif weights.startswith("hub:"):
        if not isinstance(arch, str):
            raise ValueError("hub:<tag> weights need a named DINOv2 variant, not a custom dict")
        path = _cached_hub_file(arch, weights[len("hub:") :], allow_download)
        load_dinov2_state_dict(model, path, arch)
        logger.info("DINOv2 %s: weights from %s", _describe_arch(arch), path)
    else:
        load_dinov2_state_dict(model, weights, arch)
        logger.info("DINOv2 %s: weights from %s", _describe_arch(arch), weights)
    return model.float().eval()


# ----------------------------------------------------------------------------- the module
class FrozenDINOv2(nn.Module):
    """Frozen DINOv2 for WeCLIP+: normalised patch tokens as a map (doc §2).

    The parameters never require grad and the module stays in eval mode (``train()`` is a no-op);
    the forward builds no autograd graph. Inputs are images normalised as configured (the authors
    feed DINOv2 the same ImageNet-normalised tensor as CLIP).

    Args:
        vit (VisionTransformer): a timm DINOv2 ViT (:func:`build_dinov2_model`).
        pos_interp (str): "official" (the hub code's per-variant resize of the positional table,
            the default: doc §2.3) or "timm" (timm's resampling for every variant).

    Attributes:
        patch_size (int): 14.
        width (int): D, token width (384 / 768 / 1024 for S / B / L).
        num_blocks (int): transformer depth.
        num_register_tokens (int): 0 or 4.
        pos_offset (float), pos_antialias (bool): the positional-table resize in use.
    """

    def __init__(self, vit: VisionTransformer, pos_interp: str = "official") -> None:
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise ValueError(f"expected a timm VisionTransformer, got {type(vit).__name__}")
        self.vit = vit.float().eval()
        for p in self.vit.parameters():
            p.requires_grad_(False)
        patch = vit.patch_embed.patch_size
        if patch[0] != patch[1]:
            raise ValueError(f"square patches expected, got {patch}")
        self.patch_size = int(patch[0])
        self.width = int(vit.embed_dim)
        self.num_blocks = len(vit.blocks)
        self.num_register_tokens = int(vit.num_reg_tokens)
        self.pos_interp = pos_interp
        self.pos_offset, self.pos_antialias = dinov2_pos_interp(
            self.num_register_tokens, pos_interp
        )

    def train(self, mode: bool = True) -> "FrozenDINOv2":
        """DINOv2 is frozen: it always stays in eval mode."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.vit.cls_token.device

    def input_size(self, height: int, width: int) -> Tuple[int, int]:
        """Size the image is resized to: the largest multiples of the patch size (320 -> 308)."""
        p = self.patch_size
        return (height // p) * p, (width // p) * p

    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """DINO patch grid of an H×W image (after the resize): (H // 14, W // 14)."""
        return height // self.patch_size, width // self.patch_size

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: (B, 1 + R + h·w, D), order CLS, registers, patches."""
        vit = self.vit
        x = vit.patch_embed.proj(images)  # (B, D, h, w), stride-p conv
        h, w = x.shape[-2:]
        x = vit.patch_embed.norm(x.flatten(2).transpose(1, 2))  # (B, n, D), row-major
        table = vit.pos_embed[0]  # (n_stored [+1 CLS row], D)
        b = x.shape[0]
        if vit.no_embed_class:  # _reg layout: CLS already holds its position, registers have none
            pos = resize_pos_embed(table, (h, w), self.pos_offset, self.pos_antialias)
            x = x + pos.to(x.dtype)
            prefix = [vit.cls_token.expand(b, -1, -1), vit.reg_token.expand(b, -1, -1)]
            x = torch.cat(prefix + [x], dim=1)
        else:
            patch_pos = resize_pos_embed(table[1:], (h, w), self.pos_offset, self.pos_antialias)
            pos = torch.cat([table[:1], patch_pos], dim=0)
            x = torch.cat([vit.cls_token.expand(b, -1, -1), x], dim=1) + pos.to(x.dtype)
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        return vit.norm(x)

    @torch.no_grad()
    def forward_patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised patch tokens of images whose size is a multiple of the patch size.

        Args:
            images (torch.Tensor): (B, 3, H, W), H and W multiples of 14.

        Returns:
            torch.Tensor: (B, n, D) with n = (H/14)·(W/14), row-major: the official
            ``x_norm_patchtokens``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be Bx3xHxW, got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of the DINO patch size {self.patch_size}; "
                "use forward() to resize first"
            )
        prefix = 1 + self.num_register_tokens
        return self._tokens(images.to(self.vit.cls_token.dtype))[:, prefix:]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to a multiple of 14, run DINOv2, return the patch-token map (doc §2.2-2.4).

        Args:
            images (torch.Tensor): (B, 3, H, W) normalised images, any size >= 14.

        Returns:
            torch.Tensor: (B, D, H // 14, W // 14) float32, the final-norm patch tokens
            (``x_norm_patchtokens``) reshaped row-major into the patch grid.
        """
        resized = resize_to_patch_multiple(images, self.patch_size)
        gh, gw = self.grid_size(*resized.shape[-2:])
        tokens = self.forward_patch_tokens(resized)  # (B, gh*gw, D)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.width, gh, gw)


def build_dino_backbone(dino_cfg: Mapping[str, Any]) -> FrozenDINOv2:
    """Build the frozen DINOv2 from a config mapping.

    Keys: ``arch`` (default ``"dinov2_vits14"``, the authors' default), ``weights`` (required),
    ``allow_download`` (False), ``pos_interp`` ("official").
    """
    known = {"arch", "weights", "allow_download", "pos_interp"}
    unknown = sorted(set(dino_cfg) - known)
    if unknown:
        raise KeyError(
            f"Unknown key(s) in the DINO backbone config: {unknown}; known: {sorted(known)}"
        )
    if "weights" not in dino_cfg:
        raise KeyError(
            "the DINO backbone config needs 'weights' (a file, 'hub:lvd142m' or 'random')"
        )
    arch = dino_cfg.get("arch", "dinov2_vits14")
    if not isinstance(arch, str):
        arch = to_plain(arch)
    vit = build_dinov2_model(arch, dino_cfg["weights"], bool(dino_cfg.get("allow_download", False)))
    return FrozenDINOv2(vit, pos_interp=dino_cfg.get("pos_interp", "official"))
