"""tools/visualize.py: panel layout (hand-worked sizes), the image panel is the original pixels, splits
without labels or masks, name selection errors."""

import os

import numpy as np
import pytest
from helpers import make_checkpoint, make_synth_dataset, run_tool, write_config
from PIL import Image

from weclip.utils.visualize import stack_rows, titled


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("vis"))
    root = make_synth_dataset(base)
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
            "--out-dir",
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


def test_split_without_labels_names_from_a_list_and_unknown_names(world, tmp_path):
    # the test split has no masks; a missing label file leaves no CAM / pseudo-label panels
    run_tool(
        "visualize",
        [world["config"], world["ckpt"], "--device", "cpu", "--split", "test", "--num", "1",
         "--out-dir", str(tmp_path / "a"), "--cfg-options", "data.label_file=missing.txt"],
    )  # fmt: skip
    assert sorted(os.listdir(tmp_path / "a")) == ["grid.png", "img_000.png"]
    # image | prediction: 2 * 264 + 4 = 532 wide
    assert _png(str(tmp_path / "a" / "img_000.png")).shape == (196, 532, 3)
    names = tmp_path / "names.txt"
    names.write_text("\ufeff# chosen\nimg_002\r\n\nimg_004  # two classes\n")  # BOM and CRLF too
    run_tool(
        "visualize",
        [world["config"], world["ckpt"], "--device", "cpu", "--list", str(names), "--cams", "none",
         "--out-dir", str(tmp_path / "b")],
    )  # fmt: skip
    assert sorted(os.listdir(tmp_path / "b")) == ["grid.png", "img_002.png", "img_004.png"]
    proc = run_tool(
        "visualize",
        [world["config"], world["ckpt"], "--device", "cpu", "--names", "img_999"],
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: 1 name(s) not in split list" in proc.stderr and "img_999" in proc.stderr


def test_stack_rows_pads_white_and_titles():
    a, b = np.zeros((2, 3, 3), np.uint8), np.zeros((1, 5, 3), np.uint8)
    grid = stack_rows([a, b], gap=1)
    assert grid.shape == (2 + 1 + 1, 5, 3)
    assert (grid[:2, 3:] == 255).all() and (grid[2] == 255).all() and (grid[3] == 0).all()
    panel = titled(np.zeros((4, 30, 3), np.uint8), "x")
    assert panel.shape == (16 + 4, 30, 3) and (panel[16:] == 0).all()
