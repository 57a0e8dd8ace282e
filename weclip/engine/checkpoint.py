"""Training checkpoints: decoder weights + everything needed for an exact resume.

Layout (``WORK_DIR`` = the run's work dir)::

    WORK_DIR/checkpoints/iter_2000.pth     one file per save (iteration number without zero padding)
    WORK_DIR/checkpoints/latest            a text file holding the file name of the newest one ("iter_2000.pth")

Both are written atomically (temporary file + rename, ``weclip.utils.io``): a run killed while saving leaves
the previous ``latest`` intact. Only rank 0 writes; the per-rank states are gathered to it first, so one file
holds the whole run. The dictionary (``schema = "weclip.ckpt/v1"``)::

    model           state dict of the model's trainable module (``model.trainable_module()``: WeCLIP's
                    decoder, keys like "fuse.weight"; no CLIP key)
    optimizer       AdamW state dict
    scheduler       LambdaLR state dict
    iteration       completed training iterations (the next one to run is iteration + 1)
    world_size      number of ranks that trained
    rng_states      list, one per rank: {"python", "numpy", "torch"[, "cuda"]} (weclip.utils.seed)
    data_positions  list, one per rank: samples this rank's InfiniteSampler has handed out
    config          the resolved config as a plain dict
    meta            {"num_classes", "time", "torch", "weclip"}

Resume checks (:func:`check_resume_compatible`): the trained module's keys and shapes and the class count
must match the model being trained, and so must the config entries that change the optimisation
(:data:`RESUME_CONFIG_KEYS`, the world size included). Paths in :data:`RESUME_IGNORED_KEYS` may differ
(data moved to another disk).

:func:`load_weights` loads trained weights for inference from any of: a training checkpoint, a converted or
bare state dict of the trainable module, or a checkpoint saved by the authors' code (whole-model state dict,
through the model's ``load_official_state``).
"""

import logging
import os
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

import weclip
from weclip.config import to_plain
from weclip.errors import CheckpointError, MissingFileError
from weclip.utils.io import atomic_path, atomic_write_text

__all__ = [
    "CHECKPOINT_SCHEMA",
    "CHECKPOINT_DIR",
    "LATEST_NAME",
    "RESUME_CONFIG_KEYS",
    "RESUME_IGNORED_KEYS",
    "unwrap_model",
    "trainable_of",
    "trainable_state_dict",
    "checkpoint_dir",
    "checkpoint_name",
    "checkpoint_work_dir",
    "save_checkpoint",
    "find_latest_checkpoint",
    "load_checkpoint",
    "check_state_dict_compatible",
    "check_resume_compatible",
    "load_weights",
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


def trainable_of(model: nn.Module) -> nn.Module:
    """The trainable module of a (possibly wrapped) model of the library (``model.trainable_module()``)."""
    inner = unwrap_model(model)
    if not hasattr(inner, "trainable_module"):
        raise TypeError(
            f"{type(inner).__name__} does not follow the model interface (no trainable_module(); "
            "see docs/architecture.md)"
        )
    return inner.trainable_module()


def trainable_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The trained weights, detached CPU copies (keys relative to the trainable module, no CLIP key)."""
    return {k: v.detach().cpu().clone() for k, v in trainable_of(model).state_dict().items()}


def checkpoint_dir(work_dir: str) -> str:
    """``WORK_DIR/checkpoints``."""
    return os.path.join(work_dir, CHECKPOINT_DIR)


def checkpoint_name(iteration: int) -> str:
    """``iter_<iteration>.pth`` (no zero padding)."""
    return f"iter_{int(iteration)}.pth"


def checkpoint_work_dir(checkpoint: str) -> str:
    """The run folder of a checkpoint: ``WORK_DIR`` for ``WORK_DIR/checkpoints/iter_N.pth``, else its folder."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.basename(folder) == CHECKPOINT_DIR:
        return os.path.dirname(folder)
    return folder


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
        model (nn.Module): the (possibly DDP-wrapped) model; only its trainable module is saved.
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
        "model": trainable_state_dict(model),
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
    try:
        with open(pointer, encoding="utf-8") as f:
            name = f.read(1024).strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{pointer}: cannot read the pointer to the newest checkpoint ({type(err).__name__}); "
            "delete it, or resume from a file with --resume PATH"
        ) from None
    if not name or os.sep in name or (os.altsep and os.altsep in name) or "\n" in name:
        raise CheckpointError(
            f"{pointer}: expected a checkpoint file name such as 'iter_2000.pth', got {name[:60]!r}; "
            "delete it, or resume from a file with --resume PATH"
        )
    path = os.path.join(checkpoint_dir(work_dir), name)
    if not os.path.isfile(path):
        raise MissingFileError(f"{pointer} names {name}, but {path} does not exist")
    return path


