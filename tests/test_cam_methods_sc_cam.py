"""SC-CAM (weclip/baselines/cam_methods/sc_cam.py): k-means, sub-category labels, losses, rounds."""

import math

import pytest
import torch

from weclip.baselines.cam_methods.sc_cam import (
    SubCategories,
    distillation_loss,
    image_features,
    kmeans,
    run_rounds,
    sc_cam_loss,
    subcategory_labels,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _three_blobs(n_per: int = 20, seed: int = 0):
    """Points around (0, 0), (10, 0), (0, 10) with std 0.1: clusters 100 σ apart."""
    g = _gen(seed)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = means.repeat_interleave(n_per, dim=0) + 0.1 * torch.randn(3 * n_per, 2, generator=g)
    truth = torch.arange(3).repeat_interleave(n_per)
    perm = torch.randperm(3 * n_per, generator=g)
    return pts[perm], truth[perm], means


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to renaming the clusters: the pairs (a_i, b_i) form a bijection."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_well_separated_clusters():
    pts, truth, means = _three_blobs()
    centers, assign, inertia = kmeans(pts, 3, generator=_gen(1))
    assert _same_partition(assign, truth)
    # every found centre is within 0.1 of a true mean (the mean of 20 points with σ = 0.1 per
    # axis is off by ~0.1/sqrt(20) ≈ 0.02 per axis)
    d = torch.cdist(centers, means)
    assert float(d.min(dim=1).values.max()) < 0.1
    # inertia ≈ 60 points · 2 axes · σ² = 1.2; well below the 1-cluster inertia (~ 60·33)
    assert 0.5 < inertia < 3.0


def test_kmeans_is_seeded_and_k_equal_n_is_exact():
    pts, _, _ = _three_blobs(n_per=5)
    a = kmeans(pts, 3, generator=_gen(7))
    b = kmeans(pts, 3, generator=_gen(7))
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    # k = N: every point is its own centre, inertia 0
    centers, assign, inertia = kmeans(pts, pts.shape[0], generator=_gen(0), n_init=1)
    assert len(set(assign.tolist())) == pts.shape[0] and inertia == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="k="):
        kmeans(pts, pts.shape[0] + 1, generator=_gen(0))


def test_subcategory_labels_shape_and_values():
    # 6 images, K = 2 parent classes, k = 2 sub-categories.
    # class 0: images 0, 1 (features near (0, 0)) and 2, 3 (near (5, 5)) → two clusters
    # class 1: images 2, 3, 4, 5; 2, 3 near (5, 5) and 4, 5 near (−5, 5) → two clusters
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [-5.0, 5.0], [-5.1, 5.0]])
    cls = torch.tensor([[1, 0], [1, 0], [1, 1], [1, 1], [0, 1], [0, 1]], dtype=torch.float32)
    sub = subcategory_labels(feats, cls, k=2, generator=_gen(0))
    assert isinstance(sub, SubCategories)
    assert sub.labels.shape == (6, 4) and sub.assignment.shape == (6, 2)
    assert sub.clusters == [2, 2]
    # one sub-category per carried parent class: row sums 1, 1, 2, 2, 1, 1
    assert sub.labels.sum(dim=1).tolist() == [1, 1, 2, 2, 1, 1]
    # entries only in the blocks of carried classes (columns 0-1 = class 0, 2-3 = class 1)
    assert sub.labels[4:, :2].sum() == 0 and sub.labels[:2, 2:].sum() == 0
    # assignment −1 where the class is absent, and the pairs cluster together
    assert sub.assignment[4:, 0].tolist() == [-1, -1] and sub.assignment[:2, 1].tolist() == [-1, -1]
    a0 = sub.assignment[:4, 0].tolist()
    assert a0[0] == a0[1] and a0[2] == a0[3] and a0[0] != a0[2]
    a1 = sub.assignment[2:, 1].tolist()
    assert a1[0] == a1[1] and a1[2] == a1[3] and a1[0] != a1[2]
    # the label column is c·k + cluster
    for i in range(6):
        for c in range(2):
            j = int(sub.assignment[i, c])
            if j >= 0:
                assert sub.labels[i, c * 2 + j] == 1.0


