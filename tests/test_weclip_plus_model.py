"""WeCLIP+ as a model of the library's interface (weclip/models/weclip_plus.py): modes and shapes, the two
backbones' geometry (CLIP on the patch-multiple crop, DINOv2 on the whole image resized), RFM+ composed from
the pipeline stages, losses equal to the loss functions on the outputs, the self-training switch, only the
decoder trains, the authors' checkpoints, config errors; and tools/train.py (+ --resume bit-identical),
tools/eval_pseudo.py and tools/infer.py on the toy config, as subprocesses."""

import dataclasses
import json
import os

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, TINY_ARCH, run_tool, single_thread

from weclip.cam.gradcam import gradcam
from weclip.config import load_config
from weclip.data.toy import ToyWorldConfig, write_toy_dataset
from weclip.engine.checkpoint import load_checkpoint, load_weights
from weclip.errors import ConfigError, MissingFileError
from weclip.losses import affinity_labels, affinity_loss
from weclip.models.plus.decoder import WeCLIPPlusDecoder
from weclip.models.plus.losses import plus_total_loss
from weclip.models.plus.official_names import to_official_plus_state
from weclip.models.plus.self_training import self_training_active, self_training_labels
from weclip.models.registry import build_model
from weclip.models.weclip_plus import PSEUDO_ROWS, clip_logit_scale
from weclip.refine.propagate import propagate_cams
from weclip.refine.pseudo_label import pack_scores, scores_to_labels

VOC_S = os.path.join(REPO, "configs", "weclip_plus", "voc_dinov2_s.py")
TOY = os.path.join(REPO, "configs", "weclip_plus", "toy.py")
# A DINOv2-layout ViT small enough for CPU tests: 14 px patches, width 24, 2 blocks, a 4x4 table (56 px).
TINY_DINO = dict(img_size=56, embed_dim=24, depth=2, num_heads=2, mlp_ratio=2.0)
TINY = {
    "model.backbone.weights": "random",
    "model.dino.weights": "random",
    "model.decoder.embed_dim": 16,
    "model.decoder.num_heads": 2,
    "model.decoder.num_layers": 1,
    "model.par.num_iter": 3,
    "model.refine.rfm_layers": 2,  # the tiny CLIP has 3 blocks (3 attention maps)
    "model.refine.static_layers": 2,
}


def _cfg(**options):
    # the VOC WeCLIP+ config (21 classes, their prompts) on the tiny random CLIP and a tiny random DINOv2
    cfg = load_config(VOC_S, dict(TINY, **options))
    cfg.model.backbone.arch = {
        k: dict(v) if isinstance(v, dict) else v for k, v in TINY_ARCH.items()
    }
    cfg.model.dino.arch = dict(TINY_DINO)
    return cfg


def _model(seed=0, **options):
    torch.manual_seed(seed)
    return build_model(_cfg(**options)).eval()


@pytest.fixture(scope="module")
def plus():
    with single_thread():
        yield _model()


