"""The frozen CLIP backbone of WeCLIP, built on open_clip.

What the authors' modified CLIP computes (spec §1) is reproduced by driving open_clip's own modules:
- the positional table is resized for every input size (bilinear, align_corners=False, CLS row kept, §1.3);
- blocks 0..N-2 run without an autograd graph and return their outputs (CLS first) and head-averaged
  attention maps (§1.4, §1.5);
- the last block runs separately with autograd, on the detached output of block N-2, and returns the
  Grad-CAM activation (its LN₁ output), its attention and the image embedding
  proj(mean of ln_post(patch tokens)) — the CLS token is not the image descriptor (§1.6).

Weights: OpenAI's TorchScript archive ``ViT-B-16.pt`` (the authors' file), an open_clip checkpoint or
``.safetensors`` file, an open_clip pretrained tag already in the local cache, or random init (tests).
Nothing is downloaded unless ``allow_download`` is set.

References:
    https://github.com/zbf1991/WeCLIP (the authors' code, described in docs/official_code.md)
    https://github.com/mlfoundations/open_clip
"""

import logging
import os
import warnings
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from weclip.config import to_plain
from weclip.errors import CheckpointError, ConfigError, MissingFileError, UserInputError
from weclip.utils.amp import autocast

logger = logging.getLogger("weclip")

__all__ = [
    "FrozenCLIP",
    "build_clip_model",
    "build_backbone",
    "load_clip_state_dict",
    "resize_pos_embed",
]

# Entries that OpenAI-style archives store besides the parameters (open_clip drops them too); `attn_mask`
# is the text tower's causal mask, which open_clip rebuilds as a non-persistent buffer.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")

ArchSpec = Union[str, Mapping[str, Any]]


def _describe_arch(arch: ArchSpec) -> str:
    return arch if isinstance(arch, str) else "custom CLIP " + str(dict(arch))


def _create_architecture(arch: ArchSpec) -> open_clip.CLIP:
    """Build a randomly initialised open_clip CLIP (no download)."""
    if isinstance(arch, str):
        if arch not in open_clip.list_models():
            raise ConfigError(
                f"Unknown open_clip architecture '{arch}'. Use e.g. 'ViT-B-16-quickgelu' (OpenAI weights need "
                "QuickGELU) or a dict of open_clip.CLIP kwargs."
            )
        open_clip_logger = (
            logging.getLogger()
        )  # open_clip warns on the root logger that no weights were
        level = open_clip_logger.level  # loaded; we load them ourselves right after
        open_clip_logger.setLevel(logging.ERROR)
        try:
            model = open_clip.create_model(arch, pretrained=None, device="cpu")
        finally:
            open_clip_logger.setLevel(level)
    else:
        try:
            model = open_clip.CLIP(**dict(arch))
        except (TypeError, ValueError, KeyError, AssertionError) as err:
            raise ConfigError(
                f"cannot build {_describe_arch(arch)}: {type(err).__name__}: {err} (expected "
                "open_clip.CLIP keyword arguments: embed_dim, vision_cfg, text_cfg, quick_gelu, ...)"
            ) from err
    if not isinstance(model, open_clip.CLIP):
        raise ConfigError(
            f"{_describe_arch(arch)}: only open_clip.CLIP models with a ViT image tower are supported"
        )
    return model


def _is_torchscript(path: str) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder; torch.save files have none."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in name or name.startswith("code/") for name in zf.namelist())
    except zipfile.BadZipFile:
        return False