def test_subcategory_labels_small_and_empty_classes():
    # class 0 on 2 images with k = 10 → 2 clusters (one per image); class 1 on none → no cluster
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    cls = torch.tensor([[1, 0], [1, 0], [0, 0]], dtype=torch.float32)
    sub = subcategory_labels(feats, cls, k=10, generator=_gen(0))
    assert sub.labels.shape == (3, 20) and sub.clusters == [2, 0]
    assert sub.labels[0, :10].sum() == 1 and sub.labels[1, :10].sum() == 1
    assert not torch.equal(sub.labels[0], sub.labels[1])
    assert sub.labels[2].sum() == 0 and sub.centers[1] is None


def test_image_features_is_the_spatial_mean():
    fmap = torch.arange(8.0).view(1, 2, 2, 2)  # channel 0: 0..3 (mean 1.5), channel 1: 4..7 (5.5)
    assert image_features(fmap).tolist() == [[1.5, 5.5]]


def test_sc_cam_loss_hand_worked():
    # zero logits: each multi-label soft-margin term is log 2 (−log σ(0) = log 2 for every class,
    # whatever the target); total = log 2 + 5 · log 2 = 6 log 2.
    parent = torch.zeros(2, 3)
    sub = torch.zeros(2, 30)
    plab = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    slab = torch.zeros(2, 30)
    slab[0, 4] = slab[1, 13] = slab[1, 27] = 1.0
    out = sc_cam_loss(parent, sub, plab, slab)
    assert float(out["parent"]) == pytest.approx(math.log(2))
    assert float(out["sub"]) == pytest.approx(math.log(2))
    assert float(out["loss"]) == pytest.approx(6 * math.log(2))
    # single-label variant: uniform logits over 3 classes → CE = log 3 for each term
    out = sc_cam_loss(
        parent, sub, torch.eye(3)[:2], torch.eye(30)[:2], sub_weight=2.0, loss="cross_entropy"
    )
    assert float(out["parent"]) == pytest.approx(math.log(3))
    assert float(out["sub"]) == pytest.approx(math.log(30))
    assert float(out["loss"]) == pytest.approx(math.log(3) + 2 * math.log(30))


def test_distillation_loss_hand_worked():
    # sigmoid, T = 1: teacher logit 0 (p = 1/2), student ln 3 (q = 3/4):
    # KL = ½ ln(½ / ¾) + ½ ln(½ / ¼) = ½ ln(4/3) = 0.143841
    kl = 0.5 * math.log(4 / 3)
    t = torch.tensor([[0.0]])
    s = torch.tensor([[math.log(3.0)]])
    assert float(distillation_loss(s, t, temperature=1.0)) == pytest.approx(kl, rel=1e-5)
    # T = 2 with doubled logits: s/T = ln 3 again, times T² = 4
    assert float(distillation_loss(2 * s, t, temperature=2.0)) == pytest.approx(4 * kl, rel=1e-5)
    # softmax: teacher [0, 0] (½, ½), student [ln 3, 0] (¾, ¼): the same ½ ln(4/3)
    t2 = torch.zeros(1, 2)
    s2 = torch.tensor([[math.log(3.0), 0.0]])
    got = float(distillation_loss(s2, t2, temperature=1.0, mode="softmax"))
    assert got == pytest.approx(kl, rel=1e-5)
    # agreement gives 0; the teacher gets no gradient
    z = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    assert float(distillation_loss(z.detach(), z.detach())) == pytest.approx(0.0, abs=1e-7)
    distillation_loss(z, teacher).backward()
    assert z.grad is not None and teacher.grad is None


def test_run_rounds_order_and_teachers():
    calls = []
    feats = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    cls = torch.ones(4, 1)

    def extract(model):
        calls.append(("extract", model))
        return feats, cls

    def train(r, subcats, teacher):
        calls.append(("train", r, teacher))
        assert subcats.labels.shape == (4, 2)
        return f"model{r}"

    records = run_rounds("init", extract=extract, train=train, generator=_gen(0), rounds=3, k=2)
    assert [r.model for r in records] == ["model1", "model2", "model3"]
    assert calls == [
        ("extract", "init"),
        ("train", 1, None),
        ("extract", "model1"),
        ("train", 2, None),
        ("extract", "model2"),
        ("train", 3, None),
    ]
    calls.clear()
    run_rounds("init", extract=extract, train=train, generator=_gen(0), rounds=2, k=2, distill=True)
    assert [c for c in calls if c[0] == "train"] == [("train", 1, "init"), ("train", 2, "model1")]
