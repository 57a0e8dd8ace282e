"""Propagation of CAMs in their boxes, min-max and resize (spec §4.6, App. C.6)."""

import torch

from weclip.refine.boxes import box_masks
from weclip.refine.propagate import propagate_cams, resize_cams
from weclip.refine.transition import transition_matrix


def _cams(p=3, h=5, w=6, seed=0):
    return torch.rand(p, h, w, generator=torch.Generator().manual_seed(seed))


def test_identity_attention_gives_cam_times_box_mask():
    # Sinkhorn(I) = I, (I + Iᵀ)/2 = I, I·I = I  ->  r = I · vec(B ⊙ M) = B ⊙ M (before the min-max)
    cams = _cams()
    masks, _ = box_masks(cams, 0.4, "official")
    trans = transition_matrix(torch.eye(30)[None], 3, 2)
    _, lowres = propagate_cams(trans, cams, masks, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(lowres, cams * masks)


def test_uniform_attention_gives_constant_map():
    # uniform R -> T = 1/n everywhere (already doubly stochastic, symmetric, idempotent)
    # -> every r_p = Σ_q (B ⊙ M)_q / n: a constant map equal to the mean of B ⊙ M
    cams = _cams(seed=1)
    masks = torch.zeros_like(cams, dtype=torch.bool)
    masks[:, 1:4, 2:5] = True
    trans = transition_matrix(torch.full((1, 30, 30), 0.7), 3, 2)
    refined, lowres = propagate_cams(trans, cams, masks, torch.zeros(3, dtype=torch.long), (10, 12))
    expected = (cams * masks).mean(dim=(1, 2))[:, None, None].expand(3, 5, 6)
    torch.testing.assert_close(lowres, expected)
    # a constant map has (r - min) = 0, so the min-max gives zeros, not NaN
    assert torch.equal(refined, torch.zeros(3, 10, 12))


def test_each_cam_uses_its_own_image_matrix():
    cams = _cams(p=2, seed=2)
    masks = torch.ones_like(cams, dtype=torch.bool)
    trans = torch.stack([torch.eye(30), torch.full((30, 30), 1 / 30)])
    _, lowres = propagate_cams(trans, cams, masks, torch.tensor([1, 0]))
    torch.testing.assert_close(lowres[0], torch.full((5, 6), cams[0].mean().item()))
    torch.testing.assert_close(lowres[1], cams[1])


def test_all_zero_cam_gives_all_zero_refined_cam():
    cams = torch.zeros(2, 5, 6)
    masks, _ = box_masks(cams, 0.4, "official")
    trans = transition_matrix(torch.rand(1, 30, 30) + 0.1, 3, 2)
    refined, lowres = propagate_cams(trans, cams, masks, torch.zeros(2, dtype=torch.long), (20, 24))
    assert torch.equal(refined, torch.zeros(2, 20, 24)) and torch.equal(
        lowres, torch.zeros(2, 5, 6)
    )


def test_refined_min_max_normalised():
    cams = _cams(seed=3)
    masks, _ = box_masks(cams, 0.4, "official")
    trans = transition_matrix(torch.rand(1, 30, 30) + 0.1, 3, 2)
    refined, lowres = propagate_cams(trans, cams, masks, torch.zeros(3, dtype=torch.long))
    assert refined.min() >= 0 and refined.max() < 1
    # the minimum maps to 0 and the maximum to range / (range + 1e-7)
    spread = lowres.amax(dim=(1, 2)) - lowres.amin(dim=(1, 2))
    torch.testing.assert_close(refined.amin(dim=(1, 2)), torch.zeros(3))
    torch.testing.assert_close(refined.amax(dim=(1, 2)), spread / (spread + 1e-7))


def test_resize_is_bilinear_half_pixel():
    # 1x2 -> 1x4 with align_corners=False: output x centres map to source x = (x + 0.5)/2 - 0.5
    #   = -0.25, 0.25, 0.75, 1.25 -> clamped/interpolated: a, 0.75a + 0.25b, 0.25a + 0.75b, b
    out = resize_cams(torch.tensor([[[0.0, 1.0]]]), (1, 4))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))