def _read_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """Read a state dict from an OpenAI TorchScript archive, a torch checkpoint or a safetensors file."""
    if not os.path.isfile(path):
        raise MissingFileError(
            f"CLIP weights file not found: {path}. Expected OpenAI's ViT-B-16.pt archive, an open_clip "
            "checkpoint (.pt/.pth/.bin) or a .safetensors file (see README, 'CLIP weights')."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as e:  # safetensors raises several error types for damaged files
            raise CheckpointError(
                f"Could not read CLIP weights from {path} (corrupt safetensors file?): {e}"
            ) from e

    errors = []
    if _is_torchscript(path):  # OpenAI's archive is TorchScript
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
                return torch.jit.load(path, map_location="cpu").state_dict()
        except Exception as e:
            errors.append(f"as TorchScript: {e.__class__.__name__}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        errors.append(
            f"as a torch checkpoint: {e.__class__.__name__}: {str(e).splitlines()[0][:200]}"
        )
        raise CheckpointError(
            f"Could not read CLIP weights from {path} ({'; '.join(errors)}). The file may be truncated or "
            "corrupt; expected OpenAI's ViT-B-16.pt archive, an open_clip checkpoint or a .safetensors file."
        ) from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # open_clip training checkpoints
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} does not hold a CLIP state dict (found {type(obj).__name__})"
        )
    return dict(obj)