def _images(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


def _labels():
    cls_labels = torch.zeros(2, 20)
    cls_labels[0, [2, 14]] = 1  # bird, person
    cls_labels[1, 7] = 1  # cat
    return cls_labels


def test_the_model_interface(plus):
    assert type(plus).__name__ == "WeCLIPPlus"
    assert plus.num_classes == 21 and plus.patch_size == 8
    assert isinstance(plus.trainable_module(), WeCLIPPlusDecoder)
    assert plus.class_names[15] == "person"
    # ImageNet normalisation on 0-255 RGB, shared by CLIP and DINOv2 (doc §2.2):
    # (123.675 - 123.675) / 58.395 = 0, (0 - 116.28) / 57.12 = -2.0357143, (255 - 103.53) / 57.375 = 2.64
    pixel = torch.tensor([123.675, 0.0, 255.0]).view(1, 3, 1, 1)
    out = plus.preprocess(pixel).flatten()
    torch.testing.assert_close(out, torch.tensor([0.0, -2.0357143, 2.64]), rtol=1e-6, atol=1e-6)
    # only the decoder requires grad; nothing of the backbones, prompts or normalisation is saved
    assert all(p.requires_grad for p in plus.decoder.parameters())
    assert not any(p.requires_grad for p in plus.backbone.parameters())
    assert not any(p.requires_grad for p in plus.dino.parameters())
    keys = plus.trainable_module().state_dict().keys()
    assert any(k.startswith("dino_fusion.") for k in keys)
    assert not any(k.startswith(("text_", "pixel_")) for k in plus.state_dict())
    # the VOC defaults of the authors (doc §1.2, §4): Grad-CAM on block N-3's output, all-ones boxes
    assert plus.cam_input_index == -2 and plus.box_mask == "ones"
    assert plus.pseudo_rows == PSEUDO_ROWS and set(plus.trained_rows) < set(PSEUDO_ROWS)


def test_modes_and_shapes(plus):
    # 50x43: CLIP sees the 48x40 crop (6x5 grid of 8 px patches), DINOv2 the whole image resized to 42x42
    images, cls_labels = _images(2, 3, 50, 43), _labels()
    pred = plus(images)
    assert set(pred) == {"seg_logits", "seg_clip", "seg_dino"}
    assert pred["seg_logits"].shape == (2, 21, 6, 5)
    # the prediction is the mean of the two branches (doc §3.2)
    assert torch.equal(pred["seg_logits"], 0.5 * pred["seg_clip"] + 0.5 * pred["seg_dino"])
    out = plus(images, cls_labels, mode="pseudo")
    assert out["aff"].shape == (2, 30, 30)
    assert out["pseudo_labels"].shape == (2, 50, 43) and out["pseudo_labels"].dtype == torch.long
    assert out["cams"].shape == (3, 6, 5) and out["cams_refined"].shape == (3, 50, 43)
    assert out["batch_index"].tolist() == [0, 0, 1] and out["class_index"].tolist() == [2, 14, 7]
    assert out["box_masks"].all()  # VOC: the box mask is all ones (doc §4.2)
    assert set(out["pseudo_labels"][0].unique().tolist()) <= {0, 3, 15}
    assert set(out["pseudo_labels"][1].unique().tolist()) <= {0, 8}
    small = plus(images, cls_labels, mode="pseudo", out_size=(20, 17))
    assert small["pseudo_labels"].shape == (2, 20, 17)
    with pytest.raises(ValueError, match="needs the image-level labels"):
        plus(images, mode="pseudo")
    with pytest.raises(ValueError, match="1-indexed training iteration"):
        plus(images, cls_labels, mode="loss")
    with pytest.raises(ValueError, match="mode must be one of"):
        plus(images, mode="train")


def test_encode_crops_for_clip_and_resizes_the_whole_image_for_dino(plus):
    images = _images(1, 3, 50, 43, seed=3)
    enc = plus.encode(images)
    x = plus.preprocess(images)
    assert torch.equal(enc.x, x)  # PAR's guide: the whole image
    feats, _ = plus.backbone.forward_blocks(x[..., :48, :40])
    assert enc.grid == (6, 5) and all(torch.equal(a, b) for a, b in zip(enc.feats, feats))
    resized = F.interpolate(x, size=(42, 42), mode="bilinear", align_corners=False)
    assert torch.equal(
        enc.dino, plus.dino.forward_patch_tokens(resized).transpose(1, 2).view(1, 24, 3, 3)
    )
    # not DINOv2 on the CLIP crop: 48x40 would give a 3x2 grid
    assert plus.dino(x[..., :48, :40]).shape[-2:] == (3, 2)
    # fit="resize": both backbones get the image resized to the nearest multiples (48x40 for CLIP)
    enc_r = plus.encode(images, fit="resize")
    net_in = F.interpolate(x, size=(48, 40), mode="bilinear", align_corners=False)
    assert torch.equal(enc_r.dino, plus.dino(net_in))


def test_clip_l14_geometry_top_left_crop_for_clip_resize_for_dino():
    # a patch-14 CLIP (the authors' clip_flag 14): a 64 px image -> CLIP on the top-left 56x56 block (4x4),
    # DINOv2 on the whole 64 px image resized to 56 (not on the crop), labels at 64x64 (doc §1.1, §2.2)
    arch = dict(
        embed_dim=32,
        quick_gelu=True,
        vision_cfg=dict(image_size=56, patch_size=14, width=32, layers=3, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    )
    with single_thread():
        torch.manual_seed(0)
        cfg = _cfg()
        cfg.model.backbone.arch = arch
        model = build_model(cfg).eval()
        assert model.patch_size == 14
        images = _images(2, 3, 64, 64, seed=5)
        enc = model.encode(images)
        x = model.preprocess(images)
        feats, _ = model.backbone.forward_blocks(x[..., :56, :56])
        assert enc.grid == (4, 4) and torch.equal(enc.feats[-1], feats[-1])
        assert torch.equal(enc.dino, model.dino(x))
        assert not torch.allclose(enc.dino, model.dino(x[..., :56, :56]))
        out = model(images, _labels(), mode="loss", iteration=1)
        assert out["seg_logits"].shape == (2, 21, 4, 4)
        assert out["pseudo_labels"].shape == (2, 64, 64)
        assert out["aff"].shape == (2, 16, 16) and torch.isfinite(out["loss"])


def test_rfm_plus_is_the_pipeline_stages_with_the_dino_gate(plus):
    images, cls_labels = _images(2, 3, 40, 48, seed=1), _labels()
    out = plus(images, cls_labels, mode="pseudo")
    # by hand: Grad-CAM on feats[-2] (block N-3, doc §1.2), the RFM transition with the detached
    # concatenated-feature affinity, each CAM x the softmax of the mean prediction, all-ones boxes
    enc = plus.encode(images)
    pipe = plus.pipeline
    cam = gradcam(
        plus.backbone,
        enc.feats[-2],
        cls_labels,
        plus.text_fg,
        plus.text_bg,
        enc.grid,
        logit_scale=plus.backbone.logit_scale,
    )
    assert torch.equal(out["cams"], cam.cams)
    assert not torch.allclose(
        cam.cams, plus.initial_cams(enc._replace(feats=enc.feats[::-1]), cls_labels).cams
    )
    trans = pipe.transition(enc.attns, cam, "rfm", out["aff"])
    probs = F.softmax(out["seg_logits"], dim=1)
    gated = cam.cams * probs[cam.batch_index, cam.class_index + 1]
    refined, _ = propagate_cams(
        trans, gated, torch.ones_like(gated, dtype=torch.bool), cam.batch_index, (40, 48)
    )
    assert torch.equal(out["cams_refined"], refined)
    scores, keys = pack_scores(refined, cam.batch_index, cam.class_index, 2, 1.0)
    assert torch.equal(out["pseudo_labels"], scores_to_labels(pipe.par(enc.x, scores), keys))


def test_ablation_rows_reproduce_the_forward(plus):
    images, cls_labels = _images(1, 3, 40, 48, seed=2), _labels()[:1]
    out = plus(images, cls_labels, mode="pseudo", out_size=(40, 48))
    scores, keys = plus.pseudo_label_scores(images, cls_labels, list(PSEUDO_ROWS), (40, 48))
    assert set(scores) == set(PSEUDO_ROWS)
    assert torch.equal(scores_to_labels(scores["rfm_plus_par"], keys), out["pseudo_labels"])
    assert torch.equal(scores["rfm_plus"][:, 1:], out["cams_refined"][None])
    # the gate matters: RFM without it (CLIP-ES boxes, ungated CAMs) is another map
    assert not torch.allclose(scores["rfm"], scores["rfm_plus"])
    with pytest.raises(ValueError, match="unknown pseudo-label row"):
        plus.pseudo_label_scores(images, cls_labels, ["rfm_par_plus"], (40, 48))


def test_coco_box_masks_are_the_clip_es_boxes_of_the_ungated_cams():
    with single_thread():
        model = _model(**{"model.refine.box_mask": "boxes", "model.refine.box_threshold": 0.7})
        images, cls_labels = _images(2, 3, 40, 48, seed=4), _labels()
        out = model(images, cls_labels, mode="pseudo")
        cam = model.initial_cams(model.encode(images), cls_labels)
        assert torch.equal(out["box_masks"], model.pipeline.boxes(cam))
        assert not out["box_masks"].all()  # boxes at 0.7 of a min-max CAM leave some patches out


def test_losses_are_the_loss_functions_on_the_outputs(plus):
    images, cls_labels = _images(2, 3, 40, 40, seed=6), _labels()
    # eval mode: dropout off, deterministic
    out = plus(images, cls_labels, mode="loss", iteration=1)
    assert out["self_training"] is False and torch.equal(out["train_labels"], out["pseudo_labels"])
    ref = plus_total_loss(
        out["seg_clip"], out["seg_dino"], out["aff"], out["pseudo_labels"], loss_cfg=plus.loss_cfg
    )
    assert set(out["log"]) == {
        "seg_loss", "aff_loss", "cross_clip_loss", "cross_dino_loss", "dice_loss", "self_training_ratio"
    }  # fmt: skip
    for name in ("seg_loss", "aff_loss", "cross_clip_loss", "cross_dino_loss", "dice_loss"):
        assert torch.equal(out["log"][name], ref[name].detach()), name
    assert torch.equal(out["loss"], ref["loss"])
    # the authors' weights (doc §5): 1, 0.1, 0.1 each, 1; fp32 sums of 5 terms of magnitude ~1: 1e-6
    log = out["log"]
    total = (
        log["seg_loss"]
        + 0.1 * log["aff_loss"]
        + 0.1 * (log["cross_clip_loss"] + log["cross_dino_loss"])
        + log["dice_loss"]
    )
    torch.testing.assert_close(out["loss"].detach(), total, rtol=0, atol=1e-6)
    assert out["log"]["self_training_ratio"] == 0


def test_gradients_reach_only_the_decoder_and_the_affinity_loss_only_the_heads():
    with single_thread():
        model = _model().train()
        images, cls_labels = _images(2, 3, 40, 40, seed=7), _labels()
        model(images, cls_labels, mode="loss", iteration=1)["loss"].backward()
        assert all(
            p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters()
        )
        assert all(p.grad is None for p in model.backbone.parameters())
        assert all(p.grad is None for p in model.dino.parameters())
        # L_aff alone: A = σ(FᵀF) of the fused features, so the shared transformer gets nothing (doc §5)
        aff_only = {f"loss.{k}_weight": 0.0 for k in ("seg", "cross", "dice")}
        model = _model(**aff_only).train()
        model(images, cls_labels, mode="loss", iteration=1)["loss"].backward()
        heads = list(model.decoder.clip_fusion.parameters()) + list(
            model.decoder.dino_fusion.parameters()
        )
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)
        rest = list(model.decoder.blocks.parameters()) + list(model.decoder.classifier.parameters())
        # the zero-weighted terms stay in the graph: their gradients are exactly 0
        assert all(p.grad is None or not p.grad.any() for p in rest)


def test_self_training_switch():
    # the default matches the authors' 0-based `n_iter > 18000`: first at 1-indexed iteration 18,002
    cfg = load_config(VOC_S, {"model.backbone.weights": "random"})
    assert cfg.loss.self_training_start_iter == 18002
    for it in (18000, 18001, 18002, 18003):
        assert self_training_active(it, 18000) == (it >= cfg.loss.self_training_start_iter)
    with single_thread():
        # threshold 0: every pixel's confidence exceeds it, so Y' is the prediction's argmax everywhere
        model = _model(**{"loss.self_training_start_iter": 5, "loss.self_training_threshold": 0.0})
        active = [model.self_training_active(i) for i in (None, 4, 5, 6)]
        assert active == [False, False, True, True]
        images, cls_labels = _images(2, 3, 40, 40, seed=8), _labels()
        before = model(images, cls_labels, mode="loss", iteration=4)
        assert before["self_training"] is False
        assert torch.equal(before["train_labels"], before["pseudo_labels"])
        out = model(images, cls_labels, mode="loss", iteration=5)
        assert out["self_training"] is True
        up = F.interpolate(out["seg_logits"], size=(40, 40), mode="bilinear", align_corners=False)
        assert torch.equal(out["train_labels"], up.argmax(dim=1))
        expected, _ = self_training_labels(out["pseudo_labels"], out["seg_logits"], threshold=0.0)
        assert torch.equal(out["train_labels"], expected)
        assert out["log"]["self_training_ratio"] == 1
        # a random decoder disagrees with the pseudo-labels somewhere
        assert not torch.equal(out["train_labels"], out["pseudo_labels"])
        # L_seg and Dice use Y', the affinity labels Y (cloned before the replacement, doc §5.2)
        ref = plus_total_loss(
            out["seg_clip"], out["seg_dino"], out["aff"], out["pseudo_labels"], out["train_labels"],
            loss_cfg=model.loss_cfg,
        )  # fmt: skip
        assert torch.equal(out["log"]["seg_loss"], ref["seg_loss"].detach())
        aff_y = affinity_loss(out["aff"], affinity_labels(out["pseudo_labels"], (5, 5), 8))[0]
        assert torch.equal(out["log"]["aff_loss"], aff_y.detach())


def test_logit_scale_rule():
    # the authors divide exp(logit_scale) by 4 for a 24-block tower (doc §1.1): 100 -> 25
    @dataclasses.dataclass
    class Stub:
        logit_scale: float
        num_blocks: int

    assert clip_logit_scale(Stub(100.0, 24)) == 25.0
    assert clip_logit_scale(Stub(100.0, 12)) == 100.0
    assert clip_logit_scale(Stub(100.0, 12), divisor=2.0) == 50.0


def test_load_official_state_from_a_synthetic_authors_checkpoint(plus, tmp_path):
    # their whole-model state dict: our decoder under their names + frozen CLIP/DINOv2/PAR entries
    trained = _model(seed=5)
    state = dict(to_official_plus_state(trained.decoder.state_dict()))
    state.update({
        "encoder.visual.conv1.weight": torch.zeros(2, 3, 16, 16),
        "encoder.visual.positional_embedding_new": torch.zeros(5, 2),
        "dino_encoder.cls_token": torch.zeros(1, 1, 2),
        "par.kernel": torch.zeros(8, 1, 3, 3),
    })  # fmt: skip
    assert "dino_decoder_fts_fuse.linear_fuse.weight" in state
    model = _model(seed=9)
    assert not torch.equal(model.decoder.classifier.weight, trained.decoder.classifier.weight)
    path = str(tmp_path / "wetr_iter_30000.pth")
    torch.save(state, path)
    # detected as the authors' file, loaded through load_official_state
    info = load_weights(model, path)
    assert info["official"] is True
    for key, value in trained.decoder.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[key], value), key
    broken = {
        k: v for k, v in state.items() if not k.startswith("dino_decoder_fts_fuse.linear_fuse")
    }
    with pytest.raises(KeyError, match="dino_decoder_fts_fuse.linear_fuse"):
        model.load_official_state(broken)


