"""tools/prepare_coco.py on a miniature COCO 2014: class order, overlaps, crowd, lists, resume."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from weclip.config import load_config
from weclip.data.images import read_mask
from weclip.errors import DataError, MissingFileError


def _load_tool(name):
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_coco = _load_tool("prepare_coco")

# The 80 official category ids (gaps at 12, 26, 29, 30, 45, 66, 68, 69, 71, 83) and names.
CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
_OFFICIAL = {v: k for k, v in prepare_coco.VOC_STYLE.items()}  # VOC-style -> official spelling
CAT_NAMES = [_OFFICIAL.get(n, n) for n in load_config("configs/coco.py").data.class_names[1:]]
PERSON, CAR, DOG, TOOTHBRUSH = 1, 3, 18, 90  # category ids -> classes 1, 3, 17 and 80


def _rle_uncompressed(binary):
    """Uncompressed COCO RLE: run lengths in column-major order, starting with a run of zeros."""
    flat = binary.T.reshape(-1).astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": list(binary.shape), "counts": counts}


def _rle_compressed(binary):
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _region(h, w, rows, cols):
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


def _ann(ann_id, image_id, cat, segmentation, crowd=0):
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=cat,
        segmentation=segmentation,
        iscrowd=crowd,
        area=1.0,
        bbox=[0, 0, 1, 1],
    )


def _train_json():
    h, w = 8, 10
    crowd = _region(h, w, slice(6, 8), slice(None)) | _region(h, w, slice(None), slice(9, 10))
    anns = [
        # the dog comes first: painting in file order would let the larger person cover it
        _ann(101, 9, DOG, _rle_uncompressed(_region(h, w, slice(2, 4), slice(2, 5)))),
        _ann(102, 9, PERSON, [[1, 1, 7, 1, 7, 5, 1, 5]]),  # polygon, about x 1..6, y 1..4
        _ann(103, 9, PERSON, _rle_uncompressed(crowd), crowd=1),  # rows 6-7 and column 9
        _ann(104, 9, CAR, _rle_uncompressed(_region(h, w, slice(7, 8), slice(0, 2)))),  # in crowd
        _ann(105, 25, PERSON, [[0, 0, 3, 0, 3, 3, 0, 3]], crowd=1),  # crowd only: no class
    ]
    images = [
        dict(id=9, file_name="COCO_train2014_000000000009.jpg", height=h, width=w),
        dict(id=25, file_name="COCO_train2014_000000000025.jpg", height=4, width=4),
        dict(
            id=30, file_name="COCO_train2014_000000000030.jpg", height=4, width=4
        ),  # no annotation
    ]
    return images, anns


def _val_json():
    anns = [_ann(201, 42, TOOTHBRUSH, _rle_compressed(_region(5, 6, slice(1, 3), slice(1, 4))))]
    images = [
        dict(id=42, file_name="COCO_val2014_000000000042.jpg", height=5, width=6),
        dict(id=43, file_name="COCO_val2014_000000000043.jpg", height=3, width=3),  # no annotation
    ]
    return images, anns


def _write_json(path, images, anns, cats):
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "MSCOCO"
    (root / "annotations").mkdir(parents=True)
    cats = [dict(id=i, name=n, supercategory="x") for i, n in zip(CAT_IDS, CAT_NAMES)]
    cats = cats[::-1]  # stored in descending order: the tool must sort by id
    for split, (images, anns) in (("train", _train_json()), ("val", _val_json())):
        _write_json(root / "annotations" / f"instances_{split}2014.json", images, anns, cats)
        (root / "JPEGImages" / split).mkdir(parents=True)
        for info in images:
            img = np.zeros((info["height"], info["width"], 3), np.uint8)
            Image.fromarray(img).save(root / "JPEGImages" / split / info["file_name"])
    out = tmp_path / "lists"
    return dict(
        root=root,
        out=out,
        args=[
            "--coco-root",
            str(root),
            "--out-dir",
            str(out),
            "--workers",
            "1",
            "--val-images",
            "all",
        ],
    )


def _files(coco):
    paths = list(coco["out"].iterdir()) + list((coco["root"] / "SegmentationClass").rglob("*.png"))
    return {str(p): os.stat(p).st_mtime_ns for p in paths}


def test_masks_lists_and_labels(coco):
    assert prepare_coco.main(coco["args"]) == 0
    seg = coco["root"] / "SegmentationClass"
    m = read_mask(seg / "train" / "000000000009.png")
    assert m.shape == (8, 10)
    assert m[0, 0] == 0  # background
    assert m[1, 6] == 1  # person (category 1 -> class 1)
    assert (m[2:4, 2:5] == 17).all()  # dog (category 18 -> class 17, after the id gap at 12) on top
    assert m[6, 5] == 255 and m[0, 9] == 255  # crowd regions are ignored
    assert (m[7, 0:2] == 3).all()  # the car inside the crowd region keeps its class
    crowd_only = read_mask(seg / "train" / "000000000025.png")
    assert set(np.unique(crowd_only)) <= {0, 255} and (crowd_only == 255).any()
    assert (read_mask(seg / "train" / "000000000030.png") == 0).all()
    v = read_mask(seg / "val" / "000000000042.png")
    # toothbrush: category 90, the last of the 80 -> class 80, exactly rows 1-2 x cols 1-3
    np.testing.assert_array_equal(v == 80, _region(5, 6, slice(1, 3), slice(1, 4)))
    out = coco["out"]
    # train: only images with a visible non-crowd class; val: every image
    assert (out / "train.txt").read_text().split() == ["COCO_train2014_000000000009"]
    assert (out / "val.txt").read_text().split() == [
        "COCO_val2014_000000000042",
        "COCO_val2014_000000000043",
    ]
    assert (out / "cls_labels.txt").read_text().splitlines() == [
        "COCO_train2014_000000000009 0 2 16",  # person, car, dog (0-based)
        "COCO_val2014_000000000042 79",
    ]


def test_rerun_is_a_noop_and_resumes(coco):
    assert prepare_coco.main(coco["args"]) == 0
    before = _files(coco)
    assert prepare_coco.main(coco["args"]) == 0
    assert _files(coco) == before
    # an interrupted run: one mask missing -> only that one is written again
    missing = coco["root"] / "SegmentationClass" / "val" / "000000000042.png"
    content = missing.read_bytes()
    os.remove(missing)
    assert prepare_coco.main(coco["args"]) == 0
    after = _files(coco)
    assert missing.read_bytes() == content
    assert {k: v for k, v in after.items() if k != str(missing)} == {
        k: v for k, v in before.items() if k != str(missing)
    }


def test_workers_give_the_same_masks(coco, tmp_path):
    workers = coco["args"].index("--workers") + 1
    args = (
        coco["args"][:workers] + ["2"] + coco["args"][workers + 1 :]
    )  # --workers 2: a process pool
    assert prepare_coco.main(args) == 0
    pool_masks = {
        p.name: p.read_bytes() for p in (coco["root"] / "SegmentationClass").rglob("*.png")
    }
    for p in (coco["root"] / "SegmentationClass").rglob("*.png"):
        os.remove(p)
    assert prepare_coco.main(coco["args"]) == 0
    serial = {p.name: p.read_bytes() for p in (coco["root"] / "SegmentationClass").rglob("*.png")}
    assert pool_masks == serial and len(serial) == 5


def test_annotated_val_policy_is_the_default(coco):
    # the authors' val list holds the images with >= 1 annotation (spec §10: 40,137)
    args = [a for a in coco["args"] if a not in ("--val-images", "all")]
    assert prepare_coco.main(args) == 0
    assert (coco["out"] / "val.txt").read_text().split() == ["COCO_val2014_000000000042"]


def test_missing_image_is_named_before_any_mask_is_written(coco):
    os.remove(coco["root"] / "JPEGImages" / "val" / "COCO_val2014_000000000043.jpg")
    with pytest.raises(MissingFileError, match=r"1 listed images are missing.*000043\.jpg"):
        prepare_coco.main(coco["args"])
    assert not (coco["out"] / "val.txt").exists()
    assert not (coco["root"] / "SegmentationClass").exists()


def test_changed_annotations_rebuild_their_mask(coco):
    assert prepare_coco.main(coco["args"]) == 0
    seg = coco["root"] / "SegmentationClass"
    before = _files(coco)
    path = coco["root"] / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = DOG  # the toothbrush becomes a dog
    path.write_text(json.dumps(data))
    assert prepare_coco.main(coco["args"]) == 0
    assert (read_mask(seg / "val" / "000000000042.png") == 17).sum() == 6  # 2 x 3 pixels
    assert "COCO_val2014_000000000042 16" in (coco["out"] / "cls_labels.txt").read_text()
    after = _files(coco)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {str(seg / "val" / "000000000042.png"), str(coco["out"] / "cls_labels.txt")}


def test_empty_annotations_fail_and_a_fixed_run_does_not_reuse_anything(coco):
    path = coco["root"] / "annotations" / "instances_train2014.json"
    good = path.read_text()
    data = json.loads(good)
    del data["annotations"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r'instances_train2014\.json: no "annotations" entry'):
        prepare_coco.main(coco["args"])
    assert not (coco["root"] / "SegmentationClass").exists() and not coco["out"].exists()
    # an empty annotation list is well-formed, but leaves nothing to train on: refused, nothing written
    data["annotations"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"no image has a non-crowd annotation"):
        prepare_coco.main(coco["args"])
    assert not (coco["root"] / "SegmentationClass").exists()
    # background-only masks of an earlier, wrong run are rebuilt once the annotations are right
    data["annotations"] = [json.loads(good)["annotations"][1]]  # only the person of image 9
    path.write_text(json.dumps(data))
    assert prepare_coco.main(coco["args"]) == 0
    path.write_text(good)
    assert prepare_coco.main(coco["args"]) == 0
    m = read_mask(coco["root"] / "SegmentationClass" / "train" / "000000000009.png")
    assert (m[2:4, 2:5] == 17).all() and m[6, 5] == 255  # the dog and the crowd region are there


def test_link_images(coco):
    for split in ("train", "val"):
        os.rename(coco["root"] / "JPEGImages" / split, coco["root"] / f"{split}2014")
    assert prepare_coco.main(coco["args"] + ["--link-images"]) == 0
    link = coco["root"] / "JPEGImages" / "train"
    assert link.is_symlink() and (link / "COCO_train2014_000000000009.jpg").is_file()


def test_wrong_categories_are_named(coco):
    path = coco["root"] / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    for c in data["categories"]:
        if c["id"] == DOG:
            c["name"] = "wolf"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_val2014\.json: .*class 17 is 'wolf'.*'dog'"):
        prepare_coco.main(coco["args"])


def test_missing_annotation_file_is_named(coco):
    os.remove(coco["root"] / "annotations" / "instances_train2014.json")
    with pytest.raises(FileNotFoundError, match=r"instances_train2014\.json"):
        prepare_coco.main(coco["args"])


def test_prepared_tree_feeds_the_dataset(coco):
    from weclip.data import build_dataset

    assert prepare_coco.main(coco["args"]) == 0
    cfg = load_config("configs/coco.py").data
    cfg.update(root=str(coco["root"]), split_dir=str(coco["out"]), crop_size=16)
    item = build_dataset(cfg, "train", train=True)[(0, 5)]
    assert item["cls_labels"].nonzero().flatten().tolist() == [0, 2, 16]
    val = build_dataset(cfg, "val", train=False)
    assert len(val) == 2 and val[0]["mask"][1, 1] == 80 and (val[1]["mask"] == 0).all()
