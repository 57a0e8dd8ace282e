"""Multi-scale + flip merge (spec §9) on toy models whose logits are known."""

import pytest
import torch
import torch.nn.functional as F

from weclip.config import load_config
from weclip.evaluation.inference import fit_long_side, msc_flip_inference, resize_long_side
from weclip.models.weclip import crop_to_patch_multiple


def pooled_model(patch: int, bias: float):
    """Toy network of the model interface: it crops its input to a multiple of ``patch`` (as conv1 does);
    logit 0 = mean of channel 0 over each patch (a linear, patch-local map), logit 1 = a constant
    ``bias``. Returns the function and the list of (cropped) input shapes it saw."""
    seen = []

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        x = crop_to_patch_multiple(x, patch)
        seen.append(tuple(x.shape))
        pooled = F.avg_pool2d(x[:, :1], patch)  # B,1,h,w
        return torch.cat([pooled, torch.full_like(pooled, bias)], dim=1)

    return logits_fn, seen


def test_flip_average_uses_the_authors_remainder_drop():
    # p = 2, one 2x5 image whose columns hold 1,2,3,4,5; no resize, one scale, flip on.
    # x cropped to 2x4: columns 1,2,3,4 -> patch means [1.5, 3.5]
    # flip(x) = 5,4,3,2,1, cropped AFTER the flip (conv1 drops the right remainder of the flipped
    # tensor): 5,4,3,2 -> [4.5, 2.5] -> flipped back [2.5, 4.5]
    # average: [(1.5+2.5)/2, (3.5+4.5)/2] = [2.0, 4.0]
    x = torch.arange(1.0, 6.0).expand(1, 1, 2, 5).clone()
    fn, seen = pooled_model(patch=2, bias=2.9)
    out = msc_flip_inference(fn, x, scales=(1.0,), flip=True, resize_long=None)
    assert seen == [(2, 1, 2, 4)]  # [x, flip x] in one batch, cropped to 2x4
    torch.testing.assert_close(out.msc_logits[0, 0], torch.tensor([[2.0, 4.0]]))
    torch.testing.assert_close(out.single_logits[0, 0], torch.tensor([[1.5, 3.5]]))
    # final bilinear 1x2 -> 2x5 (align_corners=False): src col = (j+0.5)*2/5-0.5 =
    # -0.3(->0), 0.1, 0.5, 0.9, 1.3(->1): values 2.0, 2.2, 3.0, 3.8, 4.0 on both rows
    row = torch.tensor([2.0, 2.2, 3.0, 3.8, 4.0])
    torch.testing.assert_close(out.logits[0, 0], row.expand(2, 5))
    # class 1 has the constant logit 2.9: it wins where the class-0 logit is below 2.9
    assert out.labels.tolist() == [[[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]]


def test_no_flip_runs_the_plain_input_only():
    x = torch.arange(1.0, 6.0).expand(1, 1, 2, 5).clone()
    fn, seen = pooled_model(patch=2, bias=0.0)
    out = msc_flip_inference(fn, x, scales=(1.0,), flip=False, resize_long=None)
    assert seen == [(1, 1, 2, 4)]
    torch.testing.assert_close(out.msc_logits[0, 0], torch.tensor([[1.5, 3.5]]))


def test_scales_mean_raw_logits_at_reference_size():
    # p = 1 (no crop), identity-like model (logit 0 = the pixel), scales (1.0, 0.5), no flip.
    # x = [[0,2,4,6],[0,2,4,6]]; scale 0.5 with scale_factor: src col = (j+0.5)*2-0.5 = 0.5, 2.5
    # -> [1, 5] (rows average two equal rows)
    # its logits [[1,5]] back to 2x4: src col = (j+0.5)/2-0.5 = -0.25(->0), 0.25, 0.75, 1.25(->1)
    # -> [1, 2, 4, 5]; mean with scale 1: [(0+1)/2, (2+2)/2, (4+4)/2, (6+5)/2] = [0.5, 2, 4, 5.5]
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).expand(1, 1, 2, 4).clone()
    fn, seen = pooled_model(patch=1, bias=-100.0)
    out = msc_flip_inference(fn, x, scales=(1.0, 0.5), flip=False, resize_long=None)
    assert seen == [(1, 1, 2, 4), (1, 1, 1, 2)]
    expected = torch.tensor([0.5, 2.0, 4.0, 5.5]).expand(2, 4)
    torch.testing.assert_close(out.msc_logits[0, 0], expected)
    torch.testing.assert_close(out.logits[0, 0], expected)  # out size = input size: identity


def test_no_softmax_before_merging():
    # a model whose logits depend on the input size: scale 1 -> (0, 4), scale 0.5 -> (0, -2)
    # merged raw logits = ((0+0)/2, (4-2)/2) = (0, 1); a softmax before the mean would instead
    # give probabilities (p1 = (0.982 + 0.119)/2 = 0.55), not these values
    def fn(x):
        v = 4.0 if x.shape[-1] == 4 else -2.0
        return torch.stack([torch.zeros_like(x[:, 0]), torch.full_like(x[:, 0], v)], dim=1)

    out = msc_flip_inference(
        fn, torch.zeros(1, 3, 4, 4), scales=(1.0, 0.5), flip=True, resize_long=None
    )
    torch.testing.assert_close(out.msc_logits[0, :, 0, 0], torch.tensor([0.0, 1.0]))


