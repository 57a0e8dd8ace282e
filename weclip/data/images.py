"""Robust image and mask reading: every failure names the file, every image comes back as RGB uint8.

Images (``read_rgb``) are converted to (H, W, 3) uint8 RGB whatever their stored form:

* ``RGB``: as is. ``L`` / ``1`` / ``P`` (grayscale, bilevel, palette): expanded through PIL (palette
  images through their palette). ``CMYK`` / ``YCbCr``: PIL's colour conversion.
* With alpha (``RGBA``, ``LA``, ``PA``): the alpha channel is dropped (no compositing; the colour
  values are kept as stored).
* 16-bit (``I;16*``, ``I``, and 16-bit RGB PNGs): scaled to 8 bits by ``round(v / 257)`` (65535 ->
  255), never clipped. PIL reads 16-bit RGB PNGs by keeping the high byte, so those are read with
  OpenCV.
* Float images (``F``) are refused: their range is ambiguous.

EXIF orientation is **not** applied: the authors read images with imageio, which returns the stored
pixel grid, and the VOC/COCO masks are aligned with that grid.

Masks (``read_mask``) must be single-channel (palette ``P`` or grayscale ``L``, values = class
indices; VOC's palette PNGs store the index, not the colour). An RGB mask is refused: it holds
colours, not classes.

Writing: :func:`save_png` is the one PNG writer of the library (images, masks, palette label maps),
atomic like every file the library writes; it can store text entries (PNG ``tEXt`` chunks, read back
with :func:`png_text`), which the preparation tools use to record what a mask was made from.
"""

import os
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
from PIL import Image, PngImagePlugin

from weclip.errors import DataError, MissingFileError
from weclip.utils.io import atomic_path

__all__ = [
    "read_rgb",
    "read_mask",
    "save_png",
    "png_text",
    "image_size",
    "to_rgb_uint8",
    "scale_16bit_to_8bit",
]

