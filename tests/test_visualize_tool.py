"""tools/visualize.py: panel layout (hand-worked sizes), the image panel is the original pixels, splits
without labels or masks, name selection errors; one subprocess run."""

import os

import numpy as np
import pytest
from PIL import Image
from tools_helpers import import_tool, make_checkpoint, make_dataset, run_tool, write_config

vis = import_tool("visualize")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("vis"))
    root = make_dataset(base)
    config = write_config(base, root)
    ckpt = make_checkpoint(config, os.path.join(base, "work"))
    return {"base": base, "root": root, "config": config, "ckpt": ckpt}


def _png(path):
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def test_subprocess_grid_layout(world):
    out = os.path.join(world["base"], "vis")
    run_tool(
        "visualize",
        [
            world["config"],
            world["ckpt"],
            "--device",
            "cpu",
            "--names",
            "img_000,img_001",
            "--out",
            out,
        ],
    )
    assert sorted(os.listdir(out)) == ["grid.png", "img_000.png", "img_001.png"]
    # img_000: 30x44, one class -> image, CAM, refined CAM, pseudo-label, prediction, GT = 6 panels;
    # enlarged x ceil(160 / 30) = 6 -> 180x264; + 16 px title = 196 high; 6 * 264 + 5 gaps * 4 = 1604 wide
    row0 = _png(os.path.join(out, "img_000.png"))
    assert row0.shape == (196, 1604, 3)
    # img_001: 40x26, two classes -> 1 + 2 * 2 + 3 = 8 panels; x ceil(160 / 40) = 4 -> 160x104;
    # 176 high, 8 * 104 + 7 * 4 = 860 wide
    assert _png(os.path.join(out, "img_001.png")).shape == (176, 860, 3)
    # grid: 196 + 4 + 176 = 376 high, as wide as the widest row
    assert _png(os.path.join(out, "grid.png")).shape == (376, 1604, 3)
    # the first panel is the original image, enlarged (nearest) by 6
    rgb = np.array(Image.open(os.path.join(world["root"], "JPEGImages", "img_000.png")))
    np.testing.assert_array_equal(row0[16:, :264], np.kron(rgb, np.ones((6, 6, 1), dtype=np.uint8)))


def test_split_without_labels_or_masks(world, tmp_path):
    # the test split has no masks; a missing label file leaves no CAM / pseudo-label panels
    written = vis.main(
        [world["config"], world["ckpt"], "--device", "cpu", "--split", "test", "--num", "1",
         "--out", str(tmp_path), "--cfg-options", "data.label_file=missing.txt"]
    )  # fmt: skip
    assert [os.path.basename(p) for p in written] == ["img_000.png", "grid.png"]
    # image | prediction: 2 * 264 + 4 = 532 wide
    assert _png(written[0]).shape == (196, 532, 3)


def test_names_from_list_file_and_unknown_names(world, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("# chosen\nimg_002\n\nimg_004  # two classes\n")
    written = vis.main(
        [world["config"], world["ckpt"], "--device", "cpu", "--list", str(names), "--cams", "none",
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert [os.path.basename(p) for p in written] == ["img_002.png", "img_004.png", "grid.png"]
    with pytest.raises(ValueError, match=r"not in split list .*val.txt: img_999"):
        vis.main([world["config"], world["ckpt"], "--device", "cpu", "--names", "img_999"])


def test_stack_rows_pads_white():
    a, b = np.zeros((2, 3, 3), np.uint8), np.zeros((1, 5, 3), np.uint8)
    grid = vis.stack_rows([a, b], gap=1)
    assert grid.shape == (2 + 1 + 1, 5, 3)
    assert (grid[:2, 3:] == 255).all() and (grid[2] == 255).all() and (grid[3] == 0).all()
