"""Training augmentation (spec §8): rescale sizes, zero padding + valid mask, flip, seeding."""

import numpy as np
import pytest

from weclip.data.transforms import augment, random_pad_crop, random_rescale


def _column_image(h: int, w: int) -> np.ndarray:
    """Asymmetric image: channel 0 = column + 1 (never 0), channel 1 = row + 1, channel 2 = 7."""
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:, :, 0] = np.arange(1, w + 1, dtype=np.uint8)[None, :]
    img[:, :, 1] = np.arange(1, h + 1, dtype=np.uint8)[:, None]
    img[:, :, 2] = 7
    return img


def _image_box(valid: np.ndarray):
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def test_small_image_is_zero_padded_and_marked_invalid():
    img = _column_image(30, 50)
    # r ~ U(1, 1) = 1: size (int(1·50), int(1·30)) = 50x30, smaller than the 64 crop on both sides
    crop, valid, _ = augment(
        img, np.random.default_rng(3), crop_size=64, scale_range=(1.0, 1.0), flip_prob=0.0
    )
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert valid.shape == (64, 64) and valid.dtype == bool
    assert valid.sum() == 30 * 50  # the whole image is inside the 64x64 canvas
    assert (crop[~valid] == 0).all()  # padding is black (RGB 0)
    assert (crop[valid] > 0).all()  # every image pixel is non-zero, so valid marks exactly them
    np.testing.assert_array_equal(crop[_image_box(valid)], img)  # pasted unchanged


def test_padding_offset_is_uniform_over_all_positions():
    # a 62x62 image in a 64 crop: pad offset in {0,1,2}², window offset 0 -> 9 placements; 200
    # seeds hit them all (P(miss one) = (8/9)^200 ≈ 6e-11)
    seen = set()
    for seed in range(200):
        _, valid, _ = random_pad_crop(
            np.ones((62, 62, 3), np.uint8), np.random.default_rng(seed), 64
        )
        rows, cols = _image_box(valid)
        seen.add((rows.start, cols.start))
    assert seen == {(y, x) for y in range(3) for x in range(3)}


def test_large_image_crop_is_fully_valid_window():
    img = _column_image(90, 120)
    crop, valid, _ = random_pad_crop(img, np.random.default_rng(0), 64)
    assert valid.all()
    # the crop is a window of the image: find its left column from channel 0 (= column + 1)
    top, left = int(crop[0, 0, 1]) - 1, int(crop[0, 0, 0]) - 1
    np.testing.assert_array_equal(crop, img[top : top + 64, left : left + 64])


def test_flip_flips_image_and_valid_consistently():
    img = _column_image(30, 50)
    kwargs = dict(crop_size=64, scale_range=(1.0, 1.0))
    # same seed -> same draws (ratio, flip draw, pad and crop offsets); only the flip differs
    plain, valid_plain, _ = augment(img, np.random.default_rng(11), flip_prob=0.0, **kwargs)
    flipped, valid_flipped, _ = augment(img, np.random.default_rng(11), flip_prob=1.0, **kwargs)
    np.testing.assert_array_equal(valid_plain, valid_flipped)  # placement does not depend on flip
    box = _image_box(valid_flipped)
    np.testing.assert_array_equal(plain[box], img)
    np.testing.assert_array_equal(flipped[box], img[:, ::-1])  # leftmost column is now the last one
    assert flipped[box][0, 0, 0] == 50 and plain[box][0, 0, 0] == 1
    assert (flipped[~valid_flipped] == 0).all()


def test_flip_of_partially_cropped_image_moves_valid_region():
    # 40x20 image (H=40, W=20) in a 32 crop: the window cuts rows and pads columns; the placement
    # is the same with and without flip, the 20 image columns inside it are mirrored
    img = _column_image(40, 20)
    plain, v1, _ = augment(
        img, np.random.default_rng(5), crop_size=32, scale_range=None, flip_prob=0.0
    )
    flipped, v2, _ = augment(
        img, np.random.default_rng(5), crop_size=32, scale_range=None, flip_prob=1.0
    )
    np.testing.assert_array_equal(v1, v2)
    cols_plain = plain[v1][:, 0].reshape(32, 20)[0]  # the 20 image columns of the first row
    cols_flip = flipped[v2][:, 0].reshape(32, 20)[0]
    np.testing.assert_array_equal(cols_plain, np.arange(1, 21))
    np.testing.assert_array_equal(cols_flip, np.arange(20, 0, -1))


def test_rescale_size_follows_int_of_ratio():
    img = np.zeros((37, 53, 3), np.uint8)
    rng_copy = np.random.default_rng(9)
    ratio = rng_copy.uniform(0.5, 2.0)  # the first draw of the same seed
    out, r, _ = random_rescale(img, np.random.default_rng(9), (0.5, 2.0))
    assert r == ratio
    assert out.shape == (int(ratio * 37), int(ratio * 53), 3)  # (int(r·H), int(r·W))


def test_same_seed_same_crop_different_seed_differs():
    img = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    kw = dict(crop_size=64, scale_range=(0.5, 2.0), flip_prob=0.5)
    a, va, _ = augment(img, np.random.default_rng(123), **kw)
    b, vb, _ = augment(img, np.random.default_rng(123), **kw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va, vb)
    others = [augment(img, np.random.default_rng(s), **kw)[0] for s in (124, 125, 126)]
    assert all(not np.array_equal(a, o) for o in others)


def test_augment_rejects_non_rgb_uint8():
    with pytest.raises(ValueError, match="uint8"):
        augment(
            np.zeros((8, 8, 3), np.float32),
            np.random.default_rng(0),
            crop_size=4,
            scale_range=None,
            flip_prob=0.5,
        )


def test_a_training_target_follows_the_image_geometry():
    # a mask equal to the image's first channel (values 0..4) must crop, flip and rescale with it: after
    # augmentation it equals the image channel wherever the image is not padding (nearest vs bilinear
    # resampling agree on a piecewise-constant image away from the edges of its blocks), and is 255 on padding
    img = np.zeros((40, 30, 3), np.uint8)
    for k in range(5):
        img[8 * k : 8 * (k + 1)] = k  # horizontal bands of 8 rows
    mask = img[:, :, 0].copy()
    kw = dict(crop_size=48, scale_range=(1.0, 1.0), flip_prob=1.0)
    crop, valid, target = augment(img, np.random.default_rng(5), mask=mask, **kw)
    same, _, none = augment(img, np.random.default_rng(5), **kw)
    assert none is None and np.array_equal(crop, same)  # the mask changes no draw
    assert target.dtype == np.uint8 and target.shape == (48, 48)
    assert np.array_equal(target[valid], crop[:, :, 0][valid]) and (target[~valid] == 255).all()
    # with a real rescale (x1.5) the nearest-resized mask stays inside the band values
    _, valid, target = augment(
        img, np.random.default_rng(6), mask=mask, **dict(kw, scale_range=(1.5, 1.5))
    )
    assert set(np.unique(target[valid]).tolist()) <= {0, 1, 2, 3, 4}
