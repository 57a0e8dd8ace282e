"""What a ``metrics.json`` says besides the scores: the settings of the measurement, one stable schema per
tool, read back by ``tools/report.py`` (``weclip.evaluation.report``).

A record is ``weclip.evaluation.metrics.metrics_payload`` (the scores, schema ``weclip.metrics/v1``) plus the
extras below, in this order.
"""

import json
from typing import Any, Dict, Mapping, Optional, Sequence

__all__ = [
    "INFER_EXTRAS",
    "PSEUDO_EXTRAS",
    "setting_label",
    "slug",
    "model_label",
    "infer_extras",
    "pseudo_extras",
]

# Keys tools/infer.py adds to the payload.
INFER_EXTRAS = (
    "source",  # "tools/infer.py"
    "setting",  # "single-scale", "MS(1,0.75)+flip", "MS(1,0.75)+flip+CRF", ... (setting_label)
    "dataset",  # cfg.data.name: "VOC", "COCO", "toy", ...
    "split",
    "scales",  # list of floats; the first is the reference size
    "flip",
    "crf",
    "crf_params",  # test.crf when crf is true, else null
    "resize_long",
    "model",  # cfg.model.type (+ " + " + model.method.type for a CAM-improvement method: model_label)
    "checkpoint",
    "iteration",  # training iteration of the checkpoint (null for a bare state dict)
    "train_seed",  # train.seed stored in the checkpoint (runs differing only here are averaged by report.py)
    "config",
    "cfg_options",
    "world_size",
)
# Keys tools/eval_pseudo.py adds to the payload.
PSEUDO_EXTRAS = (
    "source",  # "tools/eval_pseudo.py"
    "row",  # e.g. "static_par_crf"
    "row_title",
    "refine",  # "none" | "static" | "rfm" (the row's refinement)
    "par",
    "crf",
    "crf_params",
    "bg_power",
    "fit",  # "crop" | "resize"
    "dataset",
    "split",
    "model",
    "checkpoint",
    "iteration",
    "train_seed",
    "config",
    "cfg_options",
    "world_size",
)


def setting_label(scales: Sequence[float], flip: bool, crf: bool) -> str:
    """The name of an inference setting, as it appears in metrics.json and in report tables.

    Args:
        scales (Sequence[float]): test scales (the first is the reference).
        flip (bool): flip averaging.
        crf (bool): DenseCRF post-processing.

    Returns:
        str: "single-scale" for (1.0,) without flip, "single-scale+flip", "MS(1,0.75)+flip", and "+CRF" when
        ``crf``.
    """
    scales = [float(s) for s in scales]
    base = "single-scale" if scales == [1.0] else "MS(" + ",".join(f"{s:g}" for s in scales) + ")"
    return base + ("+flip" if flip else "") + ("+CRF" if crf else "")


def slug(text: str) -> str:
    """A folder-safe version of a label: "MS(1,0.75)+flip+CRF" -> "ms_1_0.75_flip_crf"."""
    out = "".join(c.lower() if c.isalnum() or c == "." else "_" for c in text)
    return "_".join(part for part in out.split("_") if part)


def model_label(cfg: Any) -> str:
    """The model's name in records and report rows: ``cfg.model.type``, plus the CAM-improvement method of
    a CAM classifier (``model.method.type``, docs/cam_methods.md) when one is set, e.g.
    "CAMClassifier + seam"."""
    label = str(cfg.model.type)
    method = cfg.model.get("method")
    if isinstance(method, Mapping) and method.get("type", "none") != "none":
        label += f" + {method['type']}"
    return label


def _common(
    cfg: Any,
    split: str,
    model_info: Mapping[str, Any],
    config_path: str,
    cfg_options: Mapping[str, Any],
    world_size: int,
) -> Dict[str, Any]:
    return {
        "dataset": str(cfg.data.name),
        "split": split,
        "model": model_label(cfg),
        "checkpoint": model_info.get("checkpoint"),
        "iteration": model_info.get("iteration"),
        "train_seed": model_info.get("train_seed"),
        "config": config_path,
        "cfg_options": json.loads(json.dumps(dict(cfg_options), default=str)),
        "world_size": int(world_size),
    }


def infer_extras(
    *,
    cfg: Any,
    split: str,
    scales: Sequence[float],
    flip: bool,
    crf: bool,
    model_info: Mapping[str, Any],
    config_path: str,
    cfg_options: Mapping[str, Any],
    world_size: int,
) -> Dict[str, Any]:
    """The :data:`INFER_EXTRAS` of one inference setting (JSON-ready)."""
    extras = {
        "source": "tools/infer.py",
        "setting": setting_label(scales, flip, crf),
        "scales": [float(s) for s in scales],
        "flip": bool(flip),
        "crf": bool(crf),
        "crf_params": dict(cfg.test.crf) if crf else None,
        "resize_long": cfg.test.resize_long,
        **_common(cfg, split, model_info, config_path, cfg_options, world_size),
    }
    return {k: extras[k] for k in INFER_EXTRAS}


def pseudo_extras(
    *,
    row: str,
    row_title: str,
    cfg: Any,
    split: str,
    fit: str,
    model_info: Mapping[str, Any],
    config_path: str,
    cfg_options: Mapping[str, Any],
    world_size: int,
    bg_power: Optional[float],
) -> Dict[str, Any]:
    """The :data:`PSEUDO_EXTRAS` of one pseudo-label row (JSON-ready)."""
    crf = row.endswith("_crf")
    base = row[: -len("_crf")] if crf else row
    refine = base[: -len("_par")] if base.endswith("_par") else base
    extras = {
        "source": "tools/eval_pseudo.py",
        "row": row,
        "row_title": row_title,
        "refine": "none" if refine == "cam" else refine,
        "par": base.endswith("_par"),
        "crf": crf,
        "crf_params": dict(cfg.test.crf) if crf else None,
        "bg_power": bg_power,
        "fit": fit,
        **_common(cfg, split, model_info, config_path, cfg_options, world_size),
    }
    return {k: extras[k] for k in PSEUDO_EXTRAS}
