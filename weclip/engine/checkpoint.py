"""Training checkpoints: decoder weights + everything needed for an exact resume.

Layout (``WORK_DIR`` = the run's work dir)::

    WORK_DIR/checkpoints/iter_2000.pth     one file per save (iteration number without zero padding)
    WORK_DIR/checkpoints/latest            a text file holding the file name of the newest one ("iter_2000.pth")

Both are written atomically (temporary file + rename, ``weclip.utils.io``): a run killed while saving leaves
the previous ``latest`` intact. Only rank 0 writes; the per-rank states are gathered to it first, so one file
holds the whole run. The dictionary (``schema = "weclip.ckpt/v1"``)::

    model           decoder state dict only (WeCLIPDecoder keys, e.g. "fuse.weight"; no CLIP key)
    optimizer       AdamW state dict
    scheduler       LambdaLR state dict
    iteration       completed training iterations (the next one to run is iteration + 1)
    world_size      number of ranks that trained
    rng_states      list, one per rank: {"python", "numpy", "torch"[, "cuda"]} (weclip.utils.seed)
    data_positions  list, one per rank: samples this rank's InfiniteSampler has handed out
    config          the resolved config as a plain dict
    meta            {"num_classes", "time", "torch", "weclip"}

Resume checks (:func:`check_resume_compatible`): the decoder keys and shapes and the class count must match
the model being trained, and so must the config entries that change the optimisation
(:data:`RESUME_CONFIG_KEYS`, the world size included). Paths in :data:`RESUME_IGNORED_KEYS` may differ
(data moved to another disk).
"""

import logging
import os
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

import weclip
from weclip.config import to_plain
from weclip.utils.io import atomic_path, atomic_write_text

__all__ = [
    "CHECKPOINT_SCHEMA",
    "CHECKPOINT_DIR",
    "LATEST_NAME",
    "RESUME_CONFIG_KEYS",
    "RESUME_IGNORED_KEYS",
    "unwrap_model",
    "decoder_of",
    "decoder_state_dict",
    "checkpoint_dir",
    "checkpoint_name",
    "save_checkpoint",
    "find_latest_checkpoint",
    "load_checkpoint",
    "check_state_dict_compatible",
    "check_resume_compatible",
    "load_decoder_checkpoint",
]

logger = logging.getLogger("weclip")

CHECKPOINT_SCHEMA = "weclip.ckpt/v1"
CHECKPOINT_DIR = "checkpoints"
LATEST_NAME = "latest"
_REQUIRED_KEYS = (
    "schema",
    "model",
    "optimizer",
    "scheduler",
    "iteration",
    "world_size",
    "rng_states",
    "data_positions",
    "config",
)

