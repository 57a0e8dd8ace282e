"""WeCLIP+ losses (weclip/models/plus/losses.py) and self-training (self_training.py): hand-worked values."""

import math

import pytest
import torch

from weclip.losses import affinity_labels, affinity_loss, seg_loss
from weclip.models.plus.losses import cross_branch_loss, dice_loss, plus_total_loss
from weclip.models.plus.self_training import self_training_active, self_training_labels


def _two_class_logits():
    # every pixel: logits (0, ln 3) -> softmax (1/4, 3/4)
    logits = torch.zeros(1, 2, 1, 3)
    logits[:, 1] = math.log(3.0)
    return logits


def test_dice_quirk_counts_ignored_predictions_in_the_denominator():
    logits = _two_class_logits()
    labels = torch.tensor([[[0, 1, 255]]])
    # authors': union over all 3 pixels.
    #   c0: inter = .25, union = 3·.25 + 1 = 1.75 -> 2·.25/1.75 = 0.285714
    #   c1: inter = .75, union = 3·.75 + 1 = 3.25 -> 2·.75/3.25 = 0.461538
    #   loss = 1 - (0.285714 + 0.461538)/2 = 0.626374
    quirk = dice_loss(logits, labels)
    # clean: union over the 2 valid pixels.
    #   c0: union = 2·.25 + 1 = 1.5 -> 0.333333; c1: union = 2·.75 + 1 = 2.5 -> 0.6
    #   loss = 1 - (0.333333 + 0.6)/2 = 0.533333
    clean = dice_loss(logits, labels, ignore_in_denominator=False)
    # tolerance: eps = 1e-7 in the denominators and fp32 softmax rounding
    assert quirk.item() == pytest.approx(1 - (0.5 / 1.75 + 1.5 / 3.25) / 2, abs=1e-6)
    assert clean.item() == pytest.approx(1 - (0.5 / 1.5 + 1.5 / 2.5) / 2, abs=1e-6)
    assert labels[0, 0, 2] == 255  # the authors' version overwrote its input; ours does not
    # without ignored pixels the two agree
    full = torch.tensor([[[0, 1, 1]]])
    assert dice_loss(logits, full).item() == pytest.approx(
        dice_loss(logits, full, ignore_in_denominator=False).item(), abs=1e-7
    )


def test_dice_means_over_all_classes_and_upsamples():
    # C = 3, class 2 absent from labels: its inter is 0, so its Dice is 0 and the loss is at
    # least 1/3 even for a confident correct prediction of classes 0 and 1
    logits = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]], [[-20.0, -20.0]]]])  # (1, 3, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    assert dice_loss(logits, labels).item() == pytest.approx(1 / 3, abs=1e-5)
    # logits at 1x1 are upsampled (bilinear) to the 2x2 labels: a constant map stays constant
    small = _two_class_logits()[:, :, :, :1]  # (1, 2, 1, 1)
    labels = torch.tensor([[[0, 1], [1, 1]]])
    # c0: inter .25, union 4·.25 + 1 = 2 -> .25; c1: inter 2.25, union 3 + 3 = 6 -> .75
    assert dice_loss(small, labels).item() == pytest.approx(1 - (0.25 + 0.75) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="outside"):
        dice_loss(small, torch.tensor([[[0, 7], [1, 1]]]))


def test_cross_branch_loss_hand_worked():
    seg_clip = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    seg_dino = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]], requires_grad=True)
    loss_clip, loss_dino = cross_branch_loss(seg_clip, seg_dino, (1, 2))
    # targets from DINO: argmax (0,1) -> 1, (1,0) -> 0. CLIP pixel 0 (1, 0) vs 1: log(1+e) =
    # 1.313262 (fg term); pixel 1 (0, 2) vs 0: log(1+e²) = 2.126928 (bg term); 0.5·sum = 1.720095
    assert loss_clip.item() == pytest.approx(
        0.5 * (math.log1p(math.e) + math.log1p(math.e**2)), abs=1e-6
    )
    # targets from CLIP: (1,0) -> 0, (0,2) -> 1. DINO pixel 0 (0,1) vs 0: log(1+e); pixel 1
    # (1,0) vs 1: log(1+e); 0.5·sum = 1.313262
    assert loss_dino.item() == pytest.approx(math.log1p(math.e), abs=1e-6)
    # a target carries no gradient: L(clip | dino targets) does not reach seg_dino
    loss_clip.backward()
    assert seg_dino.grad is None and seg_clip.grad is not None


