"""Oxford-IIIT Pet in the VOC layout: parsing, masks, head boxes, splits (``tools/prepare_pets.py``).

Parkhi et al., "Cats and Dogs", CVPR 2012, https://www.robots.ox.ac.uk/~vgg/data/pets/. The
official archives unpack to::

    images/<name>.jpg                    7,390 photos (a few are not RGB JPEGs, see below)
    annotations/trimaps/<name>.png       1 = pet, 2 = background, 3 = border / not classified
    annotations/xmls/<name>.xml          head boxes, PASCAL-style XML (trainval images only)
    annotations/list.txt                 "<name> <class_id> <species> <breed_id>", '#' header
    annotations/trainval.txt, test.txt   the official split (3,680 / 3,669), same line format

``class_id`` 1..37 numbers the breeds alphabetically (case-insensitive), ``species`` is 1 = cat,
2 = dog, ``breed_id`` the rank inside the species; a breed's name is the file stem without the
trailing ``_<number>`` (cat breeds are capitalised: ``Abyssinian``, dog breeds are not:
``american_bulldog``).

Written under ``<out>`` (one label set per output folder)::

    JPEGImages/<name>.jpg              copies (or links) of the images; non-RGB / non-JPEG files
                                       re-encoded as RGB JPEG (quality 95) after
                                       ``weclip.data.images.read_rgb``
    SegmentationClass/<name>.png       0 background, the class id on the pet, 255 on the border
    trainval.txt test.txt              the official split
    train.txt val.txt                  a seeded split of trainval (see :func:`split_trainval`)
    cls_labels.txt                     "<name> <id>" with the 0-based foreground id (class id - 1)
    boxes.json                         name -> [[x0, y0, x1, y1, class_id], ...] (head boxes)
    classes.json                       label set, class names, prompt names
    pets_manifest.json                 the fingerprint of the input and the options

Label sets: ``species`` (C = 3: background, cat = 1, dog = 2) and ``breeds`` (C = 38: background
and the 37 breeds in ``class_id`` order). Box coordinates are continuous pixel edges (origin at the
top-left corner of the top-left pixel): the XML's 1-based inclusive ``xmin..xmax`` becomes
``x0 = xmin - 1``, ``x1 = xmax`` (the convention of ``weclip.baselines.box_seeds``).
"""

import hashlib
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from weclip.data.images import read_mask, read_rgb
from weclip.data.labels import format_label_file, format_split, write_text_if_changed
from weclip.data.prepare import run_jobs
from weclip.utils.io import atomic_path, atomic_write_text

__all__ = [
    "PET_SPECIES",
    "PET_BREEDS",
    "PET_CAT_BREEDS",
    "LABEL_SETS",
    "OFFICIAL_COUNTS",
    "PetRecord",
    "parse_pet_list",
    "check_breed_names",
    "class_names",
    "prompt_names",
    "class_id_of",
    "trimap_to_mask",
    "parse_head_boxes",
    "split_trainval",
    "file_sha256",
    "needs_reencode",
    "check_job",
    "write_job",
    "format_boxes_json",
    "manifest_payload",
    "read_manifest",
    "prepare_pets",
    "MANIFEST",
]

PET_SPECIES: Tuple[str, ...] = ("cat", "dog")  # species 1, 2 of list.txt
# class_id 1..37 order (list.txt): alphabetical, case-insensitive; capitalised = cat.
PET_BREEDS: Tuple[str, ...] = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
    "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
    "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland",
    "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard", "samoyed",
    "scottish_terrier", "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)  # fmt: skip
PET_CAT_BREEDS = frozenset(b for b in PET_BREEDS if b[0].isupper())  # the 12 cat breeds
LABEL_SETS = ("species", "breeds")
OFFICIAL_COUNTS = {"trainval": 3680, "test": 3669}
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
IGNORE_INDEX = 255
JPEG_QUALITY = 95  # re-encoding quality for the few images that are not RGB JPEGs

