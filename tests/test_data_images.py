"""Image reading: every stored form becomes RGB uint8 correctly; corrupt files are named."""

import cv2
import numpy as np
import pytest
from PIL import Image

from weclip.data.images import read_mask, read_rgb


def test_grayscale_is_replicated(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert (out == gray[:, :, None]).all()


def test_rgba_drops_alpha_keeps_colour(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = (0, 128)  # alpha varies; colour must not be composited onto anything
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert (read_rgb(tmp_path / "a.png") == (10, 20, 30)).all()


def test_palette_uses_the_palette_colours(tmp_path):
    img = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    img.putpalette([5, 6, 7, 200, 100, 50] + [0] * 762)
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png")[0], [[5, 6, 7], [200, 100, 50]])


def test_cmyk_is_converted(tmp_path):
    # CMYK (0, 255, 0, 0) = full magenta ink -> RGB (255 - 0, 255 - 255, 255 - 0) = (255, 0, 255)
    Image.new("CMYK", (3, 2), (0, 255, 0, 0)).save(tmp_path / "c.tif")
    assert (read_rgb(tmp_path / "c.tif") == (255, 0, 255)).all()


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    out = read_rgb(tmp_path / "g16.png")
    # round(v / 257): 0, 1, 3.89 -> 4, 128, 255 (clipping would give 0, 255, 255, 255, 255)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 4, 128, 255])
    assert (out[..., 0] == out[..., 2]).all()


def test_16bit_colour_png_is_scaled_in_rgb_order(tmp_path):
    rgb = np.zeros((1, 2, 3), np.uint16)
    rgb[0, 0] = (65535, 1000, 0)  # R, G, B
    rgb[0, 1] = (0, 257, 32896)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[:, :, ::-1])  # OpenCV writes BGR
    out = read_rgb(tmp_path / "c16.png")
    np.testing.assert_array_equal(out[0], [[255, 4, 0], [0, 1, 128]])


def test_float_image_is_refused_with_its_name(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif: floating-point image"):
        read_rgb(tmp_path / "f.tif")


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image not found: .*nothing\.jpg"):
        read_rgb(tmp_path / "nothing.jpg")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(ValueError, match=r"Cannot read image .*bad\.png"):
        read_rgb(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"Cannot read mask .*bad\.png"):
        read_mask(tmp_path / "bad.png")