PathLike = Union[str, "os.PathLike[str]"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Modes that PIL's own convert("RGB") maps correctly (palette through its palette, alpha dropped).
_PIL_CONVERTIBLE = frozenset(
    ["RGBA", "RGBa", "RGBX", "LA", "La", "PA", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV"]
)


def scale_16bit_to_8bit(array: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 by ``round(v / 257)`` (exact on 257·k, so 65535 -> 255, 257 -> 1)."""
    wide = np.clip(array.astype(np.int64), 0, 65535)
    return ((wide + 128) // 257).astype(np.uint8)


def _png_bit_depth(path: PathLike) -> int:
    """Bit depth from the PNG IHDR chunk (byte 24), or 0 when ``path`` is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) < 25 or not head.startswith(_PNG_SIGNATURE):
        return 0
    return head[24]


def to_rgb_uint8(image: Image.Image, path: PathLike = "<memory>") -> np.ndarray:
    """Convert an already loaded PIL image to (H, W, 3) uint8 RGB (rules in the module docstring).

    Args:
        image (PIL.Image.Image): a fully loaded image.
        path (str): used in error messages only.

    Returns:
        np.ndarray: (H, W, 3) uint8, C-contiguous, writable.
    """
    mode = image.mode
    if mode == "RGB":
        array = np.asarray(image)
    elif mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PIL opens 16-bit PNG/TIFF grayscale as I;16 or I): scale, do not clip
        gray = scale_16bit_to_8bit(np.asarray(image))
        array = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "F":
        raise DataError(
            f"{path}: floating-point image (PIL mode F) has no defined 0-255 range; "
            "convert it first"
        )
    elif mode in _PIL_CONVERTIBLE:
        try:
            array = np.asarray(image.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot convert image mode {mode} to RGB: {exc}") from exc
    else:
        raise DataError(f"{path}: unsupported image mode {mode!r}")
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise DataError(
            f"{path}: conversion gave shape {array.shape} {array.dtype}, expected (H, W, 3) uint8"
        )
    array = np.ascontiguousarray(array)
    # np.asarray(PIL image) is a read-only view; a writable copy keeps torch.from_numpy of any view of
    # it defined (a 1x1 image's (3, H, W) transpose is the same buffer)
    return array if array.flags.writeable else array.copy()


def _open_fully(path: PathLike, what: str) -> Image.Image:
    """Open and decode the whole file (PIL decodes lazily; truncation shows only on ``load``)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"Cannot read {what} {path}: more pixels than PIL's safety limit "
            f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {exc}"
        ) from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        kind = (
            "not an image file"
            if isinstance(exc, Image.UnidentifiedImageError)
            else ("corrupt or truncated")
        )
        raise DataError(f"Cannot read {what} {path}: {kind} ({type(exc).__name__}: {exc})") from exc
    return image


def image_size(path: PathLike, what: str = "image") -> Tuple[int, int]:
    """(H, W) of an image file from its header (the pixels are not decoded).

    Raises:
        MissingFileError: the file does not exist.
        DataError: the file is not an image PIL can identify.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as exc:
        raise DataError(f"Cannot read {what} {path}: {type(exc).__name__}: {exc}") from exc
    return height, width


def png_text(path: PathLike) -> Dict[str, str]:
    """The text entries of a PNG file (``tEXt``/``iTXt`` chunks before the pixels); {} for none."""
    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", None) or {})
    except Exception as exc:
        raise DataError(f"Cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _read_16bit_rgb_png(path: PathLike) -> np.ndarray:
    """16-bit colour PNG through OpenCV (PIL would keep only the high byte)."""
    import cv2  # local import: only this rare path needs OpenCV

    array = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise DataError(f"Cannot read 16-bit colour image {path} with OpenCV")
    rgb = array[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    return np.ascontiguousarray(scale_16bit_to_8bit(rgb))


def read_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Args:
        path (str): image file (JPEG, PNG, ...).

    Returns:
        np.ndarray: (H, W, 3) uint8.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: the file is corrupt, truncated or of an unsupported kind (message names it).
    """
    image = _open_fully(path, "image")
    with image:
        if image.format == "PNG" and image.mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
            return _read_16bit_rgb_png(path)
        return to_rgb_uint8(image, path)


def read_mask(path: PathLike) -> np.ndarray:
    """Read a single-channel label mask (class indices, 255 = ignore) as (H, W) uint8.

    Args:
        path (str): PNG in palette (``P``) or grayscale (``L``) mode; 16-bit grayscale is accepted
            when every value fits in 0..255.

    Returns:
        np.ndarray: (H, W) uint8 class indices.
    """
    image = _open_fully(path, "mask")
    with image:
        if image.mode in ("P", "L"):
            return np.array(image, dtype=np.uint8)
        if image.mode.startswith("I;16") or image.mode == "I":
            values = np.asarray(image)
            if values.size and (values.min() < 0 or values.max() > 255):
                raise DataError(f"Mask {path}: values outside 0..255 (mode {image.mode})")
            return values.astype(np.uint8)
        raise DataError(
            f"Mask {path}: mode {image.mode!r} is not a single-channel index image; expected a "
            "palette (P) or grayscale (L) PNG whose pixel values are class ids (an RGB colour "
            "mask must be converted)"
        )


def save_png(
    path: PathLike,
    array: np.ndarray,
    palette: Optional[np.ndarray] = None,
    text: Optional[Mapping[str, str]] = None,
) -> None:
    """Write a PNG atomically: (H, W, 3) uint8 RGB, or (H, W) uint8 single-channel.

    Args:
        path (str): the ``.png`` file (folders are created).
        array (np.ndarray): (H, W, 3) RGB or (H, W) values 0..255 (any integer dtype for 2-D maps).
        palette (np.ndarray, optional): (N, 3) uint8 colours for a 2-D map: written as an indexed
            (``P``) PNG whose pixel values are the map's values (VOC's label format); without it a 2-D map
            is a grayscale (``L``) PNG.
        text (Mapping[str, str], optional): text entries stored in the file (``tEXt`` chunks, Latin-1),
            read back with :func:`png_text`.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8 and palette is None:
        image = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
    elif array.ndim == 2:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"{path}: values must lie in [0, 255] for a PNG, got [{array.min()}, {array.max()}]"
            )
        image = Image.fromarray(array.astype(np.uint8), mode="L" if palette is None else "P")
        if palette is not None:
            image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    else:
        raise ValueError(
            f"{path}: expected (H, W, 3) uint8 RGB or an (H, W) map, got {array.shape}"
        )
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(str(key), str(value))
    with atomic_path(os.fspath(path)) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
