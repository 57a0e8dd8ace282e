"""The ``"weclip"`` logger: console (through tqdm, so progress bars stay intact) and a log file per run.

Rank 0 logs at INFO to the console and to ``WORK_DIR/<YYYYmmdd_HHMMSS>.log`` (the authors' log file name,
spec §8); the other ranks log only warnings and errors to the console, prefixed with their rank.
"""

import logging
import os
import sys
import time
from typing import Any, Optional

from tqdm import tqdm

__all__ = ["setup_logger", "TqdmHandler", "log_file_name", "create_tb_writer", "LOGGER_NAME"]

LOGGER_NAME = "weclip"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"


class TqdmHandler(logging.StreamHandler):
    """Writes records with ``tqdm.write`` so that an active progress bar is redrawn below them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never raise
            self.handleError(record)


def log_file_name(timestamp: Optional[float] = None) -> str:
    """``YYYYmmdd_HHMMSS.log`` for ``timestamp`` (default: now)."""
    return time.strftime("%Y%m%d_%H%M%S", time.localtime(timestamp)) + ".log"


def setup_logger(
    work_dir: Optional[str] = None, rank: int = 0, level: int = logging.INFO
) -> Optional[str]:
    """Configure the ``"weclip"`` logger for this process; safe to call again (replaces our handlers).

    Args:
        work_dir (str, optional): where rank 0 writes ``<timestamp>.log``; no file when None.
        rank (int): this process's rank; ranks > 0 log warnings and errors only, to the console.
        level (int): level of rank 0.

    Returns:
        str | None: the log file path (rank 0 with a work dir), else None.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if getattr(h, "_weclip_handler", False)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.propagate = False
    prefix = "" if rank == 0 else f"[rank {rank}] "
    console = TqdmHandler(sys.stderr)
    console.setFormatter(logging.Formatter(prefix + _FORMAT, _DATEFMT))
    console._weclip_handler = True  # type: ignore[attr-defined]
    logger.addHandler(console)
    path = None
    if rank == 0 and work_dir is not None:
        os.makedirs(work_dir, exist_ok=True)
        path = os.path.join(work_dir, log_file_name())
        file_handler = logging.FileHandler(path, mode="a")
        file_handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
        file_handler._weclip_handler = True  # type: ignore[attr-defined]
        logger.addHandler(file_handler)
    return path


def create_tb_writer(log_dir: str) -> Any:
    """A TensorBoard ``SummaryWriter`` writing to ``log_dir``.

    Args:
        log_dir (str): e.g. ``WORK_DIR/tb``.

    Returns:
        torch.utils.tensorboard.SummaryWriter
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # tensorboard is an optional dependency of torch
        raise ImportError(
            "TensorBoard logging needs the 'tensorboard' package (pip install tensorboard)"
        ) from err
    os.makedirs(log_dir, exist_ok=True)
    return SummaryWriter(log_dir=log_dir)
