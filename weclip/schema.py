"""Config schema: one typed dataclass per config section, checked once, when a config is loaded.

A section's dataclass declares every key: its type (``int``, ``float``, ``bool``, ``str``, ``Optional``,
``Tuple``, ``Literal`` choices, ``Dict``, a nested section) and, with :func:`key`, its default, its range and a
one-line description. :func:`validate_section` checks a config section against it: unknown keys, missing
required keys, wrong types and out-of-range values raise :class:`weclip.errors.ConfigError` naming the key, the
value and what was expected; absent optional keys get their defaults; values come back normalised (tuples for
sequences, floats for float keys given as ints). ``weclip.config.load_config`` runs it for every section, so
library code reads ``cfg.train.max_iters`` and trusts its type and range.

The sections shared by every model are here (``data``, ``optim``, ``sched``, ``train``, ``test``, ``toy``);
each model registers the schema of its ``model`` and ``loss`` sections with its builder
(``weclip.models.registry``).
"""

import dataclasses
import typing
from typing import Any, Dict, Literal, Mapping, Optional, Tuple

from weclip.errors import ConfigError

__all__ = [
    "section",
    "key",
    "validate_section",
    "DataConfig",
    "OptimConfig",
    "SchedConfig",
    "TrainConfig",
    "CRFConfig",
    "TestConfig",
    "ToyConfig",
]

_NO_DEFAULT = dataclasses.MISSING

#: decorator of a schema class: a frozen, keyword-only dataclass (fields in any order)
section = dataclasses.dataclass(frozen=True, kw_only=True)


def key(
    default: Any = _NO_DEFAULT,
    *,
    doc: str = "",
    ge: Optional[float] = None,
    gt: Optional[float] = None,
    le: Optional[float] = None,
    lt: Optional[float] = None,
    nonempty: bool = False,
) -> Any:
    """A schema field: ``default`` (none = required), bounds on numbers (or on every element of a tuple),
    ``nonempty`` for tuples and strings, and a one-line ``doc``."""
    meta = dict(doc=doc, ge=ge, gt=gt, le=le, lt=lt, nonempty=nonempty)
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed in a schema; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is bool:
        return "True or False"
    if hint is str:
        return "a string"
    if hint is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).replace('an ', '').replace('a ', '')}s"
        return f"a list of {len(args)} values"
    if origin is dict:
        return "a dict"
    if dataclasses.is_dataclass(hint):
        return "a dict (section)"
    if hint is type(None):
        return "None"
    return str(hint)


def _fail(name: str, value: Any, expected: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"config key '{name}' = {shown}: expected {expected}")


