"""Fixtures for comparisons with the authors' code (recorded outputs in ``../shared/fixtures``).

The recordings live outside the repository: ``<repo>/../shared/fixtures`` by default, or the folder
named by the environment variable ``WECLIP_FIXTURES``. Tests that need them are skipped, with the
path that was tried, when they are absent.

Session fixtures for the end-to-end comparisons (computed once per run): ``clip_qk4_file`` (the
fixture's CLIP weights, regenerated into a temp dir by ``make_random_clip.py``), ``parity_cfg``
(``configs/voc.py`` pointing at them), ``parity_model`` (``build_model`` + the authors' initial
decoder weights) and ``parity_step`` (our forward of the recorded batch with the recorded Dropout2d
mask).
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    """``$WECLIP_FIXTURES`` if set, else ``<repo>/../shared/fixtures``."""
    env = os.environ.get("WECLIP_FIXTURES")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def official_step_static() -> Iterator[Dict[str, np.ndarray]]:
    """All arrays of ``official_step_static.npz`` (one training step of the authors' code, see the
    README beside it), as a dict of numpy arrays."""
    path = fixtures_dir() / "official_step_static.npz"
    if not path.is_file():
        pytest.skip(
            f"official fixture not found at {path} (set WECLIP_FIXTURES to the folder holding "
            "official_step_static.npz)"
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    yield arrays


# ---------------------------------------------------------------------------------------------------
# Our model built as a user loads OpenAI's ViT-B-16.pt, on the fixture's CLIP weights
# ---------------------------------------------------------------------------------------------------
DECODER_PREFIX = "decoder_init."


@pytest.fixture(scope="session")
def clip_qk4_file(official_step_static, tmp_path_factory) -> Path:
    """The fixture's CLIP weights, regenerated once per session into a temp dir (~300 MB, not kept).

    Runs ``make_random_clip.py OUT --qk-scale 4`` from the fixtures folder (the weights the recorded
    step used, fixture README) and checks the content hash it prints against ``meta_json``.
    """
    script = fixtures_dir() / "make_random_clip.py"
    if not script.is_file():
        pytest.skip(f"CLIP weight generator not found at {script} (fixtures folder incomplete)")
    out = tmp_path_factory.mktemp("clip_weights") / "clip_qk4.pt"
    proc = subprocess.run(
        [sys.executable, str(script), str(out), "--qk-scale", "4"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 or not out.is_file():
        pytest.fail(
            f"{script} failed (exit {proc.returncode}) writing {out}:\n{proc.stderr[-2000:]}"
        )
    # "content sha256 3fbcfa31adc6db3c" (printed) vs "content sha256 prefix 3fbcfa31adc6db3c" (meta)
    printed = re.search(r"content sha256 ([0-9a-f]+)", proc.stdout)
    meta = json.loads(str(official_step_static["meta_json"]))
    recorded = re.search(r"sha256 prefix ([0-9a-f]+)", meta["clip_weights"])
    assert printed and recorded, f"cannot read the content hashes: {proc.stdout!r}"
    assert printed.group(1).startswith(recorded.group(1)), (
        f"{out}: content hash {printed.group(1)} differs from the fixture's {recorded.group(1)} "
        "(make_random_clip.py or torch's generator changed?)"
    )
    return out


@pytest.fixture(scope="session")
def parity_cfg(clip_qk4_file):
    """``configs/voc.py`` with ``model.backbone.weights`` = the generated CLIP file (nothing else
    changed: ``ViT-B-16-quickgelu``, fp32, static refinement before ``rfm_start_iter``)."""
    from weclip.config import load_config

    return load_config(
        str(REPO_ROOT / "configs" / "voc.py"), {"model.backbone.weights": str(clip_qk4_file)}
    )


@pytest.fixture(scope="session")
def parity_model(parity_cfg, official_step_static):
    """``build_weclip(configs/voc.py)`` with the authors' initial decoder weights loaded through the
    name mapping (``decoder_init.*``); eval mode."""
    from weclip.models.official_names import load_official_decoder_state
    from weclip.models.registry import build_model

    model = build_model(parity_cfg)
    state = {
        key[len(DECODER_PREFIX) :]: value
        for key, value in official_step_static.items()
        if key.startswith(DECODER_PREFIX)
    }
    load_official_decoder_state(model.decoder, state)
    return model.eval()


def as_pixels(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """The recorded batch (ImageNet-normalised, the authors' input) back as the 0-255 RGB values our model
    takes: the recorded images are uint8 pixels normalised in float32, so ``x * std + mean`` is within
    8e-6 of an integer, and the model's ``(round(.) - mean) / std`` reproduces the recorded tensor bit for
    bit (checked here; the authors also pad the 0-255 image before normalising, spec §8 step 4)."""
    pixels = torch.round(images * model.pixel_std[:, None, None] + model.pixel_mean[:, None, None])
    assert torch.equal(model.preprocess(pixels), images), "normalisation does not round-trip"
    return pixels


class RecordedDropout2d(nn.Module):
    """Dropout2d with a fixed keep mask: ``x * keep / (1 - p)`` per (image, channel) (spec §6.1).

    Args:
        keep (torch.Tensor): BxC bool, the channels the authors' Dropout2d kept.
        p (float): drop probability (0.1).
    """

    def __init__(self, keep: torch.Tensor, p: float) -> None:
        super().__init__()
        self.register_buffer("scale", keep.float() / (1.0 - p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[:2] == self.scale.shape, (
            f"{tuple(x.shape)} vs mask {tuple(self.scale.shape)}"
        )
        return x * self.scale[:, :, None, None]


@pytest.fixture(scope="session")
def parity_step(parity_model, official_step_static) -> Dict[str, torch.Tensor]:
    """Our WeCLIP forward on the recorded batch, as the authors' training step ran it: training
    mode, iteration 1 (static refinement; the fixture has ``require_seg_trans`` False), the
    recorded Dropout2d keep mask (``dropout_keep_step1``). Outputs detached, computed once."""
    images = torch.as_tensor(official_step_static["input_images"])
    cls_labels = torch.as_tensor(official_step_static["cls_labels"])
    keep = torch.as_tensor(official_step_static["dropout_keep_step1"])
    decoder = parity_model.decoder
    original = decoder.dropout
    decoder.dropout = RecordedDropout2d(keep, original.p)
    parity_model.train()
    start = time.perf_counter()
    try:
        out = parity_model(as_pixels(images, parity_model), cls_labels, mode="pseudo", iteration=1)
    finally:
        decoder.dropout = original
        parity_model.eval()
    print(f"[parity] our WeCLIP forward of the recorded batch: {time.perf_counter() - start:.1f} s")
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