_NAME_RE = re.compile(r"^(?P<breed>.+)_(?P<number>\d+)$")


@dataclass(frozen=True)
class PetRecord:
    """One line of ``list.txt`` / ``trainval.txt`` / ``test.txt``."""

    name: str
    class_id: int  # 1..37 breed
    species: int  # 1 cat, 2 dog
    breed_id: int  # rank inside the species

    @property
    def breed(self) -> str:
        """The breed name: the image name without its trailing ``_<number>``."""
        return _NAME_RE.match(self.name).group("breed")


def parse_pet_list(path: str) -> Dict[str, PetRecord]:
    """Parse a Pet list file (``name class_id species breed_id``; '#' lines are headers).

    Args:
        path (str): ``list.txt``, ``trainval.txt`` or ``test.txt``.

    Returns:
        Dict[str, PetRecord]: name -> record, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line (not 4 fields, non-integer or out-of-range ids, a name
            without ``_<number>``) or a repeated name; file and line are named.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Oxford-IIIT Pet list not found: {path}")
    records: Dict[str, PetRecord] = {}
    first_line: Dict[str, int] = {}
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{path}:{line_no}"
            fields = text.split()
            if len(fields) != 4:
                raise ValueError(
                    f"{where}: expected 'name class_id species breed_id', got {text!r}"
                )
            name = fields[0]
            try:
                class_id, species, breed_id = (int(v) for v in fields[1:])
            except ValueError:
                raise ValueError(f"{where}: ids must be integers, got {text!r}") from None
            if not 1 <= class_id <= len(PET_BREEDS):
                raise ValueError(f"{where}: class_id {class_id} outside 1..{len(PET_BREEDS)}")
            if species not in (1, 2):
                raise ValueError(f"{where}: species {species} is neither 1 (cat) nor 2 (dog)")
            if breed_id < 1:
                raise ValueError(f"{where}: breed_id {breed_id} must be >= 1")
            if not _NAME_RE.match(name):
                raise ValueError(f"{where}: image name {name!r} does not end in _<number>")
            if name in first_line:
                raise ValueError(f"{where}: {name!r} already listed on line {first_line[name]}")
            first_line[name] = line_no
            records[name] = PetRecord(name, class_id, species, breed_id)
    if not records:
        raise ValueError(f"Oxford-IIIT Pet list {path} has no entries")
    return records


def check_breed_names(records: Mapping[str, PetRecord], where: str) -> None:
    """Check that every class id names its ``PET_BREEDS`` breed and the right species.

    Raises:
        ValueError: a class id whose images have another breed stem, or a cat breed listed as a
            dog (or the reverse), naming ``where`` and an example image.
    """
    for record in records.values():
        expected = PET_BREEDS[record.class_id - 1]
        if record.breed != expected:
            raise ValueError(
                f"{where}: {record.name} has class_id {record.class_id}, which is breed "
                f"{expected!r}, but its name says {record.breed!r}"
            )
        species = 1 if expected in PET_CAT_BREEDS else 2
        if record.species != species:
            raise ValueError(
                f"{where}: {record.name} ({expected}) has species {record.species}, expected "
                f"{species} ({PET_SPECIES[species - 1]})"
            )


def class_names(label_set: str) -> Tuple[str, ...]:
    """Class names with background first (index = class id): C = 3 or 38."""
    if label_set == "species":
        return ("background",) + PET_SPECIES
    if label_set == "breeds":
        return ("background",) + PET_BREEDS
    raise ValueError(f"label set must be one of {LABEL_SETS}, got {label_set!r}")


def prompt_names(label_set: str) -> Tuple[str, ...]:
    """Foreground prompt names (index = class id - 1): underscores -> spaces
    (``american_bulldog`` -> ``american bulldog``)."""
    return tuple(n.replace("_", " ") for n in class_names(label_set)[1:])


def class_id_of(record: PetRecord, label_set: str) -> int:
    """Class id of an image in a label set: species (1, 2) or breed (1..37)."""
    if label_set == "species":
        return record.species
    if label_set == "breeds":
        return record.class_id
    raise ValueError(f"label set must be one of {LABEL_SETS}, got {label_set!r}")


def trimap_to_mask(trimap: np.ndarray, class_id: int, where: str = "trimap") -> np.ndarray:
    """Trimap (1 pet, 2 background, 3 border) -> mask (class id, 0, 255), uint8.

    Raises:
        ValueError: a value outside 1..3 (``where`` named).
    """
    values = np.unique(trimap)
    bad = values[(values < 1) | (values > 3)]
    if bad.size:
        raise ValueError(
            f"{where}: trimap value {int(bad[0])} is not 1 (pet), 2 (background) or 3 (border)"
        )
    mask = np.zeros(trimap.shape, dtype=np.uint8)
    mask[trimap == TRIMAP_PET] = class_id
    mask[trimap == TRIMAP_BORDER] = IGNORE_INDEX
    return mask


def _int_field(node: ET.Element, tag: str, path: str) -> int:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{path}: <bndbox> without <{tag}>")
    try:
        return int(round(float(child.text.strip())))
    except ValueError:
        raise ValueError(f"{path}: <{tag}> is not a number: {child.text!r}") from None


def parse_head_boxes(path: str) -> List[Tuple[int, int, int, int]]:
    """Head boxes of a Pet XML as continuous edges (x0, y0, x1, y1) = (xmin-1, ymin-1, xmax, ymax).

    Raises:
        ValueError: unparseable XML, no ``<object><bndbox>``, a missing/non-numeric coordinate,
            or xmax < xmin / ymax < ymin (file named).
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"Cannot parse head-box XML {path}: {exc}") from exc
    boxes = []
    for node in root.iter("bndbox"):
        xmin, ymin = _int_field(node, "xmin", path), _int_field(node, "ymin", path)
        xmax, ymax = _int_field(node, "xmax", path), _int_field(node, "ymax", path)
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{path}: empty box xmin={xmin} xmax={xmax} ymin={ymin} ymax={ymax}")
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
    if not boxes:
        raise ValueError(f"{path}: no <object><bndbox> (a head-box XML needs at least one box)")
    return boxes


