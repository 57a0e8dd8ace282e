"""tools/prepare_pets.py on a miniature Oxford-IIIT Pet tree: masks, boxes, label sets, errors."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weclip.data.images import read_mask, read_rgb
from weclip.data.labels import read_label_file, read_split
from weclip.data.pets import (
    PET_BREEDS,
    PET_CAT_BREEDS,
    parse_head_boxes,
    parse_pet_list,
    prepare_pets,
    prompt_names,
    split_trainval,
    trimap_to_mask,
)


def _load_tool(name):
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_tool = _load_tool("prepare_pets")

H, W = 6, 8
HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n"
    "#ID: 1:37 Class ids\n"
    "#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Cat 1:12:Dog\n"
    "#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)
# name -> (class_id, species, breed_id): class ids of PET_BREEDS (1 Abyssinian, 2 american_bulldog,
# 6 Bengal, 37 yorkshire_terrier); breed_id = rank inside the species
RECORDS = {
    "Abyssinian_1": (1, 1, 1),
    "Abyssinian_2": (1, 1, 1),
    "american_bulldog_10": (2, 2, 1),
    "american_bulldog_11": (2, 2, 1),
    "Bengal_3": (6, 1, 2),
    "yorkshire_terrier_7": (37, 2, 25),
}
TRAINVAL = ["Abyssinian_1", "american_bulldog_10", "american_bulldog_11", "Bengal_3"]
TEST = ["Abyssinian_2", "yorkshire_terrier_7"]
# head boxes (1-based inclusive PASCAL coordinates); american_bulldog_11 has no XML
XML_BOXES = {
    "Abyssinian_1": [(2, 1, 5, 4)],
    "american_bulldog_10": [(1, 1, 8, 6)],
    "Bengal_3": [(3, 2, 4, 3), (6, 4, 7, 5)],
}
# how each image is stored: a plain RGB JPEG unless listed (the quirks of the real dataset)
ODD_IMAGES = {"Abyssinian_2": "gray", "Bengal_3": "png", "yorkshire_terrier_7": "cmyk"}


def _trimap():
    # rows 0-1 background (2), rows 2-3 pet (1) with a border (3) ring, rows 4-5 background:
    t = np.full((H, W), 2, np.uint8)
    t[2:4, 1:7] = 1
    t[2:4, 1] = 3
    t[2:4, 6] = 3
    return t  # pet at rows 2-3, columns 2-5; border at columns 1 and 6 of rows 2-3


def _xml(boxes):
    objects = "".join(
        f"<object><name>cat</name><pose>Frontal</pose><truncated>0</truncated><occluded>0</occluded>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
        f"<difficult>0</difficult></object>"
        for x0, y0, x1, y1 in boxes
    )
    return (
        "<annotation><folder>OXIIIT</folder><filename>x.jpg</filename>"
        f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objects}</annotation>"
    )


def _image(index):
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_pets_tree(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    (root / "annotations" / "xmls").mkdir(parents=True)
    for index, name in enumerate(RECORDS):
        rgb = Image.fromarray(_image(index))
        path = root / "images" / f"{name}.jpg"
        kind = ODD_IMAGES.get(name)
        if kind == "gray":
            rgb.convert("L").save(path, format="JPEG")
        elif kind == "png":
            rgb.save(path, format="PNG")  # PNG bytes under a .jpg name
        elif kind == "cmyk":
            rgb.convert("CMYK").save(path, format="JPEG")
        else:
            rgb.save(path, format="JPEG", quality=90)
        Image.fromarray(_trimap(), mode="L").save(root / "annotations" / "trimaps" / f"{name}.png")
    for name, boxes in XML_BOXES.items():
        (root / "annotations" / "xmls" / f"{name}.xml").write_text(_xml(boxes))

    def lines(names):
        return "".join(f"{n} {' '.join(str(v) for v in RECORDS[n])}\n" for n in names)

    (root / "annotations" / "list.txt").write_text(HEADER + lines(sorted(RECORDS)))
    (root / "annotations" / "trainval.txt").write_text(lines(TRAINVAL))
    (root / "annotations" / "test.txt").write_text(lines(TEST))
    return root


@pytest.fixture
def pets_root(tmp_path):
    return make_pets_tree(tmp_path / "oxford-iiit-pet")


def _run(root, out, *extra):
    return prepare_tool.main(
        ["--pets-root", str(root), "--out", str(out), "--workers", "1", "--no-check-counts"]
        + list(extra)
    )


def _snapshot(out: Path):
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_breed_table_matches_the_dataset_conventions():
    # 37 breeds, 12 of them cats (the capitalised names), in case-insensitive alphabetical order
    assert len(PET_BREEDS) == 37 and len(PET_CAT_BREEDS) == 12
    assert list(PET_BREEDS) == sorted(PET_BREEDS, key=str.lower)
    assert prompt_names("species") == ("cat", "dog")
    assert prompt_names("breeds")[1] == "american bulldog"
    assert prompt_names("breeds")[0] == "Abyssinian"


def test_trimap_values_are_mapped():
    trimap = np.array([[1, 2, 3]], np.uint8)
    # 1 (pet) -> class id, 2 (background) -> 0, 3 (border) -> 255
    assert trimap_to_mask(trimap, 6).tolist() == [[6, 0, 255]]
    with pytest.raises(ValueError, match="trimap value 0"):
        trimap_to_mask(np.array([[0, 1]], np.uint8), 1, where="t.png")


def test_species_layout(pets_root, tmp_path):
    out = tmp_path / "pets_species"
    assert _run(pets_root, out, "--labels", "species", "--val-fraction", "0.5") == 0
    names = sorted(RECORDS)
    # masks: pet pixels carry the species (cat 1, dog 2), border 255, background 0
    expected_pet = np.zeros((H, W), bool)
    expected_pet[2:4, 2:6] = True
    for name in names:
        mask = read_mask(out / "SegmentationClass" / f"{name}.png")
        species = RECORDS[name][1]
        assert set(np.unique(mask[expected_pet])) == {species}
        assert mask[2, 1] == 255 and mask[3, 6] == 255
        assert mask[0].tolist() == [0] * W and mask[5].tolist() == [0] * W
    # labels: "name id" with the 0-based foreground id = species - 1
    labels = read_label_file(str(out / "cls_labels.txt"), num_classes=3)
    assert {n: v.tolist() for n, v in labels.items()} == {n: [RECORDS[n][1] - 1] for n in names}
    # official splits, and train/val partitioning trainval
    assert read_split(str(out / "trainval.txt")) == sorted(TRAINVAL)
    assert read_split(str(out / "test.txt")) == sorted(TEST)
    train, val = read_split(str(out / "train.txt")), read_split(str(out / "val.txt"))
    assert sorted(train + val) == sorted(TRAINVAL) and not set(train) & set(val)
    # per breed round(0.5 * n) to val: Abyssinian 1 -> round(0.5) = 0 (banker's rounding),
    # american_bulldog 2 -> 1, Bengal 1 -> 0: val holds exactly one american_bulldog image
    assert len(val) == 1 and val[0].startswith("american_bulldog")
    # head boxes: 1-based inclusive (xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax)
    boxes = json.loads((out / "boxes.json").read_text())
    assert boxes == {
        "Abyssinian_1": [[1, 0, 5, 4, 1]],
        "american_bulldog_10": [[0, 0, 8, 6, 2]],
        "Bengal_3": [[2, 1, 4, 3, 1], [5, 3, 7, 5, 1]],
    }
    classes = json.loads((out / "classes.json").read_text())
    assert classes["class_names"] == ["background", "cat", "dog"]
    assert classes["prompt_class_names"] == ["cat", "dog"]
    # images: plain RGB JPEGs copied byte for byte; the odd ones re-encoded as RGB JPEGs with
    # the pixels read_rgb gives for the source
    for name in names:
        src, dst = pets_root / "images" / f"{name}.jpg", out / "JPEGImages" / f"{name}.jpg"
        with Image.open(dst) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
        if name in ODD_IMAGES:
            assert dst.read_bytes() != src.read_bytes()
            # JPEG quality 95 on 8x6 noise: per-pixel error well under 64 grey levels on average
            diff = np.abs(read_rgb(dst).astype(int) - read_rgb(src).astype(int))
            assert diff.mean() < 64
        else:
            assert dst.read_bytes() == src.read_bytes()


def test_breeds_layout_and_links(pets_root, tmp_path):
    out = tmp_path / "pets_breeds"
    assert _run(pets_root, out, "--labels", "breeds", "--link-images") == 0
    # breed class ids on the pet: american_bulldog 2, Bengal 6, yorkshire_terrier 37
    for name, class_id in (
        ("american_bulldog_10", 2),
        ("Bengal_3", 6),
        ("yorkshire_terrier_7", 37),
    ):
        mask = read_mask(out / "SegmentationClass" / f"{name}.png")
        assert mask[2, 3] == class_id and mask[2, 1] == 255 and mask[0, 0] == 0
    labels = read_label_file(str(out / "cls_labels.txt"), num_classes=38)
    assert labels["yorkshire_terrier_7"].tolist() == [36]
    assert labels["Bengal_3"].tolist() == [5]
    boxes = json.loads((out / "boxes.json").read_text())
    assert boxes["Bengal_3"][0][4] == 6 and boxes["american_bulldog_10"][0][4] == 2
    classes = json.loads((out / "classes.json").read_text())
    assert classes["num_classes"] == 38 and classes["class_names"][37] == "yorkshire_terrier"
    # RGB JPEGs are links to the sources; the odd ones are real re-encoded files
    for name in RECORDS:
        dst = out / "JPEGImages" / f"{name}.jpg"
        assert dst.is_symlink() == (name not in ODD_IMAGES)
        if dst.is_symlink():
            assert os.path.samefile(dst, pets_root / "images" / f"{name}.jpg")


def test_rerun_is_a_noop_and_resume_rewrites_only_missing(pets_root, tmp_path, capsys):
    out = tmp_path / "pets"
    assert _run(pets_root, out) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert _run(pets_root, out) == 0
    assert "files changed in" in capsys.readouterr().out
    assert _snapshot(out) == before  # same bytes and mtimes
    victim = out / "SegmentationClass" / "Bengal_3.png"
    victim.unlink()
    summary = prepare_pets(str(pets_root), str(out), check_counts=False)
    assert summary["written"] == {"mask": 1} and summary["present"] == len(RECORDS) - 1
    # the lists are unchanged; the manifest went complete -> incomplete (while the mask was
    # missing) -> complete, so it is the only text file rewritten
    assert summary["changed"] == ["pets_manifest.json"]
    assert victim.read_bytes() == before["SegmentationClass/Bengal_3.png"][1]


def _assert_fails_and_writes_nothing(root, out, match, *extra, exc=ValueError):
    with pytest.raises(exc, match=match):
        _run(root, out, *extra)
    assert not out.exists()


def test_structural_errors_write_nothing(tmp_path):
    cases = []

    def fresh(tag):
        return make_pets_tree(tmp_path / tag / "pets")

    root = fresh("no_trimaps")
    for f in (root / "annotations" / "trimaps").iterdir():
        f.unlink()
    (root / "annotations" / "trimaps").rmdir()
    cases.append((root, "trimaps folder not found", FileNotFoundError))

    root = fresh("bad_line")
    with open(root / "annotations" / "list.txt", "a") as f:
        f.write("Bombay_9 8 1\n")  # three fields
    cases.append((root, r"list.txt:\d+: expected 'name class_id species breed_id'", ValueError))

    root = fresh("bad_trimap")
    bad = _trimap()
    bad[0, 0] = 4
    Image.fromarray(bad, mode="L").save(root / "annotations" / "trimaps" / "Bengal_3.png")
    cases.append((root, "Bengal_3.png: trimap value 4", ValueError))

    root = fresh("empty_xml")
    (root / "annotations" / "xmls" / "Abyssinian_1.xml").write_text(_xml([]))
    cases.append((root, r"Abyssinian_1.xml: no <object><bndbox>", ValueError))

    root = fresh("wrong_breed")
    text = (
        (root / "annotations" / "list.txt").read_text().replace("Bengal_3 6 1 2", "Bengal_3 7 1 2")
    )
    (root / "annotations" / "list.txt").write_text(text)
    cases.append((root, "class_id 7, which is breed 'Birman'", ValueError))

    root = fresh("missing_image")
    (root / "images" / "Abyssinian_2.jpg").unlink()
    cases.append((root, "Abyssinian_2.jpg", FileNotFoundError))

    for index, (root, match, exc) in enumerate(cases):
        _assert_fails_and_writes_nothing(root, tmp_path / f"out{index}", match, exc=exc)


def test_official_counts_are_checked(pets_root, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="differ from the official"):
        prepare_tool.main(["--pets-root", str(pets_root), "--out", str(out), "--workers", "1"])
    assert not out.exists()


def test_outputs_of_another_input_are_never_reused(pets_root, tmp_path):
    out = tmp_path / "pets"
    assert _run(pets_root, out, "--labels", "species") == 0
    # another label set into the same folder: refused, nothing touched
    before = _snapshot(out)
    with pytest.raises(ValueError, match="another input or with other options"):
        _run(pets_root, out, "--labels", "breeds")
    assert _snapshot(out) == before
    # another source (a list file changed): refused, then rebuilt completely with --force
    text = (pets_root / "annotations" / "test.txt").read_text()
    (pets_root / "annotations" / "test.txt").write_text(
        text.replace("yorkshire_terrier_7 37 2 25\n", "")
    )
    with pytest.raises(ValueError, match="list hashes differ"):
        _run(pets_root, out, "--labels", "species")
    assert _run(pets_root, out, "--labels", "breeds", "--force") == 0
    assert read_mask(out / "SegmentationClass" / "Bengal_3.png")[2, 3] == 6  # breed id, not species
    assert "yorkshire_terrier_7" not in read_split(str(out / "test.txt"))
    manifest = json.loads((out / "pets_manifest.json").read_text())
    assert manifest["complete"] and manifest["options"]["labels"] == "breeds"
    # a folder with images but no manifest is not ours
    foreign = tmp_path / "foreign"
    (foreign / "JPEGImages").mkdir(parents=True)
    (foreign / "JPEGImages" / "x.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="no pets_manifest.json"):
        _run(pets_root, foreign)


def test_parsers(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(_xml([(2, 1, 5, 4), (1, 1, 1, 1)]))
    # a 1-pixel box (1, 1, 1, 1) spans edges 0..1
    assert parse_head_boxes(str(xml)) == [(1, 0, 5, 4), (0, 0, 1, 1)]
    xml.write_text("<annotation><object><bndbox><xmin>3</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match="without <ymin>"):
        parse_head_boxes(str(xml))
    xml.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="Cannot parse"):
        parse_head_boxes(str(xml))
    lst = tmp_path / "list.txt"
    lst.write_text(HEADER + "Abyssinian_1 1 3 1\n")
    with pytest.raises(ValueError, match="species 3"):
        parse_pet_list(str(lst))
    lst.write_text("Abyssinian_1 1 1 1\nAbyssinian_1 1 1 1\n")
    with pytest.raises(ValueError, match="already listed on line 1"):
        parse_pet_list(str(lst))


def test_split_is_seeded_stratified_and_order_free():
    records = [parse_record(f"beagle_{i} 5 2 3") for i in range(20)] + [
        parse_record(f"pug_{i} 26 2 17") for i in range(10)
    ]
    train, val = split_trainval(records, 0.2, seed=3)
    # per breed round(0.2 * n): beagle 4 of 20, pug 2 of 10
    assert sum(n.startswith("beagle") for n in val) == 4
    assert sum(n.startswith("pug") for n in val) == 2
    assert split_trainval(records[::-1], 0.2, seed=3) == (train, val)
    assert split_trainval(records, 0.2, seed=4) != (train, val)


def parse_record(line):
    from weclip.data.pets import PetRecord

    name, c, s, b = line.split()
    return PetRecord(name, int(c), int(s), int(b))
