"""Write a set of parity fixtures and their ``manifest.json`` (``docs/parity.md``).

:func:`record_fixtures` records the stages of one model (WeCLIP: :class:`weclip.parity.record.Recorder`,
WeCLIP+: :class:`weclip.parity.record_plus.PlusRecorder`) into a folder, one ``.npz`` per stage
(:data:`weclip.parity.fixtures.FIXTURE_FILES`, written deterministically by
:func:`weclip.parity.fixtures.save_npz`), and updates the folder's manifest: per file its sha256, size,
description and array layout; the authors' code it ran (commit, git HEAD, sha256 of its sources), the
runtime patches, the weights' content hashes, the seeds, the versions and the thread count. Entries of
stages not re-recorded are kept. With one torch thread, the same call on the same machine writes the
same bytes.
"""

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from weclip.errors import CheckpointError, ConfigError
from weclip.parity.fixtures import FIXTURE_FILES, MANIFEST, save_npz, write_json
from weclip.parity.official import OFFICIAL_COMMIT, find_official_root, official_code_sha256
from weclip.parity.official_plus import find_dinov2_root, find_official_plus_root
from weclip.parity.random_clip import QK4_CONTENT_SHA256_PREFIX, content_sha256, write_random_clip
from weclip.parity.random_dino import (
    DINO_CONTENT_SHA256_PREFIX,
    DINO_FILE_NAME,
    write_random_dino,
)
from weclip.parity.record import STAGES, Recorder, RecordSettings, environment_versions
from weclip.parity.record_plus import PLUS_STAGES, PlusRecorder

__all__ = ["MODELS", "fixture_weights", "git_head", "describe_arrays", "record_fixtures"]

logger = logging.getLogger("weclip")

#: model -> its stages, in recording order
MODELS: Dict[str, Tuple[str, ...]] = {"weclip": STAGES, "weclip_plus": PLUS_STAGES}


def fixture_weights(
    tmp: str,
    *,
    plus: bool = False,
    clip_weights: Optional[str] = None,
    dino_weights: Optional[str] = None,
) -> Tuple[str, str, Optional[str], Optional[str]]:
    """The CLIP (and with ``plus`` the DINOv2) weights files of the fixtures, and their content hashes.

    Args:
        tmp (str): folder where the weights are generated when no file is given (~300 MB for CLIP).
        plus (bool): WeCLIP+: the DINOv2 weights too.
        clip_weights (str, optional): reuse a file of ``python -m weclip.parity.random_clip OUT
            --qk-scale 4``.
        dino_weights (str, optional): reuse a file of ``python -m weclip.parity.random_dino``.

    Returns:
        Tuple: (clip file, its content sha256, DINOv2 file, its content sha256); the last two are
        None without ``plus``.

    Raises:
        CheckpointError: a given file's content is not the fixtures' weights.
    """
    start = time.perf_counter()
    if clip_weights:
        clip_file = clip_weights
        clip_hash = content_sha256(torch.load(clip_file, map_location="cpu", weights_only=True))
    else:
        clip_file = os.path.join(tmp, "clip_qk4.pt")
        clip_hash = write_random_clip(clip_file, qk_scale=4.0)
    if not clip_hash.startswith(QK4_CONTENT_SHA256_PREFIX):
        raise CheckpointError(
            f"{clip_file}: content sha256 {clip_hash[:16]} is not the fixtures' "
            f"{QK4_CONTENT_SHA256_PREFIX} (not written by random_clip --qk-scale 4?)"
        )
    logger.info(
        f"CLIP weights {clip_file} (content sha256 {clip_hash[:16]}): "
        f"{time.perf_counter() - start:.1f} s"
    )
    if not plus:
        return clip_file, clip_hash, None, None
    if dino_weights:
        dino_file = dino_weights
        dino_hash = content_sha256(torch.load(dino_file, map_location="cpu", weights_only=True))
    else:
        dino_file = os.path.join(tmp, DINO_FILE_NAME)
        dino_hash = write_random_dino(dino_file)
    if not dino_hash.startswith(DINO_CONTENT_SHA256_PREFIX):
        raise CheckpointError(
            f"{dino_file}: content sha256 {dino_hash[:16]} is not the fixtures' "
            f"{DINO_CONTENT_SHA256_PREFIX} (not written by weclip.parity.random_dino?)"
        )
    logger.info(f"DINOv2 weights {dino_file} (content sha256 {dino_hash[:16]})")
    return clip_file, clip_hash, dino_file, dino_hash


def git_head(root: str) -> Optional[str]:
    """``git rev-parse HEAD`` of the clone at ``root``, or None (no git, not a clone, an export)."""
    try:
        out = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def describe_arrays(arrays: Mapping[str, np.ndarray]) -> Dict[str, str]:
    """name -> ``"<dtype>[<shape>]"`` for the manifest, without the per-weight arrays
    (``decoder_init.*``, ``step1_weight_all.*``)."""
    return {
        k: f"{v.dtype}{list(v.shape)}"
        for k, v in arrays.items()
        if not k.startswith(("decoder_init.", "step1_weight_all."))
    }