def split_trainval(
    records: Sequence[PetRecord], val_fraction: float = 0.1, seed: int = 0
) -> Tuple[List[str], List[str]]:
    """Seeded split of trainval into train / val, stratified by breed (class_id).

    Per breed, its names sorted, permuted by ``numpy.random.default_rng([seed, class_id])``; the
    first ``round(val_fraction * n)`` go to val. Independent of the order of ``records`` and of
    the other breeds.

    Returns:
        Tuple[List[str], List[str]]: (train, val) names, sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_class: Dict[int, List[str]] = {}
    for record in records:
        by_class.setdefault(record.class_id, []).append(record.name)
    train: List[str] = []
    val: List[str] = []
    for class_id in sorted(by_class):
        names = sorted(by_class[class_id])
        order = np.random.default_rng([int(seed), class_id]).permutation(len(names))
        k = int(round(val_fraction * len(names)))
        val += [names[i] for i in order[:k]]
        train += [names[i] for i in order[k:]]
    return sorted(train), sorted(val)


def file_sha256(path: str) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def needs_reencode(image: Image.Image) -> bool:
    """True unless the opened file is already an RGB JPEG (then it is copied / linked as is)."""
    return not (image.format == "JPEG" and image.mode == "RGB")


# (name, image path, trimap path, class id, out image path, out mask path, link images)
Job = Tuple[str, str, str, int, str, str, bool]


def check_job(job: Job) -> Tuple[str, str, List[int]]:
    """Validate one image and its trimap without writing anything.

    Decodes the image (``read_rgb``: a corrupt file is an error) and the trimap (values 1..3,
    same size as the image).

    Returns:
        (name, "ok", []) in the shape of ``weclip.data.prepare.run_jobs`` results.
    """
    name, image_path, trimap_path, class_id, _, _, _ = job
    rgb = read_rgb(image_path)
    trimap = read_mask(trimap_path)
    if trimap.shape != rgb.shape[:2]:
        raise ValueError(
            f"{trimap_path}: trimap is {trimap.shape[1]}x{trimap.shape[0]}, image {image_path} "
            f"is {rgb.shape[1]}x{rgb.shape[0]}"
        )
    trimap_to_mask(trimap, class_id, where=trimap_path)
    return name, "ok", []


def _write_image(image_path: str, out_path: str, link: bool) -> str:
    """Copy / link / re-encode one image; returns "copied", "linked" or "reencoded"."""
    with Image.open(image_path) as image:
        reencode = needs_reencode(image)
    if reencode:
        rgb = read_rgb(image_path)
        with atomic_path(out_path) as tmp:
            Image.fromarray(rgb, mode="RGB").save(tmp, format="JPEG", quality=JPEG_QUALITY)
        return "reencoded"
    if link:
        directory = os.path.dirname(os.path.abspath(out_path))
        os.makedirs(directory, exist_ok=True)
        target = os.path.relpath(os.path.abspath(image_path), directory)
        tmp = os.path.join(directory, f".{os.path.basename(out_path)}.link.tmp")
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, out_path)
        return "linked"
    with atomic_path(out_path) as tmp:
        shutil.copyfile(image_path, tmp)
    return "copied"


def write_job(job: Job) -> Tuple[str, str, List[int]]:
    """Write the image (copy / link / re-encode) and the mask of one name, atomically.

    Existing outputs are kept (resume); the caller decides which names need work.

    Returns:
        (name, status, []) with status "copied" / "linked" / "reencoded" / "existing".
    """
    name, image_path, trimap_path, class_id, out_image, out_mask, link = job
    status = "existing"
    if not os.path.isfile(out_image):
        status = _write_image(image_path, out_image, link)
    if not os.path.isfile(out_mask):
        mask = trimap_to_mask(read_mask(trimap_path), class_id, where=trimap_path)
        with atomic_path(out_mask) as tmp:
            Image.fromarray(mask, mode="L").save(tmp, format="PNG")
        if status == "existing":
            status = "mask"
    return name, status, []


def format_boxes_json(boxes: Mapping[str, Sequence[Sequence[int]]]) -> str:
    """``boxes.json`` text: one name per line, names sorted, ``[x0, y0, x1, y1, class_id]``."""
    lines = [
        f"  {json.dumps(name)}: {json.dumps([list(b) for b in boxes[name]])}"
        for name in sorted(boxes)
    ]
    return "{\n" + ",\n".join(lines) + ("\n" if lines else "") + "}\n"


def manifest_payload(
    fingerprints: Mapping[str, str], options: Mapping[str, object], complete: bool
) -> Dict[str, object]:
    """The content of ``pets_manifest.json``."""
    return {
        "schema": "weclip.pets/v1",
        "source_sha256": dict(sorted(fingerprints.items())),
        "options": dict(sorted(options.items())),
        "complete": bool(complete),
    }


def read_manifest(path: str) -> Optional[Dict[str, object]]:
    """Read ``pets_manifest.json``; None when absent.

    Raises:
        ValueError: the file exists but is not a Pet manifest.
    """
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("schema") != "weclip.pets/v1":
        raise ValueError(f"{path} is not a prepare_pets manifest (schema weclip.pets/v1)")
    return payload


MANIFEST = "pets_manifest.json"
OUTPUT_DIRS = ("JPEGImages", "SegmentationClass")


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Oxford-IIIT Pet: {what} folder not found: {path}")


def _read_splits(ann_dir: str) -> Tuple[Dict[str, PetRecord], Dict[str, List[str]], Dict[str, str]]:
    """list.txt records, the official splits (checked against list.txt) and the list paths."""
    paths = {k: os.path.join(ann_dir, f"{k}.txt") for k in ("list", "trainval", "test")}
    records = parse_pet_list(paths["list"])
    check_breed_names(records, paths["list"])
    splits: Dict[str, List[str]] = {}
    for split in ("trainval", "test"):
        for name, record in parse_pet_list(paths[split]).items():
            if records.get(name) != record:
                how = "not in" if name not in records else "listed differently in"
                raise ValueError(f"{paths[split]}: {name} is {how} {paths['list']}")
            splits.setdefault(split, []).append(name)
        splits[split].sort()
    both = sorted(set(splits["trainval"]) & set(splits["test"]))
    if both:
        raise ValueError(
            f"{len(both)} images are in both {paths['trainval']} and {paths['test']} "
            f"(first: {both[0]})"
        )
    return records, splits, paths


def prepare_pets(
    pets_root: str,
    out: str,
    labels: str = "species",
    link_images: bool = False,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    workers: int = 1,
    force: bool = False,
    check_counts: bool = True,
) -> Dict[str, object]:
    """Write the VOC-layout Pet dataset of one label set (``tools/prepare_pets.py``).

    Everything is checked before the first file is written (lists, breed names, files present,
    head-box XMLs, every image decoded and every trimap's values and size); then images and masks
    are written where missing, then the text files (only when their content changes), then the
    manifest marked complete.

    Args:
        pets_root (str): folder with ``images/`` and ``annotations/``.
        out (str): output folder.
        labels (str): "species" or "breeds".
        link_images (bool): symlink RGB JPEGs instead of copying them.
        val_fraction (float): per-breed fraction of trainval in val.txt.
        split_seed (int): seed of that split.
        workers (int): processes for the checks and the writes.
        force (bool): rewrite the images and masks of a folder written from another input.
        check_counts (bool): require the official split sizes.

    Returns:
        dict: ``splits`` (name -> list), ``num_boxes``, ``written`` (status -> count),
        ``present`` (names already complete), ``changed`` (text files rewritten).

    Raises:
        FileNotFoundError / ValueError: the first problem found, naming the file; nothing is
        written then.
    """
    if labels not in LABEL_SETS:
        raise ValueError(f"label set must be one of {LABEL_SETS}, got {labels!r}")
    image_dir = os.path.join(pets_root, "images")
    ann_dir = os.path.join(pets_root, "annotations")
    trimap_dir = os.path.join(ann_dir, "trimaps")
    xml_dir = os.path.join(ann_dir, "xmls")
    for path, what in ((image_dir, "images"), (ann_dir, "annotations")):
        _require_dir(path, what)
    for path, what in ((trimap_dir, "trimaps"), (xml_dir, "head-box (xmls)")):
        _require_dir(path, what)

    # 1) lists
    records, splits, list_paths = _read_splits(ann_dir)
    counts = {s: len(splits[s]) for s in ("trainval", "test")}
    if check_counts and counts != OFFICIAL_COUNTS:
        raise ValueError(
            f"split sizes {counts} differ from the official {OFFICIAL_COUNTS} "
            "(check_counts=False / --no-check-counts for a subset)"
        )
    names = sorted(set(splits["trainval"]) | set(splits["test"]))
    splits["train"], splits["val"] = split_trainval(
        [records[n] for n in splits["trainval"]], val_fraction, split_seed
    )
    label_of = {n: class_id_of(records[n], labels) for n in names}

    # 2) files present; head boxes (a bad XML stops here)
    missing = [
        p
        for n in names
        for p in (os.path.join(image_dir, n + ".jpg"), os.path.join(trimap_dir, n + ".png"))
        if not os.path.isfile(p)
    ]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} listed files are missing (first: {', '.join(missing[:3])})"
        )
    boxes: Dict[str, List[List[int]]] = {}
    for n in names:
        xml = os.path.join(xml_dir, n + ".xml")
        if os.path.isfile(xml):
            boxes[n] = [list(b) + [label_of[n]] for b in parse_head_boxes(xml)]

    # 3) the output folder: written from this input with these options, fresh, or --force
    fingerprints = {os.path.basename(p): file_sha256(p) for p in list_paths.values()}
    options = {
        "labels": labels,
        "link_images": bool(link_images),
        "val_fraction": float(val_fraction),
        "split_seed": int(split_seed),
    }
    incomplete = manifest_payload(fingerprints, options, False)
    manifest_path = os.path.join(out, MANIFEST)
    previous = read_manifest(manifest_path)
    same = previous is not None and all(
        previous.get(k) == incomplete[k] for k in ("source_sha256", "options")
    )
    rewrite = False
    if previous is not None and not same:
        if not force:
            raise ValueError(
                f"{out} was written from another input or with other options ({manifest_path}: "
                f"options {json.dumps(previous.get('options'))}, list hashes "
                f"{'equal' if previous.get('source_sha256') == incomplete['source_sha256'] else 'differ'}); "
                "use another output folder or force=True (--force) to rewrite it"
            )
        rewrite = True
    elif previous is None:
        used = [d for d in OUTPUT_DIRS if os.path.isdir(os.path.join(out, d))]
        if any(os.listdir(os.path.join(out, d)) for d in used):
            if not force:
                raise ValueError(
                    f"{out} holds images or masks but no {MANIFEST}: not written by this tool "
                    "(use another output folder, or force=True (--force) to rewrite it)"
                )
            rewrite = True
    out_image = {n: os.path.join(out, "JPEGImages", n + ".jpg") for n in names}
    out_mask = {n: os.path.join(out, "SegmentationClass", n + ".png") for n in names}
    todo = (
        names
        if rewrite
        else [
            n for n in names if not (os.path.isfile(out_image[n]) and os.path.isfile(out_mask[n]))
        ]
    )
    jobs: List[Job] = [
        (
            n,
            os.path.join(image_dir, n + ".jpg"),
            os.path.join(trimap_dir, n + ".png"),
            label_of[n],
            out_image[n],
            out_mask[n],
            bool(link_images),
        )
        for n in todo
    ]

    # 4) check every image and trimap still to be written (nothing is written before this passes)
    run_jobs(check_job, jobs, len(jobs), workers, "check images/trimaps")

    # 5) write
    if todo:  # partial outputs from here on belong to this manifest (complete: false)
        atomic_write_json(manifest_path, incomplete)
    if rewrite:
        for n in todo:
            for path in (out_image[n], out_mask[n]):
                if os.path.lexists(path):
                    os.remove(path)
    results = run_jobs(write_job, jobs, len(jobs), workers, "write images/masks")
    written: Dict[str, int] = {}
    for _, status, _ in results:
        written[status] = written.get(status, 0) + 1
    texts = {f"{s}.txt": format_split(splits[s]) for s in ("trainval", "test", "train", "val")}
    texts["cls_labels.txt"] = format_label_file({n: [label_of[n] - 1] for n in names})
    texts["boxes.json"] = format_boxes_json(boxes)
    classes = {
        "label_set": labels,
        "num_classes": len(class_names(labels)),
        "class_names": list(class_names(labels)),
        "prompt_class_names": list(prompt_names(labels)),
    }
    texts["classes.json"] = json.dumps(classes, indent=2) + "\n"
    texts[MANIFEST] = json.dumps(manifest_payload(fingerprints, options, True), indent=2) + "\n"
    changed = [f for f, t in texts.items() if write_text_if_changed(os.path.join(out, f), t)]
    return {
        "splits": splits,
        "num_boxes": sum(len(b) for b in boxes.values()),
        "num_box_images": len(boxes),
        "written": written,
        "present": len(names) - len(todo),
        "changed": changed,
    }


def atomic_write_json(path: str, payload: Mapping[str, object]) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