def _convert(hint: Any, value: Any, name: str) -> Any:
    """``value`` checked against the type ``hint`` (and normalised), or ConfigError."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _fail(name, value, "None")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _fail(name, value, "True or False")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(name, value, "an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _fail(name, value, "a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _fail(name, value, "a string")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))
    if origin is typing.Union:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, name)
            except ConfigError as err:
                errors.append(err)
        raise _fail(name, value, _type_name(hint))
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _fail(name, value, _type_name(hint))
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(name, value, f"a list of {len(args)} values")
        return tuple(_convert(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(name, value, "a dict")
        _, value_hint = typing.get_args(hint)
        return {str(k): _convert(value_hint, v, f"{name}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return validate_section(hint, value, name)
    raise TypeError(f"schema type {hint!r} of '{name}' is not supported")  # a bug in a schema


def _check_bounds(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if meta.get("nonempty") and (value is None or len(value) == 0):
        raise _fail(name, value, "a non-empty value")
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        for bound, ok, text in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
            ("lt", lambda a, b: a < b, "<"),
        ):
            limit = meta.get(bound)
            if limit is not None and not ok(v, limit):
                raise _fail(name, value, f"a value {text} {limit:g}")


def validate_section(cls: Any, values: Any, prefix: str) -> Dict[str, Any]:
    """Check a config section against its schema dataclass ``cls``.

    Args:
        cls: the section's dataclass.
        values (Mapping): the section from the config.
        prefix (str): its dotted name for messages, e.g. ``"train"`` or ``"model.backbone"``.

    Returns:
        dict: every key of the schema, with defaults filled in and values normalised.

    Raises:
        ConfigError: unknown key, missing required key, wrong type or range (key and value named).
    """
    if not isinstance(values, Mapping):
        raise _fail(prefix, values, "a dict (section)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, values)) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}.{unknown[0]}' (known keys of '{prefix}': "
            f"{', '.join(sorted(fields))})"
        )
    out: Dict[str, Any] = {}
    for name, field in fields.items():
        dotted = f"{prefix}.{name}"
        if name in values:
            value = _convert(hints[name], values[name], dotted)
        elif field.default is not _NO_DEFAULT:
            value = field.default
            if dataclasses.is_dataclass(value):  # a nested section's defaults
                value = dataclasses.asdict(value)
        elif field.default_factory is not _NO_DEFAULT:  # type: ignore[misc]
            value = field.default_factory()  # type: ignore[misc]
        else:
            raise ConfigError(f"config key '{dotted}' is missing ({field.metadata.get('doc', '')})")
        _check_bounds(dotted, value, field.metadata)
        out[name] = value
    check = getattr(cls, "check", None)
    if check is not None:
        check(out, prefix)
    return out


# --------------------------------------------------------------------------------------- shared sections
@section
class DataConfig:
    """``data``: a dataset in the VOC folder layout (``weclip/data/dataset.py``)."""

    name: str = key(doc="dataset name in reports: 'VOC', 'COCO', 'toy', ...", nonempty=True)
    type: Literal["folder", "coco"] = key(
        doc="'folder' = VOC layout; 'coco' adds train/ val/ levels"
    )
    root: str = key(doc="folder holding img_dir and mask_dir")
    split_dir: str = key(doc="folder of the split lists <split>.txt and the label file")
    label_file: str = key("cls_labels.txt", doc="image-level label file in split_dir")
    img_dir: str = key("JPEGImages")
    mask_dir: str = key("SegmentationClassAug")
    img_suffix: str = key(".jpg")
    mask_suffix: str = key(".png")
    train_split: str = key(doc="split list of the training images")
    val_split: str = key(doc="default split of tools/infer.py")
    mask_free_splits: Tuple[str, ...] = key(("test",), doc="splits without masks (VOC test)")
    train_mask_dir: Optional[str] = key(
        None,
        doc="training targets (pseudo-masks / GT) for mask-supervised models; None = image labels only",
    )
    num_classes: int = key(doc="C, including background", ge=2)
    class_names: Tuple[str, ...] = key(doc="C names, index = class id (tables)")
    prompt_class_names: Tuple[str, ...] = key(doc="C-1 prompted foreground names (spec §2)")
    prompt_bg_names: Tuple[str, ...] = key((), doc="background prompt names (spec §2)")
    crop_size: int = key(320, doc="training crop side (spec §8)", ge=1)
    scale_range: Tuple[float, float] = key((0.5, 2.0), doc="random rescale range (spec §8)", gt=0)
    flip_prob: float = key(0.5, doc="horizontal flip probability (spec §8)", ge=0, le=1)
    ignore_index: int = key(255, doc="mask value of ignored pixels", ge=0, le=255)

    @staticmethod
    def check(values: Dict[str, Any], prefix: str) -> None:
        c = values["num_classes"]
        for name, want in (("class_names", c), ("prompt_class_names", c - 1)):
            if len(values[name]) != want:
                raise ConfigError(
                    f"config key '{prefix}.{name}' has {len(values[name])} names, expected {want} "
                    f"({prefix}.num_classes = {c})"
                )
        lo, hi = values["scale_range"]
        if lo > hi:
            raise ConfigError(f"config key '{prefix}.scale_range' = {(lo, hi)}: expected lo <= hi")


@section
class OptimConfig:
    """``optim``: AdamW with one group holding every trained parameter (spec §8)."""

    type: Literal["AdamW"] = key("AdamW")
    lr: float = key(doc="base lr; the trained parameters get lr * head_lr_mult", gt=0)
    head_lr_mult: float = key(1.0, gt=0)
    betas: Tuple[float, float] = key((0.9, 0.999), ge=0, lt=1)
    eps: float = key(1e-8, gt=0)
    weight_decay: float = key(0.01, ge=0)


@section
class SchedConfig:
    """``sched``: linear warm-up, then poly (spec §8)."""

    warmup_iters: int = key(50, ge=0)
    warmup_ratio: float = key(1e-6, ge=0, le=1)
    power: float = key(1.0, ge=0)


@section
class TrainConfig:
    """``train``: the training loop (``weclip/engine/trainer.py``)."""

    max_iters: int = key(doc="training iterations", ge=1)
    batch_size: int = key(doc="TOTAL batch over all processes", ge=1)
    seed: int = key(1, ge=0, lt=2**32)
    num_workers: int = key(4, doc="data-loader processes per rank", ge=0)
    amp: bool = key(False, doc="bf16 autocast of the forward on CUDA")
    # torch.compile of the trained module (WeCLIP: the decoder) through nn.Module.compile(): same
    # parameters and checkpoint keys, eager-equal within fp32 rounding; Dropout2d then draws its masks
    # from inductor's generator, so a compiled run does not replay an eager one bit for bit. The
    # frozen CLIP stays eager. Costs a compilation (tens of seconds) at the first step (docs/speed.md).
    compile: bool = key(False, doc="torch.compile the trained module (opt-in)")
    log_interval: int = key(50, ge=1)
    vis_interval: int = key(500, doc="0 = no TensorBoard images", ge=0)
    ckpt_interval: int = key(2000, doc="0 = only the last iteration", ge=0)
    eval_interval: int = key(2000, doc="0 = no in-training validation", ge=0)
    eval_split: str = key("train")
    eval_max_images: Optional[int] = key(None, ge=1)
    check_sync: bool = key(False, doc="all-gather a decoder checksum after every step")


@section
class CRFConfig:
    """``test.crf``: DenseCRF (spec §9)."""

    iter_max: int = key(10, ge=1)
    pos_xy_std: float = key(3.0, gt=0)
    pos_w: float = key(3.0, ge=0)
    bi_xy_std: float = key(64.0, gt=0)
    bi_rgb_std: float = key(5.0, gt=0)
    bi_w: float = key(4.0, ge=0)
    prob_clip: float = key(1e-5, gt=0, le=1)


@section
class TestConfig:
    """``test``: multi-scale + flip inference (spec §9)."""

    resize_long: Optional[int] = key(
        512, doc="long side before the scales; None keeps the size", ge=1
    )
    scales: Tuple[float, ...] = key(
        (1.0,), doc="the first is the reference size", gt=0, nonempty=True
    )
    flip: bool = key(True)
    crf: CRFConfig = key(CRFConfig())


@section
class ToyConfig:
    """``toy``: the synthetic world's generator (``weclip/data/toy.py``, ``tools/make_toy_data.py``)."""

    seed: int = key(0, ge=0)
    num_train: int = key(1200, ge=1)
    num_val: int = key(300, ge=1)
    image_size: int = key(112, ge=16)
    num_classes: int = key(4, ge=1)
    min_objects: int = key(1, ge=0)
    max_objects: int = key(2, ge=0)
    min_size: float = key(0.28, gt=0, lt=1)
    max_size: float = key(0.55, gt=0, lt=1)
    max_overlap: float = key(0.1, ge=0, le=1)
