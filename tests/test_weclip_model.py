"""WeCLIP as a model of the library's interface: normalisation inside the model, the three modes, the RFM
switch, labels only from cls_labels, any image size (the network crops, PAR sees the whole image), gradients
only into the decoder."""

import pytest
import torch

from weclip.config import load_config
from weclip.errors import ConfigError
from weclip.losses import total_loss
from weclip.models.registry import build_model
from weclip.models.weclip import crop_to_patch_multiple
from weclip.refine.pipeline import rfm_active

TINY = {
    "model.backbone.weights": "random",
    "model.decoder.embed_dim": 32,
    "model.decoder.num_heads": 4,
    "model.par.num_iter": 3,
    "model.refine.static_layers": 3,  # the tiny CLIP has 3 blocks
    "model.refine.rfm_layers": 2,
}


def _cfg(tiny_arch, **options):
    # the VOC config (21 classes, its prompts) on a tiny random CLIP and a small decoder
    cfg = load_config("configs/voc.py", dict(TINY, **options))
    cfg.model.backbone.arch = tiny_arch  # a dict replacing the base's name: assigned, not merged
    return cfg


@pytest.fixture
def tiny_weclip(tiny_arch):
    torch.manual_seed(0)
    return build_model(_cfg(tiny_arch)).eval()


