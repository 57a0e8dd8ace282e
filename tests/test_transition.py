"""Static / RFM affinity and the transition matrix (spec §4.2-4.4, App. C.4-C.5)."""

import pytest
import torch

from weclip.refine.transition import (
    patch_attention,
    rfm_affinity,
    sinkhorn_normalize,
    static_affinity,
    transition_matrix,
)


def _random_attention(b, m, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    # rows sum to 0.9 (CLS took 0.1)
    return torch.randn(b, m, n, n, generator=g).mul(3).softmax(-1) * 0.9


def test_sinkhorn_rows_sum_to_one_and_symmetrised_is_symmetric():
    a = torch.rand(2, 30, 30, generator=torch.Generator().manual_seed(0)) + 0.1
    t = sinkhorn_normalize(a, 3)
    torch.testing.assert_close(t.sum(-1), torch.ones(2, 30), atol=1e-6, rtol=0)
    torch.testing.assert_close(t.sum(-2), torch.ones(2, 30), atol=1e-3, rtol=0)  # columns only ≈ 1
    sym = transition_matrix(a, 3, power=1)
    torch.testing.assert_close(sym, sym.transpose(-1, -2), atol=0, rtol=0)
    # spec App. C.5: still approximately doubly stochastic after squaring
    sq = transition_matrix(a, 3, power=2)
    torch.testing.assert_close(sq.sum(-1), torch.ones(2, 30), atol=1e-3, rtol=0)
    torch.testing.assert_close(sq, sym @ sym, atol=1e-7, rtol=0)


def test_sinkhorn_column_then_row_hand_worked():
    # [[1, 3], [1, 1]]: columns sums (2, 4) -> [[.5, .75], [.5, .25]]; rows (1.25, .75)
    # -> [[.4, .6], [2/3, 1/3]] after one pass
    t = sinkhorn_normalize(torch.tensor([[1.0, 3.0], [1.0, 1.0]]), 1)
    torch.testing.assert_close(t, torch.tensor([[0.4, 0.6], [2 / 3, 1 / 3]]))


def test_patch_attention_takes_last_maps_without_cls():
    b, seq = 2, 5
    attns = [torch.full((b, seq, seq), float(i)) for i in range(4)]  # blocks 0..3
    last = torch.full((b, seq, seq), 4.0)
    maps = patch_attention(attns, last, 3)  # blocks 2, 3, 4
    assert maps.shape == (b, 3, seq - 1, seq - 1)
    assert maps[:, :, 0, 0].tolist() == [[2.0, 3.0, 4.0]] * 2
    torch.testing.assert_close(static_affinity(maps), torch.full((b, 4, 4), 3.0))
    with pytest.raises(ValueError, match="num_layers"):
        patch_attention(attns, last, 6)


def test_signed_filter_keeps_layers_with_large_total_attention():
    # spec App. C.4: with the signed sum the keep-set is {l : ΣA^l ≥ mean_l ΣA^l}, whatever A_f is
    b, m, n = 3, 6, 20
    g = torch.Generator().manual_seed(1)
    # different totals
    maps = _random_attention(b, m, n) * torch.rand(b, m, 1, 1, generator=g).add(0.5)
    for seed in range(3):
        aff = torch.rand(b, n, n, generator=torch.Generator().manual_seed(10 + seed))
        _, keep = rfm_affinity(maps, aff, "signed")
        totals = maps.double().sum(dim=(-2, -1))
        assert torch.equal(keep, totals >= totals.mean(dim=1, keepdim=True))


def test_rfm_hand_worked():
    # n = 2, m = 3 constant maps 0.1, 0.2, 0.6, A_f = 0.5 everywhere
    # signed d_l = Σ(0.5 - c_l) = 4·(0.4, 0.3, -0.1) = (1.6, 1.2, -0.4), mean 0.8 -> keep layer 2
    #   R = 0.6 / (1 + 1e-5) -> R ⊙ A_f = 0.3 / (1 + 1e-5)
    # abs    d_l = 4·|0.5 - c_l| = (1.6, 1.2, 0.4), mean 16/15 -> keep layer 2 (0.4) only
    maps = torch.tensor([0.1, 0.2, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    aff = torch.full((1, 2, 2), 0.5)
    r, keep = rfm_affinity(maps, aff, "signed", eps=1e-5)
    assert keep.tolist() == [[False, False, True]]
    torch.testing.assert_close(r, torch.full((1, 2, 2), 0.3 / (1 + 1e-5)))
    r_abs, keep_abs = rfm_affinity(maps, aff, "abs", eps=1e-5)
    assert keep_abs.tolist() == [[False, False, True]]
    # A_f = 0.35: signed unchanged (independent of A_f); abs d = 4·(0.25, 0.15, 0.25), mean 0.8867
    # -> keep {1}
    _, keep_abs2 = rfm_affinity(maps, torch.full((1, 2, 2), 0.35), "abs")
    _, keep_signed2 = rfm_affinity(maps, torch.full((1, 2, 2), 0.35), "signed")
    assert keep_abs2.tolist() == [[False, True, False]]
    assert keep_signed2.tolist() == [[False, False, True]]


def test_rfm_ties_are_kept():
    # identical maps: every d_l equals the mean -> all kept, R = A·m/(m + 1e-5)
    maps = torch.full((1, 4, 3, 3), 0.2)
    r, keep = rfm_affinity(maps, torch.ones(1, 3, 3))
    assert keep.all()
    torch.testing.assert_close(r, torch.full((1, 3, 3), 0.8 / (4 + 1e-5)))


def test_rfm_detaches_affinity():
    aff = torch.rand(1, 4, 4, requires_grad=True)
    r, _ = rfm_affinity(_random_attention(1, 3, 4), aff)
    assert not r.requires_grad


def test_bad_filter_raises():
    with pytest.raises(ValueError, match="layer_filter"):
        rfm_affinity(_random_attention(1, 2, 3), torch.rand(1, 3, 3), "squared")
