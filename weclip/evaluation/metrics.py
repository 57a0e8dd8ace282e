"""Confusion-matrix segmentation metrics (spec §9): per-class IoU, mIoU, pixel and class accuracy.

The matrix is C×C int64 with rows = ground truth and columns = prediction. Only pixels whose ground
truth lies in [0, C) are counted, so the ignore label (255) never enters it.

Which classes enter the mean (mIoU)
-----------------------------------
IoU_c = TP_c / (GT_c + Pred_c − TP_c), GT_c = row sum, Pred_c = column sum (over counted pixels).
The denominator is zero exactly when GT_c = 0 and Pred_c = 0, because TP_c ≤ min(GT_c, Pred_c).
So "classes present in GT or prediction" and "classes with GT_c + Pred_c − TP_c > 0" are the same
set, and a plain ``nanmean`` of the IoU vector averages over it: ``miou_gt_or_pred`` here.

The authors' ``utils/evaluate.py:scores`` goes one step further: it keeps ``valid = GT_c > 0`` and
takes the ``nanmean`` of ``iou[valid]`` (spec §9: "nanmean of IoU over classes with at least one GT
pixel"). The two means differ only when a class is predicted somewhere but has no GT pixel: it
counts as IoU 0 in ``miou_gt_or_pred`` and is left out of the authors' mean. On full VOC val and
COCO val every class has GT, so they agree; on subsets and toy data they can differ. ``miou``
follows the authors.

Mean class accuracy is ``nanmean(TP_c / GT_c)``, i.e. over classes with GT (as the authors).

``metrics.json`` schema (``metrics_payload``); rates are fractions in [0, 1] as python floats, and
``null`` when undefined::

    {
      "schema": "weclip.metrics/v1",
      "miou": float | null,             # authors' mIoU: mean IoU over classes with GT pixels
      "miou_gt_or_pred": float | null,  # mean IoU over classes present in GT or prediction
      "pixel_acc": float | null,        # sum TP / number of counted pixels
      "mean_acc": float | null,         # mean of TP_c / GT_c over classes with GT pixels
      "per_class_iou": {name: float | null},  # null where GT_c + Pred_c - TP_c = 0
      "per_class_acc": {name: float | null},  # null where GT_c = 0
      "per_class_gt_pixels": {name: int},
      "num_images": int,                # images accumulated (over all ranks after all_reduce)
      "num_pixels": int,                # pixels counted (GT in [0, C))
      "num_classes": int,
      "ignore_index": int,
      ...                               # caller extras (split, checkpoint, scales, flip, crf...)
    }
"""

import json
import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from weclip.utils.dist import all_reduce_sum
from weclip.utils.io import atomic_write_text

__all__ = [
    "ConfusionMatrix",
    "scores_from_hist",
    "metrics_payload",
    "format_table",
    "write_metrics_json",
    "METRICS_SCHEMA",
]

logger = logging.getLogger("weclip")

METRICS_SCHEMA = "weclip.metrics/v1"

LabelMap = Union[torch.Tensor, np.ndarray]


