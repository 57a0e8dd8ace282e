"""Command-line options shared by the tools (train, infer, eval_pseudo, visualize)."""

import argparse

import torch
from mmengine.config import DictAction


def add_runtime_args(
    parser: argparse.ArgumentParser, *, cfg_options_help: str, launcher: bool = True
) -> None:
    """Add ``--launcher`` (optional), ``--device`` and ``--cfg-options`` to ``parser``.

    Args:
        parser (argparse.ArgumentParser): the tool's parser.
        cfg_options_help (str): help text of ``--cfg-options`` (give an example that fits the tool).
        launcher (bool): add ``--launcher none|pytorch`` ('pytorch' under torchrun).
    """
    if launcher:
        parser.add_argument(
            "--launcher",
            choices=["none", "pytorch"],
            default="none",
            help="'pytorch' under torchrun",
        )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="default: cuda when available",
    )
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, default={}, help=cfg_options_help
    )
