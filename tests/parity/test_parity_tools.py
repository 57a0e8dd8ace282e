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
from weclip.parity.official import _isolated_import, _StubModule, find_official_root
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
    with _isolated_import(str(tmp_path), stubs):
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
