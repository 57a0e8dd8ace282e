"""WeCLIP wiring: shapes, the RFM switch, labels only from cls_labels, gradients only into the decoder."""

import pytest
import torch

from weclip.config import load_config
from weclip.models.weclip import build_weclip
from weclip.refine.engine import rfm_active


@pytest.fixture
def tiny_weclip(tiny_arch):
    # the VOC config (21 classes, its prompts) on a tiny random CLIP and a small decoder
    cfg = load_config(
        "configs/voc.py",
        {
            "model.backbone.weights": "random",
            "model.decoder.embed_dim": 32,
            "model.decoder.num_heads": 4,
            "model.par.num_iter": 3,
            "model.refine.static_layers": 3,  # the tiny CLIP has 3 blocks
            "model.refine.rfm_layers": 2,
        },
    )
    cfg.model.backbone.arch = tiny_arch  # a dict replacing the base's name: assigned, not merged
    torch.manual_seed(0)
    return build_weclip(cfg)


def test_forward_shapes_and_labels(tiny_weclip):
    images = torch.randn(2, 3, 48, 32)  # 6x4 patch grid (patch 8), non-square
    cls_labels = torch.zeros(2, 20)
    cls_labels[0, [2, 14]] = 1  # bird, person
    cls_labels[1, 7] = 1  # cat
    out = tiny_weclip(images, cls_labels, iteration=1)
    assert out["seg_logits"].shape == (2, 21, 6, 4)
    assert out["aff"].shape == (2, 24, 24)
    assert out["pseudo_labels"].shape == (2, 48, 32)
    assert out["cams"].shape == (3, 6, 4) and out["cams_refined"].shape == (3, 48, 32)
    assert out["batch_index"].tolist() == [0, 0, 1] and out["class_index"].tolist() == [2, 14, 7]
    # pseudo-labels hold only background and the present class ids (fg id + 1)
    assert set(out["pseudo_labels"][0].unique().tolist()) <= {0, 3, 15}
    assert set(out["pseudo_labels"][1].unique().tolist()) <= {0, 8}
    assert not bool(out["use_rfm"])  # iteration 1 < rfm_start_iter = 9145: static refinement


def test_rfm_switch_and_inference_path(tiny_weclip):
    assert not rfm_active(9144, 9145) and rfm_active(9145, 9145) and rfm_active(None, 9145)
    images = torch.randn(1, 3, 32, 32)
    cls_labels = torch.zeros(1, 20)
    cls_labels[0, 0] = 1
    assert bool(tiny_weclip(images, cls_labels, iteration=None)["use_rfm"])
    out = tiny_weclip(images)  # no labels: decoder only
    assert set(out) == {"seg_logits", "aff"}


def test_gradients_reach_only_the_decoder(tiny_weclip):
    images = torch.randn(1, 3, 32, 32)
    cls_labels = torch.zeros(1, 20)
    cls_labels[0, 4] = 1
    out = tiny_weclip(images, cls_labels, iteration=1)
    (out["seg_logits"].sum() + out["aff"].sum()).backward()
    trainable = {n for n, p in tiny_weclip.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("decoder.") for n in trainable)
    assert all(p.grad is None for p in tiny_weclip.backbone.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_weclip.decoder.parameters()
    )
    # text embeddings are buffers rebuilt from the prompts, not saved
    assert not any(k.startswith("text_") for k in tiny_weclip.state_dict())


def test_prompt_count_must_match_classes(tiny_arch):
    cfg = load_config("configs/voc.py", {"model.backbone.weights": "random"})
    cfg.model.backbone.arch = tiny_arch
    cfg.data.prompt_class_names = cfg.data.prompt_class_names[:19]
    with pytest.raises(ValueError, match="prompt_class_names has 19 names"):
        build_weclip(cfg)


def test_layer_counts_must_fit_the_clip(tiny_arch):
    cfg = load_config("configs/voc.py", {"model.backbone.weights": "random"})
    cfg.model.backbone.arch = tiny_arch
    with pytest.raises(
        ValueError, match="model.refine.static_layers = 8 but the CLIP has 3 blocks"
    ):
        build_weclip(cfg)
