"""The synthetic toy world (weclip/data/toy.py) and tools/make_toy_data.py."""

import os

import numpy as np
import pytest
from helpers import run_tool
from PIL import Image

from weclip.config import load_config
from weclip.data.labels import read_label_file
from weclip.data.toy import (
    TOY_CLASS_NAMES,
    ToyWorldConfig,
    generate_sample,
    sample_rng,
    shape_mask,
    toy_dataset_complete,
    write_toy_dataset,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ToyWorldConfig(image_size=48, num_classes=4, min_objects=1, max_objects=3)


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def test_same_seed_gives_byte_identical_files(tmp_path):
    write_toy_dataset(str(tmp_path / "a"), SMALL, seed=3, num_train=6, num_val=3)
    write_toy_dataset(str(tmp_path / "b"), SMALL, seed=3, num_train=6, num_val=3)
    write_toy_dataset(str(tmp_path / "c"), SMALL, seed=4, num_train=6, num_val=3)
    a, b, c = (_tree_bytes(str(tmp_path / d)) for d in "abc")
    assert a == b
    # another seed changes the pictures (6 + 3 images and masks, all different)
    assert sum(a[k] != c[k] for k in a if k.startswith("JPEGImages")) == 9


def test_layout_and_masks_match_labels(tmp_path):
    root = str(tmp_path)
    names = write_toy_dataset(root, SMALL, seed=0, num_train=8, num_val=4)
    for split, count in (("train", 8), ("val", 4)):
        with open(os.path.join(root, f"{split}.txt")) as f:
            assert f.read().split() == names[split] and len(names[split]) == count
    labels = read_label_file(os.path.join(root, "cls_labels.txt"), SMALL.num_classes + 1)
    assert sorted(labels) == sorted(names["train"] + names["val"])
    for name, fg_ids in labels.items():
        img = Image.open(os.path.join(root, "JPEGImages", f"{name}.png"))
        mask = Image.open(os.path.join(root, "SegmentationClassAug", f"{name}.png"))
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (48, 48)
        assert mask.mode == "L" and mask.size == (48, 48)  # single channel, VOC style
        values = np.unique(np.asarray(mask))
        assert values.max() <= SMALL.num_classes  # 0 = bg, 1..K, no 255 in the toy world
        # labels are exactly the classes visible in the mask, 0-based and sorted
        assert fg_ids.tolist() == sorted(int(v) - 1 for v in values if v > 0)
        assert 1 <= len(fg_ids) <= 3


def test_complete_dataset_is_skipped_and_changed_parameters_regenerate(tmp_path):
    root = str(tmp_path)
    write_toy_dataset(root, SMALL, seed=0, num_train=3, num_val=2)
    assert toy_dataset_complete(root, SMALL, 0, 3, 2)
    probe = os.path.join(root, "JPEGImages", "toy_train_00000.png")
    os.utime(probe, (0, 0))
    write_toy_dataset(root, SMALL, seed=0, num_train=3, num_val=2)
    assert os.path.getmtime(probe) == 0  # untouched: nothing was rewritten
    assert not toy_dataset_complete(root, SMALL, 1, 3, 2)  # another seed is not "complete"
    write_toy_dataset(root, SMALL, seed=1, num_train=3, num_val=2)
    assert os.path.getmtime(probe) > 0 and toy_dataset_complete(root, SMALL, 1, 3, 2)


def test_each_image_depends_only_on_seed_split_index():
    a = generate_sample(sample_rng(7, "train", 5), SMALL)
    b = generate_sample(sample_rng(7, "train", 5), SMALL)
    c = generate_sample(sample_rng(7, "val", 5), SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


def test_colour_does_not_identify_the_class():
    # Mean RGB fill per class over many objects: fills are uniform in [0, 255]^3 (mean 127.5), so no class
    # may sit far from grey. 4 classes x ~60 objects: the standard error of a mean channel is ~74/sqrt(60) ~ 10.
    world = ToyWorldConfig(image_size=48, num_classes=4, min_objects=1, max_objects=1)
    fills = {c: [] for c in range(4)}
    for i in range(240):
        s = generate_sample(sample_rng(0, "test", i), world)
        c = s.labels[0]
        fills[c].append(s.image[s.mask == c + 1].reshape(-1, 3).mean(0))
    for c, values in fills.items():
        assert len(values) > 30
        assert np.all(np.abs(np.mean(values, 0) - 127.5) < 40), (
            TOY_CLASS_NAMES[c],
            np.mean(values, 0),
        )


def test_shapes_are_distinct_and_sized():
    # Same centre (32, 32) and extent 40 px on a 64x64 canvas; cv2 fills both border rows/columns (+1).
    areas = [int(shape_mask(c, 64, (32, 32), 40, 0).sum()) for c in range(4)]
    assert areas[0] == pytest.approx(1257, rel=0.02)  # circle: pi * 20^2 = 1256.6
    assert areas[1] == 41 * 41  # square: 40 px side, inclusive corners -> 41 x 41 = 1681
    # triangle: circumradius 1.1 * 20 = 22 -> side 22 * sqrt(3) = 38.1 -> area sqrt(3)/4 * 38.1^2 = 628.7
    assert areas[2] == pytest.approx(629, rel=0.1)
    # cross: two 41 x 17 arms (width 0.4 * 40 = 16, +1) minus their 17 x 17 overlap = 1394 - 289 = 1105
    assert areas[3] == 2 * 41 * 17 - 17 * 17


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="max_objects"):
        ToyWorldConfig(num_classes=2, max_objects=3)
    with pytest.raises(ValueError, match="split"):
        sample_rng(0, "training", 0)


def test_toy_config_matches_the_generator():
    cfg = load_config(os.path.join(REPO, "configs", "toy.py"))
    assert cfg.data.root == cfg.data.split_dir == "data/toy"  # where tools/make_toy_data.py writes
    # the toy config's data section matches what the generator writes
    assert cfg.data.img_suffix == ".png" and cfg.data.crop_size == cfg.toy.image_size
    # inference size: inside the training scale range (VOC: 512 for 320 crops) and a whole patch grid
    assert (
        cfg.toy.image_size <= cfg.test.resize_long <= cfg.data.scale_range[1] * cfg.toy.image_size
    )
    assert cfg.test.resize_long % 8 == 0
    assert tuple(cfg.data.class_names[1:]) == TOY_CLASS_NAMES[: cfg.toy.num_classes]
    assert cfg.data.num_classes == cfg.toy.num_classes + 1


def test_tool_writes_a_complete_dataset(tmp_path):
    # a small variant of the toy config, into a tmp dir, through the command line
    small_cfg = tmp_path / "toy_small.py"
    small_cfg.write_text(
        f"_base_ = [{os.path.join(REPO, 'configs', 'toy.py')!r}]\ntoy = dict(num_train=2, num_val=1, image_size=48)\n"
    )
    out = str(tmp_path / "toy")
    proc = run_tool("make_toy_data", [str(small_cfg), "--root", out])
    assert f"toy dataset in {out}: 2 train, 1 val" in proc.stdout
    assert toy_dataset_complete(
        out, ToyWorldConfig.from_cfg(load_config(str(small_cfg)).toy), 0, 2, 1
    )