def _as_long_tensor(x: LabelMap, what: str, name: Optional[str]) -> torch.Tensor:
    """Return ``x`` as a flat int64 torch tensor (kept on its device)."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(
                f"{_where(name)}{what} must hold integer labels, got numpy dtype {x.dtype}"
            )
        arr = np.ascontiguousarray(x, dtype=np.int64)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy()).reshape(-1)
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(
                f"{_where(name)}{what} must hold integer labels, got torch dtype {x.dtype}"
            )
        return x.detach().reshape(-1).long()
    raise TypeError(
        f"{_where(name)}{what} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
    )


def _where(name: Optional[str]) -> str:
    return f"image '{name}': " if name else ""


class ConfusionMatrix:
    """C×C confusion matrix (rows = ground truth, columns = prediction) accumulated over images.

    Args:
        num_classes (int): C, including background.
        ignore_index (int): the GT ignore label, reported in the payload (every GT value outside
            [0, C) is skipped). Default: 255.

    Attributes:
        hist (torch.Tensor): C×C int64 on the CPU.
        num_images (int): number of ``update`` calls' images.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.hist = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.num_images = 0

    def update(
        self,
        pred: LabelMap,
        gt: LabelMap,
        name: Optional[str] = None,
        num_images: Optional[int] = None,
    ) -> None:
        """Add one image (H×W) or a batch (B×H×W) of label maps.

        Args:
            pred (Tensor | ndarray): predicted class ids, same shape as ``gt``, any integer dtype.
            gt (Tensor | ndarray): ground-truth class ids; values outside [0, C) (255) are ignored.
            name (str, optional): image name, used in error messages.
            num_images (int, optional): how many images this call adds; default 1 for a 2-D map
                and B for a 3-D batch.
        """
        if tuple(pred.shape) != tuple(gt.shape):
            raise ValueError(
                f"{_where(name)}prediction shape {tuple(pred.shape)} != "
                f"ground-truth shape {tuple(gt.shape)}"
            )
        C = self.num_classes
        p = _as_long_tensor(pred, "prediction", name)
        g = _as_long_tensor(gt, "ground truth", name)
        if p.device != g.device:
            p = p.to(g.device)
        keep = (g >= 0) & (g < C)
        p, g = p[keep], g[keep]
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= C):
            bad = p[(p < 0) | (p >= C)].unique()[:5].tolist()
            raise ValueError(
                f"{_where(name)}prediction holds class ids outside [0, {C}) at counted "
                f"pixels: {bad}"
            )
        counts = torch.bincount(g * C + p, minlength=C * C)  # row = gt, column = prediction
        self.hist += counts.reshape(C, C).cpu()
        if num_images is None:
            num_images = int(gt.shape[0]) if len(gt.shape) == 3 else 1
        self.num_images += int(num_images)

    def all_reduce(self) -> None:
        """Sum the matrix and the image count over all ranks (no-op without torch.distributed).

        Every rank must call it; the evaluation loop gives each image to exactly one rank, so the sums
        count every image once.
        """
        flat = torch.cat(
            [self.hist.reshape(-1), torch.tensor([self.num_images], dtype=torch.int64)]
        )
        flat = all_reduce_sum(flat)
        self.hist = flat[:-1].reshape(self.num_classes, self.num_classes).clone()
        self.num_images = int(flat[-1])

    def scores(self) -> Dict[str, Any]:
        """The metrics of the current matrix; see ``scores_from_hist``."""
        return scores_from_hist(self.hist)


