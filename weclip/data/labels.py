"""Split lists and image-level label files (docs/architecture.md, spec §3.1, §10).

Formats (both plain text, one entry per line, blank lines ignored):

* split list ``<split_dir>/<split>.txt``: one image name per line (``2007_000032``,
  ``COCO_train2014_000000000009``);
* label file ``<split_dir>/cls_labels.txt``: ``name id id ...`` with the 0-based foreground ids
  (class id - 1) of the classes present in the image, ascending.

The authors derive image-level labels from the ground-truth masks at training time (spec §3.1,
§12.3); here the preparation tools derive them once (``fg_ids_from_mask``) and the library reads
only the label file, so nothing at training time looks at a mask.
"""

import codecs
import os
from typing import Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

import numpy as np

from weclip.errors import DataError, MissingFileError
from weclip.utils.io import atomic_path

__all__ = [
    "read_split",
    "read_label_file",
    "read_text_lines",
    "format_split",
    "format_label_file",
    "write_text_if_changed",
    "ids_to_multihot",
    "fg_ids_from_mask",
]


def read_text_lines(path: str, what: str = "text file") -> Iterator[Tuple[int, str]]:
    """The numbered lines of a UTF-8 text file, tolerant of what editors save.

    A UTF-8 byte-order mark (Notepad) is dropped; ``\\n``, ``\\r\\n`` and ``\\r`` all end a line. Bytes that
    are not UTF-8 (a Latin-1 file, a binary file given by mistake) raise one error naming the file and the
    line.

    Args:
        path (str): the file.
        what (str): what the file is, for the messages ("split list", "label file").

    Returns:
        Iterator[Tuple[int, str]]: (1-based line number, line without its line ending).

    Raises:
        MissingFileError: the file does not exist.
        DataError: the file is not UTF-8 text.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"{what[0].upper() + what[1:]} not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            f"{path}: the {what} is UTF-16 text (Notepad's 'Unicode'); save it as UTF-8"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line_no}: the {what} is not UTF-8 text (byte 0x{data[err.start]:02x}: "
            f"{err.reason}); save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise DataError(f"{path}: the {what} holds NUL bytes: a binary file, not a {what}?")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return iter(enumerate(lines, start=1))


def read_split(path: str) -> List[str]:
    """Read a split list (one name per line).

    Args:
        path (str): the list file.

    Returns:
        List[str]: the names, in file order.

    Raises:
        MissingFileError: the file does not exist.
        DataError: a line holds more than one field, a name repeats, the list is empty, or the file
        is not UTF-8 text (file and line named). A BOM, CRLF line ends and trailing spaces are fine.
    """
    names: List[str] = []
    seen: Dict[str, int] = {}
    for line_no, line in read_text_lines(path, "split list"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise DataError(
                f"{path}:{line_no}: expected one image name per line, got {line.strip()!r}"
            )
        name = fields[0]
        if name in seen:
            raise DataError(f"{path}:{line_no}: name {name!r} repeats line {seen[name]}")
        seen[name] = line_no
        names.append(name)
    if not names:
        raise DataError(f"Split list {path} is empty")
    return names


def read_label_file(path: str, num_classes: int) -> Dict[str, np.ndarray]:
    """Read ``name id id ...`` lines into name -> sorted 0-based foreground ids.

    Args:
        path (str): the label file.
        num_classes (int): classes including background (C); valid foreground ids are 0..C-2.

    Returns:
        Dict[str, np.ndarray]: name -> (K,) int64 ids, K >= 1.

    Raises:
        MissingFileError: the file does not exist.
        DataError: a name without ids, a non-integer id, a repeated id or name, an id outside
            0..C-2 (a class-count mismatch between the config and the file), or bytes that are
            not UTF-8; file and line are named.
    """
    if num_classes < 2:
        raise DataError(
            f"num_classes must count background plus at least one class, got {num_classes}"
        )
    num_fg = num_classes - 1
    labels: Dict[str, np.ndarray] = {}
    first_line: Dict[str, int] = {}
    for line_no, line in read_text_lines(path, "label file"):
        fields = line.split()
        if not fields:
            continue
        name, raw_ids = fields[0], fields[1:]
        where = f"{path}:{line_no}"
        if name in first_line:
            raise DataError(f"{where}: name {name!r} already labelled on line {first_line[name]}")
        if not raw_ids:
            raise DataError(f"{where}: {name!r} has an empty label vector (no foreground class id)")
        try:
            ids = [int(v) for v in raw_ids]
        except ValueError:
            raise DataError(f"{where}: ids must be integers, got {' '.join(raw_ids)!r}") from None
        bad = [i for i in ids if not 0 <= i < num_fg]
        if bad:
            raise DataError(
                f"{where}: foreground id {bad[0]} out of range 0..{num_fg - 1}: class-count "
                f"mismatch, the config has num_classes={num_classes} (background + {num_fg}) "
                f"but this label file uses id "
                f"{bad[0]} (a label file of another dataset?)"
            )
        if len(set(ids)) != len(ids):
            raise DataError(f"{where}: repeated id in {' '.join(raw_ids)!r}")
        first_line[name] = line_no
        labels[name] = np.array(sorted(ids), dtype=np.int64)
    if not labels:
        raise DataError(f"Label file {path} is empty")
    return labels


def ids_to_multihot(ids: Sequence[int], num_classes: int) -> np.ndarray:
    """0-based foreground ids -> (C-1,) float32 multi-hot vector (background excluded)."""
    vec = np.zeros(num_classes - 1, dtype=np.float32)
    vec[np.asarray(ids, dtype=np.int64)] = 1.0
    return vec


def fg_ids_from_mask(
    mask: np.ndarray, num_classes: int, ignore_index: int = 255, where: str = "mask"
) -> List[int]:
    """Foreground ids present in a class-index mask (for the preparation tools only).

    Same set as the authors' uint8 ``unique(mask) - 1`` trick (spec §3.1, §12.12): values 1..C-1 map
    to ids 0..C-2; background 0 and ``ignore_index`` are dropped.

    Args:
        mask (np.ndarray): (H, W) integer class indices.
        num_classes (int): classes incl. background (C).
        ignore_index (int): value of ignored pixels.
        where (str): file name for the error message.

    Returns:
        List[int]: ascending 0-based foreground ids (may be empty).

    Raises:
        ValueError: a value is neither a class id nor ``ignore_index`` (message names ``where``).
    """
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        raise DataError(
            f"{where}: value {int(bad[0])} is neither a class id 0..{num_classes - 1} "
            f"nor ignore ({ignore_index})"
        )
    return [int(v) - 1 for v in values if 1 <= v < num_classes]


def format_split(names: Iterable[str]) -> str:
    """Text of a split list."""
    return "".join(f"{n}\n" for n in names)


def format_label_file(labels: Mapping[str, Sequence[int]]) -> str:
    """Text of a label file, sorted by name; names without ids are refused (nothing to train on)."""
    lines = []
    for name in sorted(labels):
        ids = sorted(int(i) for i in labels[name])
        if not ids:
            raise DataError(f"{name}: empty label vector; leave the image out of the label file")
        lines.append(" ".join([name] + [str(i) for i in ids]) + "\n")
    return "".join(lines)


def write_text_if_changed(path: str, text: str) -> bool:
    """Atomically write ``text`` (UTF-8) unless ``path`` already holds exactly it (keeps mtimes on
    re-runs).

    Returns:
        bool: True when the file was (re)written.
    """
    data = text.encode("utf-8")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return True
