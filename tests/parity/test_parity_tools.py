"""The parity tooling itself (``weclip.parity``), without the authors' code or any fixture: the random
CLIP weights stay the ones every fixture was recorded with, fixture files are deterministic, scenes and
decoder weights are pure functions of their seeds, and the harness's import isolation leaves
``sys.modules`` as it found it."""

import hashlib
import sys

import numpy as np
import pytest
import torch

from weclip.parity.fixtures import load_npz, save_npz
from weclip.parity.official import find_official_root
from weclip.parity.official_base import _isolated_import, _StubModule
from weclip.parity.random_clip import (
    QK4_CONTENT_SHA256_PREFIX,
    content_sha256,
    make_random_clip,
    tensor_specs,
)
from weclip.parity.random_decoder import random_decoder_state, state_sha256
from weclip.parity.synthetic import scene_batch, synthetic_scene


def test_random_clip_is_the_fixtures_weights():
    state = make_random_clip(qk_scale=4.0)
    # OpenAI's ViT-B/16 layout: 302 tensors, fp16, 149.6M values, logit_scale = ln 100
    assert len(state) == len(tensor_specs()) == 302
    assert all(v.dtype == torch.float16 for v in state.values())
    assert sum(v.numel() for v in state.values()) == 149_620_737
    assert state["visual.conv1.weight"].shape == (768, 3, 16, 16)
    assert state["visual.positional_embedding"].shape == (197, 768)
    assert float(state["logit_scale"]) == pytest.approx(np.log(100), abs=1e-2)
    # the documented recipe, redone for one vision and one text attention projection: a generator
    # seeded with sha256(key)[:8] (little endian, 63 bits), randn * width^-0.5, and for the vision
    # blocks the query/key rows (the first 2 x 768) times qk_scale, then fp16
    for key, width, scale in (
        ("visual.transformer.resblocks.3.attn.in_proj_weight", 768, 4.0),
        ("transformer.resblocks.3.attn.in_proj_weight", 512, 1.0),
    ):
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
        value = torch.randn((3 * width, width), generator=torch.Generator().manual_seed(seed))
        value = value * width**-0.5
        value[: 2 * width] *= scale
        assert torch.equal(state[key], value.half()), key
    digest = content_sha256(state)
    assert digest.startswith(QK4_CONTENT_SHA256_PREFIX), digest


def test_save_npz_is_deterministic(tmp_path):
    arrays = {
        "scalar": np.asarray(np.float32(3.5)),
        "matrix": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
        "labels": np.array(["a", "bc"]),
        "flag": np.asarray(True),
    }
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    save_npz(str(first), arrays)
    save_npz(str(second), arrays)
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    loaded = load_npz(str(first))
    assert loaded["scalar"].shape == () and float(loaded["scalar"]) == 3.5
    assert np.array_equal(loaded["matrix"], arrays["matrix"])
    assert loaded["labels"].tolist() == ["a", "bc"] and bool(loaded["flag"])
    with pytest.raises(ValueError, match="object array"):
        save_npz(str(tmp_path / "c.npz"), {"bad": np.array([None, 1], dtype=object)})


def test_random_decoder_state_is_seeded():
    shapes = {
        "decoder.linear_pred.weight": (21, 256, 1, 1),
        "decoder.linear_pred.bias": (21,),
        "decoder.transformer.resblocks.0.ln_1.weight": (256,),
        "decoder.transformer.resblocks.0.attn.in_proj_weight": (768, 256),
        "decoder.transformer.resblocks.0.attn.in_proj_bias": (768,),
    }
    a, b = random_decoder_state(shapes, 3), random_decoder_state(dict(reversed(shapes.items())), 3)
    assert state_sha256(a) == state_sha256(b)  # independent of the mapping's order
    assert state_sha256(random_decoder_state(shapes, 4)) != state_sha256(a)
    # PyTorch's default ranges: U(+-1/sqrt(fan_in)) = 1/16 for the classifier, Xavier for in_proj
    assert float(a["decoder.linear_pred.weight"].abs().max()) <= 1 / 16
    assert float(a["decoder.linear_pred.bias"].abs().max()) <= 1 / 16
    bound = (6 / (768 + 256)) ** 0.5
    assert float(a["decoder.transformer.resblocks.0.attn.in_proj_weight"].abs().max()) <= bound
    assert torch.equal(a["decoder.transformer.resblocks.0.ln_1.weight"], torch.ones(256))
    assert not a["decoder.transformer.resblocks.0.attn.in_proj_bias"].any()
    with pytest.raises(KeyError, match="needs its weight"):
        random_decoder_state({"decoder.linear_pred.bias": (21,)}, 0)