def scores_from_hist(hist: Union[torch.Tensor, np.ndarray]) -> Dict[str, Any]:
    """Metrics of a C×C confusion matrix (rows = GT, columns = prediction), spec §9.

    Args:
        hist (Tensor | ndarray): C×C counts.

    Returns:
        dict: ``iou`` (C,) float64, NaN where GT_c + Pred_c − TP_c = 0; ``acc`` (C,), NaN where
        GT_c = 0; ``miou`` (mean IoU over classes with GT, the authors'); ``miou_gt_or_pred``
        (nanmean of ``iou``); ``pixel_acc``; ``mean_acc`` (python floats, NaN when undefined);
        ``gt_pixels`` (C,) int64; ``pred_pixels`` (C,) int64; ``num_pixels`` (int).
    """
    h = hist.cpu().numpy() if isinstance(hist, torch.Tensor) else np.asarray(hist)
    h = h.astype(np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"confusion matrix must be square C×C, got shape {h.shape}")
    tp = np.diag(h)
    gt = h.sum(axis=1)
    pred = h.sum(axis=0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    has_gt = gt > 0
    total = h.sum()
    return {
        "iou": iou,
        "acc": acc,
        "miou": float(iou[has_gt].mean()) if has_gt.any() else math.nan,
        "miou_gt_or_pred": float(np.nanmean(iou)) if (union > 0).any() else math.nan,
        "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_acc": float(acc[has_gt].mean()) if has_gt.any() else math.nan,
        "gt_pixels": gt.astype(np.int64),
        "pred_pixels": pred.astype(np.int64),
        "num_pixels": int(total),
    }


def _float_or_none(x: float) -> Optional[float]:
    return None if x is None or math.isnan(x) else float(x)


def _class_names(num_classes: int, class_names: Optional[Sequence[str]]) -> List[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"{len(names)} class names given for a {num_classes}-class confusion matrix"
        )
    if len(set(names)) != len(names):
        raise ValueError("class names must be unique (they are the keys of per_class_iou)")
    return names


def metrics_payload(
    cm: ConfusionMatrix,
    class_names: Optional[Sequence[str]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The ``metrics.json`` payload of a confusion matrix (schema in the module docstring).

    Args:
        cm (ConfusionMatrix): the accumulated (and, under DDP, all-reduced) matrix.
        class_names (Sequence[str], optional): C names (index = class id); default "0", "1", ...
        extra (Mapping[str, Any], optional): additional JSON-serialisable keys (split,
            checkpoint, ...); they may not overwrite the metric keys.

    Returns:
        dict: JSON-ready; rates are python floats or ``None``.
    """
    names = _class_names(cm.num_classes, class_names)
    s = cm.scores()
    payload: Dict[str, Any] = {
        "schema": METRICS_SCHEMA,
        "miou": _float_or_none(s["miou"]),
        "miou_gt_or_pred": _float_or_none(s["miou_gt_or_pred"]),
        "pixel_acc": _float_or_none(s["pixel_acc"]),
        "mean_acc": _float_or_none(s["mean_acc"]),
        "per_class_iou": {n: _float_or_none(v) for n, v in zip(names, s["iou"].tolist())},
        "per_class_acc": {n: _float_or_none(v) for n, v in zip(names, s["acc"].tolist())},
        "per_class_gt_pixels": {n: int(v) for n, v in zip(names, s["gt_pixels"].tolist())},
        "num_images": int(cm.num_images),
        "num_pixels": s["num_pixels"],
        "num_classes": cm.num_classes,
        "ignore_index": cm.ignore_index,
    }
    for key, value in (extra or {}).items():
        if key in payload:
            raise KeyError(f"extra key '{key}' would overwrite a metric key of metrics.json")
        payload[key] = value
    return payload


def format_table(payload: Mapping[str, Any], title: Optional[str] = None) -> str:
    """A printable per-class table (IoU and accuracy in %) with the summary line, from a payload.

    Args:
        payload (Mapping): output of ``metrics_payload``.
        title (str, optional): first line.

    Returns:
        str: the table (no trailing newline).
    """

    def pct(v: Optional[float]) -> str:
        return "     -" if v is None else f"{100.0 * v:6.2f}"

    names = list(payload["per_class_iou"].keys())
    width = max([len("class")] + [len(n) for n in names])
    lines = [title] if title else []
    header = f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}  {'GT px':>12}"
    lines += [header, "-" * len(header)]
    for n in names:
        gt_px = payload.get("per_class_gt_pixels", {}).get(n, 0)
        iou, acc = pct(payload["per_class_iou"][n]), pct(payload["per_class_acc"][n])
        lines.append(f"{n:<{width}}  {iou}  {acc}  {gt_px:>12d}")
    lines.append("-" * len(header))
    summary = {
        k: pct(payload[k]).strip() for k in ("miou", "miou_gt_or_pred", "pixel_acc", "mean_acc")
    }
    lines.append(
        f"mIoU {summary['miou']}  (GT-or-pred classes: {summary['miou_gt_or_pred']})  "
        f"pixel acc {summary['pixel_acc']}  mean acc {summary['mean_acc']}  "
        f"images {payload['num_images']}"
    )
    return "\n".join(lines)


def write_metrics_json(path: str, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically as indented JSON (NaN is refused: use ``None``)."""
    text = json.dumps(payload, indent=2, allow_nan=False)
    atomic_write_text(path, text + "\n")
    logger.info("metrics written to %s", path)
