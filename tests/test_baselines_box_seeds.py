"""Box seeds: Gaussian heat maps peak at box centres, vanish outside boxes; seed label maps."""

import math

import pytest
import torch

from weclip.baselines.affinitynet import affinity_labels
from weclip.baselines.box_seeds import box_heatmaps, box_seed_labels


def test_gaussian_peaks_at_the_centre_and_vanishes_outside():
    # box (0, 0, 5, 5) of class 1 in a 5 x 5 image: pixel centres 0.5 .. 4.5, box centre (2.5, 2.5)
    # = pixel (2, 2); sigma = 0.25 * 5 = 1.25, 2 sigma^2 = 3.125
    heat, inside = box_heatmaps([[[0, 0, 5, 5, 1]]], num_classes=2, size=(5, 5))
    assert heat.shape == (1, 2, 5, 5) and inside[0, 0].all() and not inside[0, 1].any()
    assert heat[0, 0, 2, 2].item() == pytest.approx(1.0)
    # one pixel right: dx = 1 -> exp(-1 / 3.125) = 0.726149
    assert heat[0, 0, 2, 3].item() == pytest.approx(math.exp(-1 / 3.125), rel=1e-6)
    # corner (0, 0): dx = dy = 2 -> exp(-8 / 3.125) = exp(-2.56) = 0.077305
    assert heat[0, 0, 0, 0].item() == pytest.approx(math.exp(-2.56), rel=1e-6)
    assert heat[0, 1].abs().sum() == 0
    # a box (1, 2, 6, 7) of class 2 in 8 x 8: centre (3.5, 4.5) = pixel row 4, column 3; zero
    # outside columns 1-5 and rows 2-6
    heat, inside = box_heatmaps([torch.tensor([[1.0, 2.0, 6.0, 7.0, 2.0]])], 2, (8, 8))
    peak = divmod(int(heat[0, 1].argmax()), 8)
    assert peak == (4, 3) and heat[0, 1, 4, 3].item() == pytest.approx(1.0)
    outside = ~inside[0, 1]
    assert heat[0, 1][outside].abs().sum() == 0 and int(inside[0, 1].sum()) == 5 * 5


def test_several_boxes_and_images():
    boxes = [
        [[0, 0, 4, 4, 1], [2, 2, 6, 6, 1], [0, 4, 2, 6, 2]],  # two class-1 boxes overlap
        [],  # an image without boxes
    ]
    heat, inside = box_heatmaps(boxes, num_classes=2, size=(6, 6), sigma=0.5)
    single_a, _ = box_heatmaps([[[0, 0, 4, 4, 1]]], 2, (6, 6), sigma=0.5)
    single_b, _ = box_heatmaps([[[2, 2, 6, 6, 1]]], 2, (6, 6), sigma=0.5)
    # one class channel = the max over that class's boxes
    assert torch.equal(heat[0, 0], torch.maximum(single_a[0, 0], single_b[0, 0]))
    assert heat[1].abs().sum() == 0 and not inside[1].any()
    assert inside[0, 1, 4:6, 0:2].all() and int(inside[0, 1].sum()) == 4


def test_seed_labels():
    heat, inside = box_heatmaps([[[0, 0, 5, 5, 1]]], num_classes=1, size=(7, 7))
    labels = box_seed_labels(heat, inside, threshold=0.5)
    # heat > 0.5 inside the box (e.g. 0.726 next to the centre) -> class 1; the box corner
    # (0.077) -> 255 unknown; outside the box (rows/columns 5-6) -> background 0
    assert labels[0, 2, 2] == 1 and labels[0, 2, 3] == 1
    assert labels[0, 0, 0] == 255
    assert (labels[0, 5:, :] == 0).all() and (labels[0, :, 5:] == 0).all()
    # the seed map feeds AffinityNet's labels: every foreground-positive pair lies in the seed
    aff = affinity_labels(labels, radius=3, interior_only=False)
    assert int(aff.fg_pos.sum()) > 0 and int(aff.bg_pos.sum()) > 0
    assert (labels[:, None].expand_as(aff.fg_pos)[aff.fg_pos] == 1).all()


def test_errors():
    with pytest.raises(ValueError, match="class ids must be integers 1..2"):
        box_heatmaps([[[0, 0, 2, 2, 3]]], 2, (4, 4))
    with pytest.raises(ValueError, match="x1 > x0"):
        box_heatmaps([[[2, 0, 2, 2, 1]]], 2, (4, 4))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        box_heatmaps([[[0, 0, 2, 2]]], 2, (4, 4))


def test_write_box_seed_masks_and_boxes_json(tmp_path):
    import json

    import numpy as np

    from weclip.baselines.box_seeds import write_box_seed_masks
    from weclip.data.boxes import boxes_from_mask, read_boxes_json, write_boxes_json
    from weclip.data.images import read_mask
    from weclip.errors import DataError

    mask = np.zeros((8, 10), dtype=np.uint8)
    mask[1:4, 2:6] = 1  # class 1: rows 1-3, columns 2-5 -> edges [2, 1, 6, 4]
    mask[5:7, 0:2] = 2  # class 2, two regions
    mask[6:8, 8:10] = 2
    mask[0, 9] = 255  # ignore: no box
    boxes = {"a": boxes_from_mask(mask), "b": []}
    assert boxes["a"] == [[2, 1, 6, 4, 1], [0, 5, 2, 7, 2], [8, 6, 10, 8, 2]]
    path = str(tmp_path / "boxes.json")
    write_boxes_json(path, boxes)
    assert read_boxes_json(path, num_classes=3) == {
        "a": [[float(v) for v in b[:4]] + [b[4]] for b in boxes["a"]],
        "b": [],
    }
    written = write_box_seed_masks(
        read_boxes_json(path), {"a": (8, 10), "b": (4, 4)}, 2, str(tmp_path / "seeds")
    )
    assert written == 2
    seeds = read_mask(str(tmp_path / "seeds" / "a.png"))
    heat, inside = box_heatmaps([boxes["a"]], 2, (8, 10))
    assert seeds.tolist() == box_seed_labels(heat, inside)[0].tolist()
    assert (read_mask(str(tmp_path / "seeds" / "b.png")) == 255).all()  # no box: no pair label
    for bad in ({"x": [[0, 0, 1, 1]]}, {"x": [[2, 0, 1, 1, 1]]}, {"x": [[0, 0, 1, 1, 3]]}):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(DataError, match="bad.json: image 'x'"):
            read_boxes_json(str(tmp_path / "bad.json"), num_classes=3)