def test_random_dino_is_the_same_network_whatever_the_global_rng():
    with single_thread():
        a, b = _model(seed=1), _model(seed=2)
        assert all(
            torch.equal(p, q)
            for p, q in zip(a.dino.state_dict().values(), b.dino.state_dict().values())
        )
        assert not torch.equal(a.decoder.classifier.weight, b.decoder.classifier.weight)
        c = _model(**{"model.dino.seed": 3})
        assert not torch.equal(a.dino.vit.cls_token, c.dino.vit.cls_token)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.refine.rfm_layers"):
        _model(**{"model.refine.rfm_layers": 4})  # 3 blocks
    with pytest.raises(ConfigError, match="model.cam.input_index"):
        _model(**{"model.cam.input_index": -3})  # forward_blocks gives 2 outputs
    with pytest.raises(ConfigError, match="model.refine.box_mask"):
        load_config(VOC_S, {"model.refine.box_mask": "all"})
    missing = str(tmp_path / "dinov2_vits14_pretrain.pth")
    with pytest.raises(MissingFileError, match="model.dino.weights") as err:
        _model(**{"model.dino.weights": missing})
    assert missing in str(err.value)


# ----------------------------------------------------------------------------- the tools, on the toy config
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    base = tmp_path_factory.mktemp("plus_toy")
    root = str(base / "toy")
    world = ToyWorldConfig(image_size=64, num_classes=4, min_objects=1, max_objects=2)
    write_toy_dataset(root, world, seed=0, num_train=8, num_val=4)
    options = [
        f"data.root={root}",
        f"data.split_dir={root}",
        "data.crop_size=64",
        "train.max_iters=4",
        "train.batch_size=2",
        "train.log_interval=2",
        "train.vis_interval=2",
        "train.ckpt_interval=2",
        "train.eval_interval=4",
        "train.eval_max_images=2",
        "loss.self_training_start_iter=3",  # both sides of the switch in 4 iterations
        "test.resize_long=64",
    ]
    return {"base": base, "root": root, "options": options}


