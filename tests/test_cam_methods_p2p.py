"""Pixel-to-prototype contrast (weclip/baselines/cam_methods/p2p.py): hand-worked values."""

import math

import pytest
import torch

from weclip.baselines.cam_methods.p2p import (
    ProjectionHead,
    align_to,
    class_prototypes,
    cross_view_contrast,
    hard_pixel_indices,
    info_nce,
    intra_view_contrast,
    p2p_losses,
    p2p_pseudo_labels,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_info_nce_one_far_more_similar_positive_gives_almost_zero():
    # f = e1; negatives (positive included, as in P2P) e1, −e1, e2, −e2 with dot products
    # 1, −1, 0, 0; τ = 0.1: loss = log(e¹⁰ + e⁻¹⁰ + 2) − 10 = log(1 + e⁻²⁰ + 2e⁻¹⁰) ≈ 9.08e-5
    e = torch.eye(2)
    f = e[:1]
    negs = torch.stack([e[0], -e[0], e[1], -e[1]])
    got = float(info_nce(f, f, negs, 0.1))
    expected = math.log(1 + math.exp(-20) + 2 * math.exp(-10))
    # fp32: the loss is a difference of two numbers near 10, ulp(10) = 9.5e-7 → 2e-6 absolute
    assert got == pytest.approx(expected, abs=2e-6)
    assert got < 1e-4


def test_info_nce_uniform_similarities_give_log_n():
    # every dot product 0 (orthogonal unit vectors): loss = log(N · e⁰) − 0 = log N
    e = torch.eye(6)
    f = e[:1]
    for n in (2, 3, 5):
        negs = e[1 : 1 + n]
        assert float(info_nce(f, e[1:2], negs, 0.1)) == pytest.approx(math.log(n), abs=1e-6)
    # per-row negatives (N, M, D) give the same value
    assert float(info_nce(f, e[1:2], e[1:4][None], 0.1)) == pytest.approx(math.log(3), abs=1e-6)


def test_pseudo_labels_hand_worked():
    # K = 1 on 1 × 3, fg revised CAM [0, 1, 2]: min 0, max 2. Pixel 0 (< min + 1e-5) → 0, then
    # (x − 0 − 1e-5)/(2 + 1e-5) = [−5e-6, 0.499995, 0.999990]; background := 0.2.
    # argmax over (0.2, fg): pixel 0 → 0 (background), pixels 1, 2 → 1.
    rv = torch.zeros(1, 2, 1, 3)
    rv[0, 1, 0] = torch.tensor([0.0, 1.0, 2.0])
    norm, pseudo = p2p_pseudo_labels(rv, torch.ones(1, 1))
    expected = torch.tensor([-1e-5 / (2 + 1e-5), (1 - 1e-5) / (2 + 1e-5), (2 - 1e-5) / (2 + 1e-5)])
    assert torch.allclose(norm[0, 1, 0], expected)
    assert torch.allclose(norm[0, 0], torch.full((1, 3), 0.2))
    assert pseudo.tolist() == [[[0, 1, 1]]]
    # absent class: masked to 0 < 0.2 everywhere → all background
    _, pseudo = p2p_pseudo_labels(rv, torch.zeros(1, 1))
    assert pseudo.tolist() == [[[0, 0, 0]]]


def test_class_prototypes_hand_worked():
    # one image, 2 × 2 grid, 2-d features x0 = (1, 0), x1 = (3, 3), x2 = (0, 1), x3 = (5, 5);
    # channel values [0.9, 0.1, 0.5, 0.0]; top 2: 0.9 (x0) and 0.5 (x2)
    # p = normalise((0.9·(1, 0) + 0.5·(0, 1)) / 1.4) = (0.9, 0.5)/‖(0.9, 0.5)‖ = (0.8742, 0.4856)
    feats = torch.tensor([[1.0, 3.0, 0.0, 5.0], [0.0, 3.0, 1.0, 5.0]]).view(1, 2, 2, 2)
    cams = torch.tensor([0.9, 0.1, 0.5, 0.0]).view(1, 1, 2, 2)
    proto = class_prototypes(feats, cams, top_k=2)
    norm = math.hypot(0.9, 0.5)
    assert torch.allclose(proto, torch.tensor([[0.9 / norm, 0.5 / norm]]), atol=1e-6)
    # default k = h·w // 8 of one image (at least 1): 2·2 // 8 = 0 → 1 → the top pixel, x0
    assert torch.allclose(class_prototypes(feats, cams), torch.tensor([[1.0, 0.0]]))
    # the top k runs over the whole batch
    two = torch.cat([feats, feats.flip(-1)]), torch.cat([cams, 0 * cams])
    assert torch.allclose(class_prototypes(*two, top_k=2), proto, atol=1e-6)


def test_cross_view_contrast_perfect_features():
    # 3 orthogonal prototypes; every pixel's feature equals its class prototype in both views.
    # Each term: −log(e¹⁰ / (e¹⁰ + 2·e⁰)) = log(1 + 2e⁻¹⁰) (τ = 0.1)
    protos = torch.eye(3)
    labels = torch.tensor([[[0, 1], [2, 1]]])
    f = protos[labels].permute(0, 3, 1, 2)  # (1, 3, 2, 2)
    out = cross_view_contrast(f, f.clone(), labels, labels, protos, protos)
    expected = math.log(1 + 2 * math.exp(-10))
    # fp32 difference of two numbers near 10 (ulp 9.5e-7): 2e-6 absolute
    assert float(out["cross"]) == pytest.approx(expected, abs=2e-6)
    assert float(out["cross_label"]) == pytest.approx(expected, abs=2e-6)
    # swapping view 2's labels breaks only the cross-pseudo-label term's agreement
    out = cross_view_contrast(f, f.clone(), labels, (labels + 1) % 3, protos, protos)
    assert float(out["cross_label"]) > 5.0  # positive dot 0 vs a negative at 1: ≈ 10 nats


def test_semi_hard_prototype_mining_hand_worked():
    # f = (1, 0); five unit prototypes with dot products 1, 0.8, 0.6, 0.4, 0.2 to f; the pixel's
    # class is 0 (dot 1). skip 1, count 2 → negatives: the positive + ranks 2, 3 (dots 0.8, 0.6):
    # loss = log(e¹⁰ + e⁸ + e⁶) − 10 = log(1 + e⁻² + e⁻⁴) = 0.14541
    dots = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2])
    protos = torch.stack([dots, (1 - dots**2).clamp(min=0).sqrt()], dim=1)
    f = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    labels = torch.zeros(1, 1, 1, dtype=torch.long)
    # fp32 logits up to 10 carry ~1e-6 absolute error, far inside rel=1e-4 of losses ~0.1
    kw = dict(generator=_gen(0), hard_pixels=False)
    got = intra_view_contrast(f, labels, protos, mining_skip=1, mining_count=2, **kw)
    assert float(got) == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-4)), rel=1e-4)
    # without mining: all five prototypes
    full = math.log(1 + sum(math.exp(-2 * i) for i in range(1, 5)))
    got = intra_view_contrast(f, labels, protos, semi_hard=False, **kw)
    assert float(got) == pytest.approx(full, rel=1e-4)
    # P2P's defaults (skip 3, count 10) with only 3 prototypes leave the positive alone: loss 0
    got = intra_view_contrast(f, labels, protos[:3], **kw)
    assert float(got) == pytest.approx(0.0, abs=1e-6)


