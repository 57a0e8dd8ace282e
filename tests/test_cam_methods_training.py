"""The wiring of the CAM-improvement methods into the CAM classifier's training (``model.method``).

Each method's ``mode="loss"`` total must be its terms with the configured weights, and its terms must be
what the phase-1 functions compute on the network's outputs (recomputed here from the same random draws:
the step generator is seeded from torch's global generator, so ``torch.manual_seed`` before a call
replays it). Tiny random-init ResNet-18 (width 4) on 32 px images, batch 4, one thread.
Tolerances: fp32 sums of a few terms of magnitude <= 10 (rel 1e-5) or bit-identical recomputations.
"""

import math
import os
import textwrap

import pytest
import torch
import torch.nn.functional as F
from helpers import single_thread

from weclip.baselines.cam_methods.mix import (
    concentration_loss,
    entropy_loss,
    fmix,
    mixup,
    pixel_class_probs,
    sample_beta,
)
from weclip.baselines.cam_methods.seam import AffineTransform
from weclip.baselines.cam_methods.training import soft_classification_loss, step_generator
from weclip.baselines.classifier import cam_classifier_loss, normalize_cams
from weclip.baselines.maps import pad_to_multiple
from weclip.config import load_config
from weclip.errors import ConfigError
from weclip.evaluation.records import model_label
from weclip.models.registry import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CAM = os.path.join(REPO, "configs", "baselines", "toy_cam.py")
TINY = """
data = dict(root={root!r}, split_dir={root!r})
"""


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def build(tmp_path, method_text="", name="cfg.py"):
    """A tiny CAMClassifier of configs/baselines/toy_cam.py with ``model.method`` set by ``method_text``."""
    path = tmp_path / name
    root = str(tmp_path / "toy")
    model_text = textwrap.dedent(method_text) or "model = dict()"
    # one ``model =`` assignment (a second one would replace the first): the tiny trunk + the method
    model_text = model_text.replace("model = dict(", "model = dict(resnet=dict(base_width=4), ", 1)
    body = TINY.format(root=root) + model_text + "\n"
    path.write_text(f"_base_ = [{TOY_CAM!r}]\n" + body)
    cfg = load_config(str(path))
    torch.manual_seed(0)
    return build_model(cfg), cfg


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 1]]).float()
    return images, labels


def loss_of(model, images, labels, seed=5):
    torch.manual_seed(seed)  # replays the step generator's seed
    return model(images, labels, mode="loss", iteration=1)


def close(a, b, rel=1e-5):
    a, b = (v.detach() if isinstance(v, torch.Tensor) else v for v in (a, b))
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-7)


def test_soft_classification_loss_hand_values():
    # multilabel: BCE of logit 0 is ln 2 whatever the (soft) target
    assert close(
        soft_classification_loss(torch.zeros(2, 3), torch.rand(2, 3), "multilabel"), math.log(2)
    )
    # single: softmax([0, ln 3]) = [1/4, 3/4]; target [1/2, 1/2] -> -(ln(1/4) + ln(3/4)) / 2 = 0.836988
    logits = torch.tensor([[0.0, math.log(3.0)]])
    value = soft_classification_loss(logits, torch.tensor([[0.5, 0.5]]), "single")
    assert close(value, -(math.log(0.25) + math.log(0.75)) / 2)
    # linear in the target: L(lam y1 + (1 - lam) y2) = lam L(y1) + (1 - lam) L(y2)
    y1, y2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    for kind in ("multilabel", "single"):
        mixed = soft_classification_loss(logits, 0.3 * y1 + 0.7 * y2, kind)
        parts = 0.3 * soft_classification_loss(logits, y1, kind) + 0.7 * soft_classification_loss(
            logits, y2, kind
        )
        assert close(mixed, parts)


def test_plain_classifier_is_unchanged(tmp_path):
    model, cfg = build(tmp_path)
    assert model.method is None and model_label(cfg) == "CAMClassifier"
    assert not any(k.startswith("method_heads") for k in model.trainable_module().state_dict())
    images, labels = batch()
    out = loss_of(model, images, labels)
    net_out = model.classify(model.preprocess(images))
    expected = cam_classifier_loss(net_out["logits"], labels, "multilabel", None, 0.0)["loss"]
    assert torch.equal(out["loss"], expected)