@pytest.mark.parametrize("size", [(375, 500), (500, 333), (320, 320)])
def test_synthetic_scenes(size):
    scene = synthetic_scene(0, 7, *size, ignore_band=2)
    again = synthetic_scene(0, 7, *size, ignore_band=2)
    assert np.array_equal(scene.image, again.image) and np.array_equal(scene.mask, again.mask)
    assert scene.image.shape == size + (3,) and scene.image.dtype == np.uint8
    assert scene.mask.shape == size
    values = set(np.unique(scene.mask).tolist())
    assert 255 in values and 0 in values  # boundary band, background
    assert sorted(v - 1 for v in values - {0, 255}) == scene.labels
    images, labels, _ = scene_batch(0, 0, 4, (320, 320))
    assert images.shape == (4, 3, 320, 320) and labels.shape == (4, 20)
    assert bool((labels.sum(1) >= 1).all())


def test_isolated_import_restores_sys_modules(tmp_path):
    # a stand-in for their tree: a top-level "utils" package that imports a missing module
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("import not_installed_anywhere\nVALUE = 42\n")
    previous = sys.modules.get("utils")
    stubs = {"not_installed_anywhere": _StubModule("not_installed_anywhere")}
    with _isolated_import(str(tmp_path), stubs, ("utils",)):
        import utils  # noqa: F401  (their package name)

        module = sys.modules["utils"]
        assert module.VALUE == 42
    assert sys.modules.get("utils") is previous
    assert "not_installed_anywhere" not in sys.modules
    assert str(tmp_path) not in sys.path
    # a stubbed attribute fails loudly only when used
    with pytest.raises(RuntimeError, match="not installed"):
        module.not_installed_anywhere.anything()


def test_find_official_root_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_attn_aff_voc.py"):
        find_official_root(str(tmp_path))
    (tmp_path / "WeCLIP" / "WeCLIP_model").mkdir(parents=True)
    (tmp_path / "WeCLIP" / "WeCLIP_model" / "model_attn_aff_voc.py").write_text("")
    assert find_official_root(str(tmp_path)) == str(tmp_path / "WeCLIP")
    assert find_official_root(str(tmp_path / "WeCLIP")) == str(tmp_path / "WeCLIP")


