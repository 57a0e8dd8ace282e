"""Bad input gives one clear line and exit code 2, never a traceback; odd but valid input just works
(issue 15).

The corpus is made here, from the synthetic VOC-layout tree of ``helpers.make_synth_dataset``, a
miniature VOC 2012 + SBD tree and a miniature COCO 2014 tree; every case breaks one thing in a fresh
copy. A bad case runs a tool as a user does, through ``weclip.utils.cli.run_main`` (what every tool's
``__main__`` calls): in-process (the tools only parse arguments and call the library; a subprocess
costs 8-20 s of imports on a busy 2-core machine), and as a real subprocess for one case per tool (two
of them always, the others marked slow). Each must give

* exit code 2;
* exactly one ``error:`` line, holding every expected fragment (the file or key, and the problem),
  and at most one line after it (a hint; tqdm's redraw of an interrupted bar does not count);
* no ``Traceback`` on stderr;
* no partial output: none of the case's ``absent`` paths (the failing image's PNG, metrics.json, masks
  of a refused annotation file, ...) and no atomic-write temporary (``.<name>.*.tmp*``) anywhere.

The odd-but-valid part runs infer / eval_pseudo / train (with validation) / segment / the training
dataset / prepare_voc on images and list files a user may well have: 16-bit, CMYK, palette, RGBA,
EXIF-rotated, 1x1, 2000x20, lists with a UTF-8 BOM, CRLF and trailing spaces.
"""

import codecs
import dataclasses
import importlib.util
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pytest
import scipy.io
import torch
from helpers import (
    REPO,
    SIZES,
    make_checkpoint,
    make_synth_dataset,
    run_tool,
    single_thread,
    write_config,
)
from PIL import Image

from weclip.config import load_config
from weclip.data import build_dataset
from weclip.data.images import read_mask
from weclip.utils.cli import run_main

# --------------------------------------------------------------------------- running tools

_TOOLS: Dict[str, object] = {}


