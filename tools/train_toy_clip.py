"""Train the tiny open_clip CLIP of the toy world, once, offline (weights committed in weclip/assets/toy_clip).

    OMP_NUM_THREADS=1 nice python tools/train_toy_clip.py --out weclip/assets/toy_clip/toy_clip.safetensors \
        [recipe flags: see weclip/assets/toy_clip/README.md for the exact command of the committed file]

The architecture and the prompts come from ``configs/toy.py`` (``model.backbone.arch``,
``data.prompt_class_names``, ``data.prompt_bg_names``, ``model.text.template``), so the trained model is
exactly the one WeCLIP loads. Training images are drawn on the fly from the toy generator (split "clip",
never the dataset's train/val images), deterministically from ``--seed`` (one thread: no OpenMP races,
and no spin-waiting on a busy machine).

Recipe (own design). Everywhere the image embedding is WeCLIP's, proj(mean over patch tokens of
ln_post(tokens)) (``pool_type="avg"``, spec §1.6), and the loss is a cross-entropy over all K class + M
background prompts against a soft target: the present classes share ``1 - bg_share`` of the mass, the
image's background texture gets ``bg_share`` (background-only images: all of it). This mimics WeCLIP's
softmax over [present fg prompts; background prompts] and keeps it unsaturated, so Grad-CAM gradients stay
informative.

1. Vision warm start (``--warm-steps``): half-size images with one object (or none), embedded as a random
   window of the full positional table (exactly how those pixels sit inside a full image), classified
   against a FIXED orthonormal matrix (one "anchor" row per prompt) at the mild temperature
   ``--warm-scale``. With ``--dense-weight`` > 0 each projected patch token is also classified against the
   anchors with the fraction of each class in the patch as target: patch-level labels of the synthetic
   world, a stand-in for the localisation a real CLIP gets from web-scale pre-training (image-level-only
   training of this tiny ViT was too slow on 2 CPU cores). WeCLIP itself never sees these labels.
2. Text alignment (``--text-steps``): the text tower learns to map each prompt "a clean origami {}." to its
   anchor (only text parameters get gradients).
3. Joint CLIP fine-tuning (``--steps``): full-size images with 1-2 objects, both towers, the real prompt
   embeddings, image-level targets only; the temperature is annealed from ``--warm-scale`` to 100
   (WeCLIP's exp(logit_scale), spec §1.6) over the first half; logit_scale is stored as log(100).
4. Grad-CAM localisation and patch semantics (``--cam-steps``, usually from ``--init`` weights of phases
   1-3): WeCLIP's Grad-CAM (spec §3) is computed with ``create_graph=True`` and trained by double
   backpropagation towards each present object's patches (``gradcam_loss``), next to the image-level loss
   and, with ``--cam-dense-weight``, a patch loss (``dense_loss``): every projected patch token
   proj(ln_post(token)) of the second-to-last block, the deepest block the WeCLIP decoder reads (spec §6),
   is classified against the prompt embeddings with the class fractions of its patch as target. The decoder
   has to name every pixel without image-level labels and cannot do better than its input; a real CLIP's
   deep patch tokens carry the class of what they show, and this term manufactures that property.

Phases 1 and 4 use the synthetic world's masks, for the tiny CLIP only; WeCLIP never sees them.

Progress: tqdm; zero-shot accuracy on single-object images (argmax over the K class prompts), the patch
accuracy of the decoder's deepest input block (``patch_acc``) and a Grad-CAM check at the last block's LN1
output (spec §3) after phases 2-4; final JSON on stdout.
"""

import argparse
import dataclasses
import json
import logging
import math
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from weclip.config import load_config
from weclip.data.toy import TOY_BG_KINDS, ToyWorldConfig, generate_sample, sample_rng
from weclip.utils.io import atomic_path

logger = logging.getLogger("weclip")
LOGIT_SCALE = 100.0  # exp(logit_scale) of OpenAI's CLIP, the temperature WeCLIP uses (spec §1.6)


