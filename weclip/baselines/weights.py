"""Loading torchvision-style weights from a LOCAL file into a baseline network (never downloads).

The baselines' ImageNet trunks (ResNet-18/50) and DeepLabV3 take their weights from a file the user
already has, e.g. torchvision's ``resnet50-0676ba61.pth`` or ``resnet18-f37072fd.pth`` (a plain
state dict) or a training checkpoint that wraps one (``{"state_dict": ...}``, ``{"model": ...}``,
keys prefixed with ``module.`` by DistributedDataParallel). ``"random"`` keeps the random
initialisation. Nothing here touches the network: a path that does not exist is an error, not a
download.

Every problem is one error naming the file: missing file, unreadable file, not a state dict, or keys
and shapes that do not match the network (first few differences listed).
"""

import os
from typing import Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

from weclip.errors import CheckpointError, MissingFileError

__all__ = ["read_state_dict", "load_weights", "is_random"]

_WRAPPER_KEYS = ("state_dict", "model", "module")
_LIST_AT_MOST = 5


def is_random(weights: Optional[str]) -> bool:
    """True for the "keep the random initialisation" spellings: ``None``, ``""``, ``"random"``."""
    return weights is None or weights == "" or weights == "random"


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a state dict from a local ``.pth``/``.pt``/``.bin`` (torch) or ``.safetensors`` file.

    Wrappers ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"module": ...}`` are unwrapped and a
    leading ``module.`` is stripped from every key.

    Args:
        path (str): the weights file.

    Returns:
        Dict[str, torch.Tensor]: name -> tensor, on the CPU.

    Raises:
        MissingFileError: ``path`` does not exist (nothing is downloaded); a FileNotFoundError.
        CheckpointError: the file cannot be read or holds no tensor dict; a ValueError.
    """
    if not os.path.isfile(path):
        raise MissingFileError(
            f"Weights file not found: {path} (weights are read from a local file only; use "
            f"'random' for a random initialisation)"
        )
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, pickled objects weights_only refuses, ...
        raise CheckpointError(
            f"Cannot read weights file {path}: {type(exc).__name__}: {exc}"
        ) from exc
    for _ in range(3):  # unwrap at most a few nested wrappers
        if isinstance(obj, Mapping):
            wrapped = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
            if wrapped and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = obj[wrapped[0]]
                continue
        break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"Weights file {path} does not hold a state dict (name -> tensor)")
    state: Dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"Weights file {path}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        state[key[len("module.") :] if key.startswith("module.") else key] = value
    return state


def _first(items: List[str]) -> str:
    shown = ", ".join(items[:_LIST_AT_MOST])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _LIST_AT_MOST else "")


def load_weights(
    module: nn.Module,
    path: str,
    *,
    what: str,
    drop_prefixes: Iterable[str] = (),
    key_prefix: str = "",
) -> None:
    """Load a local state dict into ``module``, strictly: every key present, every shape equal.

    Args:
        module (nn.Module): the network (or sub-network) to fill.
        path (str): local weights file (see :func:`read_state_dict`).
        what (str): what the file should hold, for the error message (e.g. "torchvision
            resnet50 ImageNet weights").
        drop_prefixes (Iterable[str]): file keys starting with one of these are ignored (e.g.
            ``"fc."``, the ImageNet classifier a CAM trunk does not have).
        key_prefix (str): only file keys starting with this prefix are used, with the prefix
            removed (e.g. ``"backbone."`` to take a DeepLabV3 file's trunk).

    Raises:
        MissingFileError: no such file.
        CheckpointError: unreadable file, or keys/shapes that do not match ``module`` (the file, what
            was expected and the first differences are named).
    """
    state = read_state_dict(path)
    drop = tuple(drop_prefixes)
    if key_prefix:
        state = {k[len(key_prefix) :]: v for k, v in state.items() if k.startswith(key_prefix)}
    state = {k: v for k, v in state.items() if not k.startswith(drop)} if drop else state
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing from the file ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_first(shapes)})")
    if problems:
        raise CheckpointError(
            f"Weights file {path} does not match the network (expected {what}): "
            + "; ".join(problems)
        )
    converted = {k: v.to(dtype=own[k].dtype) for k, v in state.items()}
    module.load_state_dict(converted, strict=True)
