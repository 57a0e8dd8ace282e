"""Loading the authors' whole-model checkpoints (``load_weights`` through ``WeCLIP.load_official_state``) and
tools/convert_official_checkpoint.py.

The "official" checkpoints here are synthetic: decoder tensors under the authors' names (from a seeded
decoder of ours) plus fake ``encoder.*`` CLIP entries (with ``positional_embedding_new``) and ``par.kernel``,
the layout the authors' ``torch.save(model.state_dict())`` produces (spec §12.11). The model is the tiny
config's; the real-size decoder is checked against the authors' recorded logits in tests/parity.
"""

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from helpers import run_tool, write_config

from weclip.apis import init_model
from weclip.engine.checkpoint import load_weights
from weclip.errors import UserInputError
from weclip.models.decoder import WeCLIPDecoder
from weclip.models.official_names import to_official_decoder_state


def _fake_clip_entries() -> "OrderedDict[str, torch.Tensor]":
    # a few CLIP entries as the authors' model stores them (names only matter: they are skipped)
    g = torch.Generator().manual_seed(3)
    return OrderedDict(
        [
            ("encoder.visual.class_embedding", torch.randn(768, generator=g)),
            ("encoder.visual.positional_embedding", torch.randn(197, 768, generator=g)),
            ("encoder.visual.positional_embedding_new", torch.randn(401, 768, generator=g)),
            ("encoder.visual.transformer.resblocks.11.ln_1.weight", torch.ones(768)),
            ("encoder.logit_scale", torch.tensor(4.6052)),
            ("par.kernel", torch.ones(8, 1, 3, 3)),
        ]
    )


def _official_checkpoint(decoder_official: "OrderedDict[str, torch.Tensor]", path: Path) -> Path:
    state = _fake_clip_entries()
    state.update(decoder_official)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> str:
    """The tiny config (CLIP width 64, 3 blocks -> a decoder of 2 inputs, width 16, 5 classes)."""
    base = tmp_path_factory.mktemp("convert")
    return write_config(str(base), str(base / "no_data"))


def _decoder(num_classes: int = 5, seed: int = 0) -> WeCLIPDecoder:
    torch.manual_seed(
        seed
    )  # the tiny config's decoder (model.decoder, 2 CLIP block outputs of width 64)
    return WeCLIPDecoder(
        in_dim=64, num_inputs=2, embed_dim=16, num_heads=2, num_layers=1, num_classes=num_classes
    )


def test_authors_checkpoint_loads_directly(config, tmp_path):
    seeded = _decoder()
    official = _official_checkpoint(
        to_official_decoder_state(seeded.state_dict()), tmp_path / "iter_30000.pth"
    )
    model = init_model(config, str(official), "cpu")
    for key, value in seeded.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[key], value), key
    assert model.checkpoint_info["iteration"] is None


def test_converts_and_loads_back(config, tmp_path):
    seeded = _decoder()
    official = _official_checkpoint(
        to_official_decoder_state(seeded.state_dict()), tmp_path / "iter_30000.pth"
    )
    out = tmp_path / "converted" / "voc_30000.pth"
    proc = run_tool("convert_official_checkpoint", [config, str(official), str(out)])
    # 2 fusion MLPs x (2 weights + 2 biases) + fuse conv 2 + 1 layer x 12 (in/out proj, 2 norms, 2 fc) + 2
    assert f"wrote {out}: 24 tensors, 5 classes, iteration 30000" in proc.stdout
    saved = torch.load(out, map_location="cpu", weights_only=False)
    assert set(saved) == {"model", "config", "iteration", "meta"}
    assert saved["iteration"] == 30000  # from the file name
    assert saved["config"]["data"]["num_classes"] == 5
    assert saved["config"]["model"]["backbone"]["weights"] == "random"  # the config's, unchanged
    assert not any(k.startswith(("encoder.", "par.", "decoder")) for k in saved["model"])
    # our loader takes it like a training checkpoint's decoder
    model = init_model(config, None, "cpu")
    assert load_weights(model, str(out))["iteration"] == 30000
    for key, value in seeded.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[key], value), key
    assert not list(tmp_path.joinpath("converted").glob("*.tmp*"))  # atomic write left no temp file


def test_bad_inputs_are_named(config, tmp_path):
    def fails(official, match):
        with pytest.raises(UserInputError, match=match):
            init_model(config, str(official), "cpu")

    # a COCO-sized classifier (81 classes) for the 5-class config
    state = to_official_decoder_state(_decoder(num_classes=81).state_dict())
    fails(
        _official_checkpoint(state, tmp_path / "coco.pth"),
        r"decoder.linear_pred.weight.*\(81, 16, 1, 1\)",
    )
    fails(tmp_path / "nope.pth", "checkpoint not found: .*nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    fails(garbage, "cannot read checkpoint .*garbage.pth")
    state = to_official_decoder_state(_decoder().state_dict())
    state["decoder.extra_head.weight"] = torch.zeros(1)
    fails(_official_checkpoint(state, tmp_path / "odd.pth"), "odd.pth.*decoder.extra_head.weight")
    state = to_official_decoder_state(_decoder().state_dict())
    del state["decoder_fts_fuse.linear_fuse.bias"]
    fails(
        _official_checkpoint(state, tmp_path / "partial.pth"), "decoder_fts_fuse.linear_fuse.bias"
    )


def test_command_line_errors(config, tmp_path):
    state = to_official_decoder_state(_decoder().state_dict())
    official = _official_checkpoint(state, tmp_path / "iter_5.pth")
    for args, message in (
        ([str(official), str(official)], "refusing to overwrite"),
        (
            [str(tmp_path / "ours.pth"), str(tmp_path / "o.pth")],
            "not a checkpoint of the authors' code",
        ),
    ):
        torch.save(_decoder().state_dict(), tmp_path / "ours.pth")
        proc = run_tool("convert_official_checkpoint", [config, *args], check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "error: " in proc.stderr and message in proc.stderr
    assert not (tmp_path / "o.pth").exists()
