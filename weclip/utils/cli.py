"""What every tool shares: the runtime options, and :func:`run_main`, which turns user errors into one line.

``run_main(main)`` runs a tool's ``main`` with the ``weclip`` logger routed through tqdm (progress bars stay
intact, ``tqdm.contrib.logging.logging_redirect_tqdm``). A :class:`weclip.errors.UserInputError` (a config
key, a file, a flag) is printed as ``error: <message>`` on stderr, once (under
``weclip.utils.launch`` the launcher prints it, else rank 0), and the process exits with code 2 (argparse's
convention); ``--debug`` or ``WECLIP_DEBUG=1`` re-raises it with its traceback. Any
other exception is a bug and keeps its traceback.
"""

import argparse
import logging
import os
import sys
from typing import Any, Callable, List, Optional, Tuple

import torch
from mmengine.config import DictAction
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from weclip.errors import UserInputError
from weclip.utils.logging import setup_console

__all__ = ["add_runtime_args", "parse_scales", "run_main", "USER_ERROR_EXIT", "ERROR_DIR_VAR"]

USER_ERROR_EXIT = 2
#: set by weclip.utils.launch: the folder where each rank leaves its user-error line
ERROR_DIR_VAR = "WECLIP_ERROR_DIR"


def parse_scales(text: str) -> Tuple[float, ...]:
    """``--ms 1.0,0.75`` -> (1.0, 0.75); positive numbers only (an argparse ``type``)."""
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ms expects comma-separated numbers, got {text!r}"
        ) from None
    if not scales or any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(f"--ms expects positive scales, got {text!r}")
    return scales


def add_runtime_args(
    parser: argparse.ArgumentParser, *, cfg_options_help: str, launcher: bool = True
) -> None:
    """Add ``--launcher`` (optional), ``--device``, ``--cfg-options`` and ``--debug`` to ``parser``.

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
            help="'pytorch' under torchrun (tools/dist_train.sh, tools/dist_test.sh)",
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
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of user errors (or WECLIP_DEBUG=1)"
    )


_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"


def _one_line(err: BaseException) -> str:
    text = str(err.args[0] if err.args else err)
    if (
        _WORKER_TRACEBACK in text
    ):  # raised in a DataLoader worker: torch re-raises it with the traceback
        cls = type(err)
        marker = f"\n{cls.__module__}.{cls.__qualname__}: "
        text = text.rsplit(marker, 1)[1] if marker in text else text.strip().rsplit("\n", 1)[-1]
    return " ".join(
        text.split()
    )  # one line: collapse newlines and the indentation of multi-line messages


def run_main(main: Callable[[Optional[List[str]]], Any], argv: Optional[List[str]] = None) -> Any:
    """Run a tool's ``main(argv)``; user errors become one ``error:`` line and exit code 2.

    Args:
        main (Callable): the tool's ``main``.
        argv (List[str], optional): the arguments (default ``sys.argv[1:]``).

    Returns:
        Any: what ``main`` returned.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("WECLIP_DEBUG", "") not in ("", "0")
    setup_console(int(os.environ.get("RANK", "0") or 0))
    try:
        with logging_redirect_tqdm(loggers=[logging.getLogger("weclip")]):
            return main(args)
    except UserInputError as err:
        if debug:
            raise
        for bar in list(
            getattr(tqdm, "_instances", ())
        ):  # end progress bars: the line starts afresh
            bar.close()
        line = f"error: {_one_line(err)}"
        folder = os.environ.get(ERROR_DIR_VAR)
        if (
            folder
        ):  # under weclip.utils.launch: it prints one rank's line once, whichever failed first
            with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}.txt"), "w") as f:
                f.write(line + "\n")
        elif os.environ.get("RANK", "0") == "0":  # under plain torchrun, rank 0 speaks for everyone
            print(line, file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)
