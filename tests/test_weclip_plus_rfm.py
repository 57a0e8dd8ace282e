"""RFM+ (weclip/models/plus/rfm_plus.py): layer choice, the CAM x probability gate, propagation."""

import pytest
import torch

from weclip.models.plus.rfm_plus import (
    class_probabilities,
    gate_cams,
    rfm_plus_num_layers,
    rfm_plus_refine,
    rfm_plus_transition,
)
from weclip.refine.propagate import propagate_cams


def test_layer_counts_by_dataset_and_clip_patch_size():
    # the authors' slices: VOC [-6:], COCO [-8:] with ViT-B/16; [-12:] with ViT-L/14 (doc §4.1)
    assert rfm_plus_num_layers("voc", 16) == 6
    assert rfm_plus_num_layers("coco", 16) == 8
    assert rfm_plus_num_layers("voc", 14) == rfm_plus_num_layers("coco", 14) == 12
    with pytest.raises(ValueError, match="no RFM\\+ layer count"):
        rfm_plus_num_layers("ade", 16)


def test_class_probabilities_are_a_detached_softmax():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    probs = class_probabilities(logits)
    assert not probs.requires_grad
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 3, 3))


def test_gate_picks_the_class_channel_of_the_right_image():
    b, c, h, w = 2, 4, 2, 3
    # probs[b, c] = (10·b + c) / 100, so each (image, class) has its own constant
    probs = (10 * torch.arange(b)[:, None] + torch.arange(c)[None]).float()[:, :, None, None] / 100
    probs = probs.expand(b, c, h, w)
    cams = torch.rand(3, h, w)
    batch_index = torch.tensor([0, 1, 1])
    class_index = torch.tensor([2, 0, 1])  # fg ids -> channels 3, 1, 2 (channel 0 = background)
    gated = gate_cams(cams, probs, batch_index, class_index)
    for p, factor in enumerate([0.03, 0.11, 0.12]):
        torch.testing.assert_close(gated[p], cams[p] * factor)


def test_probability_one_and_no_masks_is_plain_propagation():
    torch.manual_seed(0)
    n = 6
    trans = torch.rand(2, n, n)
    cams = torch.rand(3, 2, 3)
    bi, ci = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])
    ones = torch.ones(2, 3, 2, 3)
    refined, lowres = rfm_plus_refine(trans, cams, ones, bi, ci, out_size=(4, 6))
    ref = propagate_cams(trans, cams, torch.ones_like(cams, dtype=torch.bool), bi, out_size=(4, 6))
    assert torch.equal(refined, ref[0]) and torch.equal(lowres, ref[1])
    # masks=None is the authors' VOC "box mask all ones"
    masks = torch.rand(3, 2, 3) > 0.5
    boxed = rfm_plus_refine(trans, cams, ones, bi, ci, masks=masks)[1]
    assert torch.equal(boxed, propagate_cams(trans, cams, masks, bi)[1])


def test_identity_transition_gives_the_normalised_gated_cam():
    trans = torch.eye(4)[None]
    cams = torch.tensor([[[0.0, 0.5], [1.0, 1.0]]])
    probs = torch.zeros(1, 2, 2, 2)
    probs[0, 1] = torch.tensor([[1.0, 1.0], [0.5, 0.25]])  # class 1 = fg id 0
    refined, lowres = rfm_plus_refine(trans, cams, probs, torch.tensor([0]), torch.tensor([0]))
    # gated = [[0, .5], [.5, .25]]; min-max: (x - 0) / (0.5 + 1e-7) = [[0, 1], [1, .5]]
    torch.testing.assert_close(lowres, torch.tensor([[[0.0, 0.5], [0.5, 0.25]]]))
    torch.testing.assert_close(refined, torch.tensor([[[0.0, 1.0], [1.0, 0.5]]]), atol=1e-6, rtol=0)


def test_uniform_transition_and_zero_probability():
    trans = torch.full((1, 4, 4), 0.25)
    cams = torch.tensor([[[0.0, 0.4], [0.8, 1.0]]])
    probs = torch.ones(1, 2, 2, 2)
    refined, lowres = rfm_plus_refine(trans, cams, probs, torch.tensor([0]), torch.tensor([0]))
    # every target gets the mean of the gated CAM, (0 + .4 + .8 + 1) / 4 = 0.55; a constant map
    # min-max-normalises to 0 (0 / (0 + eps))
    torch.testing.assert_close(lowres, torch.full((1, 2, 2), 0.55))
    assert torch.equal(refined, torch.zeros(1, 2, 2))
    # a class the prediction rules out (probability 0 everywhere) refines to zeros, not NaN
    zero = torch.zeros(1, 2, 2, 2)
    refined, _ = rfm_plus_refine(
        torch.rand(1, 4, 4), cams, zero, torch.tensor([0]), torch.tensor([0])
    )
    assert torch.equal(refined, torch.zeros(1, 2, 2))


def test_transition_uses_only_the_last_m_attention_maps():
    torch.manual_seed(0)
    b, n = 1, 9
    attns = [torch.softmax(torch.randn(b, n + 1, n + 1), -1) for _ in range(11)]
    last = torch.softmax(torch.randn(b, n + 1, n + 1), -1)
    aff = torch.sigmoid(torch.randn(b, n, n))
    trans, keep = rfm_plus_transition(attns, last, aff, num_layers=6)
    assert trans.shape == (1, 9, 9) and keep.shape == (1, 6)
    # maps 0..5 of the 12 are outside the last 6: changing them changes nothing
    other = [torch.softmax(torch.randn(b, n + 1, n + 1), -1) for _ in range(6)] + attns[6:]
    assert torch.equal(rfm_plus_transition(other, last, aff, num_layers=6)[0], trans)
    # the decoder affinity enters (R ⊙ A) and is detached
    aff_grad = aff.clone().requires_grad_(True)
    t2, _ = rfm_plus_transition(attns, last, aff_grad, num_layers=6)
    assert not t2.requires_grad
    # a uniform scale of A cancels in the Sinkhorn normalisation (and in the signed filter, which
    # does not depend on A at all, spec §4.3); fp32 rounding of the divisions: 1e-6
    torch.testing.assert_close(
        rfm_plus_transition(attns, last, aff * 0.5, num_layers=6)[0], trans, atol=1e-6, rtol=0
    )
    bumped = aff.clone()
    bumped[0, 0, 1] = bumped[0, 1, 0] = 1.0
    assert (rfm_plus_transition(attns, last, bumped, num_layers=6)[0] - trans).abs().max() > 1e-4