def load_tool(name: str):
    """``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    if name not in _TOOLS:
        spec = importlib.util.spec_from_file_location(
            f"_tool_{name}", os.path.join(REPO, "tools", f"{name}.py")
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOLS[name] = module
    return _TOOLS[name]


def run_in_process(tool: str, argv: List[str], capsys) -> tuple:
    """``run_main(tools/<tool>.main, argv)`` as ``python tools/<tool>.py argv`` runs it: (rc, stderr)."""
    capsys.readouterr()
    try:
        result = run_main(load_tool(tool).main, argv)
        rc = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        rc = exit_.code
    return rc, capsys.readouterr().err


def run_as_subprocess(tool: str, argv: List[str]) -> tuple:
    # PYTHONPATH: the tools import the ``weclip`` of this checkout, not an installed one elsewhere
    env = {"WECLIP_DEBUG": "0", "PYTHONPATH": REPO}
    proc = run_tool(tool, argv, env=env, check=False)
    return proc.returncode, proc.stderr


_TQDM_BAR = re.compile(r"^\S[^|]*:\s+\d+%\|")  # "infer:  40%|####      | 2/5 [...]"


def error_line(rc, stderr: str) -> str:
    """Check the one-error-line contract; returns the text after ``error:``."""
    assert rc == 2, f"exit code {rc}, expected 2; stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line.strip() for line in re.split(r"[\r\n]+", stderr) if line.strip()]
    # the line may follow an unfinished tqdm bar on the same terminal line (see the report of issue 15)
    hits = [i for i, line in enumerate(lines) if re.search(r"(^|\])error: ", line)]
    assert len(hits) == 1, f"expected one error line, got {len(hits)}:\n{stderr[-3000:]}"
    after = [line for line in lines[hits[0] + 1 :] if not _TQDM_BAR.match(line)]
    assert len(after) <= 1, f"more than one line after the error line: {after}"
    line = lines[hits[0]]
    return line[line.index("error: ") + len("error: ") :]


def argparse_error(rc, stderr: str) -> str:
    """argparse's own convention (usage + ``prog: error: ...``, exit 2): the error text."""
    assert rc == 2 and "Traceback" not in stderr, stderr[-3000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert ": error: " in last, stderr
    return last.split(": error: ", 1)[1]


def leftover_temporaries(directory: Path) -> List[str]:
    return [str(p) for p in directory.rglob(".*.tmp*")]


# --------------------------------------------------------------------------- the corpus


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The shared, never modified originals: synthetic tree, configs, checkpoints, VOC/COCO trees."""
    base = tmp_path_factory.mktemp("bad_inputs")
    with single_thread():
        root = make_synth_dataset(str(base))
        config = write_config(str(base), root)
        ckpt = make_checkpoint(config, str(base / "work"), iteration=2, seed=1)
        # a decoder of another width (embed_dim 32 instead of 16), same class count
        wide = base / "wide.py"
        wide.write_text(f"_base_ = [{config!r}]\nmodel = dict(decoder=dict(embed_dim=32))\n")
        wide_ckpt = make_checkpoint(str(wide), str(base / "wide_work"), iteration=2, seed=1)
    # the same decoder with one class more (6 rows in the classifier)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    for key in [k for k in state["model"] if k.startswith("classifier.")]:
        value = state["model"][key]
        state["model"][key] = torch.cat([value, value[:1]], dim=0)
    six_ckpt = str(base / "six_classes.pth")
    torch.save(state, six_ckpt)
    voc = make_voc_tree(base / "voc_tree")
    coco = make_coco_tree(base / "coco_tree")
    return dataclasses.make_dataclass(
        "World", ["base", "root", "config", "ckpt", "wide_ckpt", "six_ckpt", "voc", "coco"]
    )(base, root, config, ckpt, wide_ckpt, six_ckpt, voc, coco)


def clone_synth(world, d: Path) -> tuple:
    """A private copy of the synthetic tree and a config pointing to it: (root, config)."""
    root = d / "synth"
    shutil.copytree(world.root, root)
    return root, write_config(str(d), str(root))


def png_bytes(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


# ---- a miniature VOC 2012 + SBD tree (6x8 images; see tests/test_prepare_voc.py for the full one)
VOC_H, VOC_W = 6, 8
VOC_SETS = {"train": ["2007_000001"], "val": ["2007_000002"], "test": ["2010_000003"]}
SBD_SETS = {"train": ["2008_000004"], "val": ["2008_000005"]}
VOC_MASKS = {"2007_000001": 1, "2007_000002": 15}  # name -> class in a VOC SegmentationClass PNG
SBD_MASKS = {"2008_000004": 3, "2008_000005": 7}  # name -> class in an SBD .mat


def _block(value: int, h: int = VOC_H, w: int = VOC_W) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[1:4, 2:6] = value
    return mask


def _sbd_mat(path: Path, seg: np.ndarray) -> None:
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "CategoriesPresent": np.uint8(1)}})


def make_voc_tree(base: Path) -> Dict[str, Path]:
    voc, sbd = base / "VOC2012", base / "benchmark_RELEASE" / "dataset"
    sets = voc / "ImageSets" / "Segmentation"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", sets, sbd / "cls"):
        folder.mkdir(parents=True)
    for name in sorted({n for names in VOC_SETS.values() for n in names} | set(SBD_MASKS)):
        Image.fromarray(np.full((VOC_H, VOC_W, 3), 90, np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
    for name, value in VOC_MASKS.items():
        image = Image.fromarray(_block(value), mode="P")
        image.putpalette([0, 0, 0, 128, 0, 0] + [64] * (254 * 3))
        image.save(voc / "SegmentationClass" / f"{name}.png")
    for name, value in SBD_MASKS.items():
        _sbd_mat(sbd / "cls" / f"{name}.mat", _block(value))
    for split, names in VOC_SETS.items():
        (sets / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    for split, names in SBD_SETS.items():
        (sbd / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return {"voc": voc, "sbd": sbd}


def clone_voc(world, d: Path) -> tuple:
    """A private copy of the VOC tree: (voc, sbd, out, argv with --no-check-counts)."""
    shutil.copytree(world.voc["voc"].parent, d / "tree")
    voc, sbd = d / "tree" / "VOC2012", d / "tree" / "benchmark_RELEASE" / "dataset"
    out = d / "lists"
    argv = ["--voc-root", str(voc), "--sbd-root", str(sbd.parent), "--out-dir", str(out)]
    return voc, sbd, out, argv + ["--workers", "1", "--no-check-counts"]


# ---- a miniature COCO 2014 tree (the 80 categories, one image per split)
_COCO_NAMES = load_config(os.path.join(REPO, "configs", "coco.py")).data.class_names[1:]
_OFFICIAL_SPELLING = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}
COCO_CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
COCO_CATS = [
    {"id": i, "name": _OFFICIAL_SPELLING.get(n, n), "supercategory": "x"}
    for i, n in zip(COCO_CAT_IDS, _COCO_NAMES)
]


def _coco_json(split: str) -> dict:
    if split == "train":
        images = [
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 8, "width": 10}
        ]
        anns = [
            {"id": 1, "image_id": 9, "category_id": 1, "iscrowd": 0,
             "segmentation": [[1, 1, 7, 1, 7, 5, 1, 5]]},
            {"id": 2, "image_id": 9, "category_id": 18, "iscrowd": 1,
             "segmentation": {"size": [8, 10], "counts": [70, 10]}},
        ]  # fmt: skip
    else:
        images = [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 5, "width": 6}]
        anns = [
            {"id": 3, "image_id": 42, "category_id": 90, "iscrowd": 0,
             "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
        ]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": COCO_CATS}


def make_coco_tree(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        data = _coco_json(split)
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
        (root / "JPEGImages" / split).mkdir(parents=True)
        for info in data["images"]:
            Image.fromarray(np.zeros((info["height"], info["width"], 3), np.uint8)).save(
                root / "JPEGImages" / split / info["file_name"]
            )
    return root


def clone_coco(world, d: Path, edit: Optional[Callable[[dict], object]] = None, split="train"):
    """A private copy of the COCO tree, ``edit`` (in place) applied to one split's JSON: (root, out,
    argv)."""
    root = d / "MSCOCO"
    shutil.copytree(world.coco, root)
    if edit is not None:
        path = root / "annotations" / f"instances_{split}2014.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    out = d / "lists"
    return root, out, ["--coco-root", str(root), "--out-dir", str(out), "--workers", "1"]


# --------------------------------------------------------------------------- the bad cases


@dataclasses.dataclass
class Case:
    tool: str
    argv: List[str]
    expect: Sequence[str]  # fragments of the error line (file / key, and the problem)
    absent: Sequence[Path] = ()  # what must not exist afterwards
    forbid: Sequence[str] = ()  # fragments that must NOT be in the error line
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    modules: Dict[str, object] = dataclasses.field(default_factory=dict)  # sys.modules patches


CASES: Dict[str, Callable] = {}
SUBPROCESS = set()  # cases that also run as a real subprocess (one per tool)


def case(name: str, subprocess: bool = False):
    def register(fn):
        CASES[name] = fn
        if subprocess:
            SUBPROCESS.add(name)
        return fn

    return register


def case_params(names, slow: Sequence[str] = ()) -> list:
    params = []
    for n in sorted(names):
        marks = [pytest.mark.slow] if n in slow else []
        params.append(pytest.param(n, marks=marks, id=n))
    return params


# ---- prepare_voc
@case("voc/root-missing", subprocess=True)
def _(w, d):
    return Case("prepare_voc", ["--voc-root", str(d / "nope")], ["--voc-root", "no such folder"])


@case("voc/val-list-missing")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    os.remove(voc / "ImageSets" / "Segmentation" / "val.txt")
    return Case("prepare_voc", argv, ["Split list not found", "Segmentation/val.txt"], [out])


@case("voc/list-two-fields")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001 1\n")
    return Case("prepare_voc", argv, ["train.txt:1:", "one image name per line"], [out])


@case("voc/list-latin1")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_bytes(b"2007_000002\n2007_\xe9\n")
    return Case("prepare_voc", argv, ["val.txt:2:", "not UTF-8"], [out])


@case("voc/list-utf16")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_bytes("2007_000002\n".encode("utf-16"))
    return Case("prepare_voc", argv, ["val.txt", "UTF-16", "save it as UTF-8"], [out])


@case("voc/sbd-not-a-mat")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    (sbd / "cls" / "2008_000004.mat").write_bytes(b"not a MATLAB file")
    aug = voc / "SegmentationClassAug"
    return Case(
        "prepare_voc", argv, ["2008_000004.mat", "Cannot read GTcls.Segmentation"],
        [out, aug / "2008_000004.png"],
    )  # fmt: skip


@case("voc/sbd-value-not-a-class")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    _sbd_mat(sbd / "cls" / "2008_000005.mat", _block(30))
    aug = voc / "SegmentationClassAug"
    return Case(
        "prepare_voc", argv, ["2008_000005.mat", "value 30 is neither a class id 0..20"],
        [out, aug / "2008_000005.png"],
    )  # fmt: skip


@case("voc/rgb-voc-mask")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    Image.fromarray(np.zeros((VOC_H, VOC_W, 3), np.uint8)).save(
        voc / "SegmentationClass" / "2007_000002.png"
    )
    aug = voc / "SegmentationClassAug"
    return Case(
        "prepare_voc", argv, ["2007_000002.png", "mode 'RGB'", "class ids"],
        [out, aug / "2007_000002.png"],
    )  # fmt: skip


@case("voc/truncated-voc-mask")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    path = voc / "SegmentationClass" / "2007_000001.png"
    path.write_bytes(path.read_bytes()[:60])
    aug = voc / "SegmentationClassAug"
    return Case(
        "prepare_voc", argv, ["Cannot read mask", "2007_000001.png", "corrupt or truncated"],
        [out, aug / "2007_000001.png"],
    )  # fmt: skip


@case("voc/mask-source-missing")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    os.remove(sbd / "cls" / "2008_000004.mat")
    return Case(
        "prepare_voc", argv, ["1 names have no mask", "2008_000004", "nothing written"],
        [out, voc / "SegmentationClassAug"],
    )  # fmt: skip


@case("voc/image-missing")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    os.remove(voc / "JPEGImages" / "2010_000003.jpg")
    return Case(
        "prepare_voc", argv, ["1 listed images are missing", "2010_000003.jpg"],
        [out, voc / "SegmentationClassAug"],
    )  # fmt: skip


@case("voc/mask-without-foreground")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    _sbd_mat(sbd / "cls" / "2008_000004.mat", np.zeros((VOC_H, VOC_W), np.uint8))
    return Case("prepare_voc", argv, ["no foreground class", "2008_000004.png"], [out])


@case("voc/mask-size-differs-from-image")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    _sbd_mat(sbd / "cls" / "2008_000005.mat", _block(7, VOC_H + 2, VOC_W))
    aug = voc / "SegmentationClassAug"
    return Case(
        "prepare_voc", argv, ["2008_000005.mat is 8x8 (WxH) but its image", "is 8x6"],
        [out, aug / "2008_000005.png"],
    )  # fmt: skip


@case("voc/official-counts")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    argv = [a for a in argv if a != "--no-check-counts"]
    return Case(
        "prepare_voc", argv,
        ["list sizes differ from the official ones", "train: 1 names, official 1464",
         "--no-check-counts"],
        [out],
    )  # fmt: skip


@case("voc/sbd-root-without-cls")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    shutil.rmtree(sbd / "cls")
    return Case("prepare_voc", argv, ["--sbd-root: no cls/ folder", str(sbd)], [out])


@case("voc/out-dir-is-a-file")
def _(w, d):
    voc, sbd, out, argv = clone_voc(w, d)
    out.write_text("")
    return Case("prepare_voc", argv, ["--out-dir", "exists and is not a folder"])


# ---- prepare_coco: every broken annotation file fails before any mask or list is written
def _coco_case(w, d, edit, expect, split="train", extra=()):
    root, out, argv = clone_coco(w, d, edit, split)
    return Case("prepare_coco", argv + list(extra), expect, [out, root / "SegmentationClass"])


@case("coco/no-annotations-entry", subprocess=True)
def _(w, d):
    return _coco_case(
        w, d, lambda data: data.pop("annotations"),
        ["instances_train2014.json", 'no "annotations" entry'],
    )  # fmt: skip


@case("coco/json-syntax")
def _(w, d):
    root, out, argv = clone_coco(w, d)
    (root / "annotations" / "instances_val2014.json").write_text('{"images": [\n  {"id": 1,}\n')
    return Case(
        "prepare_coco", argv, ["instances_val2014.json:2:", "not valid JSON"],
        [out, root / "SegmentationClass"],
    )  # fmt: skip


@case("coco/top-level-list")
def _(w, d):
    root, out, argv = clone_coco(w, d)
    path = root / "annotations" / "instances_train2014.json"
    path.write_text(json.dumps([json.loads(path.read_text())]))
    return Case(
        "prepare_coco", argv, ["instances_train2014.json", "top level is a list"],
        [out, root / "SegmentationClass"],
    )  # fmt: skip


@case("coco/images-not-a-list")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data.update(images={"id": 9}), ['"images" is a dict, expected a list']
    )


@case("coco/image-without-height")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data["images"][0].pop("height"), ["images[0] (id 9)", 'no "height"']
    )


@case("coco/image-file-name")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data["images"][0].update(file_name="cat.jpg"),
        ["images[0]", "file_name 'cat.jpg'", "COCO_train2014_000000000009.jpg"],
    )  # fmt: skip


@case("coco/annotation-unknown-image")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data["annotations"][0].update(image_id=777),
        ["annotations[0] (id 1)", "image_id 777 is not in"],
    )  # fmt: skip


@case("coco/annotation-unknown-category")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data["annotations"][1].update(category_id=999),
        ["annotations[1] (id 2)", "category_id 999"],
    )  # fmt: skip


@case("coco/annotation-without-segmentation")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data["annotations"][0].pop("segmentation"),
        ["instances_val2014.json", "annotations[0] (id 3)", 'no "segmentation"'], split="val",
    )  # fmt: skip


@case("coco/odd-polygon")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data["annotations"][0].update(segmentation=[[1, 1, 7, 1, 7]]),
        ["annotations[0] (id 1)", "polygon must be a flat list"],
    )  # fmt: skip


@case("coco/rle-of-another-size")
def _(w, d):
    rle = {"size": [3, 3], "counts": [9]}
    return _coco_case(
        w, d, lambda data: data["annotations"][1].update(segmentation=rle),
        ["annotations[1] (id 2)", "RLE size [3, 3] differs", "[8, 10]"],
    )  # fmt: skip


@case("coco/wrong-category-name")
def _(w, d):
    def edit(data):
        data["categories"] = [dict(c, name="wolf") if c["id"] == 18 else c for c in COCO_CATS]

    return _coco_case(w, d, edit, ["instances_val2014.json", "class 17 is 'wolf'", "'dog'"], "val")


@case("coco/no-non-crowd-annotation")
def _(w, d):
    return _coco_case(
        w, d, lambda data: data.update(annotations=[]),
        ["instances_train2014.json", "no image has a non-crowd annotation"],
    )  # fmt: skip


@case("coco/annotation-file-missing")
def _(w, d):
    root, out, argv = clone_coco(w, d)
    os.remove(root / "annotations" / "instances_val2014.json")
    return Case(
        "prepare_coco", argv, ["COCO annotation file not found", "instances_val2014.json"],
        [out, root / "SegmentationClass"],
    )  # fmt: skip


@case("coco/config-of-another-dataset")
def _(w, d):
    return _coco_case(w, d, None, ["tiny.py", "5 names, expected 81"], extra=["--config", w.config])


@case("coco/existing-mask-of-another-size")
def _(w, d):
    root, out, argv = clone_coco(w, d)
    (root / "SegmentationClass" / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(
        root / "SegmentationClass" / "val" / "000000000042.png"
    )  # made elsewhere: no source record
    return Case(
        "prepare_coco", argv,
        ["Existing mask", "000000000042.png is 4x4", "the annotations say 6x5", "delete it"], [out],
    )  # fmt: skip


@case("coco/existing-mask-of-another-size-in-a-worker")
def _(w, d):
    """The same, raised in a worker process (--workers 2): still one line."""
    c = CASES["coco/existing-mask-of-another-size"](w, d)
    c.argv[c.argv.index("--workers") + 1] = "2"
    return c


# ---- make_toy_data
@case("toy/config-without-toy-section")
def _(w, d):
    return Case("make_toy_data", [w.config, "--root", str(d / "toy")], ["tiny.py", "no 'toy'"])


@case("toy/too-many-classes")
def _(w, d):
    config = d / "toy9.py"
    config.write_text(
        f"_base_ = [{os.path.join(REPO, 'configs', 'toy.py')!r}]\ntoy = dict(num_classes=9)\n"
    )
    return Case(
        "make_toy_data", [str(config), "--root", str(d / "toy")],
        ["toy.num_classes must be in [1, 4]", "got 9"], [d / "toy"],
    )  # fmt: skip


@case("toy/root-is-a-file", subprocess=True)
def _(w, d):
    (d / "toy").write_text("")
    return Case(
        "make_toy_data", [os.path.join(REPO, "configs", "toy.py"), "--root", str(d / "toy")],
        ["toy", "exists and is not a folder"],
    )  # fmt: skip


# ---- train
def _train(config, d, *extra):
    return [str(config), "--device", "cpu", "--work-dir", str(d / "work"), *extra]


@case("train/option-of-wrong-type", subprocess=True)
def _(w, d):
    return Case(
        "train", _train(w.config, d, "--cfg-options", "train.max_iters=abc"),
        ["train.max_iters", "'abc'", "expected an integer"], [d / "work" / "checkpoints"],
    )  # fmt: skip


@case("train/imagenet-weights-missing")
def _(w, d):
    # a baseline whose trunk weights come from a local file that is not there
    config = d / "cam.py"
    config.write_text(
        f"_base_ = [{os.path.join(REPO, 'configs', 'baselines', 'toy_cam.py')!r}]\n"
        f"data = dict(root={w.root!r}, split_dir={w.root!r})\n"
    )
    missing = d / "resnet18-f37072fd.pth"
    return Case(
        "train", _train(config, d, "--cfg-options", f"model.resnet.weights={missing}"),
        ["Weights file not found", str(missing), "local file only"], [d / "work" / "checkpoints"],
    )  # fmt: skip


@case("train/unknown-option")
def _(w, d):
    return Case(
        "train", _train(w.config, d, "--cfg-options", "train.nope=1"),
        ["unknown config key 'train.nope'"],
    )  # fmt: skip


@case("train/batch-size-zero")
def _(w, d):
    return Case(
        "train", _train(w.config, d, "--cfg-options", "train.batch_size=0"),
        ["train.batch_size", "expected a value >= 1"],
    )  # fmt: skip


@case("train/config-syntax-error")
def _(w, d):
    config = d / "broken.py"
    config.write_text("train = dict(max_iters=10,\nseed = 3\n")
    return Case("train", _train(config, d), ["broken.py:1:", "does not parse"])


@case("train/config-missing")
def _(w, d):
    return Case("train", _train(d / "nope.py", d), ["config file not found", "nope.py"])


@case("train/latest-pointer-garbage")
def _(w, d):
    (d / "work" / "checkpoints").mkdir(parents=True)
    (d / "work" / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x00garbage")
    return Case(
        "train", _train(w.config, d, "--resume"),
        ["checkpoints/latest", "cannot read the pointer"],
        [d / "work" / "checkpoints" / "iter_2.pth"],
    )  # fmt: skip


@case("train/resume-decoder-of-another-width")
def _(w, d):
    return Case(
        "train", _train(w.config, d, "--resume", w.wide_ckpt),
        ["wide_work/checkpoints/iter_2.pth", "shape mismatches", "another architecture"],
        [d / "work" / "checkpoints"], forbid=["class count"],
    )  # fmt: skip


@case("train/resume-file-missing")
def _(w, d):
    return Case(
        "train", _train(w.config, d, "--resume", str(d / "none.pth")),
        ["checkpoint not found", "none.pth"],
    )  # fmt: skip


@case("train/label-id-out-of-range")
def _(w, d):
    root, config = clone_synth(w, d)
    with open(root / "cls_labels.txt", "a") as f:
        f.write("img_009 7\n")
    return Case("train", _train(config, d), ["cls_labels.txt:6:", "foreground id 7 out of range"])


@case("train/label-file-misses-a-name")
def _(w, d):
    root, config = clone_synth(w, d)
    lines = (root / "cls_labels.txt").read_text().splitlines()
    (root / "cls_labels.txt").write_text("\n".join(lines[1:]) + "\n")
    return Case(
        "train", _train(config, d), ["train.txt are missing from label file", "img_000"],
    )  # fmt: skip


@case("train/label-file-latin1")
def _(w, d):
    root, config = clone_synth(w, d)
    with open(root / "cls_labels.txt", "ab") as f:
        f.write(b"img_\xe9 1\n")
    return Case("train", _train(config, d), ["cls_labels.txt:6:", "not UTF-8"])


@case("train/split-name-repeats")
def _(w, d):
    root, config = clone_synth(w, d)
    (root / "train.txt").write_text("img_000\nimg_001\nimg_000\n")
    return Case("train", _train(config, d), ["train.txt:3:", "'img_000' repeats line 1"])


@case("train/data-root-wrong")
def _(w, d):
    return Case(
        "train", _train(w.config, d, "--cfg-options", f"data.root={d / 'elsewhere'}"),
        ["5 image file(s) of split list", "not found", "elsewhere/JPEGImages/img_000.png"],
    )  # fmt: skip


@case("train/corrupt-training-image")
def _(w, d):
    root, config = clone_synth(w, d)
    path = root / "JPEGImages" / "img_002.png"
    path.write_bytes(path.read_bytes()[:200])
    return Case(
        "train", _train(config, d, "--cfg-options", "train.max_iters=4", "train.eval_interval=100"),
        ["Cannot read image", "img_002.png", "corrupt or truncated"],
        [d / "work" / "checkpoints"],
    )  # fmt: skip


@case("train/corrupt-image-in-a-loader-worker")
def _(w, d):
    root, config = clone_synth(w, d)
    path = root / "JPEGImages" / "img_002.png"
    path.write_bytes(path.read_bytes()[:200])
    options = ["train.max_iters=4", "train.eval_interval=100", "train.num_workers=1"]
    return Case(
        "train", _train(config, d, "--cfg-options", *options),
        ["Cannot read image", "img_002.png", "corrupt or truncated"], [d / "work" / "checkpoints"],
    )  # fmt: skip


@case("train/clip-weights-missing")
def _(w, d):
    return Case(
        "train", _train(w.config, d, "--cfg-options", f"model.backbone.weights={d / 'ViT.pt'}"),
        ["model.backbone", "CLIP weights file not found", "ViT.pt"],
    )  # fmt: skip


@case("train/clip-weights-garbage")
def _(w, d):
    (d / "ViT.pt").write_bytes(b"\x00" * 64)
    return Case(
        "train", _train(w.config, d, "--cfg-options", f"model.backbone.weights={d / 'ViT.pt'}"),
        ["model.backbone", "Could not read CLIP weights", "ViT.pt"],
    )  # fmt: skip


@case("train/clip-weights-of-another-architecture")
def _(w, d):
    torch.save({"visual.conv1.weight": torch.zeros(8, 3, 4, 4)}, d / "other.pt")
    return Case(
        "train", _train(w.config, d, "--cfg-options", f"model.backbone.weights={d / 'other.pt'}"),
        ["model.backbone", "other.pt do not fit the architecture", "visual.conv1.weight"],
    )  # fmt: skip


# ---- infer
def _infer(config, ckpt, out, *extra):
    return [str(config), str(ckpt), "--device", "cpu", "--out-dir", str(out), "--ms", "1.0",
            "--no-flip", *extra]  # fmt: skip


@case("infer/checkpoint-garbage", subprocess=True)
def _(w, d):
    (d / "ckpt.pth").write_text("hello")
    return Case(
        "infer", _infer(w.config, d / "ckpt.pth", d / "out"),
        ["cannot read checkpoint", "ckpt.pth"], [d / "out" / "pred", d / "out" / "metrics.json"],
    )  # fmt: skip


@case("infer/checkpoint-missing")
def _(w, d):
    return Case(
        "infer", _infer(w.config, d / "none.pth", d / "out"), ["checkpoint not found", "none.pth"],
        [d / "out" / "pred"],
    )  # fmt: skip


@case("infer/checkpoint-folder")
def _(w, d):
    return Case("infer", _infer(w.config, d, d / "out"), ["checkpoint not found", str(d)])


@case("infer/decoder-of-another-width")
def _(w, d):
    return Case(
        "infer", _infer(w.config, w.wide_ckpt, d / "out"),
        ["wide_work/checkpoints/iter_2.pth do not fit the model", "checkpoint (32, 32) vs model (16, 16)",
         "another architecture"],
        [d / "out" / "pred"], forbid=["class count"],
    )  # fmt: skip


@case("infer/decoder-of-another-class-count")
def _(w, d):
    return Case(
        "infer", _infer(w.config, w.six_ckpt, d / "out"),
        ["six_classes.pth", "the class count differs (6 in the checkpoint, 5 in the config)"],
        [d / "out" / "pred"], forbid=["another architecture"],
    )  # fmt: skip


@case("infer/split-missing")
def _(w, d):
    return Case(
        "infer", _infer(w.config, w.ckpt, d / "out", "--split", "nosplit"),
        ["Split list not found", "nosplit.txt"], [d / "out" / "pred"],
    )  # fmt: skip


@case("infer/mask-value-not-a-class")
def _(w, d):
    root, config = clone_synth(w, d)
    mask = read_mask(root / "SegmentationClassAug" / "img_002.png")
    mask[0, 0] = 7
    Image.fromarray(mask).save(root / "SegmentationClassAug" / "img_002.png")
    out = d / "out"
    return Case(
        "infer", _infer(config, w.ckpt, out), ["img_002.png", "value 7 is neither a class id 0..4"],
        [out / "pred" / "img_002.png", out / "metrics.json"],
    )  # fmt: skip


@case("infer/mask-of-another-size")
def _(w, d):
    root, config = clone_synth(w, d)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "SegmentationClassAug" / "img_001.png")
    out = d / "out"
    return Case(
        "infer", _infer(config, w.ckpt, out),
        ["Mask", "img_001.png is 5x5 (WxH) but image", "is 26x40"],
        [out / "pred" / "img_001.png", out / "metrics.json"],
    )  # fmt: skip


@case("infer/rgb-mask")
def _(w, d):
    root, config = clone_synth(w, d)
    h, w_ = SIZES[3]
    Image.fromarray(np.zeros((h, w_, 3), np.uint8)).save(
        root / "SegmentationClassAug" / "img_003.png"
    )
    out = d / "out"
    return Case(
        "infer", _infer(config, w.ckpt, out), ["img_003.png", "mode 'RGB'"],
        [out / "pred" / "img_003.png", out / "metrics.json"],
    )  # fmt: skip


@case("infer/truncated-image")
def _(w, d):
    root, config = clone_synth(w, d)
    path = root / "JPEGImages" / "img_000.png"
    path.write_bytes(path.read_bytes()[:100])
    out = d / "out"
    return Case(
        "infer", _infer(config, w.ckpt, out), ["Cannot read image", "img_000.png"],
        [out / "pred", out / "metrics.json"],
    )  # fmt: skip


@case("infer/float-image")
def _(w, d):
    root, config = clone_synth(w, d)
    h, w_ = SIZES[4]
    Image.fromarray(np.zeros((h, w_), np.float32)).save(
        root / "JPEGImages" / "img_004.png", format="TIFF"
    )  # a TIFF behind a .png name: PIL reads the content, not the name
    out = d / "out"
    return Case(
        "infer", _infer(config, w.ckpt, out), ["img_004.png", "floating-point image"],
        [out / "pred" / "img_004.png", out / "metrics.json"],
    )  # fmt: skip


@case("infer/crf-without-pydensecrf")
def _(w, d):
    out = d / "out"
    return Case(
        "infer", _infer(w.config, w.ckpt, out, "--crf"), ["--crf", "pip install pydensecrf2"],
        [out / "pred", out / "metrics.json"],
        modules={"pydensecrf": None, "pydensecrf.densecrf": None},
    )  # fmt: skip


# ---- eval_pseudo
@case("eval_pseudo/unknown-row")
def _(w, d):
    return Case(
        "eval_pseudo",
        [w.config, w.ckpt, "--device", "cpu", "--out-dir", str(d / "out"), "--rows", "nope"],
        ["--rows", "unknown row(s) ['nope']", "known: cam"],
    )  # fmt: skip


@case("eval_pseudo/decoder-of-another-depth", subprocess=True)
def _(w, d):
    return Case(
        "eval_pseudo",
        [w.config, w.ckpt, "--device", "cpu", "--out-dir", str(d / "out"), "--rows", "rfm",
         "--cfg-options", "model.decoder.num_layers=2"],
        ["iter_2.pth do not fit the model", "missing keys", "blocks.1.", "another architecture"],
        [d / "out" / "rfm"], forbid=["class count"],
    )  # fmt: skip


@case("eval_pseudo/split-without-labels")
def _(w, d):
    root, config = clone_synth(w, d)
    (root / "extra.txt").write_text("img_000\nimg_new\n")
    return Case(
        "eval_pseudo",
        [config, w.ckpt, "--device", "cpu", "--out-dir", str(d / "out"), "--split", "extra"],
        ["extra.txt are missing from label file", "img_new"], [d / "out" / "cam"],
    )  # fmt: skip


# ---- visualize
@case("visualize/name-not-in-split", subprocess=True)
def _(w, d):
    return Case(
        "visualize",
        [w.config, w.ckpt, "--device", "cpu", "--out-dir", str(d / "vis"), "--names", "zzz"],
        ["name(s) not in split list", "val.txt", "zzz"], [d / "vis"],
    )  # fmt: skip


@case("visualize/list-file-missing")
def _(w, d):
    return Case(
        "visualize",
        [w.config, w.ckpt, "--device", "cpu", "--out-dir", str(d / "vis"), "--list",
         str(d / "names.txt")],
        ["--list: file not found", "names.txt"], [d / "vis"],
    )  # fmt: skip


@case("visualize/list-file-not-utf8")
def _(w, d):
    (d / "names.txt").write_bytes(b"img_000\nimg_\xe9\n")
    return Case(
        "visualize",
        [w.config, w.ckpt, "--device", "cpu", "--out-dir", str(d / "vis"), "--list",
         str(d / "names.txt")],
        ["names.txt:2:", "not UTF-8"], [d / "vis"],
    )  # fmt: skip


# ---- segment
@case("segment/image-missing", subprocess=True)
def _(w, d):
    return Case(
        "segment", [str(d / "photo.jpg"), w.config, w.ckpt, "--device", "cpu", "--out-dir",
                    str(d / "out")],
        ["no such image or folder", "photo.jpg"], [d / "out"],
    )  # fmt: skip


@case("segment/folder-without-images")
def _(w, d):
    (d / "photos").mkdir()
    (d / "photos" / "notes.txt").write_text("no image here")
    return Case(
        "segment", [str(d / "photos"), w.config, w.ckpt, "--device", "cpu", "--out-dir",
                    str(d / "out")],
        ["photos: no image files"], [d / "out"],
    )  # fmt: skip


@case("segment/one-corrupt-photo")
def _(w, d):
    (d / "photos").mkdir()
    Image.fromarray(np.full((20, 30, 3), 100, np.uint8)).save(d / "photos" / "a.png")
    (d / "photos" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return Case(
        "segment", [str(d / "photos"), w.config, w.ckpt, "--device", "cpu", "--out-dir",
                    str(d / "out")],
        ["Cannot read image", "b.jpg"], [d / "out" / "b.png", d / "out" / "b_overlay.png"],
    )  # fmt: skip


# ---- report
@case("report/malformed-metrics", subprocess=True)
def _(w, d):
    (d / "runs").mkdir()
    (d / "runs" / "metrics.json").write_text('{"miou": ')
    return Case(
        "report", [str(d / "runs"), "--out", str(d / "report.md")],
        ["runs/metrics.json", "not a readable JSON file"], [d / "report.md"],
    )  # fmt: skip


@case("report/folder-missing")
def _(w, d):
    return Case("report", [str(d / "runs")], ["no such file or folder", "runs"])


@case("report/readme-missing")
def _(w, d):
    (d / "runs").mkdir()
    return Case(
        "report", [str(d / "runs"), "--update-readme", str(d / "README.md")],
        ["--update-readme", "README.md"], [d / "README.md"],
    )  # fmt: skip


# ---- convert_official_checkpoint
@case("convert/not-an-authors-checkpoint", subprocess=True)
def _(w, d):
    return Case(
        "convert_official_checkpoint", [w.config, w.ckpt, str(d / "out.pth")],
        ["iter_2.pth is not a checkpoint of the authors' code"], [d / "out.pth"],
    )  # fmt: skip


@case("convert/would-overwrite-input")
def _(w, d):
    shutil.copy(w.ckpt, d / "official.pth")
    return Case(
        "convert_official_checkpoint", [w.config, str(d / "official.pth"), str(d / "official.pth")],
        ["refusing to overwrite", "official.pth"],
    )  # fmt: skip


@case("convert/authors-decoder-of-another-width")
def _(w, d):
    from weclip.models.official_names import to_official_decoder_state

    state = torch.load(w.wide_ckpt, map_location="cpu", weights_only=False)["model"]
    official = dict(to_official_decoder_state(state))
    official["encoder.visual.proj"] = torch.zeros(
        1
    )  # their whole-model layout: CLIP under encoder.
    torch.save(official, d / "official.pth")
    return Case(
        "convert_official_checkpoint", [w.config, str(d / "official.pth"), str(d / "out.pth")],
        ["official.pth", "Shape mismatch for 'decoder_fts_fuse.",
         "checkpoint (32, 64), decoder (16, 64)"],
        [d / "out.pth"],
    )  # fmt: skip


@case("convert/input-missing")
def _(w, d):
    return Case(
        "convert_official_checkpoint", [w.config, str(d / "none.pth"), str(d / "out.pth")],
        ["checkpoint not found", "none.pth"], [d / "out.pth"],
    )  # fmt: skip


# ---- demo (only what fails before its first tool run)
@case("demo/config-missing")
def _(w, d):
    return Case(
        "demo", [str(d / "nope.py"), "--work-dir", str(d / "demo")],
        ["config file not found", "nope.py"], [d / "demo"],
    )  # fmt: skip


@case("demo/unknown-option")
def _(w, d):
    return Case(
        "demo",
        [os.path.join(REPO, "configs", "toy.py"), "--cfg-options", "train.nope=1", "--work-dir",
         str(d / "demo")],
        ["unknown config key 'train.nope'"], [d / "demo"],
    )  # fmt: skip


def _check_case(c: Case, d: Path, rc, stderr: str) -> str:
    message = error_line(rc, stderr)
    for fragment in c.expect:
        assert fragment in message, f"{fragment!r} not in the error line: {message}"
    for fragment in c.forbid:
        assert fragment not in message, f"{fragment!r} in the error line: {message}"
    for path in c.absent:
        assert not Path(path).exists(), f"partial output left behind: {path}"
    assert not leftover_temporaries(d), leftover_temporaries(d)
    return message


@pytest.mark.parametrize("name", case_params(CASES))
def test_bad_input_gives_one_error_line(name, world, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WECLIP_DEBUG", raising=False)
    c = CASES[name](world, tmp_path)
    for module, value in c.modules.items():
        monkeypatch.setitem(sys.modules, module, value)
    with single_thread():
        rc, stderr = run_in_process(c.tool, [str(a) for a in c.argv], capsys)
    _check_case(c, tmp_path, rc, stderr)


# ~20 s each on a busy 2-core machine: two always run (the first examples), the rest are slow
FAST_SUBPROCESS = ("train/option-of-wrong-type", "coco/no-annotations-entry")


@pytest.mark.parametrize(
    "name", case_params(SUBPROCESS, slow=sorted(SUBPROCESS - set(FAST_SUBPROCESS)))
)
def test_bad_input_as_a_subprocess(name, world, tmp_path):
    """The same contract through the real entry point (``python tools/<tool>.py``), one case per tool."""
    c = CASES[name](world, tmp_path)
    rc, stderr = run_as_subprocess(c.tool, [str(a) for a in c.argv])
    _check_case(c, tmp_path, rc, stderr)


def test_debug_shows_the_traceback(world, tmp_path, capsys):
    """``--debug`` re-raises the user error (the traceback is there when one is wanted)."""
    from weclip.errors import ConfigError

    with pytest.raises(ConfigError, match="train.max_iters"):
        run_main(load_tool("train").main, _train(world.config, tmp_path, "--debug",
                                                 "--cfg-options", "train.max_iters=abc"))  # fmt: skip


def test_corpus_size_and_coverage():
    """The issue asks for at least 40 cases across the tools."""
    assert len(CASES) >= 40
    tools = {name.split("/")[0] for name in CASES}
    assert tools >= {"voc", "coco", "toy", "train", "infer", "eval_pseudo", "visualize", "segment",
                     "report", "convert", "demo"}  # fmt: skip


def test_argparse_errors_follow_the_same_exit_code(world, tmp_path, capsys):
    """Flag errors are argparse's (usage line, then ``prog: error: ...``), also exit code 2."""
    rc, stderr = run_in_process("infer", [world.config, world.ckpt, "--ms", "a,b"], capsys)
    assert "--ms expects comma-separated numbers" in argparse_error(rc, stderr)
    rc, stderr = run_in_process("prepare_voc", ["--workers", "2"], capsys)
    assert "--voc-root" in argparse_error(rc, stderr)