def _normalise_keys(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """OpenAI / open_clip layouts to open_clip.CLIP keys, fp32."""
    out = {}
    for key, value in state.items():
        if key in _OPENAI_EXTRA_KEYS:
            continue
        if key.startswith("module."):  # checkpoints saved from DDP
            key = key[len("module.") :]
        out[key] = value.float() if value.is_floating_point() else value
    return out


def load_clip_state_dict(model: open_clip.CLIP, path: str, arch: ArchSpec) -> None:
    """Load weights from ``path`` into ``model``, with one clear error for every kind of mismatch."""
    state = _normalise_keys(_read_weights_file(path))
    expected = model.state_dict()
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
            details.append("shape mismatches: " + "; ".join(mismatched[:4]))
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        raise CheckpointError(
            f"CLIP weights in {path} do not fit the architecture {_describe_arch(arch)} "
            f"(wrong model file?): {' | '.join(details)}"
        )
    model.load_state_dict(state, strict=True)


def _cached_pretrained_file(arch: str, tag: str, allow_download: bool) -> str:
    """Path of an open_clip pretrained tag's weights file; downloads only when allowed."""
    names = [arch] + ([arch[: -len("-quickgelu")]] if arch.endswith("-quickgelu") else [])
    cfg = next(
        (
            open_clip.get_pretrained_cfg(n, tag)
            for n in names
            if open_clip.get_pretrained_cfg(n, tag)
        ),
        None,
    )
    if not cfg:
        raise ConfigError(f"open_clip has no pretrained tag '{tag}' for {arch}")
    if allow_download:
        return open_clip.download_pretrained(cfg)
    candidates = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(cfg["hf_hub"])
        for fname in ([filename] if filename else []) + [
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
        ]:
            hit = try_to_load_from_cache(repo_id, fname)
            if isinstance(hit, str):
                return hit
            candidates.append(f"hf://{repo_id}/{fname}")
    if cfg.get("url"):
        local = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if os.path.isfile(local):
            return local
        candidates.append(local)
    raise MissingFileError(
        f"open_clip weights '{arch}' / '{tag}' are not in the local cache (looked for {candidates}). Set "
        "model.backbone.allow_download=True to download them, or point model.backbone.weights to a file."
    )


def build_clip_model(arch: ArchSpec, weights: str, allow_download: bool = False) -> open_clip.CLIP:
    """Build an open_clip CLIP in fp32 and load its weights.

    Args:
        arch (str | Mapping): open_clip model name (e.g. ``"ViT-B-16-quickgelu"``) or ``open_clip.CLIP``
            kwargs (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``).
        weights (str): a file path (OpenAI archive, open_clip checkpoint, ``.safetensors``),
            ``"hub:<tag>"`` (an open_clip pretrained tag) or ``"random"``.
        allow_download (bool): let a hub tag download when it is not in the local cache.

    Returns:
        open_clip.CLIP: the model, fp32, on CPU, in eval mode.
    """
    model = _create_architecture(arch)
    if weights == "random":
        logger.info("CLIP %s: random initialisation", _describe_arch(arch))
    elif weights.startswith("hub:"):
        if not isinstance(arch, str):
            raise ConfigError(
                "hub:<tag> weights need an open_clip architecture name, not a custom dict"
            )
        path = _cached_pretrained_file(arch, weights[len("hub:") :], allow_download)
        load_clip_state_dict(model, path, arch)
    else:
        load_clip_state_dict(model, weights, arch)
        logger.info("CLIP %s: weights from %s", _describe_arch(arch), weights)
    return model.float().eval()


def resize_pos_embed(pos_embed: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Resize a ViT positional table to a new patch grid (spec §1.3).

    Args:
        pos_embed (torch.Tensor): (1 + g·g, D), CLS row first, square g×g patch table.
        grid (tuple): target (h, w).

    Returns:
        torch.Tensor: (1 + h·w, D); bilinear, align_corners=False, row-major, CLS row kept. The identity
        when (h, w) = (g, g).
    """
    cls_row, table = pos_embed[:1], pos_embed[1:]
    g = int(round(table.shape[0] ** 0.5))
    if g * g != table.shape[0]:
        raise ValueError(f"positional table of {table.shape[0]} patch rows is not a square grid")
    if (g, g) == tuple(grid):
        return pos_embed
    table = table.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
    table = F.interpolate(table, size=tuple(grid), mode="bilinear", align_corners=False)
    return torch.cat([cls_row, table.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)], dim=0)


class FrozenCLIP(nn.Module):
    """Frozen CLIP ViT for WeCLIP: per-block features and attention maps, and the Grad-CAM head.

    The CLIP parameters never require grad, are never in an optimizer and stay in eval mode
    (``train()`` is a no-op). Inputs are images already normalised (the model's ``preprocess``).

    Arguments:
        clip_model (open_clip.CLIP): a CLIP with a ViT image tower of standard residual blocks.
        tokenizer (callable): texts -> (N, context_length) token ids.
        precision (str): "fp32", or "bf16" to autocast CLIP on CUDA (ignored on CPU).
    """

    def __init__(self, clip_model: open_clip.CLIP, tokenizer: Any, precision: str = "fp32") -> None:
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', is {precision!r}")
        visual = clip_model.visual
        for attr in (
            "conv1",
            "class_embedding",
            "positional_embedding",
            "ln_pre",
            "ln_post",
            "proj",
        ):
            if getattr(visual, attr, None) is None:
                raise ConfigError(
                    f"unsupported CLIP image tower: it has no '{attr}' (a ViT with a projection is required)"
                )
        blocks = visual.transformer.resblocks
        if not all(isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in blocks):
            raise ConfigError("unsupported CLIP image tower: blocks must use nn.MultiheadAttention")
        self.clip = clip_model.float().eval()
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.precision = precision
        self.patch_size = int(visual.conv1.kernel_size[0])
        self.width = int(visual.conv1.out_channels)
        self.num_blocks = len(blocks)
        self.embed_dim = int(visual.proj.shape[1])
        self.logit_scale = float(
            clip_model.logit_scale.exp()
        )  # 100 for OpenAI's weights (spec §1.6)
        self.context_length = int(clip_model.context_length)
        self._batch_first = bool(getattr(visual.transformer, "batch_first", True))

    # ------------------------------------------------------------------ helpers
    def train(self, mode: bool = True) -> "FrozenCLIP":
        """CLIP is frozen: it always stays in eval mode."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.clip.visual.conv1.weight.device

    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """Patch grid of an H×W input; remainder pixels are dropped by the stride-p conv (spec §1.3)."""
        return height // self.patch_size, width // self.patch_size

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.clip.visual
        x = visual.conv1(images)  # (B, D, h, w)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # (B, n, D), row-major patches
        cls_tok = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls_tok, x], dim=1)  # (B, L, D)
        x = x + resize_pos_embed(visual.positional_embedding, grid).to(x.dtype)
        return visual.ln_pre(x)

    def _block(self, block: nn.Module, x: torch.Tensor, act: Optional[torch.Tensor] = None):
        """One residual block, batch-first, returning (output, head-averaged attention (B, L, L))."""
        y = block.ln_1(x) if act is None else act
        if not self._batch_first:
            y = y.transpose(0, 1)
        out, attn = block.attn(y, y, y, need_weights=True, average_attn_weights=True)
        if not self._batch_first:
            out = out.transpose(0, 1)
        x = x + block.ls_1(out)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return x, attn

    # ------------------------------------------------------------------ image path
    @torch.no_grad()
    def forward_blocks(self, images: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Run blocks 0..N-2 without an autograd graph (spec §1.4).

        Arguments:
            images (torch.Tensor): Bx3xHxW normalised images; H and W are multiples of the patch size.

        Returns:
            feats (list[torch.Tensor]): N-1 tensors BxLxD, the outputs of blocks 0..N-2, CLS first.
            attns (list[torch.Tensor]): N-1 tensors BxLxL, head-averaged attention (rows: queries).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be Bx3xHxW, got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}"
            )
        feats, attns = [], []
        with autocast(images.device, self.precision == "bf16"):
            x = self._embed(images)
            for block in self.clip.visual.transformer.resblocks[:-1]:
                x, attn = self._block(block, x)
                feats.append(x.float())
                attns.append(attn.float())
        return feats, attns

    def forward_last(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the last block with autograd on the output of block N-2 (spec §1.6, §3).

        Arguments:
            x (torch.Tensor): BxLxD output of block N-2 (detached here).

        Returns:
            act (torch.Tensor): BxLxD LN₁ output of the last block, a leaf that requires grad: the Grad-CAM
                activation. Gradients reach it only through the attention branch (the residual carries x).
            attn (torch.Tensor): BxLxL head-averaged attention of the last block (no grad).
            image_emb (torch.Tensor): BxE L2-normalised proj(mean over patch tokens of ln_post(tokens)).
        """
        block = self.clip.visual.transformer.resblocks[-1]
        with torch.enable_grad(), autocast(x.device, self.precision == "bf16"):
            x = x.detach()
            act = block.ln_1(x).detach().requires_grad_(True)
            out, attn = self._block(block, x, act=act)
            tokens = self.clip.visual.ln_post(out)
            pooled = tokens[:, 1:].mean(dim=1)  # mean of the patch tokens, not CLS (spec §1.6)
            image_emb = F.normalize((pooled @ self.clip.visual.proj).float(), dim=-1)
        return act, attn.detach().float(), image_emb

    # ------------------------------------------------------------------ text path
    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Encode prompts to L2-normalised embeddings, (N, E) (spec §2)."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)


def build_tokenizer(arch: ArchSpec, context_length: int):
    """open_clip's tokenizer for a named architecture, or its BPE tokenizer at ``context_length``."""
    if isinstance(arch, str):
        return open_clip.get_tokenizer(arch)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def build_backbone(backbone_cfg: Mapping[str, Any]) -> FrozenCLIP:
    """Build the frozen backbone from ``cfg.model.backbone`` (keys: arch, weights, allow_download, precision)."""
    arch = backbone_cfg["arch"]
    if not isinstance(arch, str):
        arch = to_plain(arch)
    try:
        model = build_clip_model(
            arch, backbone_cfg["weights"], backbone_cfg.get("allow_download", False)
        )
        return FrozenCLIP(
            model,
            build_tokenizer(arch, model.context_length),
            backbone_cfg.get("precision", "fp32"),
        )
    except UserInputError as err:  # name the config section the user sets
        raise type(err)(f"model.backbone: {err.args[0] if err.args else err}") from err
