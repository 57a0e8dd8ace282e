"""Distributed set-up: join the torchrun process group and pick this process's device.

``tools/dist_train.sh`` / ``tools/dist_test.sh`` start one process per GPU with ``torchrun``, which exports
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them, checks them (one clear error when a variable or a GPU is missing) and joins the default process
group (NCCL on GPU, gloo on CPU). Rank queries and collectives are mmengine's (``mmengine.dist``: safe answers
when not distributed, CPU tensors moved to the GPU for NCCL and back); :func:`all_reduce_sum` and
:func:`cleanup` are the two small additions the library needs.
"""

import dataclasses
import datetime
import logging
import os
from typing import Optional

import torch
import torch.distributed as dist
from mmengine import dist as mmdist

from weclip.errors import UserInputError

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "cleanup"]

logger = logging.getLogger("weclip")

_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits.

    Args:
        rank (int): global rank (0 .. world_size - 1).
        local_rank (int): rank on this node (the GPU index with ``--device cuda``).
        world_size (int): number of processes.
        device (torch.device): the device this process runs on.
        backend (str, optional): "nccl" | "gloo", None when not distributed.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: Optional[str]

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserInputError(
            f"--launcher pytorch: environment variable {name}={value!r} is not an integer; start the "
            "processes with torchrun (tools/dist_train.sh)"
        ) from None


def init_distributed(launcher: str, device: str, timeout_minutes: int = 30) -> DistInfo:
    """Join the default process group when ``launcher == "pytorch"``; pick this process's device.

    Args:
        launcher (str): "none" (one process) or "pytorch" (torchrun environment variables).
        device (str): "cpu" or "cuda" (with torchrun, each process takes GPU ``LOCAL_RANK``).
        timeout_minutes (int): collective timeout (long enough for a validation on rank 0's share).

    Returns:
        DistInfo: rank, local rank, world size, device, backend.
    """
    if device not in ("cpu", "cuda"):
        raise UserInputError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            "--device cuda was asked for but CUDA is not available (use --device cpu)"
        )
    if launcher == "none":
        dev = (
            torch.device("cuda", torch.cuda.current_device())
            if device == "cuda"
            else torch.device("cpu")
        )
        return DistInfo(rank=0, local_rank=0, world_size=1, device=dev, backend=None)
    if launcher != "pytorch":
        raise UserInputError(f"--launcher must be 'none' or 'pytorch', got {launcher!r}")
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise UserInputError(
            f"--launcher pytorch needs the torchrun environment variables {missing}; start with "
            "tools/dist_train.sh CONFIG GPUS (or torchrun ... tools/train.py CONFIG --launcher pytorch)"
        )
    rank, local_rank, world_size = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserInputError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible on "
                "this node"
            )
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not mmdist.is_distributed():
        kwargs: dict = dict(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        if backend == "nccl":
            kwargs["device_id"] = (
                dev  # binds the communicator to this GPU (no guessing in barriers)
            )
        dist.init_process_group(**kwargs)
    logger.debug(
        "rank %d/%d (local %d) on %s, backend %s", rank, world_size, local_rank, dev, backend
    )
    return DistInfo(
        rank=rank, local_rank=local_rank, world_size=world_size, device=dev, backend=backend
    )


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (any device; unchanged when not distributed) and return it."""
    mmdist.all_reduce(tensor, op="sum")
    return tensor


def cleanup() -> None:
    """Leave the process group (no-op when not distributed)."""
    if mmdist.is_distributed():
        dist.destroy_process_group()
