"""Region growing: exact growth on constructed feature maps (adjacency, gap, similarity)."""

import math

import pytest
import torch

from weclip.baselines.region_growing import (
    dilate_masks,
    grow_regions,
    region_growing,
    regions_to_labels,
)

A = (1.0, 0.0)
B = (0.0, 1.0)


def _two_blocks():
    """3 x 7 map: feature A on columns 0-2 and 4-6, a column of B (orthogonal, cos 0) at 3."""
    feats = torch.zeros(1, 2, 3, 7)
    feats[0, 0] = 1.0
    feats[0, :, :, 3] = torch.tensor(B)[:, None]
    return feats


def _seed(h, w, points, k=1):
    seeds = torch.zeros(1, k, h, w, dtype=torch.bool)
    for kk, i, j in points:
        seeds[0, kk, i, j] = True
    return seeds


def test_dilation_connectivity():
    m = _seed(3, 3, [(0, 1, 1)])
    # 4-connectivity: the cross; 8-connectivity: the full 3 x 3 square
    assert dilate_masks(m, 4)[0, 0].int().tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert dilate_masks(m, 8)[0, 0].all()
    with pytest.raises(ValueError, match="4 or 8"):
        dilate_masks(m, 6)


def test_growth_stops_at_a_gap_and_advances_one_pixel_per_iteration():
    feats = _two_blocks()
    seeds = _seed(3, 7, [(0, 1, 0)])
    # converged: all 9 pixels of columns 0-2; column 3 has cos 0 < 0.8 and columns 4-6, though
    # identical to the seed, are never adjacent to the region
    grown = grow_regions(feats, seeds, num_iters=20, sim_threshold=0.8, connectivity=4)
    expected = torch.zeros(3, 7, dtype=torch.bool)
    expected[:, :3] = True
    assert torch.equal(grown[0, 0], expected)
    # 4-connectivity, 2 iterations: pixels within Manhattan distance 2 of (1, 0) in columns 0-2:
    # (1,0) (0,0) (2,0) (1,1) | (0,1) (2,1) (1,2) -> 7 pixels
    two = grow_regions(feats, seeds, num_iters=2, sim_threshold=0.8, connectivity=4)[0, 0]
    assert two.int().tolist() == [
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
    ]
    # 8-connectivity, 1 iteration: Chebyshev distance 1 -> columns 0-1, all rows
    one = grow_regions(feats, seeds, num_iters=1, sim_threshold=0.8, connectivity=8)[0, 0]
    assert one.int().tolist() == [[1, 1, 0, 0, 0, 0, 0]] * 3
    # 0 iterations: the seeds themselves
    assert torch.equal(grow_regions(feats, seeds, num_iters=0), seeds)


def test_similarity_threshold_uses_the_region_mean():
    # 1 x 3 map: (1, 0), (1, 0), (1, 0.9). The region {0, 1} has mean (1, 0); the third pixel has
    # cos = 1 / sqrt(1 + 0.81) = 0.7433: rejected at 0.8, accepted at 0.7
    feats = torch.tensor([[[[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.9]]]])
    seeds = _seed(1, 3, [(0, 0, 0)])
    assert 1 / math.sqrt(1.81) == pytest.approx(0.7433, abs=1e-4)
    strict = grow_regions(feats, seeds, num_iters=5, sim_threshold=0.8)[0, 0, 0].tolist()
    loose = grow_regions(feats, seeds, num_iters=5, sim_threshold=0.7)[0, 0, 0].tolist()
    assert strict == [True, True, False] and loose == [True, True, True]


def test_classes_grow_independently_and_absent_classes_get_nothing():
    feats = _two_blocks()
    cams = torch.zeros(1, 3, 3, 7)
    cams[0, 0, 1, 0] = 0.9  # class 0 seed on the left block
    cams[0, 1, 1, 6] = 0.9  # class 1 seed on the right block
    cams[0, 2, 0, 0] = 0.9  # class 2 would seed the left block but is not in the labels
    masks = region_growing(
        cams, feats, torch.tensor([[1.0, 1.0, 0.0]]), seed_threshold=0.3, num_iters=10
    )
    assert masks[0, 0, :, :3].all() and not masks[0, 0, :, 3:].any()
    assert masks[0, 1, :, 4:].all() and not masks[0, 1, :, :4].any()
    assert not masks[0, 2].any()
    labels = regions_to_labels(masks, cams)
    assert labels[0].tolist() == [[1, 1, 1, 0, 2, 2, 2]] * 3


def test_regions_to_labels_overlap_goes_to_the_highest_cam():
    masks = torch.tensor([[[[True, True, False]], [[False, True, False]]]])
    cams = torch.tensor([[[[0.5, 0.2, 0.0]], [[0.9, 0.4, 0.9]]]])
    # pixel 0: only class 0 -> 1; pixel 1: both, CAM 0.4 > 0.2 -> 2; pixel 2: no mask -> 0
    assert regions_to_labels(masks, cams).tolist() == [[[1, 2, 0]]]


def test_batch_is_processed_like_single_images():
    torch.manual_seed(0)
    feats = torch.randn(3, 4, 6, 5)
    seeds = torch.rand(3, 2, 6, 5) > 0.8
    batch = grow_regions(feats, seeds, num_iters=4, sim_threshold=0.2)
    single = torch.cat([grow_regions(feats[i : i + 1], seeds[i : i + 1], 4, 0.2) for i in range(3)])
    assert torch.equal(batch, single)
    assert (batch | seeds).equal(batch)  # grown masks contain their seeds


def test_shape_errors():
    with pytest.raises(ValueError, match="must share B, h, w"):
        grow_regions(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 4, 3, dtype=torch.bool))


def test_region_scores_argmax_is_regions_to_labels():
    from weclip.baselines.region_growing import region_scores

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 3, 6, 7, generator=g) > 0.5  # overlapping regions and uncovered pixels
    cams = torch.rand(2, 3, 6, 7, generator=g)
    cams[0, :, 0, 0] = 0.5  # a three-way tie: the first class, as regions_to_labels
    masks[0, :, 0, 0] = True
    scores = region_scores(masks, cams)
    assert scores.shape == (2, 4, 6, 7) and torch.all(scores[:, 0] == 0.25)
    assert torch.equal(scores.argmax(dim=1), regions_to_labels(masks, cams))
    assert scores.argmax(dim=1)[0, 0, 0] == 1  # class 0 (label 1) comes first