def test_mixup_cam_total_is_its_weighted_terms(tmp_path):
    model, cfg = build(
        tmp_path,
        "model = dict(method=dict(type='mixup_cam', mixup_cam=dict(ent_weight=2.0, con_weight=3.0)))",
    )
    assert model_label(cfg) == "CAMClassifier + mixup_cam"
    images, labels = batch()
    out = loss_of(model, images, labels)
    log = out["log"]
    assert close(out["loss"], log["cls_loss"] + 2.0 * log["ent_loss"] + 3.0 * log["con_loss"])
    # the same draws by hand: mixup of the padded normalised images, BCE on the mixed labels
    torch.manual_seed(5)
    mix = mixup(pad_to_multiple(model.preprocess(images), 8), labels, generator=step_generator())
    net_out = model.net(mix.inputs)
    assert torch.equal(
        log["cls_loss"], F.binary_cross_entropy_with_logits(net_out["logits"], mix.labels)
    )
    probs = pixel_class_probs(model.net.raw_cams(net_out["features"]))
    assert torch.equal(log["ent_loss"], entropy_loss(probs))
    assert torch.equal(log["con_loss"], concentration_loss(probs, mix.labels, eps=1e-3))


def test_manifold_mixup_mixes_after_the_chosen_stage(tmp_path):
    model, _ = build(
        tmp_path,
        "model = dict(method=dict(type='manifold_mixup', manifold_mixup=dict(layers=(3,))))",
    )
    images, labels = batch()
    out = loss_of(model, images, labels)
    assert set(out["log"]) == {"cls_loss"}  # regularisers off by default
    # replay: layer pick (one draw), lam ~ Beta(2, 2), permutation; mix the layer3 output
    torch.manual_seed(5)
    g = step_generator()
    torch.randint(1, (), generator=g)
    lam = sample_beta(2.0, g)
    perm = torch.randperm(4, generator=g)
    h3 = model.net(pad_to_multiple(model.preprocess(images), 8))["stages"][2]
    f = model.net.trunk.layer4(lam * h3 + (1 - lam) * h3[perm])
    logits = model.net.head(f.mean(dim=(2, 3), keepdim=True)).flatten(1)
    target = lam * labels + (1 - lam) * labels[perm]
    assert close(out["loss"], F.binary_cross_entropy_with_logits(logits, target))


def test_fmix_mixes_labels_by_mask_area(tmp_path):
    model, _ = build(tmp_path, "model = dict(method=dict(type='fmix'))")
    images, labels = batch()
    out = loss_of(model, images, labels)
    assert set(out["log"]) == {"cls_loss"}
    torch.manual_seed(5)
    mix = fmix(pad_to_multiple(model.preprocess(images), 8), labels, generator=step_generator())
    assert mix.lam == float(mix.mask.mean())
    logits = model.net(mix.inputs)["logits"]
    assert torch.equal(out["loss"], F.binary_cross_entropy_with_logits(logits, mix.labels))


SEAM = (
    "model = dict(method=dict(type='seam', seam=dict(scale=0.5, er_weight=2.0, ecr_weight=3.0{})))"
)


def test_seam_total_is_its_weighted_terms_and_cams_are_revised(tmp_path):
    model, _ = build(tmp_path, SEAM.format(""))
    assert any(k.startswith("method_heads.pcm") for k in model.trainable_module().state_dict())
    images, labels = batch()
    out = loss_of(model, images, labels)
    log = out["log"]
    total = log["cls_loss"] + 2.0 * log["er_loss"] + 3.0 * log["ecr_loss"] + log["rvmin_loss"]
    assert close(out["loss"], total)
    # classification: the mean of both views' multi-label soft margins (SEAM's loss_cls)
    x = model.preprocess(images)
    view = AffineTransform(scale=0.5).apply(x)
    lo = model.net(pad_to_multiple(x, 8))["logits"]
    lt = model.net(pad_to_multiple(view, 8))["logits"]
    cls = 0.5 * (
        F.multilabel_soft_margin_loss(lo, labels) + F.multilabel_soft_margin_loss(lt, labels)
    )
    assert close(log["cls_loss"], cls)
    # inference CAMs: PCM-revised by default, the plain ones with seam.cams = "raw"
    model.eval()
    with torch.no_grad():
        revised = model.cam_maps(x)
        raw_model, _ = build(tmp_path, SEAM.format(", cams='raw'"), name="raw.py")
        raw_model.load_state_dict(model.state_dict())
        raw_model.eval()
        raw = raw_model.cam_maps(x)
        plain = normalize_cams(F.interpolate(
            model.net.raw_cams(model.net(x)["features"]), scale_factor=8.0, mode="bilinear",
            align_corners=False,
        ))  # fmt: skip
    assert torch.allclose(raw, plain, atol=1e-6)
    assert not torch.allclose(revised, raw, atol=1e-3)