def _images(*shape, seed=0):
    return torch.randint(
        0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def test_the_model_interface(tiny_weclip):
    assert tiny_weclip.num_classes == 21 and tiny_weclip.patch_size == 8
    assert tiny_weclip.trainable_module() is tiny_weclip.decoder
    assert tiny_weclip.class_names[15] == "person"
    # normalisation inside the model, on 0-255 RGB (spec §1.2): (x - mean) / std per channel;
    # (123.675 - 123.675) / 58.395 = 0, (0 - 116.28) / 57.12 = -2.0357143, (255 - 103.53) / 57.375 = 2.64
    pixel = torch.tensor([123.675, 0.0, 255.0]).view(1, 3, 1, 1)
    out = tiny_weclip.preprocess(pixel).flatten()
    torch.testing.assert_close(out, torch.tensor([0.0, -2.0357143, 2.64]), rtol=1e-6, atol=1e-6)
    # uint8 and float inputs are the same image
    x = _images(1, 3, 8, 8)
    assert torch.equal(tiny_weclip.preprocess(x), tiny_weclip.preprocess(x.float()))
    # nothing of the normalisation or the prompts is saved
    assert not any(k.startswith(("text_", "pixel_")) for k in tiny_weclip.state_dict())


def test_clip_normalisation_option(tiny_arch):
    model = build_model(_cfg(tiny_arch, **{"model.normalize": "clip"}))
    # CLIP constants x 255: R mean 0.48145466 * 255 = 122.7709383, std 0.26862954 * 255 = 68.5005327
    torch.testing.assert_close(model.pixel_mean[0], torch.tensor(122.7709383))
    torch.testing.assert_close(model.pixel_std[0], torch.tensor(68.5005327))


def test_modes_and_shapes(tiny_weclip):
    images = _images(2, 3, 48, 32)  # 6x4 patch grid (patch 8), non-square
    cls_labels = torch.zeros(2, 20)
    cls_labels[0, [2, 14]] = 1  # bird, person
    cls_labels[1, 7] = 1  # cat
    assert set(tiny_weclip(images)) == {"seg_logits"}  # "predict": the decoder only
    out = tiny_weclip(images, cls_labels, mode="pseudo", iteration=1)
    assert out["seg_logits"].shape == (2, 21, 6, 4)
    assert out["aff"].shape == (2, 24, 24)
    assert out["pseudo_labels"].shape == (2, 48, 32)
    assert out["cams"].shape == (3, 6, 4) and out["cams_refined"].shape == (3, 48, 32)
    assert out["batch_index"].tolist() == [0, 0, 1] and out["class_index"].tolist() == [2, 14, 7]
    # pseudo-labels hold only background and the present class ids (fg id + 1)
    assert set(out["pseudo_labels"][0].unique().tolist()) <= {0, 3, 15}
    assert set(out["pseudo_labels"][1].unique().tolist()) <= {0, 8}
    assert not out["use_rfm"]  # iteration 1 < rfm_start_iter = 9145: static refinement
    with pytest.raises(ValueError, match="cls_labels"):
        tiny_weclip(images, mode="pseudo")
    with pytest.raises(ValueError, match="iteration"):
        tiny_weclip(images, cls_labels, mode="loss")


def test_loss_mode_is_the_papers_loss(tiny_weclip):
    images = _images(2, 3, 32, 32, seed=1)
    cls_labels = torch.zeros(2, 20)
    cls_labels[:, 4] = 1
    torch.manual_seed(3)
    out = tiny_weclip.train()(images, cls_labels, mode="loss", iteration=1)
    ref = total_loss(out["seg_logits"], out["aff"], out["pseudo_labels"], **tiny_weclip.loss_cfg)
    torch.testing.assert_close(out["loss"], ref["loss"])
    assert set(out["log"]) == {"seg_loss", "aff_loss"} and not out["log"]["seg_loss"].requires_grad
    # L = 1 * L_seg + 0.1 * L_aff (spec §7.3)
    torch.testing.assert_close(out["loss"], out["log"]["seg_loss"] + 0.1 * out["log"]["aff_loss"])


def test_rfm_switch(tiny_weclip):
    assert not rfm_active(9144, 9145) and rfm_active(9145, 9145) and rfm_active(None, 9145)
    cls_labels = torch.zeros(1, 20)
    cls_labels[0, 0] = 1
    assert tiny_weclip(_images(1, 3, 32, 32), cls_labels, mode="pseudo")["use_rfm"]


def test_any_size_network_crops_and_par_sees_the_whole_image(tiny_weclip):
    # 37x45: the network sees the top-left 32x40 block (the authors' stride-8/16 conv drops the rest)
    images = _images(1, 3, 37, 45, seed=2)
    cls_labels = torch.zeros(1, 20)
    cls_labels[0, [1, 9]] = 1
    with torch.no_grad():
        out = tiny_weclip(images, cls_labels, mode="pseudo")
        cropped = tiny_weclip(crop_to_patch_multiple(images, 8))
    assert out["seg_logits"].shape == (1, 21, 4, 5)
    torch.testing.assert_close(out["seg_logits"], cropped["seg_logits"])
    assert out["pseudo_labels"].shape == (1, 37, 45)  # the image size (validation: the mask size)
    # PAR is guided by the uncropped image at the label size (the authors' validate(), issue 14): the
    # same stages with the whole image as the guide give the same labels
    pipe = tiny_weclip.pipeline
    x, feats, attns, grid = tiny_weclip.encode(images)
    with torch.no_grad():
        _, fused = tiny_weclip.decoder(feats, grid)
        aff = tiny_weclip.decoder.affinity(fused)
    cam = pipe.initial_cams(
        tiny_weclip.backbone, feats, grid, cls_labels, tiny_weclip.text_fg, tiny_weclip.text_bg
    )
    refined = pipe.propagate(
        pipe.transition(attns, cam, "rfm", aff), cam, pipe.boxes(cam), (37, 45)
    )
    scores, keys = pipe.scores(refined, cam, 1)
    assert x.shape[-2:] == (37, 45)
    assert torch.equal(pipe.labels(pipe.refine_scores(x, scores), keys), out["pseudo_labels"])
    # the remainder pixels never reach the network, only PAR: changing them leaves the CAMs unchanged
    changed = images.clone()
    changed[..., 32:, :] = 255 - changed[..., 32:, :]
    with torch.no_grad():
        again = tiny_weclip(changed, cls_labels, mode="pseudo")
    torch.testing.assert_close(again["cams"], out["cams"])


def test_gradients_reach_only_the_decoder(tiny_weclip):
    cls_labels = torch.zeros(1, 20)
    cls_labels[0, 4] = 1
    out = tiny_weclip.train()(_images(1, 3, 32, 32), cls_labels, mode="loss", iteration=1)
    out["loss"].backward()
    trainable = {n for n, p in tiny_weclip.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("decoder.") for n in trainable)
    assert all(p.grad is None for p in tiny_weclip.backbone.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_weclip.decoder.parameters()
    )


def test_prompt_count_must_match_classes():
    with pytest.raises(ConfigError, match="'data.prompt_class_names' has 19 names, expected 20"):
        load_config("configs/voc.py", {"data.prompt_class_names": ["x"] * 19})


def test_layer_counts_must_fit_the_clip(tiny_arch):
    cfg = load_config("configs/voc.py", {"model.backbone.weights": "random"})
    cfg.model.backbone.arch = tiny_arch
    with pytest.raises(
        ConfigError, match="'model.refine.static_layers' = 8: the CLIP has only 3 blocks"
    ):
        build_model(cfg)
