"""SEAM (weclip/baselines/cam_methods/seam.py): the affine transform, PCM and the SEAM losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from weclip.baselines.cam_methods.seam import (
    AffineTransform,
    PCMFeatures,
    ecr_loss,
    er_loss,
    max_norm,
    max_onehot,
    pcm_affinity,
    pcm_input,
    pcm_refine,
    rvmin_loss,
    seam_classification_loss,
    seam_losses,
    with_background,
)


def _smooth(h: int, w: int, period: float = 32.0) -> torch.Tensor:
    """f(r, c) = sin(2πc/P)·cos(2πr/P) + 0.5·cos(2πc/P) on an (h, w) grid, (1, 2, h, w)."""
    r = torch.arange(h, dtype=torch.float64)[:, None]
    c = torch.arange(w, dtype=torch.float64)[None, :]
    k = 2 * math.pi / period
    a = torch.sin(k * c) * torch.cos(k * r)
    b = 0.5 * torch.cos(k * c) + 0 * r
    return torch.stack([a, b])[None]


def _bilinear_bound(spacing: float, period: float = 32.0, amplitude: float = 1.0) -> float:
    """Tensor-product linear interpolation error of a C² function on a grid of this spacing:
    |e| ≤ Δ²/8 · (max|f_rr| + max|f_cc|); for amplitude·sin/cos of period P, each second
    derivative is ≤ amplitude·(2π/P)²."""
    second = amplitude * (2 * math.pi / period) ** 2
    return spacing**2 / 8 * 2 * second


# ---------------------------------------------------------------------------------------------
# AffineTransform
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw", [dict(hflip=True), dict(rot90=1), dict(rot90=2), dict(rot90=3), dict(hflip=True, rot90=1)]
)
def test_flip_and_quarter_turns_invert_exactly(kw):
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    t = AffineTransform(**kw)
    y = t.apply(x)
    assert tuple(y.shape[-2:]) == t.output_size((5, 7))
    assert torch.equal(t.invert(y), x)  # pure index permutations: bit-exact
    assert torch.equal(t.invert(y, size=(5, 7)), x)


def test_quarter_turn_direction_matches_torch_rot90_and_small_rotation():
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(AffineTransform(rot90=1).apply(x), torch.rot90(x, 1, dims=(-2, -1)))
    # A 90° "small" rotation on a square map with align_corners=True maps pixel centres onto
    # pixel centres, so it equals rot90 up to cos(90°) ≈ 6e-17 in the sampling positions: the
    # rotation has the same (counter-clockwise) sense as the quarter turns.
    rotated = AffineTransform(angle=90.0).apply(x)
    assert torch.allclose(rotated, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)


def test_scale_sizes_and_inverse_within_interpolation_error():
    x = _smooth(64, 64)
    for scale, out in ((0.5, 32), (0.3, 19)):
        t = AffineTransform(scale=scale)
        y = t.apply(x)
        assert tuple(y.shape[-2:]) == (out, out)  # floor(64·s), as F.interpolate(scale_factor)
        back = t.invert(y, size=(64, 64))
        assert back.shape == x.shape
        # apply samples f between grid points (spacing 1) and invert interpolates the small grid
        # (spacing (64 − 1)/(out − 1) original pixels); the first error passes through the
        # convex interpolation weights unchanged in size. Amplitude ≤ 1 per channel.
        bound = _bilinear_bound(1.0) + _bilinear_bound(63 / (out - 1))
        err = float((back - x).abs().max())
        assert err <= bound, (scale, err, bound)
    with pytest.raises(ValueError, match="pass size"):
        AffineTransform(scale=0.5).invert(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="do not come from"):
        AffineTransform(scale=0.5).invert(torch.zeros(1, 1, 31, 32), size=(64, 64))


def test_fixed_size_transform_and_non_square_inverse():
    # P2P's view: a fixed 16 × 16 resize of a 40 × 24 map, and back
    x = _smooth(40, 24)
    t = AffineTransform(size=(16, 16))
    y = t.apply(x)
    assert tuple(y.shape[-2:]) == (16, 16)
    back = t.invert(y, size=(40, 24))
    bound = _bilinear_bound(1.0) + _bilinear_bound(39 / 15)  # larger of the two spacings
    assert float((back - x).abs().max()) <= bound


def test_small_rotation_inverse_within_interpolation_error_inside_the_disc():
    # Both passes resample at non-grid points of a unit grid: error ≤ 2 · bound(1). Only pixels
    # within radius (n − 1)/2 − 1 of the centre are compared: their samples stay inside the map in
    # both passes (corners of the rotated map are zeros).
    n = 48
    x = _smooth(n, n)
    t = AffineTransform(angle=10.0)
    back = t.invert(t.apply(x))
    r = torch.arange(n, dtype=torch.float64)
    c0 = (n - 1) / 2
    inside = ((r[:, None] - c0) ** 2 + (r[None, :] - c0) ** 2).sqrt() <= c0 - 1
    err = float((back - x).abs()[..., inside].max())
    assert err <= 2 * _bilinear_bound(1.0), err
    # the valid mask is 1 in the middle and < 1 in the corners
    mask = t.valid_mask((n, n))
    assert float(mask[0, 0, n // 2, n // 2]) == pytest.approx(1.0)
    assert float(mask[0, 0, 0, 0]) < 1.0


# ---------------------------------------------------------------------------------------------
# normalisation, PCM
# ---------------------------------------------------------------------------------------------


def test_max_norm_hand_worked():
    # [0, 1, 3]: min 0, max 3 → ReLU(x − 1e-5)/(3 + 1e-5)
    x = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 1, 3)
    expected = torch.tensor([0.0, (1 - 1e-5) / (3 + 1e-5), (3 - 1e-5) / (3 + 1e-5)])
    assert torch.allclose(max_norm(x).flatten(), expected)


def test_with_background_and_max_onehot():
    # class 0 = [0.2, 0.9] and class 1 = [0.7, 0.1] over pixels 0, 1: pixel 0 is (0.2, 0.7)
    fg = torch.tensor([[0.2, 0.9], [0.7, 0.1]]).reshape(1, 2, 1, 2)
    full = with_background(fg)
    # bg = 1 − max: pixel 0 → 1 − 0.7 = 0.3, pixel 1 → 1 − 0.9 = 0.1
    assert torch.allclose(full[0, 0].flatten(), torch.tensor([0.3, 0.1]))
    onehot = max_onehot(full)
    # keep only the fg maximum: pixel 0 keeps class 1 (0.7), pixel 1 keeps class 0 (0.9)
    assert torch.allclose(onehot[0, 1].flatten(), torch.tensor([0.0, 0.9]))
    assert torch.allclose(onehot[0, 2].flatten(), torch.tensor([0.7, 0.0]))
    assert torch.equal(onehot[:, 0], full[:, 0])


def test_pcm_input_hand_worked():
    # K = 2 on a 1 × 2 map: fg0 = [2, 1], fg1 = [0, 4]; per-channel max 2 and 4:
    # fg0 → [(2 − 1e-5)/(2 + 1e-5), (1 − 1e-5)/(2 + 1e-5)] ≈ [1, 0.5]; fg1 → [0, ≈1];
    # bg = 1 − max fg ≈ [0, 0]; pixel 1 keeps only fg1 (0.5 < 1), pixel 0 only fg0.
    cams = torch.tensor([[2.0, 1.0], [0.0, 4.0]]).view(1, 2, 1, 2).requires_grad_(True)
    out = pcm_input(cams)
    assert not out.requires_grad
    expected = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).view(1, 3, 1, 2)
    assert torch.allclose(out, expected, atol=2e-5)
    # label masking (option): class 1 absent → pixel 1 keeps fg0 = 0.5, bg = 0.5
    masked = pcm_input(cams, cls_labels=torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(masked[0, :, 0, 1], torch.tensor([0.5, 0.5, 0.0]), atol=2e-5)


def test_pcm_with_identity_affinity_returns_the_cam():
    cams = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    eye = torch.eye(15).expand(2, 15, 15)
    assert torch.equal(pcm_refine(cams, eye), cams)  # each output column sums one term · 1


def test_pcm_affinity_hand_worked():
    # two pixels with features (1, 0) and (1, 1)/√2: cos = 1/√2 = c. ReLU keeps it; columns
    # [1, c] sum to 1 + c → A = [[1, c], [c, 1]] / (1 + c) (eps 1e-5 aside).
    c = 1 / math.sqrt(2)
    f = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    aff = pcm_affinity(f)
    expected = torch.tensor([[1.0, c], [c, 1.0]]) / (1 + c)
    assert torch.allclose(aff[0], expected, atol=1e-4)
    # a CAM that is 1 at pixel 0 only: revised = row 0 of A = [0.5858, 0.4142]
    cam = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert torch.allclose(pcm_refine(cam, aff).flatten(), expected[0], atol=1e-4)
    # opposite features: cos = −1 → ReLU 0 → identity affinity (up to 1/(1 + 1e-5))
    f = torch.tensor([[1.0, -1.0]]).view(1, 1, 1, 2)
    assert torch.allclose(pcm_affinity(f)[0], torch.eye(2), atol=1e-4)


def test_pcm_features_shapes_and_detached_stages():
    torch.manual_seed(0)
    head = PCMFeatures(in_channels=(8, 16), hidden=(4, 6), out_channels=10)
    image = torch.randn(2, 3, 32, 32)
    s1 = torch.randn(2, 8, 8, 8, requires_grad=True)
    s2 = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = head(image, [s1, s2], (8, 8))
    assert out.shape == (2, 10, 8, 8)
    out.sum().backward()
    assert s1.grad is None and s2.grad is None  # SEAM detaches the backbone stages
    assert head.fuse.weight.grad is not None


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def test_rvmin_and_classification_losses_hand_worked():
    # K = 1 on 2 × 2: fg values 1, 2, 3, 4 → h·w // 4 = 1 smallest = 1 → loss 1 / (1 · 1) = 1
    rv = torch.zeros(1, 2, 2, 2)
    rv[0, 1] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert float(rvmin_loss(rv, torch.ones(1, 1))) == pytest.approx(1.0)
    assert float(rvmin_loss(rv, torch.zeros(1, 1))) == 0.0  # absent class masked to 0
    # zero logits: each multi-label soft-margin loss is log 2; their mean too
    z = torch.zeros(3, 4)
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]])
    assert float(seam_classification_loss(z, z, labels)) == pytest.approx(math.log(2))


def test_ecr_top_ratio_hand_worked():
    # K = 1, 1 × 5 grid → 2 · 5 = 10 entries, top 20 % → k = 2: the two largest |differences|
    target = torch.zeros(1, 2, 1, 5)
    revised = torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.0], [0.0, 0.5, 0.0, 0.0, 0.7]]).view(1, 2, 1, 5)
    got = ecr_loss(target, revised, target_mode="plain")
    assert float(got) == pytest.approx((0.9 + 0.7) / 2)
    # ratio 1: plain L1 mean = (0.1 + 0.2 + 0.9 + 0.3 + 0.5 + 0.7) / 10 = 0.27
    assert float(ecr_loss(target, revised, target_mode="plain", top_ratio=1.0)) == pytest.approx(
        0.27
    )


def _equivariant_cam(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A per-pixel CAM function (ReLU of a 1×1 conv): it commutes with pixel permutations."""
    return F.relu(F.conv2d(x, weight))