def test_total_loss_composes_the_terms_with_the_authors_weights():
    torch.manual_seed(0)
    seg_clip = torch.randn(2, 3, 4, 4, requires_grad=True)
    seg_dino = torch.randn(2, 3, 4, 4, requires_grad=True)
    aff = torch.sigmoid(torch.randn(2, 16, 16))
    pseudo = torch.randint(0, 3, (2, 16, 16))
    train = pseudo.clone()
    train[:, :8] = 0  # e.g. after self-training
    out = plus_total_loss(seg_clip, seg_dino, aff, pseudo, train)
    mean = torch.nn.functional.interpolate(
        0.5 * seg_clip + 0.5 * seg_dino, size=(16, 16), mode="bilinear", align_corners=False
    )
    # seg and Dice read the self-trained labels, the affinity loss the original pseudo-labels
    assert out["seg_loss"].item() == pytest.approx(seg_loss(mean, train).item(), abs=1e-6)
    assert out["dice_loss"].item() == pytest.approx(dice_loss(mean, train).item(), abs=1e-6)
    ref_aff = affinity_loss(aff, affinity_labels(pseudo, (4, 4), 8, 255))[0]
    assert out["aff_loss"].item() == pytest.approx(ref_aff.item(), abs=1e-7)
    other = affinity_loss(aff, affinity_labels(train, (4, 4), 8, 255))[0]
    assert abs(other.item() - ref_aff.item()) > 1e-4
    clip_l, dino_l = cross_branch_loss(seg_clip, seg_dino, (16, 16))
    assert out["cross_clip_loss"].item() == pytest.approx(clip_l.item(), abs=1e-6)
    # L = 1·seg + 0.1·aff + 0.1·(cross_clip + cross_dino) + 1·dice
    expected = (
        out["seg_loss"]
        + 0.1 * out["aff_loss"]
        + 0.1 * (out["cross_clip_loss"] + out["cross_dino_loss"])
        + out["dice_loss"]
    )
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    out["loss"].backward()
    assert seg_clip.grad is not None and seg_dino.grad is not None
    with pytest.raises(KeyError, match="Unknown WeCLIP\\+ loss key"):
        plus_total_loss(seg_clip, seg_dino, aff, pseudo, loss_cfg={"dice": 1.0})
    clean = plus_total_loss(
        seg_clip, seg_dino, aff, pseudo, train, loss_cfg={"dice_ignore_in_denominator": False}
    )
    # no ignored pixel in these labels: the quirk and the clean Dice agree
    assert clean["dice_loss"].item() == pytest.approx(out["dice_loss"].item(), abs=1e-7)
    ignored = train.clone()
    ignored[:, 12:] = 255
    a = plus_total_loss(seg_clip, seg_dino, aff, pseudo, ignored)["dice_loss"]
    b = plus_total_loss(
        seg_clip, seg_dino, aff, pseudo, ignored, loss_cfg={"dice_ignore_in_denominator": False}
    )["dice_loss"]
    assert abs(a.item() - b.item()) > 1e-3


# ----------------------------------------------------------------------------- self-training
def test_self_training_starts_after_step_index_18000():
    # the authors test n_iter > 18000 on the 0-based index n_iter = iteration - 1
    assert not self_training_active(None, 18000)
    assert not self_training_active(18001, 18000)  # n_iter = 18000
    assert self_training_active(18002, 18000)  # n_iter = 18001
    assert self_training_active(30000, 18000)


def test_self_training_replaces_confident_pixels_only():
    labels = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0])  # conf 1/3: kept (0)
    logits[0, :, 0, 1] = torch.tensor([5.0, 0.0, 0.0])  # conf e⁵/(e⁵+2) = 0.9867: 1 -> 0
    logits[0, :, 1, 0] = torch.log(torch.tensor([0.6, 0.2, 0.2]))  # conf 0.6: kept (2)
    logits[0, :, 1, 1] = torch.tensor([0.0, 0.0, 5.0])  # conf 0.9867: 255 -> 2
    new, replaced = self_training_labels(labels, logits)
    assert new.tolist() == [[[0, 0], [2, 2]]]
    assert replaced.tolist() == [[[False, True], [False, True]]]
    assert labels.tolist() == [[[0, 1], [2, 255]]]  # input untouched (affinity labels use it)
    kept, _ = self_training_labels(labels, logits, keep_ignore=True)
    assert kept.tolist() == [[[0, 0], [2, 255]]]
    # strict threshold: 0.9867 is not above 0.99
    assert self_training_labels(labels, logits, threshold=0.99)[0].tolist() == labels.tolist()


def test_self_training_upsamples_the_prediction():
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    logits = torch.tensor([0.0, 0.0, 4.0]).reshape(1, 3, 1, 1)  # conf e⁴/(e⁴+2) = 0.965 -> class 2
    new, replaced = self_training_labels(labels, logits)
    assert new.tolist() == [[[2, 2], [2, 2]]] and bool(replaced.all())
