"""Losses (spec §7): balanced CE, affinity labels, affinity loss, the weighted total."""

import math

import pytest
import torch
import torch.nn.functional as F

from weclip.config import load_config
from weclip.losses import (
    affinity_labels,
    affinity_loss,
    radius_window,
    seg_loss,
    total_loss,
    upsample_bilinear,
)


def authors_seg_loss(logits, labels, ignore_index=255):
    """The authors' formula (spec §7.1) written the direct way, as a reference for tests."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    bg, fg = labels.clone(), labels.clone()
    bg[labels != 0] = ignore_index
    fg[labels == 0] = ignore_index
    ce_bg = F.cross_entropy(logits, bg, ignore_index=ignore_index)
    ce_fg = F.cross_entropy(logits, fg, ignore_index=ignore_index)
    return 0.5 * (ce_bg + ce_fg)


# ---------------------------------------------------------------------------------------------
# seg_loss


def test_seg_loss_hand_worked():
    # 1x3 image, C = 2. pixel 0: logits (0, 0), label 0 -> CE = ln 2
    # pixel 1: logits (0, ln 3), label 1 -> p = 3/4, CE = ln(4/3); pixel 2: ignored
    logits = torch.tensor([[0.0, 0.0, 5.0], [0.0, math.log(3.0), -5.0]]).reshape(1, 2, 1, 3)
    labels = torch.tensor([[[0, 1, 255]]])
    expected = 0.5 * (math.log(2.0) + math.log(4.0 / 3.0))  # = 0.490415
    assert float(seg_loss(logits, labels)) == pytest.approx(expected, abs=1e-6)


def test_seg_loss_balances_background_and_foreground():
    # 3 bg pixels with CE ln 2 each, 1 fg pixel with CE ln(4/3):
    # balanced = 0.5 * (ln 2 + ln 4/3) = 0.490415,
    # not the pixel mean (3 ln 2 + ln 4/3) / 4 = 0.591781
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 1, 1] = math.log(3.0)
    labels = torch.tensor([[[0, 0], [0, 1]]])
    assert float(seg_loss(logits, labels)) == pytest.approx(0.490415, abs=1e-6)


def test_seg_loss_equals_the_authors_formula_with_upsampling():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 5, generator=g)
    labels = torch.randint(0, 4, (2, 20, 20), generator=g)
    labels[0, :3] = 255
    torch.testing.assert_close(seg_loss(logits, labels), authors_seg_loss(logits, labels))


@pytest.mark.parametrize("fill", [0, 2, 255])
def test_seg_loss_is_finite_on_single_kind_batches(fill):
    # all-bg (fill 0), all-fg (fill 2), all-ignore (fill 255): the authors' code gives NaN for
    # the empty term (spec §12.6); here that term is 0.
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 16, 16), fill, dtype=torch.long)
    loss = seg_loss(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    up = F.interpolate(logits.detach(), size=(16, 16), mode="bilinear", align_corners=False)
    if fill == 255:
        assert float(loss.detach()) == 0.0 and float(logits.grad.abs().max()) == 0.0
    else:
        # the non-empty term is a plain mean CE; the empty one contributes 0
        torch.testing.assert_close(loss.detach(), 0.5 * F.cross_entropy(up, labels))
        assert float(logits.grad.abs().max()) > 0
    if fill != 255:
        assert torch.isnan(authors_seg_loss(logits.detach(), labels))  # the documented difference


def test_seg_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same B"):
        seg_loss(torch.zeros(2, 3, 4, 4), torch.zeros(1, 16, 16, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# affinity labels


def window_sizes(size: int, radius: int):
    """|{j : |i - j| <= radius, 0 <= j < size}| for each i."""
    return [min(size - 1, i + radius) - max(0, i - radius) + 1 for i in range(size)]


def test_affinity_labels_hand_worked_4x4_radius_1():
    # 4x4 labels on a 4x4 grid (nearest = identity); patches row-major, p = 4 * row + col
    labels = torch.tensor(
        [
            [0, 0, 1, 1],
            [0, 0, 1, 1],
            [2, 2, 255, 1],
            [2, 2, 1, 1],
        ]
    )[None]
    y = affinity_labels(labels, (4, 4), radius=1)
    assert y.shape == (1, 16, 16) and y.dtype == torch.uint8
    y = y[0]
    assert y[0, 0] == 1 and y[0, 1] == 1 and y[0, 5] == 1  # same label 0, within the window
    assert y[1, 2] == 0 and y[5, 8] == 0  # 0 vs 1 (adjacent), 0 vs 2 (diagonal)
    assert y[0, 2] == 255 and y[0, 8] == 255  # Chebyshev distance 2 > radius 1
    assert bool((y[10] == 255).all()) and bool((y[:, 10] == 255).all())  # ignored patch (2, 2)
    assert torch.equal(y, y.T)
    # row 6 = patch (1, 2), label 1; window rows 0..2, cols 1..3 minus the ignored (2, 2):
    # patches 1, 2, 3, 5, 6, 7, 9, 11 with labels 0, 1, 1, 0, 1, 1, 2, 1
    expected6 = torch.full((16,), 255, dtype=torch.uint8)
    expected6[[1, 5, 9]] = 0
    expected6[[2, 3, 6, 7, 11]] = 1
    assert torch.equal(y[6], expected6)
    # non-ignored pairs = window pairs not touching patch 10:
    # (sum of window sizes 2+3+3+2 = 10)^2 = 100, minus 2 * |window(10)| - 1 = 2 * 9 - 1 = 17 -> 83
    assert int((y != 255).sum()) == 83


def test_affinity_labels_take_the_top_left_pixel_of_each_patch():
    # 320 -> 20: cell (i, j) reads pixel (16 i, 16 j) (PyTorch 'nearest')
    g = torch.Generator().manual_seed(0)
    cell = torch.randint(0, 3, (20, 20), generator=g)
    labels = torch.randint(3, 21, (1, 320, 320), generator=g)  # never equal to a cell value
    labels[0, ::16, ::16] = cell
    y = affinity_labels(labels, (20, 20), radius=8)[0]
    flat = cell.flatten()
    expected = (flat[:, None] == flat[None, :]).to(torch.uint8)
    window = radius_window((20, 20), 8)
    assert torch.equal(y[window], expected[window])
    assert bool((y[~window] == 255).all())


def test_affinity_label_pair_count_is_the_window_sum():
    # App. C.8: non-ignored pairs per image = sum_p |window(p)| = (sum_i c_i)^2 with
    # c_i = window size along one axis: 20x20, radius 8 -> c = 9..16, 17 x 4, 16..9 -> 268;
    # 268^2 = 71,824 per image
    assert sum(window_sizes(20, 8)) == 268
    labels = torch.randint(0, 21, (3, 320, 320), generator=torch.Generator().manual_seed(1))
    y = affinity_labels(labels, (20, 20), radius=8)
    per_image = (y != 255).flatten(1).sum(1)
    assert per_image.tolist() == [71_824] * 3


def test_affinity_labels_on_a_non_square_grid():
    # grid 3x5 from a 48x80 label map, radius 1: sum_p |window(p)| = (2+3+2) * (2+3+3+3+2) = 91
    labels = torch.zeros(2, 48, 80, dtype=torch.long)
    y = affinity_labels(labels, (3, 5), radius=1)
    assert y.shape == (2, 15, 15)
    assert int((y[0] == 1).sum()) == 7 * 13 == 91 and int((y == 0).sum()) == 0


# ---------------------------------------------------------------------------------------------
# affinity loss


def test_affinity_loss_hand_worked():
    # Y = [[1, 0], [0, 255]], A = [[0.9, 0.2], [0.2, 0.9]]
    # N+ = 1 + 1 = 2, N- = 2 + 1 = 3
    # L = 0.5 * (1 - 0.9) / 2 + 0.5 * (0.2 + 0.2) / 3 = 0.025 + 0.0666667 = 0.0916667
    aff = torch.tensor([[[0.9, 0.2], [0.2, 0.9]]], requires_grad=True)
    label = torch.tensor([[[1, 0], [0, 255]]], dtype=torch.uint8)
    loss, pos_count, neg_count = affinity_loss(aff, label)
    assert float(loss.detach()) == pytest.approx(0.0916667, abs=1e-6)
    assert (int(pos_count), int(neg_count)) == (2, 3)
    loss.backward()
    # dL/dA = -0.5 / N+ on positives, 0.5 / N- on negatives, 0 where ignored
    torch.testing.assert_close(aff.grad, torch.tensor([[[-0.25, 1 / 6], [1 / 6, 0.0]]]))


def test_affinity_loss_all_ignored_is_zero_and_finite():
    aff = torch.rand(1, 4, 4, requires_grad=True)
    loss, pos_count, neg_count = affinity_loss(aff, torch.full((1, 4, 4), 255, dtype=torch.uint8))
    loss.backward()
    assert float(loss.detach()) == 0.0 and (int(pos_count), int(neg_count)) == (1, 1)
    assert torch.isfinite(aff.grad).all()
    with pytest.raises(ValueError, match="differ in shape"):
        affinity_loss(aff, torch.zeros(1, 3, 3))


# ---------------------------------------------------------------------------------------------
# total


def test_total_loss_uses_the_config_weights():
    loss_cfg = load_config("configs/voc.py").loss
    g = torch.Generator().manual_seed(2)
    seg_logits = torch.randn(2, 21, 4, 4, generator=g, requires_grad=True)
    aff = torch.rand(2, 16, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 21, (2, 64, 64), generator=g)
    out = total_loss(seg_logits, aff, labels, **loss_cfg)
    aff_ref, pos, neg = affinity_loss(aff, affinity_labels(labels, (4, 4), 8))
    torch.testing.assert_close(out["seg_loss"], seg_loss(seg_logits, labels))
    torch.testing.assert_close(out["aff_loss"], aff_ref)
    torch.testing.assert_close(out["loss"], out["seg_loss"] + 0.1 * out["aff_loss"])
    assert (int(out["aff_pos_count"]), int(out["aff_neg_count"])) == (int(pos), int(neg))
    out["loss"].backward()
    assert torch.isfinite(seg_logits.grad).all() and torch.isfinite(aff.grad).all()


@pytest.mark.parametrize(
    "shape,size", [((2, 3, 20, 20), (320, 320)), ((1, 2, 7, 5), (9, 13)), ((1, 1, 6, 6), (4, 3))]
)
def test_upsample_bilinear_is_f_interpolate(shape, size):
    # the CPU product form uses F.interpolate's own weights: in float64 the two agree to ~1e-16
    # (sums of two products rounded differently), gradients too
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    ours = upsample_bilinear(x, size)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    g = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, g)
    (g_ours,) = torch.autograd.grad(ours, x, g)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-12, rtol=0)
