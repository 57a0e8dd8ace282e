"""ResNet trunks: torchvision equivalence, output stride / dilation, local weights and errors."""

import pytest
import torch
import torchvision

from weclip.baselines.resnet import ResNetTrunk
from weclip.baselines.weights import read_state_dict


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test (the baselines read local files only)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def _torchvision_trunk(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


@pytest.mark.parametrize(
    "output_stride, replace",
    [(32, [False, False, False]), (16, [False, False, True]), (8, [False, True, True])],
)
def test_resnet50_equals_torchvision_dilated(output_stride, replace):
    # torchvision's replace_stride_with_dilation is the reference for Bottleneck networks: same
    # weights, same input -> the same last-stage map (exactly: the same ops in the same order)
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(
        weights=None, replace_stride_with_dilation=replace
    ).eval()
    trunk = ResNetTrunk("resnet50", output_stride=output_stride).eval()
    trunk.load_state_dict(
        {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    )
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        ours = trunk(x)[-1]
        theirs = _torchvision_trunk(reference, x)
    assert torch.equal(ours, theirs)


def test_resnet18_plain_equals_torchvision():
    reference = torchvision.models.resnet18(weights=None).eval()
    trunk = ResNetTrunk("resnet18", output_stride=32).eval()
    trunk.load_state_dict(
        {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    )
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(trunk(x)[-1], _torchvision_trunk(reference, x))


def test_basicblock_dilation_rule():
    # stride 16: layer4 unstrided; its first block's strided conv (conv1) keeps the previous
    # dilation 1, every other 3x3 conv of layer4 gets dilation 2 (padding = dilation)
    t16 = ResNetTrunk("resnet18", output_stride=16, base_width=8)
    first, second = t16.layer4[0], t16.layer4[1]
    assert first.conv1.stride == (1, 1) and first.conv1.dilation == (1, 1)
    assert first.conv2.dilation == (2, 2) and first.conv2.padding == (2, 2)
    assert second.conv1.dilation == (2, 2) and second.conv2.dilation == (2, 2)
    assert first.downsample[0].stride == (1, 1)
    # stride 8: layer3 dilation 2 (first conv 1), layer4 dilation 4 (first conv 2)
    t8 = ResNetTrunk("resnet18", output_stride=8, base_width=8)
    assert t8.layer3[0].conv1.dilation == (1, 1) and t8.layer3[1].conv2.dilation == (2, 2)
    assert t8.layer4[0].conv1.dilation == (2, 2) and t8.layer4[0].conv2.dilation == (4, 4)
    assert t8.stage_strides == (4, 8, 8, 8) and t16.stage_strides == (4, 8, 16, 16)
    # dilate=False (IRN): stride removed, no dilation anywhere
    plain = ResNetTrunk("resnet18", output_stride=16, dilate=False, base_width=8)
    assert all(c.dilation == (1, 1) for c in plain.modules() if isinstance(c, torch.nn.Conv2d))
    assert plain.layer4[0].conv1.stride == (1, 1)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_odd_input_shapes(arch):
    # H = 65: conv1 (7, s2, p3) -> 33, maxpool (3, s2, p1) -> 17, layer2 -> 9, layer3 -> 5;
    # W = 47: 24 -> 12 -> 6 -> 3. Stride 16 keeps layer4 at layer3's 5 x 3 = ceil(65/16), ceil(47/16)
    trunk = ResNetTrunk(arch, output_stride=16, base_width=8)
    feats = trunk(torch.randn(2, 3, 65, 47))
    assert [tuple(f.shape[-2:]) for f in feats] == [(17, 12), (9, 6), (5, 3), (5, 3)]
    expansion = 4 if arch == "resnet50" else 1
    assert [f.shape[1] for f in feats] == [
        8 * expansion,
        16 * expansion,
        32 * expansion,
        64 * expansion,
    ]
    assert trunk.out_channels == 64 * expansion


def test_local_weights_load_and_wrappers(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    plain = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), plain)  # torchvision's file layout, fc included
    trunk = ResNetTrunk("resnet18", output_stride=16, weights=str(plain))
    assert torch.equal(trunk.conv1.weight, reference.conv1.weight)
    assert torch.equal(trunk.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    # a DDP checkpoint wrapped in {"state_dict": {"module.<key>": ...}} holds the same weights
    wrapped = tmp_path / "ckpt.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped
    )
    assert read_state_dict(str(wrapped)).keys() == reference.state_dict().keys()
    again = ResNetTrunk("resnet18", weights=str(wrapped))
    assert torch.equal(again.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)


def test_weight_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Weights file not found: .*nope.pth"):
        ResNetTrunk("resnet18", weights=str(tmp_path / "nope.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="Cannot read weights file .*corrupt.pth"):
        ResNetTrunk("resnet18", weights=str(corrupt))
    # ResNet-50 weights into a ResNet-18: keys and shapes differ -> one error naming the file
    other = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), other)
    with pytest.raises(
        ValueError, match=r"resnet50.pth does not match the network \(expected torchvision resnet18"
    ):
        ResNetTrunk("resnet18", weights=str(other))
    # full-width weights into a narrow trunk: shape mismatches are listed
    full = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), full)
    with pytest.raises(
        ValueError,
        match="shape mismatches .*conv1.weight: file \\(64, 3, 7, 7\\) vs network \\(16, 3, 7, 7\\)",
    ):
        ResNetTrunk("resnet18", base_width=16, weights=str(full))
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        ResNetTrunk("resnet18", weights=str(not_a_dict))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown ResNet arch"):
        ResNetTrunk("resnet7")
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\)"):
        ResNetTrunk("resnet18", output_stride=4)


def test_without_stem_pool():
    # no max-pool: layer1 at stride 2, so strides (2, 4, 8, 8) at output stride 8 (layer4
    # dilated) and (2, 4, 8, 16) at 16; the state dict is unchanged (the pool has no weights)
    small = ResNetTrunk("resnet18", output_stride=8, base_width=8, stem_pool=False)
    assert small.stage_strides == (2, 4, 8, 8)
    assert ResNetTrunk(
        "resnet18", output_stride=16, base_width=8, stem_pool=False
    ).stage_strides == (
        2,
        4,
        8,
        16,
    )
    assert small.state_dict().keys() == ResNetTrunk("resnet18", base_width=8).state_dict().keys()
    # 64 x 64 input: conv1 -> 32, stages 32, 16, 8, 8
    assert [f.shape[-1] for f in small(torch.randn(1, 3, 64, 64))] == [32, 16, 8, 8]
    with pytest.raises(ValueError, match=r"one of \(4, 8, 16\) \(without the stem pool\)"):
        ResNetTrunk("resnet18", output_stride=32, stem_pool=False)
