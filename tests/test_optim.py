"""Optimiser and schedule (spec §8, App. C.9)."""

import logging

import pytest
import torch
from torch import nn

from weclip.config import load_config
from weclip.engine.optim import build_optimizer, build_scheduler, lr_factor
from weclip.errors import ConfigError

VOC = load_config("configs/voc.py")


def voc_optimizer(model=None):
    model = model if model is not None else nn.Linear(4, 2)
    optimizer = build_optimizer(model, VOC.optim)
    return optimizer, build_scheduler(optimizer, VOC.sched, VOC.train.max_iters)


def test_lr_factor_points():
    kw = dict(max_iters=30000, warmup_iters=50, warmup_ratio=1e-6, power=1.0)
    assert lr_factor(0, **kw) == pytest.approx(1e-6, rel=1e-9)  # 1 - 1 * (1 - 1e-6)
    # t = 49: 1 - (1/50) * (1 - 1e-6) = 0.98000002
    assert lr_factor(49, **kw) == pytest.approx(0.98000002, rel=1e-9)
    assert lr_factor(50, **kw) == pytest.approx(1 - 50 / 30000, rel=1e-12)  # no re-basing
    assert lr_factor(29999, **kw) == pytest.approx(1 / 30000, rel=1e-9)
    assert lr_factor(30000, **kw) == 0.0
    assert lr_factor(100, **dict(kw, power=0.9)) == pytest.approx((1 - 100 / 30000) ** 0.9)
    with pytest.raises(ValueError):
        lr_factor(-1, **kw)


def test_schedule_points_of_appendix_c9():
    # App. C.9: lr(0) = 2e-9, lr(49) ~ 1.96e-3, lr(50) = 2e-3 (1 - 50/30000), lr(29999) ~ 6.7e-8
    optimizer, scheduler = voc_optimizer()
    seen = {}
    for t in range(51):
        seen[t] = optimizer.param_groups[0]["lr"]  # the lr optimizer step t runs with
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(2e-9, rel=1e-9)
    assert seen[1] == pytest.approx(2e-3 * (1 - (1 - 1 / 50) * (1 - 1e-6)), rel=1e-9)
    assert seen[49] == pytest.approx(1.96e-3, rel=1e-6)
    assert seen[50] == pytest.approx(2e-3 * (1 - 50 / 30000), rel=1e-12)
    # jump to the last step through the resume path: a state saved after step 29998, then one step
    scheduler.load_state_dict(dict(scheduler.state_dict(), last_epoch=29998))
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 30000, rel=1e-9)  # 6.67e-8


def test_optimizer_group_and_hyperparameters(caplog):
    module = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))  # a model's trainable module
    module[0].bias.requires_grad_(False)
    with caplog.at_level(logging.INFO, logger="weclip"):
        optimizer = build_optimizer(module, VOC.optim)
    assert len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    # the parameters that require grad, in module order
    assert [id(p) for p in group["params"]] == [
        id(module[0].weight),
        id(module[1].weight),
        id(module[1].bias),
    ]
    assert group["lr"] == pytest.approx(2e-3)  # 2e-4 x 10
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert group["weight_decay"] == 0.01
    assert "lr 0.002 (= 0.0002 x head_lr_mult 10)" in caplog.text


def test_weight_decay_is_decoupled():
    # AdamW with a zero gradient: m = v = 0, so the Adam update is 0 and only the decoupled decay
    # acts: p <- p * (1 - lr * wd) = 1 * (1 - 2e-3 * 0.01) = 0.99998
    module = nn.Linear(3, 1, bias=False)
    nn.init.ones_(module.weight)
    optimizer = build_optimizer(module, VOC.optim)
    module.weight.grad = torch.zeros(1, 3)
    optimizer.step()
    torch.testing.assert_close(module.weight.detach(), torch.full((1, 3), 0.99998))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="no parameter requires grad"):
        build_optimizer(nn.Linear(1, 1).requires_grad_(False), VOC.optim)
    # unknown optimisers and keys are refused when the config is loaded (weclip.schema.OptimConfig)
    with pytest.raises(ConfigError, match="'optim.type' = 'SGD': expected one of 'AdamW'"):
        load_config("configs/voc.py", {"optim.type": "SGD"})
    with pytest.raises(ConfigError, match="unknown config key 'optim.momentum'"):
        load_config("configs/voc.py", {"optim": {"momentum": 0.9}})
