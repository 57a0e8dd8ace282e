"""Box masks of thresholded CAMs, faithful to the authors' scoremap2bbox (spec §4.5)."""

import cv2
import numpy as np
import pytest
import torch

from weclip.refine.boxes import (
    BOX_MODES,
    box_masks,
    component_box_masks,
    component_boxes,
    threshold_cams,
)


def _right_border_blob():
    # 5x6 map, blob of 1.0 on rows 1..2, columns 4..5 (touches the right border)
    cam = torch.zeros(1, 5, 6)
    cam[0, 1:3, 4:6] = 1.0
    return cam


def test_right_border_blob_official_drops_last_column():
    # component bbox x=4, y=1, bw=2, bh=2 -> official x1 = min(4+2, 6-1) = 5,
    # y1 = min(1+2, 5-1) = 3: the half-open fill covers rows 1..2, column 4 only (column 5 dropped)
    masks, _ = box_masks(_right_border_blob(), 0.4, "official")
    expected = torch.zeros(1, 5, 6, dtype=torch.bool)
    expected[0, 1:3, 4:5] = True
    assert torch.equal(masks, expected)
    assert component_boxes(_right_border_blob()[0].numpy() > 0, "official").tolist() == [
        [4, 1, 5, 3]
    ]


def test_right_border_blob_inclusive_keeps_last_column():
    masks, _ = box_masks(_right_border_blob(), 0.4, "inclusive")
    assert torch.equal(masks, _right_border_blob().bool())


def test_threshold_is_strict_on_uint8_scores():
    # U = uint8(floor(255 M)); max U = 255 -> t = int(0.4 * 255) = 102; keep U > 102 (strict)
    # M = 0.4 -> 255 * 0.4 = 102.0 -> U = 102 (dropped); M = 0.41 -> 104.55 -> U = 104 (kept);
    # M = 0.403 -> 102.765 -> U = 102 (dropped by the floor even though 0.403 > 0.4)
    cam = torch.tensor([[[1.0, 0.4, 0.41, 0.403, 0.0]]])
    assert threshold_cams(cam, 0.4).tolist() == [[[True, False, True, False, False]]]
    # max U = 127 (M = 0.5 -> 127.5 -> 127): t = int(0.4 * 127) = int(50.8) = 50;
    # U = 51 (M = 0.2) is kept
    cam = torch.tensor([[[0.5, 0.2, 0.196]]])  # 0.196 * 255 = 49.98 -> 49
    assert threshold_cams(cam, 0.4).tolist() == [[[True, True, False]]]


def test_two_blobs_and_a_hole():
    # a ring (with a hole) and a separate dot, 8x8; inclusive masks are the two bounding boxes
    cam = torch.zeros(1, 8, 8)
    cam[0, 1:5, 1:5] = 1.0
    cam[0, 2:4, 2:4] = 0.0  # the hole
    cam[0, 6, 6] = 0.9
    masks, _ = box_masks(cam, 0.4, "inclusive")
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[0, 1:5, 1:5] = True
    expected[0, 6, 6] = True
    assert torch.equal(masks, expected)


def test_diagonal_pixels_are_one_component():
    # 8-connectivity: (0,0) and (1,1) form one component with bbox 2x2
    cam = torch.zeros(1, 4, 4)
    cam[0, 0, 0] = cam[0, 1, 1] = 1.0
    masks, _ = box_masks(cam, 0.4, "inclusive")
    assert masks[0, :2, :2].all() and masks.sum() == 4


def test_all_zero_cam_gives_empty_mask():
    masks, binary = box_masks(torch.zeros(2, 5, 5), 0.4, "official")
    assert not masks.any() and not binary.any()
    assert component_boxes(np.zeros((5, 5), bool)).shape == (0, 4)


def test_union_of_components_equals_union_of_contour_rects():
    # the authors' findContours(RETR_TREE) + boundingRect + clipping, on random maps, gives the same
    # masks
    rng = np.random.default_rng(0)
    cams = torch.from_numpy(rng.random((60, 9, 11)).astype(np.float32)) ** 3
    ours, binary = box_masks(cams, 0.4, "official")
    for k in range(cams.shape[0]):
        img = binary[k].numpy().astype(np.uint8) * 255
        contours, _ = cv2.findContours(img, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2:]
        ref = np.zeros((9, 11), bool)
        for c in contours:
            x, y, bw, bh = cv2.boundingRect(c)
            ref[y : min(y + bh, 9 - 1), x : min(x + bw, 11 - 1)] = True
        assert np.array_equal(ours[k].numpy(), ref), k


def test_bad_mode_raises():
    with pytest.raises(ValueError, match="box_mode"):
        box_masks(torch.zeros(1, 3, 3), 0.4, "outer")


def test_torch_components_equal_opencv_on_random_maps():
    # the GPU implementation (label propagation in torch) against cv2's 8-connected components, on maps
    # with many components, holes, diagonal touches, border boxes and empty maps, both clipping modes
    g = torch.Generator().manual_seed(0)
    for density in (0.05, 0.3, 0.5, 0.8):
        binary = torch.rand(16, 13, 17, generator=g) < density
        binary[0] = False  # an empty map gives an empty mask
        binary[1] = True  # one component covering everything, touching every border
        for mode in BOX_MODES:
            ref = np.zeros(binary.shape, dtype=bool)
            for p in range(binary.shape[0]):
                for x0, y0, x1, y1 in component_boxes(binary[p].numpy(), mode):
                    ref[p, y0:y1, x0:x1] = True
            ours = component_box_masks(binary, mode)
            assert np.array_equal(ours.numpy(), ref), (density, mode)
    # a spiral: one component whose labels need many propagation steps (a long geodesic path)
    spiral = np.zeros((9, 9), dtype=bool)
    spiral[0, :] = spiral[:, 8] = spiral[8, :] = spiral[2:, 0] = spiral[2, :7] = spiral[2:7, 6] = (
        True
    )
    ours = component_box_masks(torch.from_numpy(spiral)[None], "inclusive")[0]
    assert ours.all()  # one component spanning the whole map
