"""Evaluation against the authors' ``utils/evaluate.py`` ``scores()`` (``official_evaluate.npz``;
spec §9; docs/parity.md).

Prediction/GT pairs of synthetic masks with 255 boundary bands in the GT, shifted predictions, a
swapped class, a spurious class absent from the GT and an all-background prediction. The confusion
matrix is integer counting (exact); the scores are a few float64 divisions and means of at most 21
values (relative 1e-12).
"""

import numpy as np
import torch

from weclip.evaluation.metrics import ConfusionMatrix


def test_confusion_matrix_and_scores(official_evaluate):
    data = official_evaluate
    matrix = ConfusionMatrix(21)
    for i in range(int(data["num_pairs"])):
        matrix.update(
            torch.as_tensor(data[f"pred{i}"]).long(), torch.as_tensor(data[f"gt{i}"]).long()
        )
    hist = matrix.hist.cpu().numpy() if hasattr(matrix.hist, "cpu") else np.asarray(matrix.hist)
    assert np.array_equal(hist.astype(np.float64), data["hist"]), "confusion matrices differ"
    scores = matrix.scores()
    print(
        f"[parity] evaluation: mIoU ours {scores['miou']:.12f}, theirs {float(data['miou']):.12f}; "
        f"pAcc {scores['pixel_acc']:.12f} / {float(data['pAcc']):.12f}; mAcc "
        f"{scores['mean_acc']:.12f} / {float(data['mAcc']):.12f}"
    )
    np.testing.assert_allclose(scores["miou"], data["miou"], rtol=1e-12)
    np.testing.assert_allclose(scores["pixel_acc"], data["pAcc"], rtol=1e-12)
    np.testing.assert_allclose(scores["mean_acc"], data["mAcc"], rtol=1e-12)
    # per-class IoU: NaN exactly where theirs is (0/0: the class is neither in the GT nor predicted)
    np.testing.assert_allclose(scores["iou"], data["iou"], rtol=1e-12, equal_nan=True)
    # the pairs exercise what makes mIoU subtle: a predicted class without GT pixels (IoU 0, not
    # in the mean) and GT classes never predicted
    gt_pixels, pred_pixels = hist.sum(axis=1), hist.sum(axis=0)
    assert bool(((pred_pixels > 0) & (gt_pixels == 0)).any())
    assert bool(((gt_pixels > 0) & (np.diag(hist) == 0)).any())
