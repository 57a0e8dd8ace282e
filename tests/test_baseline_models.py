"""The baseline models behind the model interface: modes, shapes, rules, losses, what trains.

CAMClassifier, AffinityNet and SegNet / FullySupervisedSegNet (weclip/models/{cam_classifier,affinity,
segnet}.py) on tiny random networks and a 32 px toy world written in tmp_path, plus the map helpers of
weclip/baselines/maps.py on hand-worked values. Every check states a property (a rule's labels, a loss
equal to the library's loss function on the same inputs, frozen weights unchanged after a step).
"""

import os
import textwrap

import pytest
import torch
from helpers import REPO, make_toy_root, single_thread

from weclip.baselines.affinitynet import (
    affinity_labels,
    affinity_loss,
    confident_labels,
    crf_confident_labels,
    downsample_labels,
    pair_affinities,
)
from weclip.baselines.cam import cams_to_labels
from weclip.baselines.classifier import cam_classifier_loss, normalize_cams
from weclip.baselines.maps import (
    grid_to_image,
    image_to_grid,
    pack_present,
    pad_to_multiple,
    predicted_labels,
    score_logits,
)
from weclip.baselines.segnet import segmentation_loss
from weclip.config import load_config
from weclip.engine.checkpoint import load_checkpoint, save_checkpoint, trainable_of
from weclip.engine.optim import build_optimizer
from weclip.engine.trainer import Trainer
from weclip.errors import CheckpointError, ConfigError, MissingFileError
from weclip.models.registry import build_model
from weclip.refine.pseudo_label import scores_to_labels
from weclip.utils.dist import init_distributed

SINGLE = init_distributed("none", "cpu")
CONFIGS = os.path.join(REPO, "configs", "baselines")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(str(tmp_path_factory.mktemp("toy_baselines")), num_train=8, num_val=4)


def _config(tmp_path, base, root, body="", name="cfg.py"):
    """A config inheriting ``configs/baselines/<base>`` on the 32 px toy world, ``body`` appended."""
    text = textwrap.dedent(
        f"""
        _base_ = [{os.path.join(CONFIGS, base)!r}]
        toy = dict(image_size=32)
        data = dict(root={root!r}, split_dir={root!r}, crop_size=32)
        train = dict(max_iters=2, batch_size=2, log_interval=1, ckpt_interval=2)
        """
    ) + textwrap.dedent(body)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _cam_config(tmp_path, root, body=""):
    body = "model = dict(resnet=dict(base_width=4))\n" + textwrap.dedent(body)
    return _config(tmp_path, "toy_cam.py", root, body)


def _images(b=2, h=30, w=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


LABELS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])


def _cam_checkpoint(tmp_path, root, body=""):
    """A training checkpoint of a seeded random CAM classifier (the config stored in it)."""
    cfg = load_config(_cam_config(tmp_path, root, body))
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(trainable_of(model), cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    return save_checkpoint(
        str(tmp_path / "cam_run"), model=model, optimizer=optimizer, scheduler=scheduler,
        iteration=2, config=cfg, rng_states=[{}], data_positions=[4], num_classes=5,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- maps
def test_grid_maps_hand_worked():
    # a 1x2 grid [0, 1] at stride 2 -> 4 columns; bilinear (align_corners=False) samples input x at
    # (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped 0, 0.25, 0.75, 1; cropped to width 3
    grid = torch.tensor([[[[0.0, 1.0]]]])
    assert torch.allclose(
        grid_to_image(grid, 2, (2, 3)), torch.tensor([0.0, 0.25, 0.75]).expand(2, 3)
    )
    # image -> grid: a 3x3 map zero-padded to 4x4, mean of each 2x2 cell: ones everywhere gives
    # [[4/4, 2/4], [2/4, 1/4]]
    pooled = image_to_grid(torch.ones(1, 1, 3, 3), 2)
    assert torch.allclose(pooled[0, 0], torch.tensor([[1.0, 0.5], [0.5, 0.25]]))
    assert pad_to_multiple(torch.ones(1, 3, 5, 8), 4).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="does not cover"):
        grid_to_image(grid, 1, (1, 3))


def test_pack_present_and_predicted_labels_hand_worked():
    scores = torch.arange(2 * 5, dtype=torch.float32).view(
        2, 5, 1, 1
    )  # channel c of image b = 5b + c
    packed, keys = pack_present(scores, LABELS)
    # image 0: bg, classes 1 and 4 -> channels 0, 1, 4; image 1: bg, class 2, one zero padding channel
    assert keys.tolist() == [[0, 1, 4], [0, 2, 255]]
    assert packed[:, :, 0, 0].tolist() == [[0.0, 1.0, 4.0], [5.0, 7.0, 0.0]]
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -4.0]])
    # multilabel: sigmoid > 0.5 <=> logit > 0, and at least the top class (image 1: class 1)
    assert predicted_labels(logits, "multilabel").tolist() == [[1, 0, 1], [0, 1, 0]]
    assert predicted_labels(logits, "single").tolist() == [[1, 0, 0], [0, 1, 0]]


