"""tools/prepare_voc.py on a miniature VOC2012 + SBD tree: masks, lists, labels, checks, re-run."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from weclip.data.images import png_text, read_mask, save_png
from weclip.data.prepare import SOURCE_KEY, file_fingerprint
from weclip.errors import DataError, MissingFileError


def _load_tool(name):
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_voc = _load_tool("prepare_voc")

# VOC colour palette for the first indices (index 1 is dark red (128, 0, 0), not (1, 1, 1))
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [64] * (256 * 3 - 15)
PALETTE[255 * 3 : 255 * 3 + 3] = [224, 224, 192]

VOC_TRAIN = ["2007_000001", "2009_000006"]
VOC_VAL = ["2007_000002", "2008_000005"]
VOC_TEST = ["2010_000007"]
SBD_TRAIN = ["2008_000003", "2008_000005", "2009_000006"]
SBD_VAL = ["2008_000004"]
# train_aug = (SBD train ∪ SBD val ∪ VOC train) − VOC val
#           = {03, 05, 06, 04, 01} − {02, 05} = {01, 03, 04, 06}
TRAIN_AUG = ["2007_000001", "2008_000003", "2008_000004", "2009_000006"]
H, W = 6, 8


def _palette_png(path, mask):
    img = Image.fromarray(mask, mode="P")
    img.putpalette(PALETTE)
    img.save(path)


def _sbd_mat(path, seg):
    # SBD layout: struct GTcls with Segmentation (H, W uint8), Boundaries (20x1 cell of sparse
    # per-class edge maps) and CategoriesPresent
    cats = np.unique(seg[(seg > 0) & (seg < 255)]).astype(np.uint8)
    boundaries = np.empty((20, 1), object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(seg.shape, dtype=np.uint8)
    gt = {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": cats}
    scipy.io.savemat(path, {"GTcls": gt})


def _block(value, extra=None):
    mask = np.zeros((H, W), np.uint8)
    mask[1:4, 2:6] = value
    if extra is not None:
        mask[4:6, 0:2] = extra
    return mask


# name -> (VOC SegmentationClass mask or None, SBD mask or None)
MASKS = {
    "2007_000001": (_block(1, 255), None),  # aeroplane + a 255 boundary -> "0"
    "2007_000002": (_block(15), None),  # person -> "14"
    "2008_000003": (None, _block(15, 20)),  # SBD only: person + tvmonitor -> "14 19"
    "2008_000004": (None, _block(3)),  # SBD only: bird -> "2"
    "2008_000005": (_block(2), _block(9)),  # VOC val; VOC's mask (bicycle) wins over SBD's -> "1"
    "2009_000006": (_block(5), _block(7)),  # VOC train and SBD train; VOC wins (bottle) -> "4"
}
LABELS = {
    "2007_000001": "0",
    "2007_000002": "14",
    "2008_000003": "14 19",
    "2008_000004": "2",
    "2008_000005": "1",
    "2009_000006": "4",
}


@pytest.fixture
def tree(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    for d in (voc / "JPEGImages", voc / "SegmentationClass", sets):
        d.mkdir(parents=True)
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for name in sorted(set(MASKS) | set(VOC_TEST)):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
    for name, (voc_mask, sbd_mask) in MASKS.items():
        if voc_mask is not None:
            _palette_png(voc / "SegmentationClass" / f"{name}.png", voc_mask)
        if sbd_mask is not None:
            _sbd_mat(sbd / "cls" / f"{name}.mat", sbd_mask)
    for split, names in (("train", VOC_TRAIN), ("val", VOC_VAL), ("test", VOC_TEST)):
        (sets / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    (sets / "trainval.txt").write_text("".join(n + "\n" for n in sorted(VOC_TRAIN + VOC_VAL)))
    (sbd / "train.txt").write_text("".join(n + "\n" for n in SBD_TRAIN))
    (sbd / "val.txt").write_text("".join(n + "\n" for n in SBD_VAL))
    out = tmp_path / "lists"
    args = [
        "--voc-root",
        str(voc),
        "--sbd-root",
        str(sbd.parent),
        "--out-dir",
        str(out),
        "--workers",
        "1",
    ]
    return dict(voc=voc, sbd=sbd, out=out, args=args)


def _outputs(tree):
    files = [p for p in tree["out"].iterdir()] + list(
        (tree["voc"] / "SegmentationClassAug").iterdir()
    )
    return {str(p): os.stat(p).st_mtime_ns for p in files}


def test_builds_masks_lists_and_labels(tree):
    assert prepare_voc.main(tree["args"] + ["--no-check-counts"]) == 0
    out, aug = tree["out"], tree["voc"] / "SegmentationClassAug"
    assert (out / "train_aug.txt").read_text().split() == TRAIN_AUG
    assert (out / "train.txt").read_text().split() == VOC_TRAIN
    assert (out / "val.txt").read_text().split() == VOC_VAL
    assert (out / "test.txt").read_text().split() == VOC_TEST
    assert (out / "trainval.txt").read_text().split() == sorted(VOC_TRAIN + VOC_VAL)
    lines = (out / "cls_labels.txt").read_text().splitlines()
    assert lines == [f"{name} {ids}" for name, ids in sorted(LABELS.items())]  # test has no mask
    assert sorted(p.stem for p in aug.iterdir()) == sorted(MASKS)  # train_aug ∪ val = 6 masks
    # hand-checked pixels: VOC palette indices (not colours), 255 boundary kept
    m1 = read_mask(aug / "2007_000001.png")
    assert (m1[1, 2], m1[3, 5], m1[0, 0], m1[4, 0], m1[5, 1]) == (1, 1, 0, 255, 255)
    np.testing.assert_array_equal(read_mask(aug / "2008_000003.png"), MASKS["2008_000003"][1])
    assert read_mask(aug / "2009_000006.png")[2, 3] == 5  # VOC's bottle, not SBD's car (7)
    assert Image.open(aug / "2008_000004.png").mode == "L"


def test_rerun_is_a_noop(tree, capsys):
    assert prepare_voc.main(tree["args"] + ["--no-check-counts"]) == 0
    before = _outputs(tree)
    capsys.readouterr()
    assert prepare_voc.main(tree["args"] + ["--no-check-counts"]) == 0
    assert "files changed in" in capsys.readouterr().out.splitlines()[-1]
    assert _outputs(tree) == before  # same files, same mtimes
    # without SBD, train_aug comes from the SegmentationClassAug now present: same lists, no change
    args = [a for a in tree["args"] if a not in ("--sbd-root", str(tree["sbd"].parent))]
    assert prepare_voc.main(args + ["--no-check-counts"]) == 0
    assert _outputs(tree) == before


def test_count_check_reports_what_differs(tree):
    with pytest.raises(DataError) as info:
        prepare_voc.main(tree["args"])
    text = str(info.value)
    assert "train: 2 names, official 1464" in text and "train_aug: 4 names, official 10582" in text
    assert f"{tree['sbd'] / 'train.txt'} lists 3 names, official 8498" in text
    assert "--no-check-counts" in text
    assert not (tree["out"] / "train_aug.txt").exists()  # nothing written on a count mismatch


def test_missing_mask_source_is_named_before_any_mask_is_written(tree):
    os.remove(tree["sbd"] / "cls" / "2008_000004.mat")
    with pytest.raises(MissingFileError) as info:
        prepare_voc.main(tree["args"] + ["--no-check-counts"])
    assert "1 names have no mask" in str(info.value) and "2008_000004" in str(info.value)
    assert str(tree["sbd"] / "cls") in str(info.value)
    assert not (tree["voc"] / "SegmentationClassAug").exists()


def test_missing_image_is_named_before_any_mask_is_written(tree):
    os.remove(tree["voc"] / "JPEGImages" / "2010_000007.jpg")
    with pytest.raises(MissingFileError, match=r"1 listed images are missing.*2010_000007\.jpg"):
        prepare_voc.main(tree["args"] + ["--no-check-counts"])
    assert not (tree["voc"] / "SegmentationClassAug").exists()


def test_mask_without_foreground_is_named(tree):
    _sbd_mat(tree["sbd"] / "cls" / "2008_000004.mat", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match=r"1 masks have no foreground class.*2008_000004\.png"):
        prepare_voc.main(tree["args"] + ["--no-check-counts"])
    assert not tree["out"].exists()


def test_changed_source_rebuilds_its_mask_and_foreign_masks_are_kept(tree):
    aug = tree["voc"] / "SegmentationClassAug"
    assert prepare_voc.main(tree["args"] + ["--no-check-counts"]) == 0
    # every mask written here records the SHA-1 of its source
    record = png_text(aug / "2008_000004.png")[SOURCE_KEY]
    assert record == file_fingerprint("sbd", str(tree["sbd"] / "cls" / "2008_000004.mat"))
    before = _outputs(tree)
    # the SBD annotation changes (bird -> cat): its mask is rebuilt, the others stay untouched
    _sbd_mat(tree["sbd"] / "cls" / "2008_000004.mat", _block(8))
    assert prepare_voc.main(tree["args"] + ["--no-check-counts"]) == 0
    assert read_mask(aug / "2008_000004.png")[2, 3] == 8
    labels = (tree["out"] / "cls_labels.txt").read_text().splitlines()
    assert "2008_000004 7" in labels  # cat = class 8 -> 0-based id 7
    after = _outputs(tree)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {str(aug / "2008_000004.png"), str(tree["out"] / "cls_labels.txt")}
    # a mask without a record (an official SegmentationClassAug download) is used as it is
    save_png(aug / "2007_000002.png", _block(16))  # no text entry
    assert prepare_voc.main(tree["args"] + ["--no-check-counts"]) == 0
    assert read_mask(aug / "2007_000002.png")[2, 3] == 16
    assert "2007_000002 15" in (tree["out"] / "cls_labels.txt").read_text().splitlines()


def test_mask_of_another_size_than_its_image_is_named(tree):
    aug = tree["voc"] / "SegmentationClassAug"
    aug.mkdir()
    save_png(aug / "2007_000002.png", np.ones((H + 1, W), np.uint8))  # found there, no record
    with pytest.raises(
        DataError, match=r"Existing mask .*2007_000002\.png is 8x7 \(WxH\), its image"
    ):
        prepare_voc.main(tree["args"] + ["--no-check-counts"])
    os.remove(aug / "2007_000002.png")
    _sbd_mat(tree["sbd"] / "cls" / "2008_000004.mat", np.ones((H, W + 2), np.uint8))
    with pytest.raises(DataError, match=r"2008_000004\.mat is 10x6 \(WxH\) but its image"):
        prepare_voc.main(tree["args"] + ["--no-check-counts"])
    assert not (aug / "2008_000004.png").exists()
    assert not tree["out"].exists()


def test_bad_sbd_values_are_named(tree):
    _sbd_mat(tree["sbd"] / "cls" / "2008_000004.mat", _block(30))  # 30 is not a VOC class
    with pytest.raises(ValueError, match=r"2008_000004\.mat: value 30 is neither a class id"):
        prepare_voc.main(tree["args"] + ["--no-check-counts"])


def test_mat_without_gtcls_is_named(tree):
    scipy.io.savemat(tree["sbd"] / "cls" / "2008_000004.mat", {"other": np.zeros(3)})
    with pytest.raises(ValueError, match=r"GTcls.Segmentation from SBD file .*2008_000004\.mat"):
        prepare_voc.main(tree["args"] + ["--no-check-counts"])


def test_rgb_voc_mask_is_named(tree):
    rgb = tree["voc"] / "SegmentationClass" / "2007_000002.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match=r"2007_000002\.png: mode 'RGB'"):
        prepare_voc.main(tree["args"] + ["--no-check-counts"])


def test_missing_voc_list_is_named(tree):
    os.remove(tree["voc"] / "ImageSets" / "Segmentation" / "val.txt")
    with pytest.raises(FileNotFoundError, match=r"Segmentation.val\.txt"):
        prepare_voc.main(tree["args"])


def test_prepared_tree_feeds_the_dataset(tree):
    from weclip.config import load_config
    from weclip.data import build_dataset

    assert prepare_voc.main(tree["args"] + ["--no-check-counts"]) == 0
    cfg = load_config("configs/voc.py").data
    cfg.update(root=str(tree["voc"]), split_dir=str(tree["out"]), crop_size=16)
    train = build_dataset(cfg, "train_aug", train=True)
    assert [train[(i, 0)]["cls_labels"].nonzero().flatten().tolist() for i in range(4)] == [
        [0],
        [14, 19],
        [2],
        [4],
    ]
    val = build_dataset(cfg, "val", train=False)
    assert val[0]["mask"][1, 2] == 15  # 2007_000002: person
    assert "mask" not in build_dataset(cfg, "test", train=False)[0]
