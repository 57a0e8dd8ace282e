"""Atomic writes: the final file appears only on success, with the usual permissions."""

import os
import stat

import pytest

from weclip.utils.io import atomic_path, atomic_write_text


def test_atomic_write_and_permissions(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(str(path), "hello")
    assert path.read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    assert os.listdir(path.parent) == ["a.txt"]  # no temp file left behind


def test_failure_leaves_nothing(tmp_path):
    path = tmp_path / "b.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"  # the previous content survives
    assert os.listdir(tmp_path) == ["b.json"]