def test_er_is_zero_for_an_equivariant_cam_function():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 9, generator=g)
    weight = torch.randn(4, 3, 1, 1, generator=g)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]])
    t = AffineTransform(hflip=True, rot90=1)
    cam_o = _equivariant_cam(x, weight)
    cam_t = _equivariant_cam(t.apply(x), weight)
    lab = labels[:, :, None, None]
    a = t.apply(max_norm(cam_o)) * lab
    b = max_norm(cam_t) * lab
    assert float(er_loss(a, b)) == 0.0  # max_norm's min/max do not see the permutation
    # through seam_losses (revised CAMs: any K + 1 maps, here the CAM with a background)
    rv_o, rv_t = with_background(cam_o), with_background(cam_t)
    out = seam_losses(cam_o, cam_t, rv_o, rv_t, labels, t)
    assert float(out["er"]) == 0.0

    # a position-dependent CAM function (times a ramp over its own columns) is not equivariant
    def ramped(cam):
        return cam * torch.linspace(0.0, 1.0, cam.shape[-1]).view(1, 1, 1, -1)

    out = seam_losses(ramped(cam_o), ramped(cam_t), rv_o, rv_t, labels, t)
    assert float(out["er"]) > 1e-3


def test_seam_losses_scale_view_runs_and_backpropagates():
    torch.manual_seed(0)
    t = AffineTransform(scale=0.3)
    h = 40
    ht = t.output_size((h, h))[0]  # floor(40 · 0.3) = 12
    cam_o = torch.rand(2, 3, h, h, requires_grad=True)
    cam_t = torch.rand(2, 3, ht, ht, requires_grad=True)
    rv_o = torch.rand(2, 4, h, h, requires_grad=True)
    rv_t = torch.rand(2, 4, ht, ht, requires_grad=True)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    out = seam_losses(cam_o, cam_t, rv_o, rv_t, labels, t)
    assert set(out) == {"er", "ecr", "rvmin"}
    total = out["er"] + out["ecr"] + out["rvmin"]
    assert torch.isfinite(total)
    total.backward()
    for p in (cam_o, cam_t, rv_o, rv_t):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    with pytest.raises(ValueError, match="transformed size"):
        seam_losses(cam_o, cam_o, rv_o, rv_o, labels, t)