def to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float normalised on 0-255 RGB (spec §1.2)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def make_batch(
    seed: int, step: int, batch_size: int, world: ToyWorldConfig, bg_only_prob: float
) -> Tuple[np.ndarray, List[List[int]], List[int], np.ndarray]:
    """A deterministic training batch: images, labels, background kinds, masks (masks only for checks)."""
    images, labels, kinds, masks = [], [], [], []
    for i in range(batch_size):
        rng = sample_rng(seed, "clip", step * batch_size + i)
        n = 0 if rng.uniform() < bg_only_prob else None
        s = generate_sample(rng, world, num_objects=n)
        images.append(s.image)
        labels.append(s.labels)
        kinds.append(s.bg_kind)
        masks.append(s.mask)
    return np.stack(images), labels, kinds, np.stack(masks)


def soft_targets(
    labels: List[List[int]], kinds: List[int], num_classes: int, num_bg: int, bg_share: float
):
    """(B, K+M) target distributions: present classes share 1 - bg_share, the background kind bg_share."""
    t = torch.zeros(len(labels), num_classes + num_bg)
    for b, (lab, kind) in enumerate(zip(labels, kinds)):
        if lab:
            t[b, lab] = (1.0 - bg_share) / len(lab)
            t[b, num_classes + kind] = bg_share
        else:
            t[b, num_classes + kind] = 1.0
    return t