def test_hard_pixel_indices_hand_worked():
    # L = 10 pixels with similarity 0..9 (ascending = index order): int(0.6·10) = 6 least similar
    # are 0..5, of which the last L // 2 = 5 are kept: [1, 2, 3, 4, 5]
    sim = torch.arange(10.0)
    rand, lower = hard_pixel_indices(sim, _gen(0))
    assert lower.tolist() == [1, 2, 3, 4, 5]
    assert len(rand) == 5 and len(set(rand.tolist())) == 5 and int(rand.max()) < 10
    # L = 5: int(3.0) = 3, L // 2 = 2 → ranks 1, 2 of the ascending order
    rand, lower = hard_pixel_indices(torch.tensor([4.0, 0.0, 3.0, 1.0, 2.0]), _gen(0))
    assert lower.tolist() == [3, 4]  # similarities 1 and 2
    with pytest.raises(ValueError, match="at least 2"):
        hard_pixel_indices(torch.tensor([1.0]), _gen(0))


def test_intra_view_averages_per_class_and_counts_single_pixel_classes():
    # protos e0, e1, e2 (orthogonal); τ = 0.1; no mining. Class 0 pixels equal e0 (loss
    # a = log(1 + 2e⁻¹⁰)), class 1 pixels are (e0 + e1)/√2 (dots 1/√2, 1/√2, 0:
    # loss b = log(2·e^{7.07} + 1) − 7.07 = log(2 + e^{−7.07})). Every pixel of a class has the
    # same loss, so whichever pixels are sampled the class mean is a or b. Class 2 has one pixel:
    # it counts in the divisor and adds nothing → (a + b + 0) / 3.
    protos = torch.eye(3)
    s = 10 / math.sqrt(2)
    a = math.log(1 + 2 * math.exp(-10))
    b = math.log(2 * math.exp(s) + 1) - s
    labels = torch.tensor([[[0, 0, 0, 1], [1, 1, 1, 2]]])  # 3 × class 0, 4 × class 1, 1 × class 2
    feats = torch.zeros(1, 3, 2, 4)
    feats[0, 0] = 1.0  # everyone has e0 ...
    feats[0, 1][labels[0] == 1] = 1.0  # ... class 1 also e1
    feats[0, :, 1, 3] = torch.tensor([0.0, 0.0, 1.0])  # the class-2 pixel is e2
    got = intra_view_contrast(feats, labels, protos, generator=_gen(0), semi_hard=False)
    # (a + b)/3 ≈ 0.231; fp32 error ~1e-6 ≪ rel 1e-4
    assert float(got) == pytest.approx((a + b) / 3, rel=1e-4)


def test_p2p_losses_end_to_end_gradients():
    torch.manual_seed(0)
    head = ProjectionHead(16, dim=8)
    x1 = torch.randn(2, 16, 12, 12)
    x2 = torch.randn(2, 16, 6, 6)
    f1 = align_to(head(x1), (6, 6))
    f2 = head(x2)
    assert f1.shape == f2.shape == (2, 8, 6, 6) and float(f2.detach().min()) >= 0  # ReLU'd
    rv1 = align_to(torch.rand(2, 4, 12, 12), (6, 6))
    rv2 = torch.rand(2, 4, 6, 6)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    out = p2p_losses(f1, f2, rv1, rv2, labels, generator=_gen(0))
    for key in ("nce", "cross", "cross_label", "intra"):
        assert torch.isfinite(out[key]), key
    expected = 0.1 * (out["cross"] + out["cross_label"] + out["intra"])
    assert float(out["nce"].detach()) == pytest.approx(float(expected.detach()))
    assert out["pseudo1"].shape == (2, 6, 6)
    out["nce"].backward()
    assert head.proj.weight.grad is not None and torch.isfinite(head.proj.weight.grad).all()
    # reproducible given the generator
    again = p2p_losses(f1.detach(), f2.detach(), rv1, rv2, labels, generator=_gen(0))
    assert float(again["intra"]) == pytest.approx(float(out["intra"].detach()))
