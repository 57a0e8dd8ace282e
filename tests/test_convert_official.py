"""tools/convert_official_checkpoint.py: an authors' whole-model checkpoint -> our decoder checkpoint.

The "official" checkpoints here are synthetic: decoder tensors under the authors' names (from a seeded
decoder of ours, or the authors' recorded initial weights ``decoder_init.*`` when the fixture is there)
plus fake ``encoder.*`` CLIP entries (with ``positional_embedding_new``) and ``par.kernel``, the layout
the authors' ``torch.save(model.state_dict())`` produces (spec §12.11).
"""

import importlib.util
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from weclip.engine.checkpoint import load_decoder_checkpoint
from weclip.models.decoder import WeCLIPDecoder
from weclip.models.official_names import to_official_decoder_state

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "convert_official_checkpoint.py"
FIXTURE = Path(os.environ.get("WECLIP_FIXTURES", REPO.parent / "shared" / "fixtures"))
FIXTURE = FIXTURE / "official_step_static.npz"


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_official_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


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


@pytest.fixture
def seeded_decoder() -> WeCLIPDecoder:
    torch.manual_seed(0)
    return WeCLIPDecoder(num_classes=21)


def test_converts_and_loads_back(seeded_decoder, tmp_path):
    official = _official_checkpoint(
        to_official_decoder_state(seeded_decoder.state_dict()), tmp_path / "iter_30000.pth"
    )
    out = tmp_path / "converted" / "voc_30000.pth"
    assert tool.main([str(official), str(out)]) == 0
    saved = torch.load(out, map_location="cpu", weights_only=False)
    assert set(saved) == {"model", "config", "iteration", "meta"}
    assert saved["iteration"] == 30000  # from the file name
    assert saved["config"]["data"]["num_classes"] == 21
    assert saved["meta"]["ignored_keys"] == 6  # 5 encoder.* + par.kernel
    assert not any(k.startswith(("encoder.", "par.", "decoder")) for k in saved["model"])

    # our inference loader takes it like a training checkpoint's decoder
    fresh = WeCLIPDecoder(num_classes=21)
    info = load_decoder_checkpoint(fresh, str(out))
    assert info["iteration"] == 30000
    for key, value in seeded_decoder.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert not list(tmp_path.joinpath("converted").glob("*.tmp*"))  # atomic write left no temp file


def test_iteration_option_and_unnumbered_name(seeded_decoder, tmp_path):
    official = _official_checkpoint(
        to_official_decoder_state(seeded_decoder.state_dict()), tmp_path / "best.pth"
    )
    out = tmp_path / "a.pth"
    assert tool.convert(str(official), str(out))["iteration"] is None
    assert tool.convert(str(official), str(out), iteration=28000)["iteration"] == 28000


def test_class_count_mismatch_is_named(tmp_path, capsys):
    # a COCO checkpoint (81 classes) converted with the VOC config (21)
    coco = WeCLIPDecoder(num_classes=81)
    official = _official_checkpoint(
        to_official_decoder_state(coco.state_dict()), tmp_path / "coco.pth"
    )
    assert tool.main([str(official), str(tmp_path / "out.pth")]) == 1
    err = capsys.readouterr().err
    assert (
        "decoder.linear_pred.weight" in err
        and "(81, 256, 1, 1)" in err
        and "configs/coco.py" in err
    )
    assert not (tmp_path / "out.pth").exists()
    # with the class count overridden it converts
    out = tmp_path / "coco_out.pth"
    assert tool.main([str(official), str(out), "--cfg-options", "data.num_classes=81"]) == 0
    assert torch.load(out, weights_only=False)["model"]["classifier.weight"].shape == (
        81,
        256,
        1,
        1,
    )


def test_bad_inputs_are_named(seeded_decoder, tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert tool.main([str(missing), str(tmp_path / "o.pth")]) == 1
    assert f"Official checkpoint not found: {missing}" in capsys.readouterr().err

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert tool.main([str(garbage), str(tmp_path / "o.pth")]) == 1
    assert f"Cannot read {garbage}" in capsys.readouterr().err

    state = to_official_decoder_state(seeded_decoder.state_dict())
    state["decoder.extra_head.weight"] = torch.zeros(1)
    odd = _official_checkpoint(state, tmp_path / "odd.pth")
    assert tool.main([str(odd), str(tmp_path / "o.pth")]) == 1
    assert "decoder.extra_head.weight" in capsys.readouterr().err

    state = to_official_decoder_state(seeded_decoder.state_dict())
    del state["decoder_fts_fuse.linear_fuse.bias"]
    partial = _official_checkpoint(state, tmp_path / "partial.pth")
    assert tool.main([str(partial), str(tmp_path / "o.pth")]) == 1
    assert "decoder_fts_fuse.linear_fuse.bias" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()

    with pytest.raises(ValueError, match="overwrite"):
        tool.convert(str(partial), str(partial))


@pytest.mark.skipif(not FIXTURE.is_file(), reason=f"authors' fixture not found at {FIXTURE}")
def test_authors_initial_weights_reproduce_recorded_logits(tmp_path):
    # decoder_init.* are the authors' own parameter names and values (5,985,045 values)
    with np.load(FIXTURE) as data:
        decoder_init = OrderedDict(
            (k[len("decoder_init.") :], torch.from_numpy(data[k]))
            for k in data.files
            if k.startswith("decoder_init.")
        )
        fused, logits = torch.from_numpy(data["fused_F"]), torch.from_numpy(data["seg_logits"])
    official = _official_checkpoint(decoder_init, tmp_path / "official_init.pth")
    out = tmp_path / "ours.pth"
    assert tool.main([str(official), str(out), "--config", str(REPO / "configs" / "voc.py")]) == 0
    decoder = WeCLIPDecoder(num_classes=21).eval()
    load_decoder_checkpoint(decoder, str(out))
    with torch.no_grad():
        diff = float((decoder.decode(fused) - logits).abs().max())
    print(f"[parity] seg_logits through the converted checkpoint: max diff {diff:.3e}")
    assert diff <= 1e-4  # measured ~1.1e-6 (tests/parity/test_decoder_losses.py)


def test_command_line(seeded_decoder, tmp_path):
    official = _official_checkpoint(
        to_official_decoder_state(seeded_decoder.state_dict()), tmp_path / "iter_2000.pth"
    )
    out = tmp_path / "out.pth"
    proc = subprocess.run(
        [sys.executable, str(TOOL), str(official), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the default config is found relative to the tool, not the working directory
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}: 84 decoder tensors, 21 classes, iteration 2000" in proc.stdout