def image_embedding(model: open_clip.CLIP, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised proj(mean of ln_post(patch tokens)), (B, E) (spec §1.6; pool_type "avg")."""
    return F.normalize(model.encode_image(images), dim=-1)


def window_tokens(
    model: open_clip.CLIP, images: torch.Tensor, offset: Tuple[int, int]
) -> torch.Tensor:
    """Projected patch tokens proj(ln_post(tokens)) of images placed at ``offset`` in the full grid.

    Used by the warm start on half-size images: an (S/2)x(S/2) image is embedded as the same pixels
    would be as a window of a full SxS image, by adding the matching window of the positional table
    (no interpolation). Their mean, L2-normalised, is WeCLIP's image embedding (spec §1.6).

    Args:
        model (open_clip.CLIP): the CLIP being trained.
        images (torch.Tensor): Bx3xHxW, H and W multiples of the patch size, at most the full size.
        offset (Tuple[int, int]): (row, col) of the window's top-left patch in the full grid.

    Returns:
        torch.Tensor: Bx(h·w)xE projected patch tokens, row-major.
    """
    visual = model.visual
    x = visual.conv1(images)  # (B, D, h, w)
    b, d, h, w = x.shape
    gh, gw = visual.grid_size
    table = visual.positional_embedding[1:].view(gh, gw, d)
    pos = table[offset[0] : offset[0] + h, offset[1] : offset[1] + w].reshape(h * w, d)
    x = x.flatten(2).transpose(1, 2) + pos  # (B, n, D)
    cls_tok = (visual.class_embedding + visual.positional_embedding[0]).expand(b, 1, d)
    x = visual.ln_pre(torch.cat([cls_tok, x], dim=1))
    x = visual.ln_post(visual.transformer(x))
    return x[:, 1:] @ visual.proj


def window_embedding(
    model: open_clip.CLIP, images: torch.Tensor, offset: Tuple[int, int]
) -> torch.Tensor:
    """BxE L2-normalised mean of :func:`window_tokens` (= proj of the mean, proj being linear)."""
    return F.normalize(window_tokens(model, images, offset).mean(1), dim=-1)


def patch_targets(
    masks: np.ndarray, kinds: List[int], num_classes: int, num_bg: int, patch: int
) -> torch.Tensor:
    """(B, n, K+M) per-patch class fractions; background pixels count for the image's background prompt."""
    mk = torch.from_numpy(masks).long()
    frac = F.avg_pool2d(F.one_hot(mk, num_classes + 1).permute(0, 3, 1, 2).float(), patch)
    frac = frac.flatten(2).transpose(1, 2)  # (B, n, 1 + K), row-major patches
    out = torch.zeros(frac.shape[0], frac.shape[1], num_classes + num_bg)
    out[..., :num_classes] = frac[..., 1:]
    out[torch.arange(len(kinds)), :, num_classes + torch.tensor(kinds)] = frac[..., 0]
    return out


def gradcam_check(
    model: open_clip.CLIP,
    images: torch.Tensor,
    labels: List[List[int]],
    masks: np.ndarray,
    text: torch.Tensor,
    num_classes: int,
    patch: int,
) -> Dict[str, float]:
    """Grad-CAM at the last block's LN1 output (spec §3) on a batch; localisation figures.

    For every (image, present class): target = softmax prob of the class among [present fg; all bg prompts];
    cam = ReLU(sum_c mean_xy(dp/dA_c) A_c) over patch tokens, min-max normalised.

    Returns:
        Dict[str, float]: ``argmax_in`` (fraction of CAMs whose peak patch lies in the object),
        ``mass_in`` (mean fraction of CAM mass on the object's patches), ``cam_miou`` (mIoU of
        argmax([0.4 background; upsampled CAMs]) against the masks, a crude proxy before refinement).
    """
    visual = model.visual
    blocks = visual.transformer.resblocks
    text_fg, text_bg = text[:num_classes], text[num_classes:]
    grid = images.shape[-1] // patch
    with torch.no_grad():
        x = visual._embeds(images)
        for blk in blocks[:-1]:
            x = blk(x)
    hits, mass, inter, union = [], [], np.zeros(num_classes + 1), np.zeros(num_classes + 1)
    for b in range(images.shape[0]):
        lab = labels[b]
        if not lab:
            continue
        store: Dict[str, torch.Tensor] = {}
        handle = blocks[-1].ln_1.register_forward_hook(
            lambda m, i, o, store=store: store.__setitem__("act", o)
        )
        with torch.enable_grad():
            z = blocks[-1](x[b : b + 1].detach())
            handle.remove()
            act = store["act"]
            tok = visual.ln_post(z)[:, 1:].mean(1) @ visual.proj
            logits = LOGIT_SCALE * F.normalize(tok, dim=-1) @ torch.cat([text_fg[lab], text_bg]).t()
            prob = logits.softmax(-1)[0]
            cams = []
            for j in range(len(lab)):
                (g,) = torch.autograd.grad(prob[j], act, retain_graph=True)
                a, gg = act[0, 1:], g[0, 1:]  # (n, D) patch tokens
                cam = F.relu(a @ gg.mean(0)).view(grid, grid)
                cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
                cams.append(cam.detach())
        gt = torch.from_numpy(masks[b]).long()
        for j, c in enumerate(lab):
            obj = F.avg_pool2d((gt == c + 1).float()[None, None], patch)[0, 0] > 0.5
            if obj.any():
                hits.append(float(obj.flatten()[cams[j].flatten().argmax()]))
                mass.append(float((cams[j] * obj).sum() / (cams[j].sum() + 1e-7)))
        up = F.interpolate(
            torch.stack(cams)[None], size=gt.shape, mode="bilinear", align_corners=False
        )[0]
        score = torch.cat([torch.full((1,) + tuple(gt.shape), 0.4), up])
        pred = torch.tensor([0] + [c + 1 for c in lab])[score.argmax(0)]
        for c in range(num_classes + 1):
            inter[c] += float(((pred == c) & (gt == c)).sum())
            union[c] += float(((pred == c) | (gt == c)).sum())
    iou = inter[union > 0] / union[union > 0]
    return {
        "argmax_in": float(np.mean(hits)),
        "mass_in": float(np.mean(mass)),
        "cam_miou": float(iou.mean()),
    }


@torch.no_grad()
def zero_shot(
    model: open_clip.CLIP, images: torch.Tensor, labels: List[List[int]], text_fg: torch.Tensor
) -> float:
    """Accuracy of argmax over the K class prompts on single-object images."""
    emb = torch.cat([image_embedding(model, images[i : i + 64]) for i in range(0, len(images), 64)])
    pred = (emb @ text_fg.t()).argmax(-1)
    return float((pred == torch.tensor([lab[0] for lab in labels])).float().mean())


def evaluate(
    model, cfg, world, tokenizer, prompts, mean, std, num_images: int, seed: int
) -> Dict[str, float]:
    """Zero-shot accuracy (single-object val images), and on 1-2 object val images: ``patch_acc`` (argmax
    over the class prompts of the second-to-last block's projected patch tokens, on object patches) and
    the Grad-CAM figures."""
    model.eval()
    k = cfg.data.num_classes - 1
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    single = [
        generate_sample(sample_rng(seed, "val", i), world, num_objects=1) for i in range(num_images)
    ]
    x = to_tensor(np.stack([s.image for s in single]), mean, std)
    out = {"zero_shot_acc": zero_shot(model, x, [s.labels for s in single], text[:k])}
    multi = [
        generate_sample(sample_rng(seed, "test", i), world) for i in range(min(num_images, 64))
    ]
    xm = to_tensor(np.stack([s.image for s in multi]), mean, std)
    masks = np.stack([s.mask for s in multi])
    with torch.no_grad():
        dense = semantic_forward(model, xm, tokenizer(prompts))[2]
    patches = patch_targets(
        masks, [0] * len(multi), k, len(prompts) - k, model.visual.patch_size[0]
    )
    on_object = patches[..., :k].sum(-1) > 0.5
    hit = dense[..., :k].argmax(-1) == patches[..., :k].argmax(-1)
    out["patch_acc"] = float(hit[on_object].float().mean())
    out.update(
        gradcam_check(
            model,
            xm,
            [s.labels for s in multi],
            masks,
            text,
            k,
            model.visual.patch_size[0],
        )
    )
    model.train()
    return out


def save_safetensors(model: open_clip.CLIP, path: str, half: bool) -> None:
    """Write the open_clip state dict atomically (fp16 storage when ``half``; the loader casts to fp32)."""
    from safetensors.torch import save_file

    state = {}
    for key, value in model.state_dict().items():
        if key == "attn_mask":  # a constant buffer rebuilt by open_clip
            continue
        value = value.detach().cpu().contiguous()
        state[key] = value.half() if half and value.is_floating_point() else value
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"format": "pt"})


