"""Segmentation networks (U-Net, FCN-ResNet, DeepLabV3-ResNet50) and CE / focal losses."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from weclip.baselines.segnet import (
    DeepLabV3ResNet50,
    FCNResNet,
    UNet,
    cross_entropy_loss,
    focal_loss,
    segmentation_loss,
)


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def _batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    labels = torch.randint(0, 4, (2, 5, 6))
    labels[0, 0, :3] = 255
    return logits, labels


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, labels = _batch()
    reference = F.cross_entropy(logits, labels, ignore_index=255)
    # same sum over the same 57 pixels; fp32 rounding of a 57-term mean -> 1e-6 relative
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0), reference, rtol=1e-6, atol=0)
    torch.testing.assert_close(cross_entropy_loss(logits, labels), reference, rtol=1e-6, atol=0)


def test_focal_hand_value():
    # 2 classes, logits (0, ln 3): p(class 1) = 3 / 4. gamma 2: (1 - 0.75)^2 * -ln 0.75
    # = 0.0625 * 0.287682 = 0.0179801; alpha (0.25, 0.75) multiplies by alpha_1 = 0.75
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    labels = torch.ones(1, 1, 1, dtype=torch.long)
    value = 0.0625 * -math.log(0.75)
    assert focal_loss(logits, labels, gamma=2.0).item() == pytest.approx(value, rel=1e-6)
    weighted = focal_loss(logits, labels, gamma=2.0, alpha=[0.25, 0.75]).item()
    assert weighted == pytest.approx(0.75 * value, rel=1e-6)
    # the focal term shrinks the loss of a well-classified pixel below its CE
    assert value < -math.log(0.75)


def test_all_ignored_is_zero_with_a_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.full((1, 2, 2), 255)
    for loss in (focal_loss(logits, labels), cross_entropy_loss(logits, labels)):
        assert loss.item() == 0.0
        loss.backward()


def test_segmentation_loss_upsamples_and_checks():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.randint(0, 3, (1, 4, 4))
    up = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(segmentation_loss(logits, labels), F.cross_entropy(up, labels))
    torch.testing.assert_close(
        segmentation_loss(logits, labels, kind="focal", gamma=0.0), F.cross_entropy(up, labels)
    )
    with pytest.raises(ValueError, match="'ce' or 'focal'"):
        segmentation_loss(logits, labels, kind="dice")
    with pytest.raises(ValueError, match="outside 0..2"):
        focal_loss(up, torch.full((1, 4, 4), 7))


@pytest.mark.parametrize("size", [(33, 47), (16, 16), (1, 5)])
def test_unet_shapes(size):
    net = UNet(num_classes=3, width=4, depth=3)
    out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)


@pytest.mark.parametrize("size", [(33, 47), (16, 16), (7, 9)])
def test_fcn_logits_are_the_upsampled_head_at_the_input_size(size):
    torch.manual_seed(0)
    net = FCNResNet(num_classes=3, arch="resnet18", base_width=4, stem_pool=False).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = net(x)
        grid = net.head(net.trunk(x)[-1])
    assert out.shape == (2, 3, *size)
    # stride 8 without the stem pool = torchvision's padding arithmetic: ceil(ceil(ceil(H / 2) / 2) / 2)
    assert grid.shape[-2:] == tuple(math.ceil(math.ceil(math.ceil(s / 2) / 2) / 2) for s in size)
    expected = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
    assert torch.equal(out, expected)


def test_fcn_trunk_takes_torchvision_imagenet_weights(tmp_path):
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    net = FCNResNet(num_classes=4, arch="resnet18", weights=str(path))
    assert torch.equal(net.trunk.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    # torchvision's FCN layout: dilated layer3 / layer4 at output stride 8
    assert net.trunk.stage_strides == (4, 8, 8, 8) and net.trunk.layer4[1].conv2.dilation == (4, 4)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        FCNResNet(num_classes=4, arch="resnet18", weights=str(tmp_path / "missing.pth"))


def test_deeplab_shapes_and_local_weights(tmp_path):
    torch.manual_seed(0)
    model = DeepLabV3ResNet50(num_classes=3).eval()
    x = torch.randn(2, 3, 33, 47)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3, 33, 47)
    # a saved torchvision state dict reloads into an identical network
    path = tmp_path / "deeplab.pth"
    torch.save(model.net.state_dict(), path)
    again = DeepLabV3ResNet50(num_classes=3, weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(again(x), out)
    # another class count: the last classifier conv differs -> clear error, unless load_head=False
    with pytest.raises(ValueError, match="classifier.4.weight: file \\(3, 256, 1, 1\\)"):
        DeepLabV3ResNet50(num_classes=5, weights=str(path))
    headless = DeepLabV3ResNet50(num_classes=5, weights=str(path), load_head=False)
    assert torch.equal(headless.net.classifier[1].weight, model.net.classifier[1].weight)
    # ImageNet ResNet-50 weights for the trunk (torchvision's file, fc dropped)
    resnet = torchvision.models.resnet50(weights=None)
    trunk_path = tmp_path / "resnet50.pth"
    torch.save(resnet.state_dict(), trunk_path)
    with_trunk = DeepLabV3ResNet50(num_classes=3, backbone_weights=str(trunk_path))
    assert torch.equal(
        with_trunk.net.backbone.layer3[2].conv2.weight, resnet.layer3[2].conv2.weight
    )
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        DeepLabV3ResNet50(num_classes=3, backbone_weights=str(tmp_path / "missing.pth"))
