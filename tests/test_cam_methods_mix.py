"""Mixup-CAM, Manifold Mixup and FMix (weclip/baselines/cam_methods/mix.py): hand-worked values."""

import math

import pytest
import torch

from weclip.baselines.cam_methods.mix import (
    binarise_mask,
    concentration_loss,
    entropy_loss,
    fmix,
    fourier_low_freq_image,
    manifold_mixup,
    mix_labels,
    mixup,
    pixel_class_probs,
    sample_beta,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# λ and mixup
# ---------------------------------------------------------------------------------------------


def test_sample_beta_alpha_one_is_the_uniform_draw_itself():
    # Beta(1, 1) is uniform: its inverse CDF is the identity, so λ equals the float64 uniform
    # draw of an identically seeded generator (up to betaincinv's rounding, ~1e-15).
    lam = sample_beta(1.0, _gen(3))
    u = float(torch.rand((), generator=_gen(3), dtype=torch.float64))
    assert lam == pytest.approx(u, abs=1e-12)
    assert sample_beta(0.0, _gen(3)) == 1.0  # alpha <= 0: no mixing


def test_sample_beta_moments():
    # Beta(2, 2): mean 1/2, variance αβ/((α+β)²(α+β+1)) = 4/(16·5) = 0.05. Over n = 2000 draws the
    # standard error of the mean is sqrt(0.05/2000) = 0.005; 5 σ = 0.025. The sample variance's
    # standard error is about sqrt((μ4 − σ⁴)/n) < 0.002 (μ4 of Beta(2,2) = 3/560), 5 σ = 0.01.
    g = _gen(0)
    draws = torch.tensor([sample_beta(2.0, g) for _ in range(2000)])
    assert draws.min() >= 0 and draws.max() <= 1
    assert float(draws.mean()) == pytest.approx(0.5, abs=0.025)
    assert float(draws.var()) == pytest.approx(0.05, abs=0.01)


def test_sample_beta_needs_a_generator():
    with pytest.raises(ValueError, match="torch.Generator"):
        sample_beta(1.0, None)


def test_mixup_lambda_one_returns_the_first_input_exactly():
    x = torch.randn(4, 3, 5, 6, generator=_gen(1))
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    out = mixup(x, y, generator=_gen(2), lam=1.0)
    # 1.0·x + 0.0·x[index] = x bit for bit (finite inputs)
    assert torch.equal(out.inputs, x)
    assert torch.equal(out.labels, y)


def test_mix_labels_hand_worked():
    # y0 = [1, 0], y1 = [0, 1], partner of 0 is 1 and of 1 is 0, λ = 0.25:
    # ỹ0 = 0.25·[1, 0] + 0.75·[0, 1] = [0.25, 0.75]; ỹ1 = 0.25·[0, 1] + 0.75·[1, 0] = [0.75, 0.25]
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed = mix_labels(y, torch.tensor([1, 0]), 0.25)
    assert torch.allclose(mixed, torch.tensor([[0.25, 0.75], [0.75, 0.25]]))


def test_mixup_mixes_images_and_labels_with_the_same_partner():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()  # image b is all b
    y = torch.eye(4)
    out = mixup(x, y, generator=_gen(5), lam=0.3)
    assert sorted(out.index.tolist()) == [0, 1, 2, 3]
    for b in range(4):
        j = int(out.index[b])
        # pixel value 0.3·b + 0.7·j; label 0.3 on class b plus 0.7 on class j
        assert torch.allclose(out.inputs[b], torch.full((1, 2, 2), 0.3 * b + 0.7 * j))
        expected = 0.3 * y[b] + 0.7 * y[j]
        assert torch.allclose(out.labels[b], expected)
    assert out.lam == 0.3


def test_mixup_is_a_function_of_the_generator_state():
    x = torch.randn(6, 3, 4, 4, generator=_gen(0))
    y = (torch.rand(6, 5, generator=_gen(1)) > 0.5).float()
    a, b = mixup(x, y, generator=_gen(9)), mixup(x, y, generator=_gen(9))
    assert a.lam == b.lam and torch.equal(a.index, b.index) and torch.equal(a.inputs, b.inputs)


# ---------------------------------------------------------------------------------------------
# Manifold Mixup
# ---------------------------------------------------------------------------------------------


def test_manifold_mixup_mixes_at_the_requested_layer():
    # x = [[1], [3]], stages = [square, +10], λ = 0.5, partner = the other sample (B = 2 with a
    # non-identity permutation) or itself (identity):
    # layer 0: (0.5·x_b + 0.5·x_j)² + 10;  layer 1: 0.5·x_b² + 0.5·x_j² + 10;
    # layer 2: mixes after both stages: 0.5·(x_b² + 10) + 0.5·(x_j² + 10), equal to layer 1 here.
    x = torch.tensor([[1.0], [3.0]])
    y = torch.eye(2)
    stages = [lambda t: t**2, lambda t: t + 10.0]
    for layer, fn in (
        (0, lambda a, b: ((a + b) / 2) ** 2 + 10),
        (1, lambda a, b: (a**2 + b**2) / 2 + 10),
        (2, lambda a, b: (a**2 + b**2) / 2 + 10),
    ):
        out = manifold_mixup(stages, x, y, generator=_gen(0), layer=layer, lam=0.5)
        assert out.layer == layer
        for b in range(2):
            j = int(out.index[b])
            assert float(out.inputs[b]) == pytest.approx(fn(float(x[b]), float(x[j])))
    # with the other partner fixed by a seed whose permutation swaps: (1+3)/2 = 2 → 2² + 10 = 14
    for seed in range(20):
        out = manifold_mixup(stages, x, y, generator=_gen(seed), layer=0, lam=0.5)
        if out.index.tolist() == [1, 0]:
            assert out.inputs.flatten().tolist() == [14.0, 14.0]
            assert torch.allclose(out.labels, torch.full((2, 2), 0.5))
            break
    else:
        pytest.fail("no seed in 0..19 gave the swapping permutation")


def test_manifold_mixup_draws_the_layer_from_the_list():
    x = torch.randn(3, 2, generator=_gen(0))
    y = torch.eye(3)
    stages = [torch.tanh, torch.sin, torch.cos]
    seen = {manifold_mixup(stages, x, y, generator=_gen(s), layers=(0, 2)).layer for s in range(40)}
    assert seen == {0, 2}  # only listed layers, both of them over 40 draws (P(miss) = 2·2⁻⁴⁰)
    with pytest.raises(ValueError, match="outside"):
        manifold_mixup(stages, x, y, generator=_gen(0), layer=4)


# ---------------------------------------------------------------------------------------------
# FMix
# ---------------------------------------------------------------------------------------------


def test_fourier_image_is_in_unit_range_and_low_frequency():
    # power ∝ 1/f^(2δ) with δ = 3: the spectrum below f = 0.1 cycles/pixel must hold most of the
    # power. In expectation that share is > 99 % on a 32 × 32 grid (the 1/f⁶ tail beyond 0.1 is
    # tiny); the test asks for > 90 % in each of 5 seeds.
    for seed in range(5):
        grey = fourier_low_freq_image((32, 32), 3.0, _gen(seed))
        assert grey.shape == (32, 32)
        assert float(grey.min()) == 0.0 and float(grey.max()) == pytest.approx(1.0)
        power = torch.fft.fft2(grey - grey.mean()).abs() ** 2
        fy = torch.fft.fftfreq(32)[:, None]
        fx = torch.fft.fftfreq(32)[None, :]
        low = (fx**2 + fy**2).sqrt() < 0.1
        assert float(power[low].sum() / power.sum()) > 0.9


@pytest.mark.parametrize("size", [(32, 32), (17, 23)])
def test_fmix_mask_area_equals_lambda_within_one_pixel(size):
    n = size[0] * size[1]
    for seed in range(10):
        g = _gen(seed)
        x = torch.randn(3, 2, *size, generator=_gen(100 + seed))
        y = torch.eye(3)
        lam = sample_beta(1.0, _gen(seed))  # fmix draws λ first from the same stream
        out = fmix(x, y, generator=g)
        area = float(out.mask.mean())
        assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
        assert abs(area - lam) <= 1.0 / n + 1e-9
        # the mask holds an integer count of ones; float32 sums of ≤ 2²⁴ ones are exact
        assert float(out.mask.sum()) in (math.floor(lam * n), math.ceil(lam * n))
        # labels mixed by the realised area, images by the mask
        j = out.index
        assert out.lam == pytest.approx(area)
        assert torch.allclose(out.labels, area * y + (1 - area) * y[j])
        assert torch.allclose(out.inputs, out.mask * x + (1 - out.mask) * x[j])


def test_fmix_label_weight_lambda_uses_the_sampled_lambda():
    # λ = 0.3 on a 10 × 10 mask: 0.3·100 = 30.000000000000004 in floating point, so the realised
    # area is floor → 30/100 = 0.30 or ceil → 31/100 = 0.31; "lambda" mixes labels by 0.3 anyway.
    x = torch.randn(2, 1, 10, 10, generator=_gen(0))
    y = torch.eye(2)
    out_area = fmix(x, y, generator=_gen(4), lam=0.3)
    out_lam = fmix(x, y, generator=_gen(4), lam=0.3, label_weight="lambda")
    assert float(out_area.mask.sum()) in (30.0, 31.0)
    assert out_lam.lam == 0.3
    assert out_area.lam == pytest.approx(float(out_area.mask.sum()) / 100)


def test_binarise_mask_soft_band_keeps_the_area():
    # A linear ramp 1 → 0 over the 2·s band sums to s, so the mean stays num / N.
    grey = torch.rand(20, 20, generator=_gen(0))
    mask = binarise_mask(grey, 0.4, _gen(1), max_soft=0.1)
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    assert ((mask > 0) & (mask < 1)).any()  # a soft band exists
    assert abs(float(mask.mean()) - 0.4) <= 1.0 / 400 + 1e-6
    # the band sits between the brightest (1) and darkest (0) pixels
    order = torch.argsort(grey.flatten(), descending=True)
    assert float(mask.flatten()[order[0]]) == 1.0 and float(mask.flatten()[order[-1]]) == 0.0


# ---------------------------------------------------------------------------------------------
# Mixup-CAM's losses
# ---------------------------------------------------------------------------------------------


def test_entropy_of_one_hot_is_zero_and_of_uniform_is_log_k():
    one_hot = torch.zeros(2, 4, 3, 3)
    one_hot[:, 1] = 1.0
    assert float(entropy_loss(one_hot)) == 0.0  # xlogy(0, 0) = 0 and 1·log 1 = 0
    uniform = torch.full((2, 4, 3, 3), 0.25)
    assert float(entropy_loss(uniform)) == pytest.approx(math.log(4), abs=1e-6)
    # half the pixels one-hot, half split 50/50 over two classes: mean(0, log 2) = log(2)/2
    mixed = one_hot.clone()
    mixed[:, :, :, :1] = 0.0
    mixed[:, 0, :, :1] = 0.5
    mixed[:, 2, :, :1] = 0.5
    # 3 of 9 pixels per image have entropy log 2 → mean = log(2)/3
    assert float(entropy_loss(mixed)) == pytest.approx(math.log(2) / 3, abs=1e-6)


def test_pixel_class_probs_softmax_bg_and_label_mask():
    # scores [0, ln 3] → softmax [1/4, 3/4]
    cams = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    p = pixel_class_probs(cams)
    assert torch.allclose(p.flatten(), torch.tensor([0.25, 0.75]))
    # bg score ln 3 prepended: [ln 3, 0, ln 3] → [3/7, 1/7, 3/7]
    p = pixel_class_probs(cams, bg_score=math.log(3.0))
    assert torch.allclose(p.flatten(), torch.tensor([3 / 7, 1 / 7, 3 / 7]))
    # class 1 absent: all mass on class 0
    p = pixel_class_probs(cams, cls_labels=torch.tensor([[0.6, 0.0]]))
    assert torch.allclose(p.flatten(), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="no present class"):
        pixel_class_probs(cams, cls_labels=torch.zeros(1, 2))


def test_concentration_loss_hand_worked():
    # 1 × 4 grid, x coordinates 2·j/4 − 1 = [−1, −0.5, 0, 0.5]. Class 0 puts half its mass on
    # columns 0 and 2 (x = −1 and 0): centroid −0.5, variance ½·0.5² + ½·0.5² = 0.25. Class 1 is
    # a single pixel: variance 0. eps = 0.
    probs = torch.zeros(2, 2, 1, 4)
    probs[0, 0, 0, 0] = probs[0, 0, 0, 2] = 0.5
    probs[0, 1, 0, 3] = 1.0
    probs[1, 1, 0, 1] = 1.0  # image 1: class 1 only, a single pixel
    labels = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # image 0: 0.25 + 0 ; image 1: class 0 absent (excluded), class 1 → 0 ; batch mean 0.125
    assert float(concentration_loss(probs, labels, eps=0.0)) == pytest.approx(0.125)
    # mixed labels count a class as present when > 0
    assert float(concentration_loss(probs, labels * 0.3, eps=0.0)) == pytest.approx(0.125)
    # bg channel in front: class_offset=1 skips it
    with_bg = torch.cat([torch.zeros(2, 1, 1, 4), probs], dim=1)
    assert float(concentration_loss(with_bg, labels, eps=0.0, class_offset=1)) == pytest.approx(
        0.125
    )


def test_concentration_loss_has_gradients_and_prefers_compact_maps():
    torch.manual_seed(0)
    cams = torch.randn(2, 3, 8, 8, requires_grad=True)
    probs = pixel_class_probs(cams, bg_score=0.0)
    loss = concentration_loss(probs, torch.ones(2, 3), class_offset=1)
    loss.backward()
    assert cams.grad is not None and torch.isfinite(cams.grad).all()
    # a spread map has a larger variance than a compact one (eps = 1e-3 default)
    spread = torch.full((1, 1, 8, 8), 1.0 / 64)
    compact = torch.zeros(1, 1, 8, 8)
    compact[0, 0, 3:5, 3:5] = 0.25
    assert float(concentration_loss(compact)) < float(concentration_loss(spread))
