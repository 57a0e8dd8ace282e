"""The parity fixture files: names, a deterministic ``.npz`` writer and reader.

``numpy.savez`` stamps every member with the current time, so two recordings of the same content
would differ byte for byte; :func:`save_npz` writes the same ``.npz`` layout (a zip of ``.npy``
members, readable with ``numpy.load``) with fixed timestamps and permissions, deflate-compressed,
so that recording twice gives identical files.
"""

import io
import json
import zipfile
from typing import Any, Dict, Mapping

import numpy as np

from weclip.utils.io import atomic_path

__all__ = ["FIXTURE_FILES", "MANIFEST", "save_npz", "load_npz", "write_json"]

#: fixture key -> file name (what ``tools/parity/record_official.py`` writes)
FIXTURE_FILES: Dict[str, str] = {
    "static": "official_step_static.npz",
    "rfm": "official_step_rfm.npz",
    "two_steps": "official_two_steps.npz",
    "inference": "official_msc_inference.npz",
    "val_pseudo": "official_val_pseudo.npz",
    "evaluate": "official_evaluate.npz",
    # WeCLIP+ (the authors' WeCLIP+/ folder; docs/parity.md, "WeCLIP+")
    "plus_step": "official_plus_step.npz",
    "plus_self_training": "official_plus_step_self_training.npz",
}
MANIFEST = "manifest.json"

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: constant for every member


def save_npz(path: str, arrays: Mapping[str, Any]) -> None:
    """Write ``arrays`` as a deflated ``.npz`` with constant metadata, atomically.

    Args:
        path (str): output file.
        arrays (Mapping[str, Any]): name -> array (no object arrays: strings become unicode
            arrays, so the file loads with ``allow_pickle=False``).
    """
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, value in arrays.items():
                array = np.asarray(value)
                if array.dtype == object:
                    raise ValueError(f"{path}: '{name}' is an object array (not allowed)")
                buffer = io.BytesIO()
                if not array.flags["C_CONTIGUOUS"]:  # (np.ascontiguousarray would make 0-d 1-d)
                    array = array.copy(order="C")
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buffer.getvalue(), compresslevel=6)


def load_npz(path: str) -> Dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file as a dict (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Pretty, key-sorted JSON, atomically (deterministic for the same payload)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