# --------------------------------------------------------------------------- odd but valid


def _exif_rotated_jpeg(h: int, w: int) -> bytes:
    """A JPEG whose EXIF says 'rotate 90° CW to view' (orientation 6); the stored grid is h x w."""
    image = Image.fromarray(np.full((h, w, 3), 120, np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def _cmyk_jpeg(h: int, w: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (w, h), (10, 200, 30, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _palette_png(h: int, w: int) -> bytes:
    image = Image.fromarray((np.arange(h * w).reshape(h, w) % 4).astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (252 * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# name -> (stored H, W, file bytes); all behind a ".png" name (PIL reads the content)
def odd_images() -> Dict[str, tuple]:
    rng = np.random.default_rng(0)
    return {
        "gray16": (20, 30, png_bytes(rng.integers(0, 65535, (20, 30), dtype=np.uint16))),
        "rgb16": (18, 22, _rgb16_png(rng, 18, 22)),
        "cmyk": (24, 16, _cmyk_jpeg(24, 16)),
        "palette": (17, 25, _palette_png(17, 25)),
        "rgba": (21, 19, png_bytes(rng.integers(0, 255, (21, 19, 4), dtype=np.uint8))),
        "exif_rotated": (16, 40, _exif_rotated_jpeg(16, 40)),
        "one_pixel": (1, 1, png_bytes(np.full((1, 1, 3), 200, np.uint8))),
        "wide_2000x20": (20, 2000, png_bytes(rng.integers(0, 255, (20, 2000, 3), dtype=np.uint8))),
    }


def _rgb16_png(rng, h: int, w: int) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", rng.integers(0, 65535, (h, w, 3), dtype=np.uint16))
    assert ok
    return data.tobytes()


def _editor_text(lines: List[str]) -> str:
    """What Notepad & co. save: a UTF-8 BOM, CRLF line ends, trailing spaces, a blank last line."""
    return codecs.BOM_UTF8.decode("utf-8") + "".join(f"{line}  \r\n" for line in lines) + "\r\n"


@pytest.fixture(scope="module")
def odd_world(world, tmp_path_factory):
    """A VOC-layout tree of the odd images (masks of the stored size), lists saved by an editor."""
    base = tmp_path_factory.mktemp("odd")
    root = base / "odd"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    images = odd_images()
    labels = []
    for i, (name, (h, w, data)) in enumerate(images.items()):
        (root / "JPEGImages" / f"{name}.png").write_bytes(data)
        mask = np.zeros((h, w), np.uint8)
        mask[: max(1, h // 2), : max(1, w // 2)] = 1 + i % 4
        Image.fromarray(mask).save(root / "SegmentationClassAug" / f"{name}.png")
        labels.append(f"{name} {i % 4}")
    for split in ("train", "val"):
        with open(root / f"{split}.txt", "w", newline="") as f:
            f.write(_editor_text(list(images)))
    with open(root / "cls_labels.txt", "w", newline="") as f:
        f.write(_editor_text(labels))
    config = write_config(str(base), str(root))
    return {"root": root, "config": config, "images": images, "base": base}


def test_odd_images_and_editor_lists_infer(world, odd_world, tmp_path, capsys):
    """infer (MS + flip, the config's setting) predicts every odd image at its stored size."""
    out = tmp_path / "out"
    argv = [odd_world["config"], world.ckpt, "--device", "cpu", "--out-dir", str(out)]
    with single_thread():
        rc, stderr = run_in_process("infer", argv, capsys)
    assert rc == 0, stderr[-3000:]
    for name, (h, w, _) in odd_world["images"].items():
        assert read_mask(out / "pred" / f"{name}.png").shape == (h, w), name
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["num_images"] == len(odd_world["images"])
    # every pixel of every mask is scored: the sum of the stored sizes
    assert payload["num_pixels"] == sum(h * w for h, w, _ in odd_world["images"].values())


def test_odd_images_train_items(odd_world):
    """The training pipeline accepts every odd image: a full crop, uint8, some valid pixels."""
    cfg = load_config(odd_world["config"]).data
    dataset = build_dataset(cfg, "train", train=True)
    assert dataset.names == list(odd_world["images"])  # BOM, CRLF, spaces gone
    for index, name in enumerate(dataset.names):
        item = dataset[(index, 7)]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8, name
        assert item["valid"].any(), name
        assert item["cls_labels"].nonzero().flatten().tolist() == [index % 4], name


def test_exif_orientation_is_not_applied(odd_world):
    """Masks are aligned with the stored pixel grid (as the authors' imageio reads it): an EXIF-rotated
    16x40 JPEG is served as 16x40 with its 16x40 mask, not rotated to 40x16."""
    cfg = load_config(odd_world["config"]).data
    dataset = build_dataset(cfg, "val", train=False)
    item = dataset[dataset.names.index("exif_rotated")]
    assert tuple(item["image"].shape) == (3, 16, 40) and tuple(item["mask"].shape) == (16, 40)


def test_odd_images_segment(world, odd_world, tmp_path, capsys):
    """tools/segment.py on a folder of the odd images: a label PNG and an overlay for each."""
    argv = [str(odd_world["root"] / "JPEGImages"), world.config, world.ckpt, "--device", "cpu",
            "--out-dir", str(tmp_path / "seg")]  # fmt: skip
    with single_thread():
        rc, stderr = run_in_process("segment", argv, capsys)
    assert rc == 0, stderr[-3000:]
    for name, (h, w, _) in odd_world["images"].items():
        assert read_mask(tmp_path / "seg" / f"{name}.png").shape == (h, w), name
        assert (tmp_path / "seg" / f"{name}_overlay.png").is_file()


@pytest.mark.parametrize(
    "one_pixel", [pytest.param(False, id="without-1x1"), pytest.param(True, id="with-1x1")]
)
def test_odd_images_eval_pseudo(world, odd_world, tmp_path, capsys, one_pixel):
    """eval_pseudo scores the pseudo-labels of every odd image (the 2000x20 one included)."""
    names = [n for n in odd_world["images"] if one_pixel or n != "one_pixel"]
    split = tmp_path / "split"
    split.mkdir()
    (split / "val.txt").write_text("".join(n + "\n" for n in names))
    shutil.copy(odd_world["root"] / "cls_labels.txt", split / "cls_labels.txt")
    argv = [odd_world["config"], world.ckpt, "--device", "cpu", "--split", "val", "--rows", "cam",
            "--out-dir", str(tmp_path / "out"), "--cfg-options", f"data.split_dir={split}"]  # fmt: skip
    with single_thread():
        rc, stderr = run_in_process("eval_pseudo", argv, capsys)
    assert rc == 0, stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "cam" / "metrics.json").read_text())
    assert payload["num_images"] == len(names)


@pytest.mark.parametrize(
    "one_pixel", [pytest.param(False, id="without-1x1"), pytest.param(True, id="with-1x1")]
)
def test_odd_images_train_and_validate(odd_world, tmp_path, capsys, one_pixel):
    """tools/train.py trains on the odd images and validates on them (the 2000x20 one included)."""
    names = [n for n in odd_world["images"] if one_pixel or n != "one_pixel"]
    split = tmp_path / "split"
    split.mkdir()
    for name in ("train", "val"):
        (split / f"{name}.txt").write_text("".join(n + "\n" for n in names))
    shutil.copy(odd_world["root"] / "cls_labels.txt", split / "cls_labels.txt")
    options = ["train.max_iters=2", "train.eval_interval=2", "train.ckpt_interval=2",
               f"train.eval_max_images={len(names)}", f"data.split_dir={split}"]  # fmt: skip
    argv = [odd_world["config"], "--device", "cpu", "--work-dir", str(tmp_path / "work"),
            "--cfg-options", *options]  # fmt: skip
    with single_thread():
        rc, stderr = run_in_process("train", argv, capsys)
    assert rc == 0, stderr[-3000:]
    assert (tmp_path / "work" / "checkpoints" / "iter_2.pth").is_file()


def test_prepare_voc_reads_editor_saved_lists(world, tmp_path, capsys):
    """ImageSets lists with a BOM, CRLF and trailing spaces give the same, clean lists."""
    voc, sbd, out, argv = clone_voc(world, tmp_path)
    for split, names in VOC_SETS.items():
        with open(voc / "ImageSets" / "Segmentation" / f"{split}.txt", "w", newline="") as f:
            f.write(_editor_text(names))
    rc, stderr = run_in_process("prepare_voc", argv, capsys)
    assert rc == 0, stderr[-3000:]
    assert (out / "val.txt").read_bytes() == b"2007_000002\n"
    # train_aug = (SBD train ∪ SBD val ∪ VOC train) − VOC val = {04, 05, 01}
    assert (out / "train_aug.txt").read_text().split() == [
        "2007_000001", "2008_000004", "2008_000005"
    ]  # fmt: skip
