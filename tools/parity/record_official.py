"""Record what the authors' WeCLIP code computes, for the parity tests (``tests/parity``).

Runs the authors' code from your clone of https://github.com/zbf1991/WeCLIP (commit 0f47db4),
imported at run time through :mod:`weclip.parity.official`, on CPU in fp32, with random CLIP
ViT-B/16 weights in OpenAI's layout (:mod:`weclip.parity.random_clip`, ``--qk-scale 4``) and
synthetic scenes it draws itself (:mod:`weclip.parity.synthetic`)::

    git clone https://github.com/zbf1991/WeCLIP /tmp/WeCLIP-official
    git -C /tmp/WeCLIP-official checkout 0f47db4
    python tools/parity/record_official.py --official-repo /tmp/WeCLIP-official
    python -m pytest tests/parity

This script is the command line; the recording is :func:`weclip.parity.manifest.record_fixtures`
(the stages: :mod:`weclip.parity.record`, :mod:`weclip.parity.record_plus`). It writes into
``--out`` (default ``work_dirs/parity_fixtures``, where the tests look) the files
of :data:`weclip.parity.fixtures.FIXTURE_FILES` and ``manifest.json`` (``docs/parity.md`` lists
their keys). Recording is deterministic: the same command on the same machine writes the same
bytes (one torch thread, seeded everything, fixed zip metadata). About 5 minutes on one CPU core;
the CLIP weights (~300 MB) go to a temporary folder and are deleted afterwards.

WeCLIP+ (the ``WeCLIP+/`` folder of the same clone, docs/parity.md "WeCLIP+"): ``--model weclip_plus``
with a local clone of https://github.com/facebookresearch/dinov2 (its hub code builds their DINOv2,
on random ViT-S/14 weights of :mod:`weclip.parity.random_dino`) records the ``plus_*`` stages::

    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2
    python tools/parity/record_official.py --model weclip_plus --official-repo /tmp/WeCLIP-official \
        --dinov2-repo /tmp/dinov2

``--reproduce-static FILE`` instead replays the inputs of an existing static fixture (its images,
labels, decoder weights and Dropout2d mask) through the authors' code and logs, per array, the
largest difference to what the file holds (:func:`weclip.parity.record.reproduce_static`).
"""

import argparse
import os
import tempfile
from typing import List, Optional

import torch

from weclip.parity.manifest import MODELS, fixture_weights, record_fixtures
from weclip.parity.official import find_official_root
from weclip.parity.random_dino import DINO_FILE_NAME
from weclip.parity.record import STAGES, RecordSettings, reproduce_static
from weclip.parity.record_plus import PLUS_STAGES
from weclip.utils.cli import run_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "work_dirs", "parity_fixtures")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring); usage errors exit with code 2."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--official-repo",
        required=True,
        help="your clone of zbf1991/WeCLIP (or its WeCLIP/ folder; WeCLIP+/ with --model "
        "weclip_plus)",
    )
    p.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="weclip",
        help="whose fixtures to record: weclip (WeCLIP/, default) or weclip_plus (WeCLIP+/)",
    )
    p.add_argument(
        "--dinov2-repo",
        default=None,
        help="weclip_plus: a local clone of facebookresearch/dinov2 (their torch.hub.load of "
        "DINOv2 is redirected to it)",
    )
    p.add_argument(
        "--dino-weights",
        default=None,
        help=f"weclip_plus: reuse a file written by `python -m weclip.parity.random_dino "
        f"DIR/{DINO_FILE_NAME}` (default: write one to a temporary folder)",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument(
        "--clip-weights",
        default=None,
        help="reuse a file written by `python -m weclip.parity.random_clip OUT "
        "--qk-scale 4` (default: write one to a temporary folder)",
    )
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated stages to record (default all of the model's: weclip "
        f"{','.join(STAGES)}; weclip_plus {','.join(PLUS_STAGES)})",
    )
    p.add_argument("--scene-seed", type=int, default=0, help="seed of the synthetic scenes")
    p.add_argument(
        "--decoder-seed",
        type=int,
        default=0,
        help="seed of the decoder weights of every fixture but the static one",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the recording is bit-reproducible)",
    )
    p.add_argument(
        "--reproduce-static",
        default=None,
        metavar="FILE",
        help="replay an existing static fixture's inputs and print the differences "
        "(writes nothing)",
    )
    args = p.parse_args(argv)
    known = MODELS[args.model]
    if args.only is None:
        args.only = ",".join(known)
    unknown = sorted(set(args.only.split(",")) - set(known))
    if unknown:
        p.error(f"--only: unknown {args.model} stage(s) {unknown}; known: {', '.join(known)}")
    if args.model == "weclip_plus":
        if not args.dinov2_repo:
            p.error("--model weclip_plus needs --dinov2-repo (a clone of facebookresearch/dinov2)")
        if args.reproduce_static:
            p.error("--reproduce-static replays a WeCLIP fixture (--model weclip)")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Record the fixtures of ``--model`` (or, with ``--reproduce-static``, replay one)."""
    args = parse_args(argv)
    settings = RecordSettings(
        official_repo=args.official_repo,
        scene_seed=args.scene_seed,
        decoder_seed=args.decoder_seed,
        dinov2_repo=args.dinov2_repo,
    )
    if args.reproduce_static:
        torch.set_num_threads(args.threads)
        find_official_root(args.official_repo)
        with tempfile.TemporaryDirectory(prefix="weclip_clip_") as tmp:
            clip_file = fixture_weights(tmp, clip_weights=args.clip_weights)[0]
            reproduce_static(args.official_repo, args.reproduce_static, clip_file)
        return
    record_fixtures(
        settings,
        args.out,
        model=args.model,
        stages=args.only.split(","),
        threads=args.threads,
        clip_weights=args.clip_weights,
        dino_weights=args.dino_weights,
    )


if __name__ == "__main__":
    run_main(main)
