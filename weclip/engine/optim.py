"""Optimiser and learning-rate schedule (spec §8, App. C.9).

The authors' ``PolyWarmupAdamW`` (from AFA) is AdamW whose only non-empty parameter group holds
every decoder parameter with lr = 2e-4 * 10 = 2e-3 and weight decay 0.01, with a linear warm-up and
a poly decay. Here: a plain ``torch.optim.AdamW`` with one group, and a ``LambdaLR`` over the pure
function :func:`lr_factor`.

Step indexing (the same as the authors'): step t = 0 is the *first* optimizer step. With the
scheduler from :func:`build_scheduler`, optimizer step t runs with ``base_lr * lr_factor(t, ...)``,
provided the training loop calls ``scheduler.step()`` once *after* each ``optimizer.step()``::

    optimizer.step()      # uses lr_factor(t)
    scheduler.step()      # prepares lr_factor(t + 1)
"""

import functools
import logging
from typing import Any, Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]

logger = logging.getLogger("weclip")


def lr_factor(
    step: int, max_iters: int, warmup_iters: int, warmup_ratio: float, power: float
) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0 = first step), spec §8.

    1) warm-up, t < warmup_iters:  1 - (1 - t / warmup_iters) * (1 - warmup_ratio)
    2) poly, warmup_iters <= t:    (1 - t / max_iters) ** power     (no re-basing after the warm-up)
    3) t >= max_iters:             0 (not reached by a max_iters-step run; the authors' optimiser
                                   would keep its last lr there)

    Args:
        step (int): t, the 0-based optimizer step.
        max_iters (int): total optimizer steps (30,000 VOC).
        warmup_iters (int): warm-up length (50).
        warmup_ratio (float): factor at t = 0 (1e-6).
        power (float): poly exponent (1.0).

    Returns:
        float: the factor; e.g. t = 0 -> 1e-6, t = 49 -> 0.98, t = 50 -> 1 - 50 / max_iters.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_iters:
        return 1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
    if step >= max_iters:
        return 0.0
    return (1.0 - step / max_iters) ** power


def build_optimizer(module: nn.Module, optim_cfg: Mapping[str, Any]) -> torch.optim.AdamW:
    """AdamW, one group: every trainable parameter of ``module`` at lr * head_lr_mult (spec §8).

    Args:
        module (nn.Module): the model's trainable module (``model.trainable_module()``; WeCLIP: the decoder,
            the frozen CLIP is never in the optimiser).
        optim_cfg (Mapping): the validated ``cfg.optim``: ``lr`` (2e-4), ``head_lr_mult`` (10), ``betas``
            ((0.9, 0.999)), ``eps`` (1e-8), ``weight_decay`` (0.01, decoupled, on all parameters).

    Returns:
        torch.optim.AdamW: lr = 2e-3 with the VOC config.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("build_optimizer: no parameter requires grad (is the module frozen?)")
    lr = float(optim_cfg["lr"]) * float(optim_cfg["head_lr_mult"])
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": lr}],
        lr=lr,
        betas=tuple(float(b) for b in optim_cfg["betas"]),
        eps=float(optim_cfg["eps"]),
        weight_decay=float(optim_cfg["weight_decay"]),
    )
    logger.info(
        "AdamW on %d tensors (%s values): lr %.3g (= %.3g x head_lr_mult %.3g), betas %s, "
        "eps %.3g, weight decay %.3g",
        len(params),
        f"{sum(p.numel() for p in params):,}",
        lr,
        float(optim_cfg["lr"]),
        float(optim_cfg["head_lr_mult"]),
        tuple(optim_cfg["betas"]),
        float(optim_cfg["eps"]),
        float(optim_cfg["weight_decay"]),
    )
    return optimizer


def build_scheduler(
    optimizer: torch.optim.Optimizer, sched_cfg: Mapping[str, Any], max_iters: int
) -> LambdaLR:
    """``LambdaLR`` over :func:`lr_factor` (warm-up + poly, spec §8).

    Right after construction the optimizer's lr is base * lr_factor(0) (2e-9 for VOC), the lr of
    the first optimizer step. Call ``scheduler.step()`` after every ``optimizer.step()`` (see the
    module docstring).

    Args:
        optimizer (torch.optim.Optimizer): from :func:`build_optimizer`.
        sched_cfg (Mapping): ``cfg.sched``: ``warmup_iters`` (50), ``warmup_ratio`` (1e-6),
            ``power`` (1.0).
        max_iters (int): ``cfg.train.max_iters``.

    Returns:
        LambdaLR
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    factor = functools.partial(
        lr_factor,
        max_iters=int(max_iters),
        warmup_iters=int(sched_cfg["warmup_iters"]),
        warmup_ratio=float(sched_cfg["warmup_ratio"]),
        power=float(sched_cfg["power"]),
    )
    return LambdaLR(optimizer, lr_lambda=factor)