def test_score_logits_are_log_normalised_scores():
    s = torch.rand(2, 4, 3, 5) + 0.01
    logits = score_logits(s)
    assert torch.allclose(logits.softmax(dim=1), s / s.sum(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(logits.argmax(dim=1), s.argmax(dim=1))


# ---------------------------------------------------------------------------------------------- CAMClassifier
def test_cam_classifier_modes_follow_the_threshold_rule(tmp_path, toy_root):
    cfg = load_config(_cam_config(tmp_path, toy_root, "model.update(pseudo=dict(threshold=0.2))"))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert (model.num_classes, model.patch_size, model.stride) == (5, 1, 8)
    assert model.trainable_module() is model.net
    images = _images()
    with torch.no_grad():
        x = model.preprocess(images)
        cams = model.cam_maps(
            x
        )  # (B, K, H, W) normalised, the image size (30 x 37, not a multiple of 8)
        logits = model.classify(x)["logits"]
        pred = model(images)
        pseudo = model(images, LABELS, mode="pseudo", out_size=(20, 24))
    assert cams.shape == (2, 4, 30, 37) and float(cams.max()) < 1.0
    assert pred["seg_logits"].shape == (2, 5, 30, 37)
    # predict: the predicted classes against the background threshold
    present = predicted_labels(logits, "multilabel", 0.5)
    assert torch.equal(pred["seg_logits"].argmax(1), cams_to_labels(cams, present, 0.2))
    # pseudo: the image-level labels against the threshold, at out_size
    assert torch.equal(pseudo["pseudo_labels"], cams_to_labels(cams, LABELS, 0.2, (20, 24)))
    assert pseudo["batch_index"].tolist() == [0, 0, 1] and pseudo["class_index"].tolist() == [
        0,
        3,
        1,
    ]
    assert pseudo["cams"].shape == (3, 30, 37) and pseudo["cams_refined"].shape == (3, 20, 24)
    assert torch.equal(pseudo["cams"][1], cams[0, 3])
    assert set(pseudo["pseudo_labels"][1].unique().tolist()) <= {
        0,
        2,
    }  # only bg and the labelled class


def test_cam_classifier_rows_equal_the_pseudo_mode(tmp_path, toy_root):
    cfg = load_config(_cam_config(tmp_path, toy_root))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.pseudo_rows.keys() == {"cam", "cam_rg"} and set(model.trained_rows) == {
        "cam",
        "cam_rg",
    }
    images = _images()
    with torch.no_grad():
        scores, keys = model.pseudo_label_scores(images, LABELS, ["cam", "cam_rg"], (30, 37))
        plain = model(images, LABELS, mode="pseudo")["pseudo_labels"]
        model.use_region_growing = True
        grown = model(images, LABELS, mode="pseudo")["pseudo_labels"]
    assert torch.equal(scores_to_labels(scores["cam"], keys), plain)
    assert torch.equal(scores_to_labels(scores["cam_rg"], keys), grown)


def test_cam_classifier_loss_is_the_library_loss(tmp_path, toy_root):
    cfg = load_config(_cam_config(tmp_path, toy_root))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images = _images()
    torch.manual_seed(1)
    out = model(images, LABELS, mode="loss", iteration=1)
    torch.manual_seed(1)
    logits = model.net(pad_to_multiple(model.preprocess(images), 8))["logits"]
    assert torch.allclose(out["loss"], cam_classifier_loss(logits, LABELS)["loss"], rtol=1e-6)
    assert out["loss"].requires_grad and set(out["log"]) == {"cls_loss"}
    assert out["seg_logits"].shape == (2, 5, 30, 37)
    with pytest.raises(ValueError, match="image-level labels only"):
        model(images, LABELS, mode="loss", iteration=1, targets=torch.zeros(2, 30, 37).long())


def test_unet_cam_with_weak_dice_and_single_label_loss(tmp_path, toy_root):
    body = """
    model = dict(arch="unet", unet=dict(width=4, depth=2))
    loss = dict(kind="single", dice_weight=0.1)
    """
    cfg = load_config(_cam_config(tmp_path, toy_root, body))
    torch.manual_seed(0)
    model = build_model(cfg).eval()  # eval: BatchNorm uses its running statistics in both calls
    assert model.stride == 1
    labels = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # one class per image
    images = _images()
    out = model(images, labels, mode="loss", iteration=1)
    net_out = model.net(model.preprocess(images))
    expected = cam_classifier_loss(net_out["logits"], labels, "single", net_out["features"], 0.1)
    assert torch.allclose(out["loss"], expected["loss"], rtol=1e-6)
    assert set(out["log"]) == {"cls_loss", "dice_loss"}
    with torch.no_grad():
        assert model(images, labels, mode="pseudo")["pseudo_labels"].shape == (2, 30, 37)
    with pytest.raises(ValueError, match="exactly 1"):
        model(images, LABELS, mode="loss", iteration=1)  # image 0 has two labels


def test_cam_classifier_config_errors(tmp_path, toy_root):
    with pytest.raises(ConfigError, match="dice_weight.*U-Net"):
        build_model(load_config(_cam_config(tmp_path, toy_root, "loss = dict(dice_weight=0.1)")))
    with pytest.raises(ConfigError, match="train_mask_dir.*image-level labels only"):
        build_model(load_config(_cam_config(tmp_path, toy_root, 'data.update(train_mask_dir="x")')))
    with pytest.raises(ConfigError, match="model.resnet.*output_stride"):
        body = (
            "model.update(resnet=dict(base_width=4, output_stride=32))"  # 4, 8, 16 without the pool
        )
        build_model(load_config(_cam_config(tmp_path, toy_root, body)))
    with pytest.raises(ConfigError, match="pseudo.threshold"):
        load_config(_cam_config(tmp_path, toy_root, "model.update(pseudo=dict(threshold=1.5))"))


# ---------------------------------------------------------------------------------------------- AffinityNet
def _affinity_config(tmp_path, root, cam_ckpt, body=""):
    head = f"""
    model = dict(
        cam_checkpoint={cam_ckpt!r}, resnet=dict(base_width=4),
        head=dict(mid_channels=(4, 4, 4), out_channels=8), radius=3,
    )
    """
    body = textwrap.dedent(head) + textwrap.dedent(body)
    return _config(tmp_path, "toy_affinitynet.py", root, body, name="aff.py")


def test_affinitynet_loss_is_the_library_loss_and_only_the_net_trains(tmp_path, toy_root):
    cam_ckpt = _cam_checkpoint(tmp_path, toy_root)
    cfg = load_config(_affinity_config(tmp_path, toy_root, cam_ckpt))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert not model.cam_model.training  # train() keeps the frozen classifier in eval mode
    assert model.stride == 4 and model.num_classes == 5 and model.trainable_module() is model.net
    # weights="cam": the affinity trunk starts as the classifier's trunk
    cam_trunk = model.cam_model.net.trunk.state_dict()
    assert all(torch.equal(v, cam_trunk[k]) for k, v in model.net.trunk.state_dict().items())
    images = _images(h=32, w=30)
    valid = torch.ones(2, 32, 30, dtype=torch.bool)
    valid[:, :, 24:] = False  # crop padding: neutral in the seeds
    out = model(images, LABELS, mode="loss", iteration=1, valid=valid)

    with torch.no_grad():  # the same loss from the library functions
        cams = model.cam_model.cam_maps(model.cam_model.preprocess(images))
        # the toy config's confident regions (configs/baselines/toy_affinitynet.py): psa's powers
        # 4 / 32, each score map through the dense CRF of model.labels.crf_params
        crf_cfg = model.labels_cfg["crf_params"]
        seeds = crf_confident_labels(images, cams, LABELS, crf_cfg, "power", 4.0, 32.0)
        seeds = seeds.masked_fill(~valid, 255)
        # labels.crf = False: the CAMs' own confident regions
        model.labels_cfg.update(crf=False, mode="threshold", fg_value=0.7, bg_value=0.3)
        plain = model.seed_labels(images, cams, LABELS, valid, None)
        expected_plain = confident_labels(cams, LABELS, "threshold", 0.7, 0.3)
        assert torch.equal(plain, expected_plain.masked_fill(~valid, 255))
    assert torch.equal(out["pseudo_labels"], seeds) and bool((seeds[:, :, 24:] == 255).all())
    f = model.net(pad_to_multiple(model.preprocess(images), 4))  # (2, 8, 8, 8)
    padded = torch.nn.functional.pad(seeds, (0, 2, 0, 0), value=255)  # 30 -> 32 columns
    pairs = affinity_labels(downsample_labels(padded, (8, 8)), 3, True)
    expected = affinity_loss(pair_affinities(f, 3, "mean"), pairs)
    assert torch.allclose(out["loss"], expected["loss"], rtol=1e-6)
    assert set(out["log"]) == {"bg_loss", "fg_loss", "neg_loss"}

    before_cam = {k: v.clone() for k, v in model.cam_model.state_dict().items()}
    before_net = {k: v.clone() for k, v in model.net.state_dict().items()}
    optimizer = build_optimizer(trainable_of(model), cfg.optim)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {
        id(p) for p in model.net.parameters()
    }
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    assert all(torch.equal(v, before_cam[k]) for k, v in model.cam_model.state_dict().items())
    assert any(not torch.equal(v, before_net[k]) for k, v in model.net.state_dict().items())


def test_affinitynet_pseudo_is_the_walk_and_the_row(tmp_path, toy_root):
    cam_ckpt = _cam_checkpoint(tmp_path, toy_root)
    cfg = load_config(_affinity_config(tmp_path, toy_root, cam_ckpt))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.pseudo_rows.keys() == {"rw"} and model.trained_rows == ("rw",)
    images = _images(h=30, w=37)
    with torch.no_grad():
        pseudo = model(images, LABELS, mode="pseudo", out_size=(15, 20))
        scores, keys = model.pseudo_label_scores(images, LABELS, ["rw"], (30, 37))
        full = model(images, LABELS, mode="pseudo")["pseudo_labels"]
        pred = model(images)
    assert pseudo["pseudo_labels"].shape == (2, 15, 20) and pred["seg_logits"].shape == (
        2,
        5,
        30,
        37,
    )
    assert pseudo["cams"].shape == (3, 30, 37) and pseudo["cams_refined"].shape == (3, 15, 20)
    assert torch.equal(scores_to_labels(scores["rw"], keys), full)
    assert set(full[1].unique().tolist()) <= {0, 2}
    # t = 0 steps: the walk is the identity, so the labels are the argmax of the pooled scores
    with torch.no_grad():
        cams = model.cam_model.cam_maps(model.cam_model.preprocess(images))
    present = cams * LABELS[:, :, None, None]
    model.walk_cfg.update(num_iters=0, bg_mode="power", bg_value=16.0)  # psa: [(1 - max)^16; CAMs]
    with torch.no_grad():
        walked = model(images, LABELS, mode="pseudo")["pseudo_labels"]
    bg = (1 - present.amax(1, keepdim=True)).pow(16)
    grid = image_to_grid(torch.cat([bg, present], 1), 4)
    assert torch.equal(walked, grid_to_image(grid, 4, (30, 37)).argmax(1))
    model.walk_cfg.update(bg_mode="threshold", bg_value=0.4)  # the CAMs alone, renormalised, vs t
    with torch.no_grad():
        walked = model(images, LABELS, mode="pseudo")["pseudo_labels"]
    pooled = grid_to_image(image_to_grid(present, 4), 4, (30, 37))
    assert torch.equal(walked, cams_to_labels(normalize_cams(pooled), LABELS, 0.4))


def test_affinitynet_box_seeds_and_errors(tmp_path, toy_root):
    cam_ckpt = _cam_checkpoint(tmp_path, toy_root)
    body = 'model.update(seeds="boxes")\ndata.update(train_mask_dir="box_seeds")\n'
    cfg = load_config(_affinity_config(tmp_path, toy_root, cam_ckpt, body))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert model.pseudo_rows.keys() == {"box_rw"}
    images = _images(h=32, w=32)
    targets = torch.full((2, 32, 32), 255, dtype=torch.long)
    targets[:, :8], targets[:, 12:20, 12:20] = 0, 1
    out = model(images, LABELS, mode="loss", iteration=1, targets=targets)
    assert torch.equal(out["pseudo_labels"], targets)  # the seeds are the box seed targets
    f = model.net(model.preprocess(images))
    expected = affinity_loss(
        pair_affinities(f, 3), affinity_labels(downsample_labels(targets, (8, 8)), 3)
    )
    assert torch.allclose(out["loss"], expected["loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="box seeds"):
        model(images, LABELS, mode="loss", iteration=1)
    with pytest.raises(ConfigError, match="train_mask_dir.*CAMs only"):
        body = 'data.update(train_mask_dir="box_seeds")\n'
        build_model(load_config(_affinity_config(tmp_path, toy_root, cam_ckpt, body)))
    seg_ckpt = _segnet_checkpoint(tmp_path, toy_root)
    with pytest.raises(CheckpointError, match="expected a 'CAMClassifier'"):
        build_model(load_config(_affinity_config(tmp_path, toy_root, seg_ckpt)))


# ---------------------------------------------------------------------------------------------- SegNet
def _segnet_config(tmp_path, root, body="", base="toy_segnet_gt.py"):
    body = 'model = dict(arch="unet", unet=dict(width=4, depth=2))\n' + textwrap.dedent(body)
    return _config(tmp_path, base, root, body, name="seg.py")


def _segnet_checkpoint(tmp_path, root):
    cfg = load_config(_segnet_config(tmp_path, root))
    model = build_model(cfg)
    optimizer = build_optimizer(trainable_of(model), cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    return save_checkpoint(
        str(tmp_path / "seg_run"), model=model, optimizer=optimizer, scheduler=scheduler,
        iteration=2, config=cfg, rng_states=[{}], data_positions=[4], num_classes=5,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_segnet_loss_is_the_library_loss(tmp_path, toy_root, kind):
    cfg = load_config(_segnet_config(tmp_path, toy_root, f'loss = dict(kind="{kind}", gamma=1.5)'))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.patch_size == 1 and model.num_classes == 5
    images = _images()
    targets = torch.randint(0, 5, (2, 30, 37))
    targets[:, :3] = 255
    out = model(images, LABELS, mode="loss", iteration=1, targets=targets)
    expected = segmentation_loss(model.net(model.preprocess(images)), targets, kind, 1.5)
    assert torch.allclose(out["loss"], expected, rtol=1e-6)
    assert torch.equal(out["pseudo_labels"], targets) and set(out["log"]) == {"seg_loss"}
    with pytest.raises(ValueError, match="train_mask_dir"):
        model(images, LABELS, mode="loss", iteration=1)


def test_segnet_pseudo_keeps_the_labelled_classes(tmp_path, toy_root):
    cfg = load_config(_segnet_config(tmp_path, toy_root))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = _images()
    with torch.no_grad():
        logits = model(images)["seg_logits"]
        out = model(images, LABELS, mode="pseudo", out_size=(30, 37))
    # argmax over bg + present classes of the softmax = argmax over those logits
    masked = logits.masked_fill(
        torch.cat([torch.ones(2, 1), LABELS], 1)[:, :, None, None] == 0, float("-inf")
    )
    assert torch.equal(out["pseudo_labels"], masked.argmax(1))
    assert out["cams"].shape == (3, 30, 37)


def test_segnet_types_name_their_targets(tmp_path, toy_root):
    with pytest.raises(ConfigError, match="ground truth.*FullySupervisedSegNet"):
        body = 'data.update(train_mask_dir="SegmentationClassAug")\n'
        build_model(load_config(_segnet_config(tmp_path, toy_root, body, base="toy_segnet.py")))
    with pytest.raises(ConfigError, match="upper bound trains on the ground truth"):
        body = 'data.update(train_mask_dir="pseudo")\n'
        build_model(load_config(_segnet_config(tmp_path, toy_root, body)))
    with pytest.raises(ConfigError, match="loss.alpha.*expected 5"):
        body = 'loss = dict(kind="focal", alpha=(1.0, 2.0))\n'
        build_model(load_config(_segnet_config(tmp_path, toy_root, body)))


def test_fcn_arch_logits_at_the_input_size_and_bad_strides(tmp_path, toy_root):
    fcn = 'model.update(arch="fcn_resnet", fcn=dict(arch="resnet18", base_width=4, stem_pool=False))\n'

    def build(extra=""):
        return build_model(load_config(_segnet_config(tmp_path, toy_root, fcn + extra)))

    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        assert model(_images(h=33, w=41))["seg_logits"].shape == (2, 5, 33, 41)
    # stride 32 needs the stem pool: one error naming the section
    with pytest.raises(ConfigError, match=r"model.fcn.*output_stride must be one of \(4, 8, 16\)"):
        build("model['fcn']['output_stride'] = 32")
    # a missing ImageNet file keeps its own error type (a MissingFileError naming the file)
    with pytest.raises(MissingFileError, match="Weights file not found: .*nope.pth"):
        build("model['fcn']['weights'] = 'nope.pth'")


def test_deeplab_arch_logits_at_the_input_size(tmp_path, toy_root):
    cfg = load_config(_segnet_config(tmp_path, toy_root, 'model.update(arch="deeplabv3_resnet50")'))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        assert model(_images(h=33, w=41))["seg_logits"].shape == (2, 5, 33, 41)


# ---------------------------------------------------------------------------------------------- trainer
def test_trainer_trains_each_model_and_saves_only_its_trainable_module(tmp_path, toy_root):
    cam_cfg = load_config(_cam_config(tmp_path, toy_root))
    seg_cfg = load_config(_segnet_config(tmp_path, toy_root))  # GT targets through the trainer
    for name, cfg in (("cam", cam_cfg), ("seg", seg_cfg)):
        work = str(tmp_path / f"work_{name}")
        trainer = Trainer(cfg, work, SINGLE)
        result = trainer.train()
        trainer.close()
        ckpt = load_checkpoint(os.path.join(work, "checkpoints", "iter_2.pth"))
        assert result["iteration"] == 2 and torch.isfinite(torch.tensor(result["last_log"]["loss"]))
        expected = set(trainable_of(trainer.model_without_ddp).state_dict())
        assert set(ckpt["model"]) == expected
    assert "pixel_acc" in result["last_log"]  # SegNet returns its targets as pseudo_labels
    cam_ckpt = os.path.join(str(tmp_path / "work_cam"), "checkpoints", "iter_2.pth")
    aff_cfg = load_config(_affinity_config(tmp_path, toy_root, cam_ckpt))
    trainer = Trainer(aff_cfg, str(tmp_path / "work_aff"), SINGLE)
    trainer.train()
    trainer.close()
    ckpt = load_checkpoint(str(tmp_path / "work_aff" / "checkpoints" / "iter_2.pth"))
    assert set(ckpt["model"]) == set(trainer.model_without_ddp.net.state_dict())


# ---------------------------------------------------------------------------------------------- configs
def test_every_baseline_config_loads_and_the_pet_names_are_the_datasets():
    import glob

    from weclip.data.pets import class_names, prompt_names

    paths = sorted(glob.glob(os.path.join(CONFIGS, "*.py")))
    types = {os.path.basename(p): load_config(p).model.type for p in paths}
    assert set(types.values()) == {
        "CAMClassifier", "AffinityNet", "SegNet", "FullySupervisedSegNet", "WeCLIP"
    }  # fmt: skip
    for label_set in ("species", "breeds"):
        for stage in ("cam", "affinitynet", "affinitynet_boxes", "segnet", "segnet_gt", "weclip"):
            data = load_config(os.path.join(CONFIGS, f"pets_{label_set}_{stage}.py")).data
            assert tuple(data.class_names) == class_names(label_set)
            assert tuple(data.prompt_class_names) == prompt_names(label_set)


def test_box_seeds_of_a_split_train_the_box_affinitynet(tmp_path, toy_root):
    import numpy as np

    from weclip.baselines.box_seeds import write_split_box_seeds
    from weclip.data.boxes import boxes_from_mask, write_boxes_json
    from weclip.data.images import read_mask

    root = str(tmp_path / "toy")  # a private copy: boxes.json and the seeds are written into it
    make_toy_root(str(tmp_path), num_train=4, num_val=2)
    names = open(os.path.join(root, "train.txt")).read().split()
    masks = {n: read_mask(os.path.join(root, "SegmentationClassAug", n + ".png")) for n in names}
    write_boxes_json(
        os.path.join(root, "boxes.json"), {n: boxes_from_mask(m) for n, m in masks.items()}
    )
    cam_ckpt = _cam_checkpoint(tmp_path, toy_root)
    body = 'model.update(seeds="boxes")\ndata.update(train_mask_dir="box_seeds")\n'
    config = _affinity_config(tmp_path, root, cam_ckpt, body)
    out = write_split_box_seeds(config)
    assert sorted(os.listdir(out)) == sorted(n + ".png" for n in names)
    seeds = read_mask(os.path.join(out, names[0] + ".png"))
    # seeds lie inside the objects' boxes, background outside every box
    assert set(np.unique(seeds).tolist()) <= {0, 1, 2, 3, 4, 255} and (seeds == 0).any()
    trainer = Trainer(load_config(config), str(tmp_path / "work_box"), SINGLE)
    result = trainer.train()
    trainer.close()
    assert result["iteration"] == 2 and set(result["last_log"]) >= {
        "bg_loss",
        "fg_loss",
        "neg_loss",
    }


def test_resume_lets_inference_only_keys_differ(tmp_path, toy_root):
    """A finished AffinityNet run resumes (as a no-op) with another random walk, not with other labels."""
    cam_ckpt = _cam_checkpoint(tmp_path, toy_root)
    work = str(tmp_path / "work_aff")
    trainer = Trainer(load_config(_affinity_config(tmp_path, toy_root, cam_ckpt)), work, SINGLE)
    trainer.train()
    trainer.close()
    walk = "model.update(walk=dict(num_iters=3, bg_value=0.7))\n"
    trainer = Trainer(
        load_config(_affinity_config(tmp_path, toy_root, cam_ckpt, walk)), work, SINGLE
    )
    assert trainer.resume("auto") == 2  # the walk only runs at inference
    trainer.close()
    labels = "model.update(labels=dict(fg_value=5.0))\n"
    trainer = Trainer(
        load_config(_affinity_config(tmp_path, toy_root, cam_ckpt, labels)), work, SINGLE
    )
    with pytest.raises(CheckpointError, match=r"model.labels.fg_value: checkpoint 4.0 vs now 5.0"):
        trainer.resume("auto")
    trainer.close()