def test_random_dino_is_the_fixtures_weights(tmp_path):
    from weclip.models.dino_backbone import build_dino_backbone
    from weclip.parity.random_dino import (
        DINO_CONTENT_SHA256_PREFIX,
        DINO_FILE_NAME,
        dino_tensor_specs,
        make_random_dino,
        write_random_dino,
    )

    state = make_random_dino()
    # the official dinov2_vits14_pretrain.pth layout: 175 float32 tensors, 22,056,576 values, a
    # 37x37 positional table plus the CLS row (518 px / 14), 12 blocks with LayerScale
    assert list(state) == [key for key, _, _ in dino_tensor_specs()] and len(state) == 175
    assert all(v.dtype == torch.float32 for v in state.values())
    assert sum(v.numel() for v in state.values()) == 22_056_576
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert state["blocks.11.ls2.gamma"].shape == (384,)
    # the documented recipe for one tensor: a generator seeded with sha256("dinov2_vits14:" +
    # key)[:8] (little endian, 63 bits), mean + std * randn; LayerNorm weights 1 +- 0.1
    key = "blocks.3.norm1.weight"
    seed = int.from_bytes(hashlib.sha256(f"dinov2_vits14:{key}".encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(seed & (2**63 - 1))
    assert torch.equal(state[key], torch.randn(384, generator=generator) * 0.1 + 1.0)
    assert content_sha256(state).startswith(DINO_CONTENT_SHA256_PREFIX)
    # the file our model reads as an official file (strictly: every key used, none missing)
    path = tmp_path / DINO_FILE_NAME
    assert write_random_dino(str(path)).startswith(DINO_CONTENT_SHA256_PREFIX)
    dino = build_dino_backbone({"arch": "dinov2_vits14", "weights": str(path)})
    assert torch.equal(dino.vit.blocks[3].norm1.weight, state[key])


def test_official_normalize_hand_values():
    from weclip.parity.normalize import official_normalize

    images = np.zeros((1, 3, 2, 2), dtype=np.uint8)
    images[0, 1] = 255
    out = official_normalize(images)
    assert out.dtype == np.float32 and out.shape == (1, 3, 2, 2)
    # channel 0: (0 - 123.675) / 58.395 = -2.1179039...; channel 1: (255 - 116.28) / 57.12 =
    # 138.72 / 57.12 = 17 / 7; channel 2: -103.53 / 57.375 = -1.8044444...; rel 1e-7: one float32
    # rounding of the float64 result (half an ulp = 6e-8 relative)
    assert out[0, 0, 0, 0] == pytest.approx(-123.675 / 58.395, rel=1e-7)
    assert out[0, 1, 1, 1] == pytest.approx(17 / 7, rel=1e-7)
    assert out[0, 2, 0, 1] == pytest.approx(-103.53 / 57.375, rel=1e-7)


def test_record_array_helpers():
    from weclip.parity.manifest import describe_arrays
    from weclip.parity.record import pad_boxes, tensor_stats

    boxes = pad_boxes([np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), np.zeros((0, 4), dtype=np.int64)])
    assert boxes.shape == (2, 10, 4) and boxes.dtype == np.int64  # at least 10 rows
    assert boxes[0, :2].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert (boxes[0, 2:] == -1).all() and (boxes[1] == -1).all()
    assert pad_boxes([np.ones((12, 4), dtype=np.int64)]).shape == (1, 12, 4)
    # [1, -2, 3]: sum 2, sum of squares 1 + 4 + 9 = 14, sum of absolute values 6
    stats = tensor_stats({"a": torch.tensor([1.0, -2.0, 3.0]), "b": torch.zeros(2)}, ["a", "b"])
    assert stats.dtype == np.float64 and stats.tolist() == [[2.0, 14.0, 6.0], [0.0, 0.0, 0.0]]
    described = describe_arrays(
        {"x": np.zeros((2, 3), np.float32), "decoder_init.w": np.zeros(1), "n": np.asarray(3)}
    )
    assert described == {"x": "float32[2, 3]", "n": "int64[]"}


def test_evaluation_pairs_exercise_every_branch():
    from weclip.parity.record import evaluation_pairs

    gts, preds = evaluation_pairs(0)
    again = evaluation_pairs(0)
    assert all(np.array_equal(a, b) for a, b in zip(gts + preds, again[0] + again[1]))
    assert [g.shape for g in gts] == [(97, 130), (160, 120), (64, 64), (121, 77)]
    assert all(p.shape == g.shape and p.dtype == np.uint8 for g, p in zip(gts, preds))
    assert all(255 in g for g in gts) and not any(255 in p for p in preds)  # ignored GT bands
    assert not preds[3].any()  # the all-background prediction
    for i in (0, 2):  # a predicted class that the GT does not hold
        assert set(np.unique(preds[i]).tolist()) - set(np.unique(gts[i]).tolist())


def test_record_tool_user_errors(tmp_path, capsys):
    import importlib.util
    import os

    from weclip.errors import ConfigError
    from weclip.parity.manifest import record_fixtures
    from weclip.parity.record import RecordSettings
    from weclip.utils.cli import run_main

    path = os.path.join(
        os.path.dirname(__file__), "..", "..", "tools", "parity", "record_official.py"
    )
    spec = importlib.util.spec_from_file_location("_tool_record_official", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    capsys.readouterr()
    # not a clone: one error line naming the folder, exit code 2, nothing written
    with pytest.raises(SystemExit) as exit_:
        run_main(tool.main, ["--official-repo", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path}: not a clone"), err
    assert not (tmp_path / "out").exists()
    for argv in (["--only", "static,nope"], ["--model", "weclip_plus"]):  # argparse: exit 2
        with pytest.raises(SystemExit) as exit_:
            run_main(tool.main, ["--official-repo", str(tmp_path), *argv])
        assert exit_.value.code == 2
    with pytest.raises(ConfigError, match="nope"):
        record_fixtures(RecordSettings(str(tmp_path)), str(tmp_path / "out"), stages=["nope"])