# Config entries that change what the optimisation computes: resuming with a different value is refused.
RESUME_CONFIG_KEYS = (
    "model",
    "data",
    "loss",
    "optim",
    "sched",
    "train.max_iters",
    "train.batch_size",
    "train.seed",
)
# Dotted keys under RESUME_CONFIG_KEYS that are locations, not settings: they may change between runs.
RESUME_IGNORED_KEYS = (
    "data.root",
    "data.split_dir",
    "model.backbone.weights",
    "model.backbone.allow_download",
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (or ``model`` itself)."""
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


def decoder_of(model: nn.Module) -> nn.Module:
    """The trainable decoder of a (possibly wrapped) ``WeCLIP``, or ``model`` if it is a decoder itself."""
    inner = unwrap_model(model)
    decoder = getattr(inner, "decoder", None)
    if isinstance(decoder, nn.Module):
        return decoder
    if hasattr(inner, "classifier") and hasattr(inner, "fusion_mlps"):  # a bare WeCLIPDecoder
        return inner
    raise TypeError(f"{type(inner).__name__} has no 'decoder' sub-module (expected a WeCLIP model)")


def decoder_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The decoder's weights, detached CPU copies (keys relative to the decoder, no CLIP key)."""
    return {k: v.detach().cpu().clone() for k, v in decoder_of(model).state_dict().items()}


def checkpoint_dir(work_dir: str) -> str:
    """``WORK_DIR/checkpoints``."""
    return os.path.join(work_dir, CHECKPOINT_DIR)


def checkpoint_name(iteration: int) -> str:
    """``iter_<iteration>.pth`` (no zero padding)."""
    return f"iter_{int(iteration)}.pth"


def save_checkpoint(
    work_dir: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    iteration: int,
    config: Any,
    rng_states: List[Dict[str, Any]],
    data_positions: List[int],
    num_classes: Optional[int] = None,
) -> str:
    """Write ``iter_<iteration>.pth`` and point ``latest`` at it (both atomic). Call on rank 0 only.

    Args:
        work_dir (str): the run's work dir.
        model (nn.Module): the (possibly DDP-wrapped) ``WeCLIP``; only its decoder is saved.
        optimizer (torch.optim.Optimizer): the AdamW optimiser.
        scheduler: the LR scheduler.
        iteration (int): completed iterations.
        config: the resolved config (``Config`` or mapping), stored as a plain dict.
        rng_states (List[dict]): one ``weclip.utils.seed.get_rng_state()`` per rank, in rank order.
        data_positions (List[int]): samples consumed per rank, in rank order.
        num_classes (int, optional): C, recorded in ``meta``.

    Returns:
        str: the checkpoint path.
    """
    if len(rng_states) != len(data_positions):
        raise ValueError(
            f"{len(rng_states)} RNG states but {len(data_positions)} data positions (one per rank each)"
        )
    state = {
        "schema": CHECKPOINT_SCHEMA,
        "model": decoder_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": int(iteration),
        "world_size": len(rng_states),
        "rng_states": list(rng_states),
        "data_positions": [int(p) for p in data_positions],
        "config": to_plain(config),
        "meta": {
            "num_classes": num_classes,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__,
            "weclip": weclip.__version__,
        },
    }
    directory = checkpoint_dir(work_dir)
    path = os.path.join(directory, checkpoint_name(iteration))
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    atomic_write_text(os.path.join(directory, LATEST_NAME), checkpoint_name(iteration) + "\n")
    logger.info("Saved checkpoint %s", path)
    return path


def find_latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint named by ``WORK_DIR/checkpoints/latest``, or None when there is no pointer.

    Args:
        work_dir (str): the run's work dir.

    Returns:
        str | None: the checkpoint path.
    """
    pointer = os.path.join(checkpoint_dir(work_dir), LATEST_NAME)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.read().strip()
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(
            f"{pointer}: expected a checkpoint file name such as 'iter_2000.pth', got {name!r}"
        )
    path = os.path.join(checkpoint_dir(work_dir), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{pointer} names {name}, but {path} does not exist")
    return path


def _read_checkpoint_file(path: str, map_location: Any) -> Mapping[str, Any]:
    """``torch.load`` a checkpoint file, with one clear error for a missing, unreadable or non-dict file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        # RNG states hold numpy arrays and python tuples: not loadable with weights_only=True.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise RuntimeError(f"Cannot read checkpoint {path}: {err}") from err
    if not isinstance(state, Mapping):
        raise ValueError(f"Checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a training checkpoint and check that it has every field of the schema.

    Args:
        path (str): ``iter_N.pth``.
        map_location: passed to ``torch.load``.

    Returns:
        dict: the checkpoint (see the module docstring).
    """
    state = _read_checkpoint_file(path, map_location)
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(
            f"Checkpoint {path} is not a weclip training checkpoint (missing {missing}); for decoder weights "
            "alone use load_decoder_checkpoint"
        )
    if state["schema"] != CHECKPOINT_SCHEMA:
        raise ValueError(
            f"Checkpoint {path} has schema {state['schema']!r}, expected {CHECKPOINT_SCHEMA!r}"
        )
    return state


def check_state_dict_compatible(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise ``ValueError`` naming the missing, unexpected and differently shaped keys.

    Args:
        expected (Mapping): the model's decoder state dict.
        found (Mapping): the checkpoint's.
        source (str): the checkpoint path, for the message.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"Decoder in {source} does not match the model:"]
    clip_like = [
        k for k in unexpected if k.startswith(("backbone.", "encoder.", "visual.", "transformer."))
    ]
    if clip_like:
        lines.append(
            f"  it holds CLIP/whole-model keys ({clip_like[0]}, ...): is it an authors' checkpoint? "
            "convert it with tools/convert_official_checkpoint.py"
        )
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:8])}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
    if shapes:
        lines.append(f"  shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
    classifier = [k for k in shapes if k.startswith("classifier.")]
    if classifier:
        lines.append("  the class count differs (classifier shape): check data.num_classes")
    raise ValueError("\n".join(lines))


def _flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(tree, Mapping):
        out: Dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: tree}


def _select(
    flat: Mapping[str, Any], roots: Iterable[str], ignored: Iterable[str]
) -> Dict[str, Any]:
    roots, ignored = tuple(roots), tuple(ignored)

    def under(key: str, names: Tuple[str, ...]) -> bool:
        return any(key == n or key.startswith(n + ".") for n in names)

    return {k: v for k, v in flat.items() if under(k, roots) and not under(k, ignored)}


def check_resume_compatible(
    checkpoint: Mapping[str, Any],
    model: nn.Module,
    config: Any,
    world_size: int,
    source: str,
    keys: Iterable[str] = RESUME_CONFIG_KEYS,
    ignored: Iterable[str] = RESUME_IGNORED_KEYS,
) -> None:
    """Refuse to resume when the architecture or an optimisation-relevant config entry differs.

    Args:
        checkpoint (Mapping): from :func:`load_checkpoint`.
        model (nn.Module): the model about to be trained (possibly wrapped).
        config: the resolved config of this run.
        world_size (int): ranks of this run.
        source (str): the checkpoint path, for messages.
        keys (Iterable[str]): dotted config keys (and their subtrees) that must match.
        ignored (Iterable[str]): dotted keys that may differ.
    """
    check_state_dict_compatible(decoder_of(model).state_dict(), checkpoint["model"], source)
    now = _select(_flatten(to_plain(config)), keys, ignored)
    then = _select(_flatten(checkpoint["config"]), keys, ignored)
    differing = [
        f"{k}: checkpoint {then.get(k, '<absent>')!r} vs now {now.get(k, '<absent>')!r}"
        for k in sorted(set(now) | set(then))
        if now.get(k, "<absent>") != then.get(k, "<absent>")
    ]
    if int(checkpoint["world_size"]) != int(world_size):
        differing.append(f"world size: checkpoint {checkpoint['world_size']} vs now {world_size}")
    if differing:
        raise ValueError(
            f"Cannot resume from {source}: settings that change the optimisation differ "
            f"({len(differing)}):\n  "
            + "\n  ".join(differing)
            + "\nStart a new work dir, or resume with "
            "the same config (--cfg-options) and number of processes."
        )


def load_decoder_checkpoint(
    model: nn.Module, path: str, map_location: Any = "cpu"
) -> Dict[str, Any]:
    """Load decoder weights for inference from a training checkpoint (or a bare decoder state dict).

    Args:
        model (nn.Module): a ``WeCLIP`` (possibly wrapped) or a ``WeCLIPDecoder``.
        path (str): ``iter_N.pth`` (or a ``torch.save``-d decoder state dict).
        map_location: passed to ``torch.load``.

    Returns:
        dict: ``{"iteration": int | None, "config": dict | None}`` from the checkpoint.
    """
    state = _read_checkpoint_file(path, map_location)
    weights = state["model"] if "model" in state and isinstance(state["model"], Mapping) else state
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(
            f"Checkpoint {path}: no decoder state dict ('model' entry of tensors) found"
        )
    decoder = decoder_of(model)
    check_state_dict_compatible(decoder.state_dict(), weights, path)
    decoder.load_state_dict(weights, strict=True)
    iteration = state.get("iteration") if weights is not state else None
    logger.info(
        "Loaded decoder weights from %s%s", path, f" (iteration {iteration})" if iteration else ""
    )
    return {"iteration": iteration, "config": state.get("config") if weights is not state else None}
