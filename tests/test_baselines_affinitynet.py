"""AffinityNet: pair offsets, confident labels, affinity labels, loss, dense affinity, random walk."""

import math

import pytest
import torch

from weclip.baselines.affinitynet import (
    AffinityLabels,
    AffinityNet,
    affinity_labels,
    affinity_loss,
    combine_confident_labels,
    confident_labels,
    crf_confident_labels,
    dense_affinity,
    downsample_labels,
    pair_affinities,
    pair_offsets,
    pair_validity,
    random_walk,
)


def test_pair_offsets():
    offsets = pair_offsets(5)
    # (0, 1..4) = 4, dy = 1: |dx| <= 4 (1 + 16 < 25) = 9, dy = 2: 9, dy = 3: |dx| <= 3 = 7,
    # dy = 4: |dx| <= 2 (16 + 4 < 25, 16 + 9 = 25 is not < 25) = 5 -> 34
    assert len(offsets) == 34
    assert (4, 2) in offsets and (4, 3) not in offsets and (0, 0) not in offsets
    # each unordered pair once: no offset together with its opposite
    assert not any((-dy, -dx) in offsets for dy, dx in offsets)
    assert pair_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]


# 2 x 3 label map for radius 2 (offsets (0, 1), (1, -1), (1, 0), (1, 1)):
#   0   0   1
#   0 255   1
LABELS = torch.tensor([[[0, 0, 1], [0, 255, 1]]])


def test_affinity_labels_by_hand():
    lab = affinity_labels(LABELS, radius=2, interior_only=False)
    # from (0,0): (0,1)=0 bg+, (1,0)=0 bg+, (1,1)=255 -, (1,-1) outside
    # from (0,1): (0,2)=1 neg, (1,0)=0 bg+, (1,1)=255 -, (1,2)=1 neg
    # from (0,2): (1,2)=1 fg+, (1,1)=255 -, the rest outside
    # from row 1: every partner is outside or 255 (1,1) -> nothing
    assert int(lab.bg_pos.sum()) == 3 and int(lab.fg_pos.sum()) == 1 and int(lab.neg.sum()) == 2
    # offset (0, 1) from (0, 0) is background-positive; offset (1, 1) from (0, 1) is negative
    assert lab.bg_pos[0, 0, 0, 0] and lab.neg[0, 3, 0, 1] and lab.fg_pos[0, 2, 0, 2]
    # the authors' crop for radius 2: "from" rows < h - 1 = 1 and columns in [1, w - 1) = [1, 2),
    # i.e. only (0, 1): bg+ 1 (to (1,0)), neg 2 (to (0,2) and (1,2))
    crop = affinity_labels(LABELS, radius=2, interior_only=True)
    assert (int(crop.bg_pos.sum()), int(crop.fg_pos.sum()), int(crop.neg.sum())) == (1, 0, 2)
    assert pair_validity((2, 3), 2, interior_only=True).sum(dim=0).tolist() == [
        [0, 4, 0],
        [0, 0, 0],
    ]


def test_confident_labels_power_and_threshold():
    cams = torch.tensor([[[[0.9, 0.2, 0.02]]]])
    # power: alpha_lo = 4: fg iff m > (1 - m)^4: 0.9 > 1e-4 yes; 0.2 vs 0.8^4 = 0.41 no.
    # alpha_hi = 32: background iff m <= (1 - m)^32: 0.2 vs 0.8^32 = 7.9e-4 -> not background;
    # 0.02 vs 0.98^32 = 0.524 -> background. So (1, neutral, 0)
    assert confident_labels(cams).tolist() == [[[1, 255, 0]]]
    # thresholds 0.30 / 0.05 (IRN): 0.9 > 0.3 -> 1; 0.2 neutral; 0.02 <= 0.05 -> 0
    assert confident_labels(cams, mode="threshold").tolist() == [[[1, 255, 0]]]
    # combine: foreground of the alpha_lo map, then background of the alpha_hi map on top
    # (background wins, as the authors' code); neither -> neutral 255
    fg_map = torch.tensor([[2, 0, 1, 0]])
    bg_map = torch.tensor([[0, 0, 1, 3]])
    assert combine_confident_labels(fg_map, bg_map).tolist() == [[0, 0, 1, 255]]
    with pytest.raises(ValueError, match="'power' or 'threshold'"):
        confident_labels(cams, mode="crf")


def _crf_cfg(bi_w):
    """psa's CRF kernels without the Gaussian one (pos_w 0), a sharp colour term (bi_rgb_std 1: two
    pixels of different colour do not interact) of weight ``bi_w`` reaching the whole row (bi_xy_std 80)."""
    return dict(iter_max=10, pos_xy_std=3.0, pos_w=0.0, bi_xy_std=80.0, bi_rgb_std=1.0,
                bi_w=bi_w, prob_clip=1e-5)  # fmt: skip


