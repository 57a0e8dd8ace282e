"""A random-init ResNet-18 CAM classifier learns the 64 px toy world on one CPU thread.

What is measured (toy val, 100 images, 4 shape classes, 1-2 objects per image):

* classification: mean over classes of the ROC AUC of the logits (chance 0.5);
* localisation: for each (image, present class), (a) the pointing game: is the CAM's peak
  (upsampled to 64 x 64) on an object of that class (chance = the mean object area fraction,
  0.12), and (b) the share of the CAM's mass that falls on the object divided by the object's area
  fraction (chance 1);
* the CAM pseudo-mask mIoU at the best background threshold of a sweep (all-background scores
  about 0.16 here: background IoU ~0.8, shapes 0).

Recipe (tuned on this world; the numbers in the floors' comments were measured with it): ResNet-18
of base width 8 WITHOUT the stem max-pool (on 64 px images the pool shrinks a 20-35 px shape to
5-9 px in layer1; with it the same budget stays at chance on localisation), output stride 8
(layer4 dilated, 8 x 8 CAMs), Adam lr 2e-3, batch 16, horizontal flips, multi-label BCE.
Random init learns slowly here: at 100-200 steps every figure above is at chance (measured:
exact-match accuracy 0.04-0.06, pointing 0.12-0.16), so the check runs 800 steps on 1,200
training images: about 55 s of CPU time on one thread (40-80 s wall on the 2-core dev machine,
depending on its load).
"""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from weclip.baselines.cam import ThresholdSweep, best_row
from weclip.baselines.classifier import CAMClassifier, multilabel_loss
from weclip.baselines.resnet import IMAGENET_MEAN, IMAGENET_STD
from weclip.data.labels import read_label_file
from weclip.data.toy import ToyWorldConfig, write_toy_dataset

NUM_CLASSES = 4
STEPS = 800
BATCH = 16
SEED = 0


def _load(root, names, labels):
    images, targets, masks = [], [], []
    for name in names:
        with Image.open(root / "JPEGImages" / f"{name}.png") as im:
            images.append(np.asarray(im.convert("RGB")))
        with Image.open(root / "SegmentationClassAug" / f"{name}.png") as im:
            masks.append(np.asarray(im))
        target = np.zeros(NUM_CLASSES, np.float32)
        target[labels[name]] = 1.0
        targets.append(target)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (
        (x - mean) / std,
        torch.from_numpy(np.stack(targets)),
        torch.from_numpy(np.stack(masks)).long(),
    )


def _auc(scores, positives):
    """ROC AUC by ranks (Mann-Whitney U); ties get the mean rank."""
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    for value in scores.unique():  # mean rank for ties
        tie = scores == value
        ranks[tie] = ranks[tie].mean()
    n_pos = int(positives.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.slow
def test_resnet18_cam_classifier_learns_and_localises(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        names = write_toy_dataset(
            str(tmp_path), ToyWorldConfig(image_size=64), seed=0, num_train=1200, num_val=100
        )
        labels = {
            n: ids.tolist()
            for n, ids in read_label_file(str(tmp_path / "cls_labels.txt"), NUM_CLASSES + 1).items()
        }
        x_train, y_train, _ = _load(tmp_path, names["train"], labels)
        x_val, y_val, m_val = _load(tmp_path, names["val"], labels)

        torch.manual_seed(SEED)
        model = CAMClassifier(
            NUM_CLASSES, "resnet18", base_width=8, output_stride=8, stem_pool=False
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        generator = torch.Generator().manual_seed(SEED)
        for _ in range(STEPS):
            index = torch.randint(0, len(x_train), (BATCH,), generator=generator)
            flip = torch.rand(BATCH, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x_train[index].flip(-1), x_train[index])
            loss = multilabel_loss(model(x)["logits"], y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        model.eval()
        with torch.no_grad():
            out = model(x_val)
            cams = model.cams(out["features"])
        elapsed = time.perf_counter() - start
        assert cams.shape == (100, NUM_CLASSES, 8, 8)

        auc = np.mean([_auc(out["logits"][:, k], y_val[:, k] > 0) for k in range(NUM_CLASSES)])
        up = F.interpolate(cams, size=(64, 64), mode="bilinear", align_corners=False)
        hits, gains, areas = [], [], []
        for b, k in (y_val > 0).nonzero().tolist():
            on_object = (m_val[b] == k + 1).float()
            area = float(on_object.mean())
            hits.append(float(on_object.flatten()[up[b, k].argmax()]))
            # share of the CAM's mass on the object / area; an all-zero CAM scores 0
            mass = float(up[b, k].sum())
            gains.append(float((up[b, k] * on_object).sum()) / mass / area if mass > 0 else 0.0)
            areas.append(area)
        sweep = ThresholdSweep(NUM_CLASSES + 1, thresholds=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7))
        sweep.update(cams, m_val, y_val)
        miou = float(best_row(sweep.rows())["miou"])
        # reference: every pixel background (a threshold above every CAM value)
        null = ThresholdSweep(NUM_CLASSES + 1, thresholds=(2.0,))
        null.update(cams, m_val, y_val)
        miou_bg = float(null.rows()[0]["miou"])
        print(
            f"toy64 ResNet-18 CAM, {STEPS} steps, {elapsed:.1f} s: AUC {auc:.3f}, pointing "
            f"{np.mean(hits):.3f} (chance {np.mean(areas):.3f}), mass gain {np.mean(gains):.2f}, "
            f"CAM mIoU {miou:.3f} (all background {miou_bg:.3f})"
        )
        # Measured with this recipe, 800 steps (model/batch seed 0 | 1 | 2): AUC 0.781 | 0.697 |
        # 0.877, pointing 0.406 | 0.444 | 0.344 (chance 0.123), mass gain 2.07 | 2.17 | 1.83,
        # CAM mIoU 0.335 | 0.330 | 0.309 (all background 0.161). The run is deterministic on one
        # thread, but another CPU / torch build can change the trajectory, and at 800 steps
        # training is still on its steep part (AUC moves by 0.18 between seeds), so the floors sit
        # below the worst seed: each still says "clearly better than chance".
        assert auc > 0.62
        assert np.mean(hits) > 2.0 * np.mean(areas)
        assert np.mean(gains) > 1.4
        assert miou > miou_bg + 0.08
    finally:
        torch.set_num_threads(threads)