# the tools import this checkout's package (a worktree beside an editable install of another one)
ENV = {"PYTHONPATH": REPO}


def _train(toy, work_dir, *extra):
    return run_tool(
        "train",
        [TOY, "--work-dir", work_dir, "--device", "cpu", *extra, "--cfg-options", *toy["options"]],
        env=ENV,
    )


@pytest.mark.slow
def test_tools_train_resume_eval_pseudo_and_infer_on_the_toy_config(toy):
    full, resumed = str(toy["base"] / "full"), str(toy["base"] / "resumed")
    _train(toy, full)
    ckpt2 = os.path.join(full, "checkpoints", "iter_2.pth")
    proc = _train(toy, resumed, "--resume", ckpt2)
    assert "iteration 2 of 4" in proc.stderr
    a = load_checkpoint(os.path.join(full, "checkpoints", "iter_4.pth"))
    b = load_checkpoint(os.path.join(resumed, "checkpoints", "iter_4.pth"))
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bit-identical
    assert any(k.startswith("dino_fusion.") for k in a["model"])
    records = [json.loads(line) for line in open(os.path.join(full, "scalars.jsonl"))]
    train_logs = [r for r in records if r["kind"] == "train"]
    assert [r["iteration"] for r in train_logs] == [2, 4]
    terms = {"dice_loss", "cross_clip_loss", "cross_dino_loss", "self_training_ratio"}
    assert terms <= set(train_logs[0])
    assert train_logs[0]["self_training_ratio"] == 0  # iterations 1-2: before the switch at 3
    val = [r for r in records if r["kind"] == "val"][0]

    # eval_pseudo: every row; rfm_plus_par is what Trainer.validate scored (same 2 images, same model)
    ckpt4 = os.path.join(full, "checkpoints", "iter_4.pth")
    out_dir = str(toy["base"] / "pseudo")
    run_tool(
        "eval_pseudo",
        [TOY, ckpt4, "--split", "val", "--max-images", "2", "--out-dir", out_dir, "--device", "cpu",
         "--cfg-options", *toy["options"]],
        env=ENV,
    )  # fmt: skip
    for row in PSEUDO_ROWS:
        assert os.path.isfile(os.path.join(out_dir, row, "metrics.json")), row
    payload = json.load(open(os.path.join(out_dir, "rfm_plus_par", "metrics.json")))
    assert payload["model"] == "WeCLIPPlus" and payload["num_images"] == 2
    assert payload["miou"] == pytest.approx(val["pseudo_miou"], abs=1e-12)

    infer_dir = str(toy["base"] / "infer")
    run_tool(
        "infer",
        [TOY, ckpt4, "--split", "val", "--max-images", "2", "--out-dir", infer_dir, "--device", "cpu",
         "--cfg-options", *toy["options"]],
        env=ENV,
    )  # fmt: skip
    metrics = json.load(open(os.path.join(infer_dir, "metrics.json")))
    assert metrics["model"] == "WeCLIPPlus" and metrics["num_images"] == 2
    assert len(os.listdir(os.path.join(infer_dir, "pred"))) == 2

    # the converter turns an authors'-layout file of these weights back into our names (model-agnostic tool)
    official = dict(to_official_plus_state(a["model"]), **{"par.kernel": torch.zeros(8, 1, 3, 3)})
    official_path, converted = str(toy["base"] / "wetr_iter_4.pth"), str(toy["base"] / "conv.pth")
    torch.save(official, official_path)
    run_tool(
        "convert_official_checkpoint",
        [TOY, official_path, converted],
        env=ENV,
    )
    back = torch.load(converted, map_location="cpu", weights_only=False)
    assert back["iteration"] == 4 and back["model"].keys() == a["model"].keys()
    assert all(torch.equal(back["model"][k], a["model"][k]) for k in a["model"])