def test_crf_confident_labels_by_hand():
    # one row of 8 pixels: 4 white, 4 black; CAM 0.9 on the first 3, 0.2 on the last white one, 0.02
    # on the black ones
    images = torch.zeros(1, 3, 1, 8, dtype=torch.uint8)
    images[..., :4] = 255
    cams = torch.tensor([[[[0.9, 0.9, 0.9, 0.2, 0.02, 0.02, 0.02, 0.02]]]])
    # without pairwise terms the CRF is the argmax of its unary -log(p), i.e. of the scores:
    # confident_labels' values (test above): 0.9 -> 1, 0.2 -> neutral, 0.02 -> 0
    plain = crf_confident_labels(images, cams, None, _crf_cfg(0.0))
    assert plain.tolist() == confident_labels(cams).tolist() == [[[1, 1, 1, 255, 0, 0, 0, 0]]]
    # with the colour term, pixel 3 takes its white neighbours' class in the alpha = 4 CRF: its unary
    # prefers background by -log 0.2 + log 0.8^4 = 1.61 - 0.89 = 0.72, the 3 white foreground pixels
    # (Q ~ 1, kernel ~ 1) penalise background by ~ 3 x bi_w = 30; the black pixels do not reach it
    # (kernel exp(-255^2 / 2) ~ 0). In the alpha = 32 CRF it is foreground already (0.2 > 0.8^32).
    snapped = crf_confident_labels(images, cams, None, _crf_cfg(10.0))
    assert snapped.tolist() == [[[1, 1, 1, 1, 0, 0, 0, 0]]]
    # the CRF sees the present classes only and their ids come back: the same CAM as class 2 of 2
    # (class 1 absent) gives class id 2 where the single-class map gave 1
    two = torch.cat([torch.rand_like(cams), cams], dim=1)
    present = crf_confident_labels(images, two, torch.tensor([[0.0, 1.0]]), _crf_cfg(10.0))
    assert present.tolist() == [[[2, 2, 2, 2, 0, 0, 0, 0]]]
    # an absent class never wins: class 2's CAM with only class 1 present, whose CAM is 0 -> the
    # background (1 - 0)^alpha = 1 everywhere
    absent = crf_confident_labels(
        images,
        torch.cat([torch.zeros_like(cams), cams], 1),
        torch.tensor([[1.0, 0.0]]),
        _crf_cfg(0.0),
    )
    assert absent.tolist() == [[[0] * 8]]
    with pytest.raises(ValueError, match="at the CAMs' size"):
        crf_confident_labels(images[..., :4], cams, None, _crf_cfg(0.0))
    with pytest.raises(ValueError, match="'power' or 'threshold'"):
        crf_confident_labels(images, cams, None, _crf_cfg(0.0), mode="crf")


def test_pair_affinities_l1():
    # f(0,0) = (0, 0), f(0,1) = (1, 3): L1 = 4; mean over D = 2 channels = 2
    feats = torch.tensor([[[[0.0, 1.0]], [[0.0, 3.0]]]])
    mean = pair_affinities(feats, radius=2, reduction="mean")
    total = pair_affinities(feats, radius=2, reduction="sum")
    assert mean[0, 0, 0, 0].item() == pytest.approx(math.exp(-2), rel=1e-6)
    assert total[0, 0, 0, 0].item() == pytest.approx(math.exp(-4), rel=1e-6)


def test_affinity_loss_hand_value():
    aff = torch.tensor([[[[0.5, 0.25, 0.8]]]], requires_grad=True)
    masks = [torch.zeros(1, 1, 1, 3, dtype=torch.bool) for _ in range(3)]
    masks[0][0, 0, 0, 0] = True  # one background-positive pair with W = 0.5
    masks[1][0, 0, 0, 1] = True  # one foreground-positive pair with W = 0.25
    masks[2][0, 0, 0, 2] = True  # one negative pair with W = 0.8
    out = affinity_loss(aff, AffinityLabels(*masks))
    eps = 1e-5
    bg = -math.log(0.5 + eps) / (1 + eps)  # 0.693127
    fg = -math.log(0.25 + eps) / (1 + eps)  # 1.386254
    neg = -math.log(1 + eps - 0.8) / (1 + eps)  # 1.609388
    assert out["bg_loss"].item() == pytest.approx(bg, rel=1e-6)
    assert out["fg_loss"].item() == pytest.approx(fg, rel=1e-6)
    assert out["neg_loss"].item() == pytest.approx(neg, rel=1e-6)
    # L = bg / 4 + fg / 4 + neg / 2 = 0.17328 + 0.34656 + 0.80469 = 1.32454
    assert out["loss"].item() == pytest.approx(bg / 4 + fg / 4 + neg / 2, rel=1e-6)
    assert [out[k].item() for k in ("bg_count", "fg_count", "neg_count")] == [1, 1, 1]
    out["loss"].backward()
    # positives pull W up (negative gradient), the negative pair pushes it down
    assert aff.grad[0, 0, 0, 0] < 0 and aff.grad[0, 0, 0, 1] < 0 and aff.grad[0, 0, 0, 2] > 0


