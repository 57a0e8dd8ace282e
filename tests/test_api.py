"""The Python API (weclip.apis) and tools/segment.py: the README's example runs as written on a toy
checkpoint trained by tools/train.py; images of every kind; segment agrees with tools/infer.py's predictor."""

import os
import re

import numpy as np
import pytest
import torch
from helpers import REPO, make_toy_root, run_tool
from PIL import Image

from weclip import init_model, pseudo_labels, read_image, segment
from weclip.errors import UserInputError

TOY_CONFIG = os.path.join(REPO, "configs", "toy.py")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy world (112 px, as configs/toy.py) and a 2-iteration tools/train.py checkpoint."""
    base = tmp_path_factory.mktemp("api")
    root = make_toy_root(str(base), image_size=112, num_train=4, num_val=2)
    work = str(base / "work")
    options = [f"data.root={root}", f"data.split_dir={root}", "train.max_iters=2", "train.eval_interval=0",
               "train.batch_size=2", "train.vis_interval=0"]  # fmt: skip
    run_tool(
        "train", [TOY_CONFIG, "--device", "cpu", "--work-dir", work, "--cfg-options", *options]
    )
    return {"root": root, "ckpt": os.path.join(work, "checkpoints", "iter_2.pth")}


def readme_example() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no <!-- api-example --> python block"
    return match.group(1)


def test_readme_example_runs_as_written(toy):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 12  # the README promises a ~10-line example
    image = os.path.join(toy["root"], "JPEGImages", "toy_val_00000.png")
    # the README's paths are the demo's; point them at this test's toy world and checkpoint
    code = code.replace("work_dirs/demo/checkpoints/iter_1500.pth", toy["ckpt"])
    code = code.replace("data/toy/JPEGImages/toy_val_00000.png", image)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    seg, pl = scope["seg"], scope["pl"]
    assert seg.labels.shape == (112, 112) and seg.probs.shape == (5, 112, 112)
    np.testing.assert_allclose(seg.probs.sum(0), 1.0, rtol=1e-5)
    assert np.array_equal(seg.probs.argmax(0), seg.labels)
    assert pl.labels.shape == (112, 112) and set(np.unique(pl.labels)) <= {0, 1}  # circle = class 1
    assert pl.class_ids.tolist() == [1] and pl.refined_cams.shape == (1, 112, 112)


def test_images_of_every_kind_and_crf(toy, tmp_path):
    model = init_model(TOY_CONFIG, toy["ckpt"], "cpu")
    path = os.path.join(toy["root"], "JPEGImages", "toy_val_00001.png")
    rgb = np.array(Image.open(path))
    ref = segment(model, path)
    for image in (Image.open(path), rgb, torch.from_numpy(rgb).permute(2, 0, 1).contiguous()):
        assert np.array_equal(segment(model, image).labels, ref.labels)
    crf = segment(model, rgb, crf=True)
    np.testing.assert_allclose(crf.probs.sum(0), 1.0, rtol=1e-4)  # CRF marginals
    assert crf.labels.shape == ref.labels.shape
    # odd sizes: a non-multiple of the patch, and an extreme aspect ratio (one patch kept on the short side)
    for shape in ((37, 53, 3), (9, 300, 3)):
        out = segment(model, np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
        assert out.labels.shape == shape[:2]
    with pytest.raises(UserInputError, match="unknown class name 'dog'"):
        pseudo_labels(model, rgb, ["dog"])
    with pytest.raises(UserInputError, match="foreground class"):
        pseudo_labels(model, rgb, [0])
    with pytest.raises(UserInputError, match=r"\(H, W, 3\) uint8"):
        read_image(rgb.astype(np.float32))


def test_segment_tool_on_a_folder(toy, tmp_path):
    folder = os.path.join(toy["root"], "JPEGImages")
    out = str(tmp_path / "seg")
    proc = run_tool(
        "segment", [folder, TOY_CONFIG, toy["ckpt"], "--device", "cpu", "--out-dir", out]
    )
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(folder))
    expected = sorted([s + ".png" for s in stems] + [s + "_overlay.png" for s in stems])
    assert sorted(os.listdir(out)) == expected and f"{len(stems)} image(s) -> {out}" in proc.stdout
    with Image.open(os.path.join(out, stems[0] + ".png")) as png:
        assert png.mode == "P" and png.size == (112, 112)
        labels = np.array(png)
    model = init_model(TOY_CONFIG, toy["ckpt"], "cpu")
    assert np.array_equal(labels, segment(model, os.path.join(folder, stems[0] + ".png")).labels)
    with Image.open(os.path.join(out, stems[0] + "_overlay.png")) as overlay:
        assert overlay.mode == "RGB" and overlay.size == (112, 112)