def record_fixtures(
    settings: RecordSettings,
    out: str,
    *,
    model: str = "weclip",
    stages: Optional[Sequence[str]] = None,
    threads: int = 1,
    clip_weights: Optional[str] = None,
    dino_weights: Optional[str] = None,
) -> Dict[str, Any]:
    """Record the stages of ``model`` into ``out`` and update ``out/manifest.json``.

    Sets the process's torch threads to ``threads`` (1: the recording is bit-reproducible).

    Args:
        settings (RecordSettings): their clone (``dinov2_repo`` too for WeCLIP+) and the seeds.
        out (str): output folder (created).
        model (str): ``"weclip"`` or ``"weclip_plus"`` (:data:`MODELS`).
        stages (Sequence[str], optional): the stages to record (default all of the model's); they
            are recorded in the model's order.
        threads (int): torch threads.
        clip_weights, dino_weights (str, optional): reuse weights files (see :func:`fixture_weights`).

    Returns:
        Dict[str, Any]: the manifest written.

    Raises:
        ConfigError: an unknown model or stage, or WeCLIP+ without ``settings.dinov2_repo``.
    """
    if model not in MODELS:
        raise ConfigError(f"model {model!r}: expected one of {', '.join(sorted(MODELS))}")
    known = MODELS[model]
    unknown = sorted(set(stages or ()) - set(known))
    if unknown:
        raise ConfigError(f"unknown {model} stage(s) {unknown}; known: {', '.join(known)}")
    selected = [s for s in known if stages is None or s in stages]
    plus = model == "weclip_plus"
    if plus and not settings.dinov2_repo:
        raise ConfigError("weclip_plus needs a clone of facebookresearch/dinov2 (dinov2_repo)")
    torch.set_num_threads(threads)
    if plus:
        root = find_official_plus_root(settings.official_repo)
    else:
        root = find_official_root(settings.official_repo)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="weclip_clip_") as tmp:
        clip_file, clip_hash, dino_file, dino_hash = fixture_weights(
            tmp, plus=plus, clip_weights=clip_weights, dino_weights=dino_weights
        )
        if plus:
            recorder: Any = PlusRecorder(settings, clip_file, clip_hash, dino_file)
        else:
            recorder = Recorder(settings, clip_file, clip_hash)
        os.makedirs(out, exist_ok=True)
        manifest_path = os.path.join(out, MANIFEST)
        previous: Dict[str, Any] = {}
        if os.path.isfile(manifest_path):  # keep the entries of stages not re-recorded
            with open(manifest_path) as f:
                previous = json.load(f)
        files: Dict[str, Any] = previous.get("files", {})
        for stage in selected:
            t0 = time.perf_counter()
            arrays, info = getattr(recorder, stage)()
            path = os.path.join(out, FIXTURE_FILES[stage])
            save_npz(path, arrays)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            size = os.path.getsize(path)
            files[FIXTURE_FILES[stage]] = {
                **info,
                "sha256": digest,
                "bytes": size,
                "arrays": describe_arrays(arrays),
            }
            logger.info(
                f"{stage}: {path} ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s"
            )
        official_code = {
            "repository": "https://github.com/zbf1991/WeCLIP",
            "expected_commit": OFFICIAL_COMMIT,
            "git_head": git_head(root),
            "python_sources_sha256": official_code_sha256(root),
        }
        seeds = {
            "scene_seed": settings.scene_seed,
            "decoder_seed": settings.decoder_seed,
            "their_setup_seed": 1,
        }
        clip_entry = {
            "generator": "weclip.parity.random_clip (qk_scale=4)",
            "content_sha256": clip_hash,
        }
        manifest = OrderedDict(previous)
        if plus:
            hub_root = find_dinov2_root(settings.dinov2_repo)
            manifest["weclip_plus"] = {
                "official_code": {**official_code, "folder": "WeCLIP+"},
                "dinov2_hub_code": {
                    "repository": "https://github.com/facebookresearch/dinov2",
                    "git_head": git_head(hub_root),
                    "python_sources_sha256": official_code_sha256(hub_root),
                },
                "patches": recorder.patches,
                "clip_weights": clip_entry,
                "dino_weights": {
                    "generator": f"weclip.parity.random_dino ({DINO_FILE_NAME})",
                    "content_sha256": dino_hash,
                },
                "seeds": seeds,
            }
        else:
            manifest.update(
                official_code=official_code,
                patches=recorder.patches,
                clip_weights=clip_entry,
                seeds=seeds,
            )
        manifest.update(versions=environment_versions(), threads=threads, files=files)
        write_json(manifest_path, manifest)
    logger.info(f"done in {time.perf_counter() - start:.1f} s: {out}")
    return manifest
