"""The ``"weclip"`` logger: a console handler (through tqdm while a tool runs, so progress bars stay intact:
``weclip.utils.cli.run_main`` wraps it in ``tqdm.contrib.logging.logging_redirect_tqdm``) and a log file
per run.

Rank 0 logs at INFO to the console and to ``WORK_DIR/<YYYYmmdd_HHMMSS>.log`` (the authors' log file name,
spec §8); the other ranks log only warnings and errors to the console, prefixed with their rank.
"""

import logging
import os
import sys
import time
from typing import Any, Optional

__all__ = ["setup_console", "add_log_file", "log_file_name", "create_tb_writer", "LOGGER_NAME"]

LOGGER_NAME = "weclip"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"


def _own_handlers(logger: logging.Logger, kind: type) -> list:
    return [h for h in logger.handlers if getattr(h, "_weclip_handler", None) == kind.__name__]


def setup_console(rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """Configure the ``"weclip"`` logger's console output for this process (safe to call again).

    Args:
        rank (int): this process's rank; ranks > 0 log warnings and errors only, prefixed ``[rank r]``.
        level (int): level of rank 0.

    Returns:
        logging.Logger: the ``"weclip"`` logger.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in _own_handlers(logger, logging.StreamHandler):
        logger.removeHandler(handler)
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.propagate = False
    prefix = "" if rank == 0 else f"[rank {rank}] "
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(prefix + _FORMAT, _DATEFMT))
    console._weclip_handler = logging.StreamHandler.__name__  # type: ignore[attr-defined]
    logger.addHandler(console)
    return logger


def log_file_name(timestamp: Optional[float] = None) -> str:
    """``YYYYmmdd_HHMMSS.log`` for ``timestamp`` (default: now)."""
    return time.strftime("%Y%m%d_%H%M%S", time.localtime(timestamp)) + ".log"


def add_log_file(work_dir: str, rank: int = 0) -> Optional[str]:
    """Rank 0: also log to ``work_dir/<timestamp>.log`` (replacing an earlier file handler of ours).

    Returns:
        str | None: the log file (None on other ranks).
    """
    if rank != 0:
        return None
    logger = logging.getLogger(LOGGER_NAME)
    for handler in _own_handlers(logger, logging.FileHandler):
        logger.removeHandler(handler)
        handler.close()
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, log_file_name())
    file_handler = logging.FileHandler(path, mode="a")
    file_handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    file_handler._weclip_handler = logging.FileHandler.__name__  # type: ignore[attr-defined]
    logger.addHandler(file_handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return path


def create_tb_writer(log_dir: str) -> Any:
    """A TensorBoard ``SummaryWriter`` writing to ``log_dir``.

    Args:
        log_dir (str): e.g. ``WORK_DIR/tb``.

    Returns:
        torch.utils.tensorboard.SummaryWriter
    """
    from torch.utils.tensorboard import SummaryWriter

    os.makedirs(log_dir, exist_ok=True)
    return SummaryWriter(log_dir=log_dir)