CAM_SEED_OFFSET = 4321  # phase 4 draws its own images ("clip" split, never the dataset's train/val)


def semantic_forward(
    model: open_clip.CLIP, images: torch.Tensor, tokens: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image logits, the Grad-CAM activation and dense patch-prompt cosines, all in the graph.

    Returns:
        logits (torch.Tensor): (B, K+M) at scale 100, WeCLIP's image embedding (spec §1.6).
        act (torch.Tensor): (B, L, D) LN1 output of the last block, where WeCLIP takes Grad-CAM (spec §3).
        dense (torch.Tensor): (B, n, K+M) cosines between the prompts and proj(ln_post(patch token)) of
            the second-to-last block's output, the deepest block the WeCLIP decoder reads (spec §6).

    The last block uses the explicit attention path (``need_weights=True``): the fused kernel has no
    double backward.
    """
    vis = model.visual
    txt = F.normalize(model.encode_text(tokens), dim=-1)
    x = vis._embeds(images)
    for block in vis.transformer.resblocks[:-1]:
        x = block(x)
    dense = F.normalize(vis.ln_post(x)[:, 1:] @ vis.proj, dim=-1) @ txt.t()
    last = vis.transformer.resblocks[-1]
    act = last.ln_1(x)
    x = x + last.ls_1(last.attn(act, act, act, need_weights=True)[0])
    x = x + last.ls_2(last.mlp(last.ln_2(x)))
    emb = F.normalize(
        vis.ln_post(x)[:, 1:].mean(1) @ vis.proj, dim=-1
    )  # WeCLIP's embedding (spec §1.6)
    return LOGIT_SCALE * emb @ txt.t(), act, dense


def dense_loss(dense: torch.Tensor, patches: torch.Tensor, scale: float) -> torch.Tensor:
    """Soft-target cross-entropy of the patch-prompt cosines (x ``scale``) against ``patches``."""
    return -(patches * (scale * dense).log_softmax(-1)).sum(-1).mean()


def gradcam_loss(
    logits: torch.Tensor,
    act: torch.Tensor,
    labels: List[List[int]],
    patch_target: torch.Tensor,
    num_classes: int,
    num_bg: int,
) -> torch.Tensor:
    """BCE between each present class's pre-ReLU Grad-CAM (max-abs normalised) and its patch mask.

    Grad-CAM exactly as WeCLIP (spec §3): target = softmax probability over [present fg; all bg]
    prompts, gradient at ``act``, weights = spatial mean of the gradient; ``create_graph`` keeps the map
    differentiable w.r.t. the CLIP weights.
    """
    losses = []
    for i, present in enumerate(labels):
        present = sorted(set(present))
        rows = present + list(range(num_classes, num_classes + num_bg))
        probs = logits[i, rows].softmax(-1)
        for j, c in enumerate(present):
            (grad,) = torch.autograd.grad(probs[j], act, create_graph=True)
            cam = act[i, 1:] @ grad[i, 1:].mean(0)  # (n,) pre-ReLU map
            cam = cam / (cam.abs().max().detach() + 1e-12)
            on = (patch_target[i, :, c] > 0.5).float()
            losses.append(F.binary_cross_entropy_with_logits(8.0 * cam, on))
    return torch.stack(losses).mean() if losses else logits.sum() * 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config", default="configs/toy.py", help="toy config (architecture, prompts, world)"
    )
    p.add_argument("--out", default="weclip/assets/toy_clip/toy_clip.safetensors")
    p.add_argument("--warm-steps", type=int, default=1500, help="phase 1: vision warm start steps")
    p.add_argument(
        "--dense-weight", type=float, default=0.0, help="weight of the patch-level warm-start loss"
    )
    p.add_argument("--text-steps", type=int, default=200, help="phase 2: text alignment steps")
    p.add_argument("--steps", type=int, default=400, help="phase 3: joint full-size steps")
    p.add_argument("--warm-scale", type=float, default=10.0, help="logit scale of phases 1-2")
    p.add_argument(
        "--init",
        default=None,
        help="start from these weights (.safetensors) instead of random init",
    )
    p.add_argument(
        "--cam-steps", type=int, default=0, help="phase 4: Grad-CAM localisation fine-tuning steps"
    )
    p.add_argument("--cam-weight", type=float, default=1.0, help="phase 4: weight of the CAM loss")
    p.add_argument(
        "--cam-dense-weight",
        type=float,
        default=0.0,
        help="phase 4: weight of the patch loss on the second-to-last block's tokens (dense_loss)",
    )
    p.add_argument("--cam-lr", type=float, default=3e-4, help="phase 4: AdamW lr (no weight decay)")
    p.add_argument("--cam-batch-size", type=int, default=16)
    p.add_argument(
        "--cam-scale",
        type=float,
        default=30.0,
        help="phase 4: logit scale of the image-level and patch losses",
    )
    p.add_argument(
        "--bg-share-cam",
        type=float,
        default=0.3,
        help="phase 4: target mass of the background prompt",
    )
    p.add_argument("--joint-lr-mult", type=float, default=0.5, help="phase 3 lr = lr x this")
    p.add_argument("--lowres-batch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument(
        "--bg-share", type=float, default=0.25, help="target mass of the background prompt"
    )
    p.add_argument(
        "--bg-only-prob", type=float, default=0.15, help="fraction of background-only images"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="fixed torch threads (1: no OpenMP spin-waits on a busy machine)",
    )
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-images", type=int, default=200)
    p.add_argument(
        "--fp32", action="store_true", help="store fp32 weights (default fp16, half the size)"
    )
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    world = ToyWorldConfig.from_cfg(cfg.toy)
    arch = cfg.model.backbone.arch.to_dict()
    model = open_clip.CLIP(**arch)
    if args.init:
        from safetensors.torch import load_file

        model.load_state_dict(
            {k_: v.float() for k_, v in load_file(args.init).items()}, strict=False
        )
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    model.logit_scale.requires_grad_(False)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(
        context_length=arch["text_cfg"]["context_length"]
    )
    template = cfg.model.text.template
    prompts = [
        template.format(n)
        for n in list(cfg.data.prompt_class_names) + list(cfg.data.prompt_bg_names)
    ]
    k, m = len(cfg.data.prompt_class_names), len(cfg.data.prompt_bg_names)
    if m != len(TOY_BG_KINDS):
        raise ValueError(
            f"{args.config}: data.prompt_bg_names must name the {len(TOY_BG_KINDS)} toy backgrounds"
        )
    tokens = tokenizer(prompts)
    norm = cfg.model.norm_constants[cfg.model.normalize]
    mean, std = list(norm.mean), list(norm.std)

    decay = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and p.ndim >= 2 and "embedding" not in n
    ]
    other = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and not (p.ndim >= 2 and "embedding" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": other, "weight_decay": 0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int, total: int) -> float:
        if step < args.warmup:  # 1) linear warm-up
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, total - args.warmup)  # 2) cosine decay to 0
        return args.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def soft_ce(emb: torch.Tensor, classifier: torch.Tensor, scale: float, target: torch.Tensor):
        logits = scale * emb @ classifier.t()  # (B, K+M) scaled cosines
        return -(target * logits.log_softmax(-1)).sum(-1).mean()

    def step_opt(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def report(tag: str, step: int, loss: float) -> None:
        res = evaluate(
            model, cfg, world, tokenizer, prompts, mean, std, args.eval_images, args.seed
        )
        res.update(step=step, loss=loss, minutes=(time.time() - start) / 60)
        history.append(dict(res, phase=tag))
        logger.info(
            "%s step %d: %s", tag, step, json.dumps({a: round(b, 4) for a, b in res.items()})
        )
        save_safetensors(model, args.out, half=not args.fp32)

    start, history = time.time(), []
    model.train()
    # Phase 1, vision warm start: half-size images (single objects or background only), embedded as a
    # random window of the full positional table, classified against a FIXED orthonormal matrix (one row
    # per prompt) at a mild temperature. Image-level labels only.
    half = world.image_size // 2
    warm_world = dataclasses.replace(
        world, image_size=half, min_objects=1, max_objects=1, min_size=0.35, max_size=0.75
    )
    warm_samples = [
        generate_sample(sample_rng(args.seed, "val", i), warm_world)
        for i in range(args.eval_images)
    ]
    warm_val = to_tensor(np.stack([w.image for w in warm_samples]), mean, std)
    warm_val_labels = torch.tensor([w.labels[0] for w in warm_samples])
    anchors = torch.linalg.qr(torch.randn(model.visual.output_dim, k + m))[0].t().contiguous()
    grid, win = model.visual.grid_size, half // model.visual.patch_size[0]
    for step in tqdm(range(args.warm_steps), desc="1/4 vision warm start", mininterval=10):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.warm_steps)
        images, labels, kinds, masks = make_batch(
            args.seed, step, args.lowres_batch_size, warm_world, args.bg_only_prob
        )
        wrng = np.random.default_rng([args.seed, 99, step])
        off = (int(wrng.integers(grid[0] - win + 1)), int(wrng.integers(grid[1] - win + 1)))
        tok = window_tokens(model, to_tensor(images, mean, std), off)
        emb = F.normalize(tok.mean(1), dim=-1)
        loss = soft_ce(
            emb, anchors, args.warm_scale, soft_targets(labels, kinds, k, m, args.bg_share)
        )
        if args.dense_weight > 0:  # patch-level warm start (see the module docstring)
            target = patch_targets(masks, kinds, k, m, model.visual.patch_size[0])
            logits = args.warm_scale * F.normalize(tok, dim=-1) @ anchors.t()
            dense = -(target * logits.log_softmax(-1)).sum(-1).mean()
            loss = loss + args.dense_weight * dense
        step_opt(loss)
        if (step + 1) % args.eval_every == 0:
            with torch.no_grad():
                pred = (window_embedding(model, warm_val, (2, 2)) @ anchors[:k].t()).argmax(-1)
            acc = float((pred == warm_val_labels).float().mean())
            logger.info("warm step %d: loss %.3f, accuracy vs anchors %.3f", step + 1, loss, acc)
    # Phase 2, text alignment: the text tower learns to put each prompt on its anchor (vision frozen).
    for _step in tqdm(range(args.text_steps), desc="2/4 text alignment", mininterval=10):
        for group in opt.param_groups:
            group["lr"] = args.lr
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        loss = soft_ce(txt, anchors, args.warm_scale, torch.eye(k + m))
        step_opt(loss)
    if args.text_steps > 0:
        report("text-aligned", args.warm_steps, float(loss))
    # Phase 3, CLIP fine-tuning at full size with 1-2 objects: both towers, the real prompt embeddings,
    # the temperature annealed from warm_scale to 100 over the first half (WeCLIP's 100, spec §1.6).
    for step in tqdm(range(args.steps), desc="3/4 joint", mininterval=10):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps) * args.joint_lr_mult
        scale = args.warm_scale + (LOGIT_SCALE - args.warm_scale) * min(1.0, 2 * step / args.steps)
        images, labels, kinds, _ = make_batch(
            args.seed, args.warm_steps + step, args.batch_size, world, args.bg_only_prob
        )
        emb = image_embedding(model, to_tensor(images, mean, std))
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        loss = soft_ce(emb, txt, scale, soft_targets(labels, kinds, k, m, args.bg_share))
        step_opt(loss)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            report("joint", args.warm_steps + step + 1, float(loss))
    # Phase 4, Grad-CAM localisation and patch semantics: the Grad-CAM WeCLIP computes (last block's LN1
    # output, softmax over [present fg; bg] prompts at scale 100, spatial-mean gradient weights, spec §3) is
    # trained, by double backpropagation, to be positive on the present object's patches and not
    # elsewhere; the patch loss makes the decoder's deepest input block name the shape of each patch.
    if args.cam_steps > 0:
        cam_opt = torch.optim.AdamW(
            [p_ for p_ in model.parameters() if p_.requires_grad], lr=args.cam_lr, weight_decay=0.0
        )
        for step in tqdm(range(args.cam_steps), desc="4/4 Grad-CAM", mininterval=10):
            images, labels, kinds, masks = make_batch(
                args.seed + CAM_SEED_OFFSET, step, args.cam_batch_size, world, 0.0
            )
            logits, act, dense = semantic_forward(model, to_tensor(images, mean, std), tokens)
            target = soft_targets(labels, kinds, k, m, args.bg_share_cam)
            patches = patch_targets(masks, kinds, k, m, model.visual.patch_size[0])
            loss = (
                -(target * (logits * (args.cam_scale / LOGIT_SCALE)).log_softmax(-1)).sum(-1).mean()
            )
            if args.cam_dense_weight > 0:
                loss = loss + args.cam_dense_weight * dense_loss(dense, patches, args.cam_scale)
            loss = loss + args.cam_weight * gradcam_loss(logits, act, labels, patches, k, m)
            cam_opt.zero_grad(set_to_none=True)
            loss.backward()
            cam_opt.step()
            if (step + 1) % args.eval_every == 0 or step + 1 == args.cam_steps:
                report("grad-cam", args.warm_steps + args.steps + step + 1, float(loss))
    # Final figures on the weights as stored (fp16 round trip).
    from safetensors.torch import load_file

    stored = open_clip.CLIP(**arch)
    stored.load_state_dict({k_: v.float() for k_, v in load_file(args.out).items()}, strict=False)
    final = evaluate(stored, cfg, world, tokenizer, prompts, mean, std, args.eval_images, args.seed)
    final.update(minutes=(time.time() - start) / 60)
    print(json.dumps({"final": final, "history": history}, indent=1))


if __name__ == "__main__":
    main(parse_args())