def test_voc_sized_image_follows_the_authors_sizes():
    # 333x500 image, resize_long 512: ratio 1.024 -> (int(340.992), 512) = (340, 512)
    # scale 1: crop to 16-multiples -> 336x512 (21x32 patches)
    # scale 0.75: floor(340*0.75) = 255, 384 -> crop 240x384 (15x24), logits resized to 21x32
    test = load_config("configs/voc.py").test
    fn, seen = pooled_model(patch=16, bias=0.0)
    images = torch.randint(0, 256, (1, 3, 333, 500), dtype=torch.uint8)
    out = msc_flip_inference(
        fn, images, scales=test.scales, flip=test.flip, resize_long=test.resize_long
    )
    assert seen == [(2, 3, 336, 512), (2, 3, 240, 384)]
    assert out.msc_logits.shape == (1, 2, 21, 32) and out.single_logits.shape == (1, 2, 21, 32)
    assert out.logits.shape == (1, 2, 333, 500) and out.labels.shape == (1, 333, 500)
    assert torch.equal(out.logits.argmax(1), out.labels)

    fn2, seen2 = pooled_model(patch=16, bias=0.0)  # --no-flip
    msc_flip_inference(
        fn2, images, scales=test.scales, flip=False, resize_long=512, out_size=(100, 120)
    )
    assert seen2 == [(1, 3, 336, 512), (1, 3, 240, 384)]


def test_extreme_aspect_ratios_keep_one_patch():
    # resize_long 512 on 20x2000: int(20 * 512 / 2000) = 5 < 16, and the 0.75 view floor(5 * 0.75) = 3.
    # The smallest long side t with floor(int(20 t / 2000) * 0.75) >= 16: int(20 t / 2000) >= 22 (22 *
    # 0.75 = 16.5) -> t >= 2200
    assert fit_long_side((20, 2000), 512, 16, 0.75) == 2200
    assert fit_long_side((2000, 20), 512, 16, 1.0) == 1600  # int(20 t / 2000) >= 16 -> t >= 1600
    assert fit_long_side((375, 500), 512, 16, 0.75) == 512  # ordinary images: the authors' 512
    assert fit_long_side((20, 2000), None, 16, 1.0) is None  # the short side already holds a patch
    fn, seen = pooled_model(patch=16, bias=0.0)
    out = msc_flip_inference(
        fn, torch.zeros(1, 3, 20, 2000), scales=(1.0, 0.75), flip=True, resize_long=2200
    )
    assert out.labels.shape == (1, 20, 2000) and seen[1][-2] == 16


def test_flip_equivariant_model_is_unchanged_by_flip_averaging():
    # widths multiple of p at every scale (24, 12), mirror-symmetric model: flip(l(flip x)) = l(x)
    # (with 0.75 the width 18 leaves a remainder of 2 and the two branches differ, see above)
    fn, _ = pooled_model(patch=4, bias=0.0)
    x = torch.randn(2, 3, 16, 24)
    a = msc_flip_inference(fn, x, scales=(1.0, 0.5), flip=True, resize_long=None)
    b = msc_flip_inference(fn, x, scales=(1.0, 0.5), flip=False, resize_long=None)
    torch.testing.assert_close(a.logits, b.logits)
    assert a.labels.shape == (2, 16, 24)


def test_resize_long_side_and_crop():
    # 375x500 -> ratio 512/500 = 1.024 -> 384x512; 500x375 -> 512x384; 512-long stays as is
    x = torch.randn(1, 3, 375, 500)
    y = resize_long_side(x, 512)
    assert y.shape[-2:] == (384, 512)
    torch.testing.assert_close(y, F.interpolate(x, size=(384, 512), mode="bilinear"))
    assert resize_long_side(torch.randn(1, 3, 500, 375), 512).shape[-2:] == (512, 384)
    z = torch.randn(1, 3, 512, 300)
    assert resize_long_side(z, 512) is z
    assert crop_to_patch_multiple(torch.randn(1, 3, 35, 47), 16).shape[-2:] == (32, 32)
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        crop_to_patch_multiple(torch.randn(1, 3, 10, 40), 16)


def test_bad_logits_fn_and_inputs():
    with pytest.raises(ValueError, match="batch 1 for an input batch of 2"):
        msc_flip_inference(lambda x: x[:1], torch.zeros(1, 3, 4, 4), resize_long=None)
    with pytest.raises(ValueError, match="BxCxHxW"):
        msc_flip_inference(lambda x: x, torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="scales"):
        msc_flip_inference(lambda x: x, torch.zeros(1, 3, 4, 4), scales=())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_stay_on_their_device():
    fn, _ = pooled_model(patch=2, bias=0.0)
    x = torch.arange(1.0, 6.0).expand(1, 1, 2, 5).clone()
    cpu = msc_flip_inference(fn, x, scales=(1.0, 0.75), resize_long=8)
    gpu = msc_flip_inference(fn, x.cuda(), scales=(1.0, 0.75), resize_long=8)
    assert gpu.logits.device.type == "cuda" and gpu.labels.device.type == "cuda"
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits)
