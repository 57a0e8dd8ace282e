"""DenseCRF post-processing (spec §9) and the bounded CRF worker pool."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weclip.config import load_config
from weclip.refine.crf import CRFPool, crf_from_logits, dense_crf, logits_to_probs

pytest.importorskip("pydensecrf.densecrf")


@pytest.fixture(scope="module")
def crf_cfg():
    return load_config("configs/voc.py").test.crf


def _confident(labels: np.ndarray, num_classes: int, p: float = 0.99) -> np.ndarray:
    """CxHxW probabilities: ``p`` on the given label, the rest spread evenly."""
    probs = np.full((num_classes,) + labels.shape, (1 - p) / (num_classes - 1), np.float32)
    np.put_along_axis(probs, labels[None], p, axis=0)
    return probs


def test_config_constants_reach_the_crf(crf_cfg):
    # spec §9: Gaussian sxy=3 compat=3, bilateral sxy=64 srgb=5 compat=4, 10 iterations
    assert dict(crf_cfg) == dict(
        iter_max=10, pos_xy_std=3, pos_w=3, bi_xy_std=64, bi_rgb_std=5, bi_w=4, prob_clip=1e-5
    )


def test_confident_unary_everywhere_is_kept(crf_cfg):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    probs = _confident(np.full((20, 28), 3), num_classes=5)
    image.setflags(write=False)  # as np.asarray(PIL image): pydensecrf needs a writable copy
    labels = dense_crf(image, probs, crf_cfg)
    assert labels.shape == (20, 28) and labels.dtype == np.int64
    assert (labels == 3).all()


def test_two_confident_regions_stay_two_regions(crf_cfg):
    # left 12 columns class 1, right 16 columns class 4, on an image with the same two colours
    gt = np.zeros((20, 28), np.int64)
    gt[:, :12], gt[:, 12:] = 1, 4
    image = np.zeros((20, 28, 3), np.uint8)
    image[:, :12] = (200, 30, 30)
    image[:, 12:] = (20, 20, 220)
    labels = dense_crf(image, _confident(gt, num_classes=6), crf_cfg)
    np.testing.assert_array_equal(labels, gt)


def test_matches_pydensecrf_unary_from_softmax(crf_cfg):
    # the authors' DenseCRF class: unary_from_softmax + the same pairwise terms + 10 iterations
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (18, 22, 3), dtype=np.uint8)
    probs = torch.softmax(torch.randn(4, 18, 22) * 2, dim=0).numpy()
    ref = dcrf.DenseCRF2D(22, 18, 4)
    ref.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    ref.addPairwiseGaussian(sxy=3, compat=3)
    ref.addPairwiseBilateral(sxy=64, srgb=5, rgbim=image, compat=4)
    q_ref = np.array(ref.inference(10)).reshape(4, 18, 22)
    labels, q = dense_crf(image, probs, crf_cfg, return_probs=True)
    np.testing.assert_allclose(q, q_ref, atol=1e-6)
    np.testing.assert_array_equal(labels, q_ref.argmax(0))
    assert labels.min() >= 0 and labels.max() < 4


def test_logits_to_probs_is_bilinear_then_softmax():
    logits = torch.randn(3, 4, 5)
    probs = logits_to_probs(logits.half(), (9, 11))
    ref = torch.softmax(
        F.interpolate(logits.half().float()[None], (9, 11), mode="bilinear", align_corners=False)[
            0
        ],
        dim=0,
    )
    assert probs.shape == (3, 9, 11) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_crf_from_logits_keeps_a_confident_prediction(crf_cfg):
    # logits +10 for class 2 everywhere, 0 elsewhere: p(2) = e^10/(e^10+3) > 0.999
    logits = torch.zeros(4, 3, 4)
    logits[2] = 10.0
    image = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    labels = crf_from_logits(image, logits, crf_cfg)
    assert labels.shape == (24, 32) and (labels == 2).all()


def test_bad_inputs(crf_cfg):
    probs = _confident(np.zeros((4, 5), np.int64), 3)
    with pytest.raises(TypeError, match="uint8"):
        dense_crf(np.zeros((4, 5, 3), np.float32), probs, crf_cfg)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        dense_crf(np.zeros((4, 6, 3), np.uint8), probs, crf_cfg)
    with pytest.raises(KeyError, match="lack \\['prob_clip'\\]"):
        dense_crf(
            np.zeros((4, 5, 3), np.uint8),
            probs,
            {k: v for k, v in crf_cfg.items() if k != "prob_clip"},
        )


def test_missing_pydensecrf_names_the_package(monkeypatch, crf_cfg):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        dense_crf(np.zeros((4, 5, 3), np.uint8), _confident(np.zeros((4, 5), np.int64), 3), crf_cfg)


def _jobs(n: int = 5):
    g = torch.Generator().manual_seed(3)
    rng = np.random.default_rng(3)
    for i in range(n):
        h, w = 20 + i, 26 - i
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        yield f"img{i}", image, torch.randn(4, 3, 4, generator=g) * 3


def test_pool_matches_inline_and_stays_bounded(crf_cfg):
    inline = {name: crf_from_logits(img, lg, crf_cfg) for name, img, lg in _jobs()}

    with CRFPool(crf_cfg, num_workers=0) as pool:
        for name, img, lg in _jobs():
            pool.submit(name, img, lg)
            assert pool.in_flight == 0  # inline: done inside submit
        got0 = dict(pool.collect())

    got1 = {}
    with CRFPool(crf_cfg, num_workers=1, max_in_flight=2) as pool:
        for name, img, lg in _jobs():
            pool.submit(name, img, lg)
            assert pool.in_flight <= 2
            got1.update(pool.collect())
        got1.update(pool.finish())
        assert pool.in_flight == 0 and pool.collect() == []

    assert sorted(got0) == sorted(got1) == sorted(inline)
    for name, labels in inline.items():
        np.testing.assert_array_equal(got0[name], labels)
        np.testing.assert_array_equal(got1[name], labels)


def test_pool_rejects_bad_job(crf_cfg):
    with CRFPool(crf_cfg, num_workers=0) as pool:
        with pytest.raises(ValueError, match="image 'x'.*logits"):
            pool.submit("x", np.zeros((4, 5, 3), np.uint8), torch.zeros(1, 3, 2, 2))
        with pytest.raises(TypeError, match="image 'y'.*uint8"):
            pool.submit("y", np.zeros((4, 5, 3)), torch.zeros(3, 2, 2))
