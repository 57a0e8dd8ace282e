"""Config loading: _base_ merge, checked overrides, the spec constants, validation errors, the dump."""

import os

import pytest
from mmengine import Config

from weclip.config import dump_config, load_config, resolve_work_dir
from weclip.errors import ConfigError


def test_voc_constants_from_spec():
    cfg = load_config("configs/voc.py")
    assert cfg.model.text.template == "a clean origami {}."
    assert len(cfg.data.prompt_class_names) == 20 and cfg.data.prompt_class_names[2] == "bird avian"
    assert len(cfg.data.prompt_bg_names) == 25
    assert len(cfg.data.class_names) == cfg.data.num_classes == 21
    assert cfg.data.crop_size == 320 and tuple(cfg.data.scale_range) == (0.5, 2.0)
    # effective decoder lr 2e-3 = 2e-4 x 10 (spec §8)
    assert cfg.optim.lr * cfg.optim.head_lr_mult == pytest.approx(2e-3)
    assert (cfg.sched.warmup_iters, cfg.sched.power, cfg.optim.weight_decay) == (50, 1.0, 0.01)
    assert (cfg.train.max_iters, cfg.train.batch_size) == (30000, 4)
    assert cfg.model.refine.box_threshold == 0.4 and cfg.model.refine.rfm_layers == 6
    assert cfg.model.refine.static_layers == 8 and cfg.model.refine.rfm_start_iter == 9145
    assert cfg.model.par.num_iter == 20 and tuple(cfg.model.par.dilations) == (1, 2, 4, 8, 12, 24)
    assert (cfg.loss.aff_weight, cfg.loss.aff_radius) == (0.1, 8)
    assert tuple(cfg.test.scales) == (1.0, 0.75) and cfg.test.crf.iter_max == 10
    assert cfg.model.type == "WeCLIP" and cfg.model.normalize == "imagenet"
    assert tuple(cfg.model.norm_constants.imagenet.mean) == (123.675, 116.28, 103.53)


def test_coco_overrides_base():
    cfg = load_config("configs/coco.py")
    assert cfg.data.num_classes == 81 and len(cfg.data.class_names) == 81
    assert len(cfg.data.prompt_class_names) == 80 and len(cfg.data.prompt_bg_names) == 23
    assert "keyboard" not in cfg.data.prompt_bg_names and "sign" not in cfg.data.prompt_bg_names
    assert cfg.data.prompt_class_names[31] == "sknowboard"  # the authors' typo, kept (spec §2)
    assert (cfg.model.refine.rfm_layers, cfg.model.refine.box_threshold) == (10, 0.7)
    assert (cfg.train.max_iters, cfg.model.refine.rfm_start_iter) == (80000, 40001)
    assert "_coco_names" not in cfg and "_prompted" not in cfg


def test_override_existing_key():
    cfg = load_config("configs/voc.py", {"train.max_iters": 7, "model.refine.layer_filter": "abs"})
    assert cfg.train.max_iters == 7 and cfg.model.refine.layer_filter == "abs"


@pytest.mark.parametrize("key", ["train.max_iter", "model.refne.power", "train.max_iters.x"])
def test_unknown_override_key_raises(key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        load_config("configs/voc.py", {key: 1})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"train.max_iters": "abc"}, r"'train.max_iters' = 'abc': expected an integer"),
        ({"train.max_iters": 0}, r"'train.max_iters' = 0: expected a value >= 1"),
        ({"train.amp": 1}, r"'train.amp' = 1: expected True or False"),
        ({"optim.lr": "fast"}, r"'optim.lr' = 'fast': expected a number"),
        ({"model.refine.box_mode": "loose"}, r"'model.refine.box_mode' = 'loose': expected one of"),
        (
            {"model.par.dilations": [1, 0]},
            r"'model.par.dilations' = \(1, 0\): expected a value >= 1",
        ),
        ({"test.scales": "1.0"}, r"'test.scales' = '1.0': expected a list of numbers"),
        ({"data.flip_prob": 1.5}, r"'data.flip_prob' = 1.5: expected a value <= 1"),
        (
            {"model.normalize": "nope"},
            r"'model.normalize' = 'nope': expected one of 'imagenet', 'clip'",
        ),
        ({"model.type": "Segmenter"}, r"'model.type' = 'Segmenter': expected one of .*WeCLIP"),
        ({"data.scale_range": [2.0, 0.5]}, r"'data.scale_range' = \(2.0, 0.5\): expected lo <= hi"),
    ],
)
def test_values_are_type_and_range_checked_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config("configs/toy.py", options)
    assert str(err.value).startswith("configs/toy.py with --cfg-options: ")


def test_validation_fills_defaults_and_normalises():
    cfg = load_config("configs/voc.py", {"optim.lr": 1})  # an int where a float is expected
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.train.check_sync is False and isinstance(cfg.test.scales, tuple)


def test_missing_file_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config("configs/nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("train = dict(max_iters=3\n")
    with pytest.raises(ConfigError, match=r"broken.py:1: the config does not parse"):
        load_config(str(broken))
    missing_base = tmp_path / "base.py"
    missing_base.write_text("_base_ = ['nope/base.py']\n")
    with pytest.raises(ConfigError, match=r"base.py: cannot load the config"):
        load_config(str(missing_base))
    extra = tmp_path / "extra.py"
    extra.write_text(f"_base_ = ['{os.path.abspath('configs/voc.py')}']\nhelper = 3\n")
    with pytest.raises(ConfigError, match=r"unknown top-level config key 'helper'.*del"):
        load_config(str(extra))


def test_dump_roundtrip_and_work_dir(tmp_path):
    cfg = load_config("configs/voc.py", {"train.max_iters": 11})
    path = dump_config(cfg, str(tmp_path / "wd"))
    again = Config.fromfile(path)
    assert again.train.max_iters == 11 and again.data.prompt_bg_names == cfg.data.prompt_bg_names
    assert load_config(path).to_dict() == cfg.to_dict()  # the dump is a valid, identical config
    assert resolve_work_dir(cfg, "configs/voc.py") == "work_dirs/voc"
    assert resolve_work_dir(cfg, "configs/voc.py", "x/y") == "x/y"