def test_p2p_adds_its_weighted_contrast_terms(tmp_path):
    model, _ = build(
        tmp_path,
        "model = dict(method=dict(type='p2p', p2p=dict(view_size=(16, 16), cross_weight=0.2, "
        "cross_label_weight=0.3, intra_weight=0.5, semi_hard=False)))",
    )
    assert any(k.startswith("method_heads.proj") for k in model.trainable_module().state_dict())
    out = loss_of(model, *batch())
    log = out["log"]
    seam = log["cls_loss"] + log["er_loss"] + log["ecr_loss"] + log["rvmin_loss"]
    nce = 0.2 * log["cross_nce"] + 0.3 * log["cross_label_nce"] + 0.5 * log["intra_nce"]
    assert close(out["loss"], seam + nce)
    assert float(log["cross_nce"]) > 0 and float(log["intra_nce"]) > 0


def test_sc_cam_assignment_hand_worked(tmp_path):
    model, _ = build(
        tmp_path, "model = dict(method=dict(type='sc_cam', sc_cam=dict(previous='x.pth', k=3)))"
    )
    sub = model.net.method_heads["sub"]
    assert sub.head.out_channels == 4 * 3
    centers = torch.zeros(4, 3, 2)
    # class 0 has 2 clusters: (0, 0), (10, 0); its unused third slot sits on the query and must be ignored
    centers[0] = torch.tensor([[0.0, 0.0], [10.0, 0.0], [9.0, 1.0]])
    # class 1: (0, 0), (0, 10), (5, 5)
    centers[1] = torch.tensor([[0.0, 0.0], [0.0, 10.0], [5.0, 5.0]])
    small = _SubHeadLike(centers, torch.tensor([2, 3, 3, 3]))
    feats = torch.tensor([[9.0, 1.0]])
    # class 0: |(9,1)-(0,0)| = 9.06, |(9,1)-(10,0)| = 1.41 -> j = 1 -> entry 0*3 + 1 = 1
    # class 1: 9.06, |(9,1)-(0,10)| = 12.73, |(9,1)-(5,5)| = 5.66 -> j = 2 -> entry 1*3 + 2 = 5
    labels = small.assign(feats, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert labels[0].nonzero().flatten().tolist() == [1, 5]


class _SubHeadLike:
    """The sub-category head's assignment with the head's own code, on hand-set centres (D = 2)."""

    def __init__(self, centers, counts):
        from weclip.baselines.cam_methods.training import _SubCategoryHead

        self.head = _SubCategoryHead(2, centers.shape[0], centers.shape[1])
        self.head.centers.copy_(centers)
        self.head.counts.copy_(counts)

    def assign(self, feats, cls_labels):
        return self.head.assign(feats, cls_labels)


def test_sc_cam_total_is_parent_plus_weighted_sub_and_distillation(tmp_path):
    model, _ = build(
        tmp_path,
        "model = dict(method=dict(type='sc_cam', sc_cam=dict(previous='x.pth', k=2, distill=True, "
        "kd_weight=0.5)))",
    )
    teacher, _ = build(tmp_path, "", name="teacher.py")
    model.method.teacher = (
        teacher.eval()
    )  # the previous round (normally loaded from sc_cam.previous)
    sub = model.net.method_heads["sub"]
    d = sub.centers.shape[-1]
    sub.centers.copy_(torch.randn(4, 2, d, generator=torch.Generator().manual_seed(3)))
    sub.counts.fill_(2)
    sub.ready.fill_(True)
    images, labels = batch()
    out = loss_of(model, images, labels)
    log = out["log"]
    assert close(out["loss"], log["cls_loss"] + 5.0 * log["sub_loss"] + 0.5 * log["kd_loss"])
    x = model.preprocess(images)
    with torch.no_grad():
        feats = teacher.classify(x)["features"].mean(dim=(2, 3))
    sub_labels = sub.assign(feats, labels)
    assert torch.equal(sub_labels.view(4, 4, 2).sum(dim=2), labels)  # one sub-category per class
    net_out = model.classify(x)
    expected = F.multilabel_soft_margin_loss(sub(net_out["features"]), sub_labels)
    assert close(log["sub_loss"], expected)


def test_bad_method_configs(tmp_path):
    with pytest.raises(ConfigError, match="sc_cam.previous"):
        build(tmp_path, "model = dict(method=dict(type='sc_cam'))")
    with pytest.raises(ConfigError, match="ResNet CAM classifier"):
        build(tmp_path, "model = dict(arch='unet', method=dict(type='seam'))", name="unet.py")
    with pytest.raises(ConfigError, match="one width per stage"):
        build(
            tmp_path,
            "model = dict(method=dict(type='seam', seam=dict(pcm_stages=(2,))))",
            name="w.py",
        )
