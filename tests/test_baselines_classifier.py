"""CAM classifiers and their losses: hand-worked CAMs, logits = GAP of the CAM, loss values."""

import math

import pytest
import torch
import torch.nn.functional as F

from weclip.baselines.classifier import (
    CAMClassifier,
    UNetCAMClassifier,
    cam_classifier_loss,
    multilabel_loss,
    normalize_cams,
    single_label_loss,
    weak_dice_loss,
)


def test_cam_of_a_1x1_head_is_the_weighted_feature_sum():
    model = CAMClassifier(2, "resnet18", base_width=8)
    # D = 64 channels for base width 8; use the first 3 and zero the rest of the head
    weight = torch.zeros(2, model.trunk.out_channels, 1, 1)
    weight[0, :3, 0, 0] = torch.tensor([1.0, 0.0, 1.0])
    weight[1, :3, 0, 0] = torch.tensor([0.0, 1.0, -1.0])
    with torch.no_grad():
        model.head.weight.copy_(weight)
    features = torch.zeros(1, model.trunk.out_channels, 1, 2)
    features[0, :3, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    features[0, :3, 0, 1] = torch.tensor([0.0, -1.0, 2.0])
    raw = model.raw_cams(features)
    # class 0: 1*1 + 1*3 = 4 and 0 + 2 = 2; class 1: 2 - 3 = -1 -> ReLU 0 and -1 - 2 = -3 -> 0
    assert raw[0, 0].flatten().tolist() == [4.0, 2.0]
    assert raw[0, 1].flatten().tolist() == [0.0, 0.0]
    cams = model.cams(features)
    # normalised by the map max + 1e-5: 4 / 4.00001 and 2 / 4.00001; the all-zero map stays 0
    assert cams[0, 0].flatten().tolist() == pytest.approx([4 / 4.00001, 2 / 4.00001], rel=1e-6)
    assert cams[0, 1].abs().sum() == 0


def test_logits_are_the_spatial_mean_of_the_linear_cam():
    torch.manual_seed(0)
    model = CAMClassifier(3, "resnet18", base_width=8).eval()
    out = model(torch.randn(2, 3, 48, 40))
    # bias-free 1x1 head: W . mean_x f(x) = mean_x (W . f(x)) (linearity); fp32 rounding of a
    # 64-term sum of O(1) values -> 1e-5 absolute
    linear_cam = F.conv2d(out["features"], model.head.weight)
    torch.testing.assert_close(out["logits"], linear_cam.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
    # stride 16 on 48 x 40 -> 3 x 3 (ceil(40 / 16) = 3 with torchvision's padding)
    assert out["features"].shape[-2:] == (3, 3)
    assert len(out["stages"]) == 4


def test_normalize_cams_shapes_and_range():
    raw = torch.rand(2, 3, 5, 7) * 10
    cams = normalize_cams(raw)
    assert cams.shape == raw.shape and float(cams.max()) < 1.0
    # each map's peak is max / (max + 1e-5), i.e. 1 up to 1e-5 / 10
    peaks = cams.flatten(2).amax(2)
    assert torch.allclose(peaks, torch.ones_like(peaks), atol=1e-5)


def test_multilabel_loss_values():
    logits = torch.zeros(2, 3)
    labels = torch.tensor([[1.0, 0, 1], [0, 0, 1]])
    # sigmoid(0) = 0.5 -> every term is log 2
    assert multilabel_loss(logits, labels).item() == pytest.approx(math.log(2), rel=1e-6)
    logits = torch.randn(4, 5)
    labels = (torch.rand(4, 5) > 0.5).float()
    torch.testing.assert_close(
        multilabel_loss(logits, labels), F.multilabel_soft_margin_loss(logits, labels)
    )


def test_single_label_loss_values_and_errors():
    # logits (2, 0), label class 0: CE = log(1 + e^-2) = 0.126928
    loss = single_label_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    with pytest.raises(ValueError, match="image 1 of the batch has 2 labelled classes"):
        single_label_loss(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="expected logits"):
        single_label_loss(torch.zeros(2, 2), torch.zeros(2, 3))


def test_weak_dice_hand_value():
    # labelled class 0 on 2 pixels: logits 0 and ln 3 -> p = 0.5, 0.75; m = p > 0.5 = (0, 1)
    # Dice = (2 * 0.75 + 1) / (1.25 + 1 + 1) = 2.5 / 3.25; loss = 1 - 0.769231 = 0.230769
    cam_logits = torch.tensor([[[[0.0, math.log(3.0)]], [[5.0, -7.0]]]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0]])  # class 1 unlabelled: its map does not count
    loss = weak_dice_loss(cam_logits, labels)
    assert loss.item() == pytest.approx(1 - 2.5 / 3.25, rel=1e-6)
    loss.backward()
    assert cam_logits.grad[0, 1].abs().sum() == 0
    # the mask is detached: d loss / d p_i = -(2 m_i (S) - N) / S^2 with S = sum p + sum m + 1,
    # N = 2 sum(p m) + 1: pixel 0 (m = 0): N / S^2 = 2.5 / 10.5625 = 0.236686, times
    # dp/dlogit = p (1 - p) = 0.25 -> 0.0591716
    assert cam_logits.grad[0, 0, 0, 0].item() == pytest.approx(0.25 * 2.5 / 3.25**2, rel=1e-5)
    # no labelled pair -> 0 with a (zero) gradient
    zero = weak_dice_loss(torch.randn(1, 2, 3, 3, requires_grad=True), torch.zeros(1, 2))
    assert zero.item() == 0.0 and zero.requires_grad


def test_cam_classifier_loss_adds_the_weighted_dice():
    torch.manual_seed(0)
    model = UNetCAMClassifier(2, width=4, depth=2)
    out = model(torch.randn(2, 3, 12, 10))
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    total = cam_classifier_loss(out["logits"], labels, "single", out["features"], dice_weight=0.1)
    expected = single_label_loss(out["logits"], labels) + 0.1 * weak_dice_loss(
        out["features"], labels
    )
    torch.testing.assert_close(total["loss"], expected)
    assert set(total) == {"loss", "cls_loss", "dice_loss"}
    plain = cam_classifier_loss(out["logits"], labels, "multilabel")
    assert set(plain) == {"loss", "cls_loss"}
    with pytest.raises(ValueError, match="needs the CAM logits"):
        cam_classifier_loss(out["logits"], labels, "single", dice_weight=0.1)
    with pytest.raises(ValueError, match="'multilabel' or 'single'"):
        cam_classifier_loss(out["logits"], labels, "softmax")


def test_unet_cam_classifier_logits_are_gap_of_the_relu_cam():
    torch.manual_seed(0)
    model = UNetCAMClassifier(3, width=4, depth=3)
    with torch.no_grad():
        model.logit_bias.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    out = model(torch.randn(2, 3, 33, 31))  # odd sizes: padded to 40 x 32 inside, cropped back
    assert out["features"].shape == (2, 3, 33, 31)
    expected = F.relu(out["features"]).mean(dim=(2, 3)) + torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(out["logits"], expected)
    cams = model.cams(out["features"]).detach()
    assert cams.shape == (2, 3, 33, 31) and float(cams.min()) >= 0
    literal = UNetCAMClassifier(3, width=4, depth=2, logit_bias=False)
    assert literal.logit_bias is None
    with torch.no_grad():
        assert float(literal(torch.randn(1, 3, 8, 8))["logits"].min()) >= 0  # ReLU -> GAP >= 0