def _read_checkpoint_file(path: str, map_location: Any) -> Mapping[str, Any]:
    """``torch.load`` a checkpoint file, with one clear error for a missing, unreadable or non-dict file."""
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        # RNG states hold numpy arrays and python tuples: not loadable with weights_only=True.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated or not a torch file?): {first}"
        ) from err
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
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
        raise CheckpointError(
            f"{path} is not a training checkpoint of this library (missing {missing}); it cannot be "
            "resumed (weights alone are loaded for inference by load_weights)"
        )
    if state["schema"] != CHECKPOINT_SCHEMA:
        raise CheckpointError(
            f"checkpoint {path} has schema {state['schema']!r}, expected {CHECKPOINT_SCHEMA!r}"
        )
    return state


def check_state_dict_compatible(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise CheckpointError naming the missing, unexpected and differently shaped keys.

    Args:
        expected (Mapping): the model's trainable state dict.
        found (Mapping): the checkpoint's.
        source (str): the checkpoint path, for the message.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        k
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"the weights in {source} do not fit the model:"]
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
        text = "; ".join(
            f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in shapes[:8]
        )
        lines.append(f"  shape mismatches ({len(shapes)}): {text}")
    # Blame the class count only when it is the one difference: every mismatch is the first dimension of
    # the classifier (a decoder of another width or depth differs elsewhere too).
    only_classes = (
        not missing
        and not unexpected
        and all(
            k.startswith("classifier.")
            and tuple(found[k].shape[1:]) == tuple(expected[k].shape[1:])
            for k in shapes
        )
    )
    if only_classes:
        k = shapes[0]
        lines.append(
            f"  the class count differs ({found[k].shape[0]} in the checkpoint, "
            f"{expected[k].shape[0]} in the config): check data.num_classes / the config"
        )
    elif shapes or missing or unexpected:
        lines.append(
            "  another architecture: check model.decoder (widths, layers) against the config it was trained with"
        )
    raise CheckpointError("\n".join(lines))


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
    check_state_dict_compatible(trainable_of(model).state_dict(), checkpoint["model"], source)
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
        raise CheckpointError(
            f"Cannot resume from {source}: settings that change the optimisation differ "
            f"({len(differing)}):\n  "
            + "\n  ".join(differing)
            + "\nStart a new work dir, or resume with "
            "the same config (--cfg-options) and number of processes."
        )


def _is_official(state: Mapping[str, Any]) -> bool:
    """A whole-model state dict saved by the authors' code (decoder and CLIP under their names)."""
    keys = [k for k in state if isinstance(k, str)]
    return bool(keys) and any(k.startswith(("decoder_fts_fuse.", "encoder.")) for k in keys)


def load_weights(model: nn.Module, path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load trained weights into ``model.trainable_module()`` for inference.

    Accepted files: a training checkpoint (``iter_N.pth``), a converted or bare state dict of the trainable
    module, or a whole-model state dict saved by the authors' code (renamed by the model's
    ``load_official_state``, e.g. ``weclip.models.official_names`` for WeCLIP).

    Args:
        model (nn.Module): a model of the library (possibly wrapped).
        path (str): the file.
        map_location: passed to ``torch.load``.

    Returns:
        dict: ``{"iteration": int | None, "config": dict | None, "official": bool}``.
    """
    state = _read_checkpoint_file(path, map_location)
    inner = unwrap_model(model)
    if _is_official(state):
        if not hasattr(inner, "load_official_state"):
            raise CheckpointError(
                f"{path} looks like a checkpoint of the authors' code, but {type(inner).__name__} cannot "
                "load those"
            )
        try:
            inner.load_official_state(state)
        except (KeyError, ValueError) as err:
            text = err.args[0] if err.args else str(err)
            raise CheckpointError(f"{path}: {text}") from None
        logger.info("Loaded the authors' checkpoint %s", path)
        return {"iteration": None, "config": None, "official": True}
    weights = state["model"] if isinstance(state.get("model"), Mapping) else state
    if not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: no state dict of tensors ('model' entry) found")
    module = trainable_of(model)
    check_state_dict_compatible(module.state_dict(), weights, path)
    module.load_state_dict(weights, strict=True)
    wrapped = weights is not state
    iteration = state.get("iteration") if wrapped else None
    logger.info("Loaded weights from %s%s", path, f" (iteration {iteration})" if iteration else "")
    return {
        "iteration": iteration,
        "config": state.get("config") if wrapped else None,
        "official": False,
    }
