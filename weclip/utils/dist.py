"""Distributed helpers: torchrun initialisation and rank queries with safe answers when not distributed.

``tools/dist_train.sh`` starts one process per GPU with ``torchrun``, which exports ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them
and joins the default process group (NCCL on GPU, gloo on CPU). Every query below answers as a single
process (rank 0, world size 1) when torch.distributed is not initialised, so library code calls them
unconditionally (the dinov2 ``distributed`` module has the same shape).
"""

import dataclasses
import datetime
import logging
import os
from typing import Any, List, Optional

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_dist_initialized",
    "get_rank",
    "get_local_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "cleanup",
    "all_gather_object",
    "broadcast_object",
    "all_reduce_sum",
]

logger = logging.getLogger("weclip")

_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits.

    Args:
        rank (int): global rank (0 .. world_size - 1).
        local_rank (int): rank on this node (the GPU index with ``--device cuda``).
        world_size (int): number of processes.
        device (torch.device): the device this process trains on.
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


def is_dist_initialized() -> bool:
    """Returns:
    bool: True when the default process group exists.
    """
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Returns:
    int: the global rank, 0 when not distributed.
    """
    return dist.get_rank() if is_dist_initialized() else 0


def get_local_rank() -> int:
    """Returns:
    int: the rank on this node (``LOCAL_RANK`` from torchrun), 0 when not distributed.
    """
    return int(os.environ.get("LOCAL_RANK", 0)) if is_dist_initialized() else 0


def get_world_size() -> int:
    """Returns:
    int: the number of processes, 1 when not distributed.
    """
    return dist.get_world_size() if is_dist_initialized() else 1


def is_main_process() -> bool:
    """Returns:
    bool: True on rank 0 (and in a single process); it logs, writes checkpoints and TensorBoard.
    """
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_dist_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op when not distributed)."""
    if is_dist_initialized():
        dist.destroy_process_group()


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RuntimeError(
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
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
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
        raise ValueError(f"launcher must be 'none' or 'pytorch', got {launcher!r}")
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"--launcher pytorch needs the torchrun environment variables {missing}; start with "
            "tools/dist_train.sh CONFIG GPUS (or torchrun ... tools/train.py CONFIG --launcher pytorch)"
        )
    rank, local_rank, world_size = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible on this node"
            )
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not is_dist_initialized():
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


def all_gather_object(obj: Any) -> List[Any]:
    """Gather a picklable object from every rank.

    Args:
        obj (Any): this rank's object.

    Returns:
        List[Any]: one object per rank, in rank order (``[obj]`` when not distributed).
    """
    if not is_dist_initialized():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send rank ``src``'s picklable object to every rank.

    Args:
        obj (Any): the object (only ``src``'s value matters).
        src (int): sending rank.

    Returns:
        Any: ``src``'s object on every rank.
    """
    if not is_dist_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place and return it (unchanged when not distributed).

    Args:
        tensor (torch.Tensor): on this process's device (CUDA for NCCL).

    Returns:
        torch.Tensor: the same tensor, now holding the sum.
    """
    if is_dist_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
