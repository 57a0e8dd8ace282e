"""PAR pixel-adaptive refinement (spec §5.1, App. C.7)."""

import math

import pytest
import torch

from weclip.refine.par import PAR, neighbour_offsets


def _stacked_reference(
    images, masks, dilations, num_iter, temperature=0.3, pos_weight=0.01, eps=1e-8
):
    """Direct transcription of spec §5.1, all neighbours stacked (gathered by clamped indices)."""
    h, w = images.shape[-2:]
    offsets = neighbour_offsets(dilations)

    def gather(x):  # (..., H, W) -> (..., N, H, W), x(p + o_n) with replicate borders
        rows = [(torch.arange(h) + dy).clamp(0, h - 1) for _, dy, _ in offsets]
        cols = [(torch.arange(w) + dx).clamp(0, w - 1) for _, _, dx in offsets]
        return torch.stack([x[..., r, :][..., c] for r, c in zip(rows, cols)], dim=-3)

    nb = gather(images)  # (B, 3, N, H, W)
    std = nb.std(dim=2, keepdim=True)
    colour = -(((nb - images[:, :, None]).abs() / (std + eps) / temperature) ** 2)
    kappa = colour.mean(dim=1).softmax(dim=1)  # (B, N, H, W)
    rho = torch.tensor([d * (math.sqrt(2) if dy and dx else 1.0) for d, dy, dx in offsets])
    pi = (-((rho / (rho.std() + eps) / temperature) ** 2)).softmax(0)
    weights = kappa + pos_weight * pi[None, :, None, None]
    for _ in range(num_iter):
        masks = (gather(masks) * weights[:, None]).sum(dim=2)
    return masks


def test_constant_mask_scales_by_one_point_zero_one_per_iteration():
    # per-pixel weights sum to 1 + 0.01 (softmax + 0.01·softmax), so a constant mask is multiplied
    # by 1.01 each iteration: 5 iterations -> 0.25 · 1.01^5
    par = PAR(dilations=(1, 2), num_iter=5)
    masks = torch.full((2, 4, 16, 16), 0.25)
    out = par(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), masks)
    torch.testing.assert_close(out, masks * 1.01**5)


def test_matches_stacked_neighbour_reference():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 20, 23, generator=g)
    masks = torch.rand(2, 3, 20, 23, generator=g)
    par = PAR(dilations=(1, 2, 4, 8), num_iter=4)
    ref = _stacked_reference(images, masks, (1, 2, 4, 8), 4)
    torch.testing.assert_close(par(images, masks), ref, atol=1e-6, rtol=1e-5)


def test_invariant_to_per_channel_affine_change_of_the_image():
    # a_n uses |ΔI_c| / σ_c: scaling channel c by s_c > 0 and shifting it cancels (up to the 1e-8
    # eps)
    g = torch.Generator().manual_seed(2)
    # e.g. raw RGB in [0, 255] vs the ImageNet-normalised network input (spec §1.2)
    raw = torch.rand(2, 3, 24, 24, generator=g) * 255
    masks = torch.rand(2, 2, 24, 24, generator=g)
    par = PAR(num_iter=6)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        par((raw - mean) / std, masks), par(raw, masks), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(par(raw * 0.01 + 3.0, masks), par(raw, masks), atol=1e-5, rtol=1e-5)


def test_constant_image_gives_uniform_colour_weights():
    # constant image: ΔI = 0 for every neighbour -> κ = 1/48 everywhere (spec App. C.7)
    par = PAR()
    weights = par.affinity(torch.full((1, 3, 30, 30), 0.3))
    expected = 1 / 48 + 0.01 * par.pos_term
    torch.testing.assert_close(weights, expected.view(1, 48, 1, 1).expand(1, 48, 30, 30))


def test_position_term_hand_worked():
    # dilation 1: ρ = (√2, 1, √2, 1, 1, √2, 1, √2); mean = (4√2 + 4)/8, unbiased std over 8 values;
    # π = softmax(−(ρ / std / 0.3)²): the 4 axial neighbours share one value, the 4 diagonal another
    rho = [math.sqrt(2), 1, math.sqrt(2), 1, 1, math.sqrt(2), 1, math.sqrt(2)]
    mean = sum(rho) / 8
    std = math.sqrt(sum((r - mean) ** 2 for r in rho) / 7)
    logits = [-((r / (std + 1e-8) / 0.3) ** 2) for r in rho]
    z = sum(math.exp(v) for v in logits)
    expected = torch.tensor([math.exp(v) / z for v in logits])
    torch.testing.assert_close(PAR(dilations=(1,)).pos_term, expected)


def test_one_hot_mask_diffuses_symmetrically_on_a_constant_image():
    mask = torch.zeros(1, 1, 41, 41)
    mask[0, 0, 20, 20] = 1.0
    out = PAR(dilations=(1, 2), num_iter=3)(torch.zeros(1, 3, 41, 41), mask)[0, 0]
    torch.testing.assert_close(out, out.flip(0))
    torch.testing.assert_close(out, out.flip(1))
    torch.testing.assert_close(out, out.t())
    # uniform weights are symmetric (w(p→q) = w(q→p)), so the mass is multiplied by their sum 1.01
    # per iteration while the spread (3 iterations · dilation 2 = 6 px) stays away from the borders:
    # 1.01^3
    torch.testing.assert_close(out.sum(), torch.tensor(1.01**3))


def test_image_is_resized_to_the_mask_size():
    out = PAR(num_iter=2)(torch.rand(1, 3, 32, 32), torch.rand(1, 2, 16, 20))
    assert out.shape == (1, 2, 16, 20)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="dilations"):
        PAR(dilations=(0, 1))
    with pytest.raises(ValueError, match="PAR expects"):
        PAR()(torch.rand(2, 3, 8, 8), torch.rand(1, 2, 8, 8))


def test_cpu_per_image_path_equals_whole_batch_propagation():
    # on CPU, forward() refines one image at a time and skips all-zero channels; elsewhere it
    # propagates the whole batch at once: both give the same numbers (a zero channel stays zero)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(3, 3, 28, 30, generator=g)
    masks = torch.rand(3, 4, 28, 30, generator=g)
    masks[1, 2:] = 0  # padding channels
    masks[2] = 0  # an image without any score
    par = PAR(num_iter=5)
    whole = par.propagate(masks, par.affinity(images))
    out = par(images, masks)
    torch.testing.assert_close(out, whole, atol=1e-6, rtol=1e-6)
    assert torch.equal(out[1, 2:], torch.zeros(2, 28, 30))
