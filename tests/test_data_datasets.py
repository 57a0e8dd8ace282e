"""VOC/COCO datasets: item contracts, labels only from the label file, config keys, resume."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from weclip.config import load_config
from weclip.data import COCODataset, build_dataset, build_train_loader
from weclip.data.images import read_rgb
from weclip.errors import ConfigError

# VOC-style palette: index i -> a colour different from (i, i, i), so reading RGB instead of the
# palette index would be caught
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [7] * (256 * 3 - 12)
PALETTE[255 * 3 : 255 * 3 + 3] = [224, 224, 192]


def _save_palette_mask(path, mask):
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(PALETTE)
    img.save(path)


@pytest.fixture
def voc(tmp_path):
    """Miniature VOC layout: 3 JPEG images, palette masks, train/val/test lists, label file."""
    root = tmp_path / "VOC"
    for sub in ("JPEGImages", "SegmentationClassAug"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"img_a": (30, 40), "img_b": (50, 20), "img_c": (24, 24)}  # (H, W)
    masks = {}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{name}.jpg", quality=95
        )
        mask = np.zeros((h, w), np.uint8)
        mask[2:8, 3:9] = 3  # class 3 in the mask
        mask[0, :] = 255
        masks[name] = mask
        _save_palette_mask(root / "SegmentationClassAug" / f"{name}.png", mask)
    split_dir = tmp_path / "lists"
    split_dir.mkdir()
    (split_dir / "train.txt").write_text("img_a\nimg_b\n\n")
    (split_dir / "val.txt").write_text("img_c\n")
    (split_dir / "test.txt").write_text("img_c\n")
    # label file deliberately disagrees with the masks (mask: class 3 = fg id 2)
    (split_dir / "cls_labels.txt").write_text("img_a 0 14\nimg_b 19\nimg_c 5\n")
    cfg = load_config("configs/voc.py").data
    cfg.update(root=str(root), split_dir=str(split_dir), crop_size=32)
    return dict(cfg=cfg, root=root, split_dir=split_dir, masks=masks, sizes=sizes)


def test_train_item_contract_and_labels_from_label_file(voc):
    voc["cfg"].scale_range = (0.5, 0.5)  # img_a 40x30 -> (int(0.5·40), int(0.5·30)) = 20x15 < 32
    ds = build_dataset(voc["cfg"], "train", train=True)
    assert len(ds) == 2
    item = ds[(0, 1234)]
    assert set(item) == {"image", "cls_labels", "name", "valid"}
    assert item["name"] == "img_a"
    assert (
        item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    )  # the model normalises
    assert item["valid"].shape == (32, 32) and item["valid"].dtype == torch.bool
    assert item["cls_labels"].shape == (20,) and item["cls_labels"].dtype == torch.float32
    # "img_a 0 14": multi-hot at 0 and 14 only, although the mask holds class 3 (fg id 2)
    assert item["cls_labels"].nonzero().flatten().tolist() == [0, 14]
    # padding (valid False) is black, as the authors pad the 0-255 image (the model normalises it to
    # -mean/std, tests/test_weclip_model.py)
    assert item["valid"].sum() == 20 * 15
    assert int(item["image"][:, ~item["valid"]].abs().max()) == 0


def test_training_targets_from_train_mask_dir(voc):
    # a mask-supervised model (second stage, fully supervised) trains on masks augmented with the image
    voc["cfg"].train_mask_dir = "SegmentationClassAug"
    ds = build_dataset(voc["cfg"], "train", train=True)
    item = ds[(0, 1234)]
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
    # the same key without targets gives the same crop (the target changes no random draw)
    voc["cfg"].train_mask_dir = None
    plain = build_dataset(voc["cfg"], "train", train=True)[(0, 1234)]
    assert "mask" not in plain and torch.equal(plain["image"], item["image"])
    assert set(item["mask"][~item["valid"]].unique().tolist()) <= {255}  # padding is ignored
    assert set(item["mask"].unique().tolist()) <= {
        0,
        3,
        255,
    }  # img_a's mask holds classes 0, 3, 255


def test_train_item_is_a_pure_function_of_the_key(voc):
    ds = build_dataset(voc["cfg"], "train", train=True)
    a, b, c = ds[(1, 77)], ds[(1, 77)], ds[(1, 78)]
    torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
    assert torch.equal(a["valid"], b["valid"])
    assert not torch.equal(a["image"], c["image"])
    with pytest.raises(TypeError, match="aug_seed"):
        ds[1]  # no seed: never falls back to global RNG state


def test_eval_item_is_the_full_uint8_image_and_mask(voc):
    ds = build_dataset(voc["cfg"], "val", train=False)
    item = ds[0]
    assert set(item) == {"image", "mask", "name"}
    h, w = voc["sizes"]["img_c"]
    assert item["image"].shape == (3, h, w) and item["mask"].shape == (h, w)
    assert item["mask"].dtype == torch.int64
    np.testing.assert_array_equal(item["mask"].numpy(), voc["masks"]["img_c"])  # indices, with 255
    raw = read_rgb(voc["root"] / "JPEGImages" / "img_c.jpg")
    np.testing.assert_array_equal(item["image"].numpy(), raw.transpose(2, 0, 1))
    labelled = build_dataset(voc["cfg"], "val", train=False, with_labels=True)[0]
    assert labelled["cls_labels"].nonzero().flatten().tolist() == [5]


def test_test_split_has_no_mask(voc):
    os.remove(voc["root"] / "SegmentationClassAug" / "img_c.png")  # VOC test has no masks
    item = build_dataset(voc["cfg"], "test", train=False)[0]
    assert set(item) == {"image", "name"}


def test_png_images_through_config_keys(voc):
    # the toy world stores PNG images: data.img_suffix=".png" must be honoured
    for name in voc["sizes"]:
        jpg = voc["root"] / "JPEGImages" / f"{name}.jpg"
        Image.open(jpg).save(jpg.with_suffix(".png"))
        os.remove(jpg)
    with pytest.raises(FileNotFoundError, match=r"img_a\.jpg"):
        build_dataset(voc["cfg"], "train", train=True)
    voc["cfg"].img_suffix = ".png"
    assert build_dataset(voc["cfg"], "train", train=True)[(0, 1)]["image"].shape == (3, 32, 32)


def test_train_loader_resumes_exactly(voc):
    ds = build_dataset(voc["cfg"], "train", train=True)
    loader = iter(build_train_loader(ds, batch_size=1, seed=3, rank=0, world_size=1))
    batches = [next(loader) for _ in range(5)]
    assert batches[0]["image"].shape == (1, 3, 32, 32) and batches[0]["name"][0] in (
        "img_a",
        "img_b",
    )
    resumed = iter(build_train_loader(ds, batch_size=1, seed=3, start_iter=3, rank=0, world_size=1))
    for expected in batches[3:]:
        got = next(resumed)
        assert got["name"] == expected["name"]
        assert torch.equal(got["image"], expected["image"]) and torch.equal(
            got["valid"], expected["valid"]
        )


# ---------------------------------------------------------------------------- bad input


def test_missing_files_are_named(voc):
    os.remove(voc["root"] / "JPEGImages" / "img_b.jpg")
    with pytest.raises(FileNotFoundError, match=r"img_b\.jpg"):
        build_dataset(voc["cfg"], "train", train=True)
    os.remove(voc["root"] / "SegmentationClassAug" / "img_c.png")
    with pytest.raises(FileNotFoundError, match=r"SegmentationClassAug.img_c\.png"):
        build_dataset(voc["cfg"], "val", train=False)
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        build_dataset(voc["cfg"], "nope", train=False)
    os.remove(voc["split_dir"] / "cls_labels.txt")
    with pytest.raises(FileNotFoundError, match=r"cls_labels\.txt"):
        build_dataset(voc["cfg"], "val", train=True)


def test_image_deleted_after_construction_is_named(voc):
    ds = build_dataset(voc["cfg"], "val", train=False)
    os.remove(voc["root"] / "JPEGImages" / "img_c.jpg")
    with pytest.raises(FileNotFoundError, match=r"img_c\.jpg"):
        ds[0]


@pytest.mark.parametrize(
    "kind, problem", [("garbage", "not an image file"), ("truncated", "corrupt or truncated")]
)
def test_corrupt_image_is_named(voc, kind, problem):
    path = voc["root"] / "JPEGImages" / "img_c.jpg"
    data = path.read_bytes()
    path.write_bytes(b"not an image at all" if kind == "garbage" else data[: len(data) // 2])
    ds = build_dataset(voc["cfg"], "val", train=False)
    with pytest.raises(ValueError, match=rf"img_c\.jpg: {problem}"):
        ds[0]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("img_a 0\nimg_b\n", r"cls_labels\.txt:2: 'img_b' has an empty label vector"),
        ("img_a 0\nimg_b 20\n", r"cls_labels\.txt:2: foreground id 20 out of range 0\.\.19"),
        ("img_a 0\nimg_b x\n", r"cls_labels\.txt:2: ids must be integers"),
        ("img_a 0\nimg_a 1\n", r"cls_labels\.txt:2: name 'img_a' already labelled on line 1"),
    ],
)
def test_bad_label_lines_name_file_and_line(voc, text, pattern):
    (voc["split_dir"] / "cls_labels.txt").write_text(text)
    with pytest.raises(ValueError, match=pattern):
        build_dataset(voc["cfg"], "train", train=True)


def test_class_count_mismatch_is_an_error(voc):
    voc["cfg"].num_classes = 5  # e.g. the toy world's config with VOC's label file
    with pytest.raises(
        ValueError, match=r"cls_labels\.txt:1: .*class-count mismatch.*num_classes=5"
    ):
        build_dataset(voc["cfg"], "train", train=True)


def test_split_name_missing_from_label_file_names_both(voc):
    (voc["split_dir"] / "cls_labels.txt").write_text("img_a 0\n")
    with pytest.raises(
        ValueError, match=r"train\.txt.*missing from label file .*cls_labels\.txt.*img_b"
    ):
        build_dataset(voc["cfg"], "train", train=True)


def test_bad_split_lines(voc):
    (voc["split_dir"] / "train.txt").write_text("img_a\nimg_a\n")
    with pytest.raises(ValueError, match=r"train\.txt:2: name 'img_a' repeats line 1"):
        build_dataset(voc["cfg"], "train", train=True)
    (voc["split_dir"] / "train.txt").write_text("img_a img_a.png\n")
    with pytest.raises(ValueError, match=r"train\.txt:1: expected one image name"):
        build_dataset(voc["cfg"], "train", train=True)


def test_bad_masks_are_named(voc):
    mask_path = voc["root"] / "SegmentationClassAug" / "img_c.png"
    ds = build_dataset(voc["cfg"], "val", train=False)
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(mask_path)  # an RGB colour mask
    with pytest.raises(ValueError, match=r"img_c\.png: mode 'RGB' is not a single-channel"):
        ds[0]
    Image.fromarray(np.full((24, 24), 30, np.uint8)).save(mask_path)  # 30 >= 21 and != 255
    with pytest.raises(ValueError, match=r"img_c\.png: value 30 is neither a class id"):
        ds[0]
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(mask_path)  # wrong size
    with pytest.raises(ValueError, match=r"img_c\.png is 24x20 .* image .*img_c\.jpg is 24x24"):
        ds[0]


def test_unknown_dataset_type_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"'data.type' = 'cityscapes': expected one of 'folder', 'coco'"
    ):
        load_config("configs/voc.py", {"data.type": "cityscapes"})


# ---------------------------------------------------------------------------- COCO layout


def test_coco_paths_come_from_the_name(tmp_path):
    root, lists = tmp_path / "MSCOCO", tmp_path / "lists"
    (root / "JPEGImages" / "val").mkdir(parents=True)
    (root / "SegmentationClass" / "val").mkdir(parents=True)
    lists.mkdir()
    name = "COCO_val2014_000000000042"
    Image.fromarray(np.full((6, 8, 3), 9, np.uint8)).save(
        root / "JPEGImages" / "val" / f"{name}.jpg"
    )
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:3] = 80  # toothbrush, the last class
    Image.fromarray(mask).save(root / "SegmentationClass" / "val" / "000000000042.png")
    (lists / "val.txt").write_text(name + "\n")
    (lists / "cls_labels.txt").write_text(f"{name} 79\n")
    cfg = load_config("configs/coco.py").data
    cfg.update(root=str(root), split_dir=str(lists))
    ds = build_dataset(cfg, "val", train=False, with_labels=True)
    assert isinstance(ds, COCODataset)
    assert ds.mask_path(name) == os.path.join(
        str(root), "SegmentationClass", "val", "000000000042.png"
    )
    item = ds[0]
    assert (
        item["mask"][1, 1] == 80
        and item["cls_labels"].shape == (80,)
        and item["cls_labels"][79] == 1
    )
    (lists / "val.txt").write_text("2007_000032\n")
    with pytest.raises(ValueError, match=r"val\.txt: '2007_000032' is not a COCO 2014 image name"):
        build_dataset(cfg, "val", train=False)