def test_dense_affinity_structure():
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 1, 3)
    dense = dense_affinity(feats, radius=2, interior_only=False)
    pairs = pair_affinities(feats, radius=2)
    # 1 x 3 grid, radius 2: neighbours at distance 1 only; (0, 2) is 2 apart (not < 2) -> 0
    assert torch.equal(dense, dense.transpose(1, 2))
    assert torch.equal(dense[:, 0, 1], pairs[:, 0, 0, 0]) and torch.equal(
        dense[:, 1, 2], pairs[:, 0, 0, 1]
    )
    assert (dense[:, 0, 2] == 0).all() and (dense.diagonal(dim1=1, dim2=2) == 1).all()
    # interior-only on a 4 x 5 grid, radius 2: only "from" pixels in rows 0-2, columns 1-3 form
    # pairs; the matrix stays symmetric and the corner (3, 4) pairs only with "from" pixels
    big = dense_affinity(torch.randn(1, 3, 4, 5), radius=2, interior_only=True)
    assert torch.equal(big, big.transpose(1, 2))
    assert int((big[0] > 0).sum()) == 20 + 2 * int(pair_validity((4, 5), 2, True).sum())


def test_random_walk_identity_and_two_pixel_chain():
    torch.manual_seed(0)
    scores = torch.rand(2, 3, 2, 3)
    eye = torch.eye(6).expand(2, 6, 6)
    # T = D^-1 I^beta = I: the scores do not move, for any beta and t
    assert torch.equal(random_walk(scores, eye, beta=8, num_iters=256), scores)
    # two pixels, A = [[1, a], [a, 1]], beta = 1: T = A / (1 + a); eigenvalues 1 and
    # lambda = (1 - a) / (1 + a). T^t = 0.5 [[1 + l^t, 1 - l^t], [1 - l^t, 1 + l^t]].
    # a = 1/3 -> lambda = 0.5; t = 2 -> diagonal 0.625, off-diagonal 0.375
    a = 1.0 / 3.0
    affinity = torch.tensor([[[1.0, a], [a, 1.0]]])
    out = random_walk(torch.tensor([[[[1.0, 0.0]]]]), affinity, beta=1, num_iters=2)
    assert out.flatten().tolist() == pytest.approx([0.625, 0.375], rel=1e-6)
    # beta = 2: a^2 = 1/9 -> lambda = (8/9) / (10/9) = 0.8; t = 1 -> 0.5 (1 + 0.8) = 0.9
    out = random_walk(torch.tensor([[[[1.0, 0.0]]]]), affinity, beta=2, num_iters=1)
    assert out.flatten().tolist() == pytest.approx([0.9, 0.1], rel=1e-6)


def test_random_walk_keeps_constant_maps():
    # rows of T sum to 1, so a constant map (e.g. a threshold background) stays constant
    torch.manual_seed(0)
    feats = torch.randn(1, 4, 5, 6)
    scores = torch.full((1, 2, 5, 6), 0.3)
    out = random_walk(scores, dense_affinity(feats, radius=3, interior_only=False), 8, 64)
    assert torch.allclose(out, scores, atol=1e-6)
    with pytest.raises(ValueError, match="affinity must be"):
        random_walk(scores, torch.eye(5)[None], 8, 4)


def test_affinity_net_shapes_and_a_training_step():
    torch.manual_seed(0)
    net = AffinityNet("resnet18", base_width=8, output_stride=8)
    images = torch.randn(2, 3, 65, 47)
    feats = net(images)
    # the grid is layer2's (stride 8): 65 -> 9, 47 -> 6 (see the trunk shape test)
    assert feats.shape == (2, 448, 9, 6) and net.feature_stride == 8
    labels = torch.randint(0, 3, (2, 9, 6))
    labels[:, 0] = 255
    aff_labels = affinity_labels(labels, radius=5, interior_only=False)
    loss = affinity_loss(pair_affinities(feats), aff_labels)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and net.head.mix.weight.grad.abs().sum() > 0
    assert downsample_labels(torch.tensor([[[1, 2], [3, 4]]]), (1, 1)).tolist() == [[[1]]]


def test_random_walk_products_and_squaring_agree():
    # t K <= bit_length(t) n selects t products, otherwise matrix_power: the same T^t v (float rounding)
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(1, 3, 4, 5, generator=g)
    affinity = dense_affinity(feats, radius=3, interior_only=False)  # n = 20
    few = torch.rand(1, 2, 4, 5, generator=g)  # 16 x 2 = 32 <= 5 x 20: products
    many = torch.rand(1, 30, 4, 5, generator=g)  # 16 x 30 = 480 > 100: squaring
    transition = affinity[0].pow(8)
    transition = transition / transition.sum(dim=1, keepdim=True)
    power = torch.linalg.matrix_power(transition.double(), 16)
    for scores in (few, many):
        expected = (power @ scores[0].reshape(scores.shape[1], -1).t().double()).t()
        walked = random_walk(scores, affinity, beta=8, num_iters=16)
        assert torch.allclose(walked[0].reshape(scores.shape[1], -1).double(), expected, atol=1e-5)
