"""From CAMs to pseudo-masks: background threshold, multi-scale + flip CAMs, threshold sweeps.

The classic CAM pipeline (Zhou et al. 2016, https://arxiv.org/abs/1512.04150; as used by
AffinityNet, https://arxiv.org/abs/1803.10464, and IRN, https://arxiv.org/abs/1904.05044):

* **Background by threshold**: with normalised CAMs M_k in [0, 1] of the K foreground classes,
  the background score is a constant t and the label of a pixel is
  argmax(t, M_1, ..., M_K) (0 = background, k = class k). Classes absent from the image-level
  labels are masked to 0 first, so only present classes compete. Ties go to the background
  (``torch.argmax`` takes the first maximum): foreground needs M_k > t. IRN's default for
  evaluating CAMs is t = 0.15 (``cam_eval_thres``); the sweep picks it per model.
* **Background by power** (AffinityNet): M_bg = (1 - max_k M_k)^alpha.
  Foreground wins where m > (1 - m)^alpha, m = max_k M_k: alpha = 1 is t = 0.5, alpha = 4 is
  t ~ 0.2755, alpha = 16 is t ~ 0.1228, alpha = 32 is t ~ 0.0770.
* **Multi-scale + flip**: raw (ReLU'd, unnormalised) CAMs of the image resized by each scale and
  of its mirror image (mirrored back) are upsampled bilinearly to one size, summed, and the sum is
  normalised by its per-map maximum (IRN's ``make_cam`` / AffinityNet's ``infer_cls``; scales
  (1.0, 0.5, 1.5, 2.0) there).
* **Sweep**: :class:`ThresholdSweep` accumulates one :class:`~weclip.evaluation.metrics.
  ConfusionMatrix` per threshold in a single pass over the data; :func:`sweep_rows` /
  :func:`write_sweep_csv` / :func:`format_sweep_table` turn the sweeps of several checkpoints
  into rows, a CSV file and a printable mIoU table (thresholds x checkpoints), and
  :func:`best_row` picks both.
"""

import csv
import io
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from weclip.baselines.classifier import normalize_cams
from weclip.evaluation.metrics import ConfusionMatrix
from weclip.utils.io import atomic_write_text

__all__ = [
    "DEFAULT_SCALES",
    "DEFAULT_THRESHOLDS",
    "mask_absent",
    "background_scores",
    "scores_with_background",
    "cams_to_labels",
    "multiscale_flip_cams",
    "ThresholdSweep",
    "sweep_rows",
    "best_row",
    "format_sweep_table",
    "write_sweep_csv",
    "SWEEP_COLUMNS",
]

DEFAULT_SCALES: Tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)  # IRN / AffinityNet CAM inference
# 0.10, 0.15, ..., 0.90 (the 0.1-0.9 range, in IRN's 0.05 steps around its 0.15 default)
DEFAULT_THRESHOLDS: Tuple[float, ...] = tuple(round(0.10 + 0.05 * i, 2) for i in range(17))
SWEEP_COLUMNS = (
    "checkpoint",
    "threshold",
    "miou",
    "miou_gt_or_pred",
    "pixel_acc",
    "mean_acc",
    "num_images",
)


def _check_cams(cams: torch.Tensor, cls_labels: Optional[torch.Tensor]) -> None:
    if cams.dim() != 4:
        raise ValueError(f"CAMs are (B, K, h, w), got {tuple(cams.shape)}")
    if cls_labels is not None and tuple(cls_labels.shape) != tuple(cams.shape[:2]):
        raise ValueError(
            f"cls_labels {tuple(cls_labels.shape)} do not match CAMs (B, K) = "
            f"{tuple(cams.shape[:2])}"
        )


def mask_absent(cams: torch.Tensor, cls_labels: Optional[torch.Tensor]) -> torch.Tensor:
    """Zero the maps of classes not in the image-level labels ((B, K, h, w), (B, K))."""
    _check_cams(cams, cls_labels)
    if cls_labels is None:
        return cams
    return cams * (cls_labels > 0).to(cams.dtype)[:, :, None, None]


def background_scores(
    cams: torch.Tensor,
    cls_labels: Optional[torch.Tensor] = None,
    mode: str = "threshold",
    value: float = 0.15,
) -> torch.Tensor:
    """Background score map (B, 1, h, w).

    Args:
        cams (torch.Tensor): (B, K, h, w) normalised CAMs.
        cls_labels (torch.Tensor, optional): (B, K); absent classes do not count in the max.
        mode (str): "threshold" (constant ``value``) or "power" ((1 - max_k M_k) ** ``value``,
            AffinityNet's alpha).
        value (float): the threshold t or the exponent alpha.
    """
    cams = mask_absent(cams, cls_labels)
    if mode == "threshold":
        return torch.full_like(cams[:, :1], float(value))
    if mode == "power":
        peak = cams.amax(dim=1, keepdim=True) if cams.shape[1] else torch.zeros_like(cams[:, :1])
        return (1.0 - peak).clamp(min=0.0).pow(float(value))
    raise ValueError(f"background mode must be 'threshold' or 'power', got {mode!r}")


def scores_with_background(
    cams: torch.Tensor,
    cls_labels: Optional[torch.Tensor] = None,
    mode: str = "threshold",
    value: float = 0.15,
) -> torch.Tensor:
    """(B, K+1, h, w): background score (channel 0) and the CAMs with absent classes zeroed.

    Channel c is class id c, so ``argmax(dim=1)`` gives the pseudo-label.
    """
    bg = background_scores(cams, cls_labels, mode, value)
    return torch.cat([bg, mask_absent(cams, cls_labels)], dim=1)


def cams_to_labels(
    cams: torch.Tensor,
    cls_labels: Optional[torch.Tensor] = None,
    bg_threshold: float = 0.15,
    out_size: Optional[Tuple[int, int]] = None,
    mode: str = "threshold",
) -> torch.Tensor:
    """Pseudo-mask from CAMs: argmax over (background score, present classes' CAMs).

    Args:
        cams (torch.Tensor): (B, K, h, w) normalised CAMs.
        cls_labels (torch.Tensor, optional): (B, K) image-level labels; absent classes masked.
        bg_threshold (float): t (``mode="threshold"``) or alpha (``mode="power"``). Default:
            0.15 (IRN's ``cam_eval_thres``).
        out_size (Tuple[int, int], optional): upsample the CAMs (bilinear) to (H, W) first.
        mode (str): "threshold" or "power".

    Returns:
        torch.Tensor: (B, H, W) int64 class ids (0 = background).
    """
    _check_cams(cams, cls_labels)
    if out_size is not None and tuple(out_size) != tuple(cams.shape[-2:]):
        cams = F.interpolate(cams, size=tuple(out_size), mode="bilinear", align_corners=False)
    return scores_with_background(cams, cls_labels, mode, bg_threshold).argmax(dim=1)


def multiscale_flip_cams(
    raw_cam_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    out_size: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """Sum of raw CAMs over scales (and mirror images), normalised per map.

    Args:
        raw_cam_fn (Callable): normalised images (B, 3, h, w) -> raw non-negative CAMs
            (B, K, h', w') (e.g. ``lambda x: model.raw_cams(model(x)["features"])``).
        images (torch.Tensor): (B, 3, H, W) normalised images.
        scales (Sequence[float]): image scale factors; each resized size is
            (max(1, round(H s)), max(1, round(W s))), bilinear, align_corners=False.
        flip (bool): add the CAMs of the horizontally mirrored image, mirrored back.
        out_size (Tuple[int, int], optional): size of the result; default (H, W).

    Returns:
        torch.Tensor: (B, K, *out_size) in [0, 1).
    """
    if images.dim() != 4:
        raise ValueError(f"images are (B, 3, H, W), got {tuple(images.shape)}")
    if not scales:
        raise ValueError("multiscale_flip_cams needs at least one scale")
    height, width = images.shape[-2:]
    size = (int(height), int(width)) if out_size is None else tuple(int(s) for s in out_size)
    total: Optional[torch.Tensor] = None
    for scale in scales:
        scaled_size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = images
        if scaled_size != (height, width):
            x = F.interpolate(images, size=scaled_size, mode="bilinear", align_corners=False)
        views = [raw_cam_fn(x)]
        if flip:
            views.append(raw_cam_fn(x.flip(-1)).flip(-1))
        for cam in views:
            cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
            total = cam if total is None else total + cam
    return normalize_cams(total)


class ThresholdSweep:
    """Confusion matrices of the threshold rule for many background thresholds at once.

    Args:
        num_classes (int): C including background (K + 1).
        thresholds (Sequence[float]): background thresholds t. Default: 0.10, 0.15, ..., 0.90.
        ignore_index (int): GT ignore label. Default: 255.
    """

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        ignore_index: int = 255,
    ) -> None:
        if not thresholds:
            raise ValueError("ThresholdSweep needs at least one threshold")
        self.num_classes = int(num_classes)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.matrices = [ConfusionMatrix(self.num_classes, ignore_index) for _ in self.thresholds]

    def update(
        self,
        cams: torch.Tensor,
        gt: torch.Tensor,
        cls_labels: Optional[torch.Tensor] = None,
        names: Optional[Sequence[str]] = None,
    ) -> None:
        """Add a batch.

        The label at threshold t is ``argmax(t, masked CAMs)`` (:func:`cams_to_labels`), computed
        from one max / argmax over classes: class argmax + 1 where the max exceeds t, else 0.

        Args:
            cams (torch.Tensor): (B, K, h, w) normalised CAMs; upsampled bilinearly to the GT
                size when they differ.
            gt (torch.Tensor): (B, H, W) ground truth (255 ignored).
            cls_labels (torch.Tensor, optional): (B, K) image-level labels.
            names (Sequence[str], optional): image names for error messages.
        """
        _check_cams(cams, cls_labels)
        if cams.shape[1] + 1 != self.num_classes:
            raise ValueError(
                f"{cams.shape[1]} CAM channels for a {self.num_classes}-class sweep (K + 1 = C)"
            )
        if gt.dim() != 3 or gt.shape[0] != cams.shape[0]:
            raise ValueError(f"gt is (B, H, W) with B = {cams.shape[0]}, got {tuple(gt.shape)}")
        if tuple(gt.shape[-2:]) != tuple(cams.shape[-2:]):
            cams = F.interpolate(cams, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        cams = mask_absent(cams, cls_labels)
        peak, index = cams.max(dim=1)  # (B, H, W)
        name = ",".join(names) if names else None
        for t, matrix in zip(self.thresholds, self.matrices):
            labels = torch.where(peak > t, index + 1, torch.zeros_like(index))
            matrix.update(labels, gt, name=name)

    def rows(self, checkpoint: str = "") -> List[Dict[str, object]]:
        """One row per threshold: ``SWEEP_COLUMNS`` (rates as fractions, NaN when undefined)."""
        out = []
        for t, matrix in zip(self.thresholds, self.matrices):
            s = matrix.scores()
            out.append(
                {
                    "checkpoint": checkpoint,
                    "threshold": t,
                    "miou": s["miou"],
                    "miou_gt_or_pred": s["miou_gt_or_pred"],
                    "pixel_acc": s["pixel_acc"],
                    "mean_acc": s["mean_acc"],
                    "num_images": matrix.num_images,
                }
            )
        return out


def sweep_rows(sweeps: Mapping[str, ThresholdSweep]) -> List[Dict[str, object]]:
    """Rows of several sweeps (checkpoint name -> sweep), checkpoint by checkpoint."""
    rows: List[Dict[str, object]] = []
    for checkpoint, sweep in sweeps.items():
        rows.extend(sweep.rows(checkpoint))
    return rows


def best_row(rows: Sequence[Mapping[str, object]], key: str = "miou") -> Mapping[str, object]:
    """The row with the highest ``key`` (NaN rows skipped; ties: first row)."""
    valid = [r for r in rows if not math.isnan(float(r[key]))]
    if not valid:
        raise ValueError(f"no sweep row has a defined {key}")
    best = valid[0]
    for row in valid[1:]:
        if float(row[key]) > float(best[key]):
            best = row
    return best


def format_sweep_table(rows: Sequence[Mapping[str, object]], key: str = "miou") -> str:
    """A printable table: one line per checkpoint, one column per threshold, ``key`` in %."""
    checkpoints: List[str] = []
    thresholds: List[float] = []
    cell: Dict[Tuple[str, float], float] = {}
    for row in rows:
        ck, t = str(row["checkpoint"]), float(row["threshold"])
        if ck not in checkpoints:
            checkpoints.append(ck)
        if t not in thresholds:
            thresholds.append(t)
        cell[(ck, t)] = float(row[key])
    width = max([len("checkpoint")] + [len(c) for c in checkpoints])
    header = f"{'checkpoint':<{width}} " + " ".join(f"{t:>6.2f}" for t in thresholds)
    lines = [f"{key} (%) by background threshold", header, "-" * len(header)]
    for ck in checkpoints:
        values = []
        for t in thresholds:
            v = cell.get((ck, t), math.nan)
            values.append("     -" if math.isnan(v) else f"{100 * v:6.2f}")
        lines.append(f"{ck:<{width}} " + " ".join(values))
    return "\n".join(lines)


def write_sweep_csv(path: str, rows: Sequence[Mapping[str, object]]) -> None:
    """Write the rows as CSV (``SWEEP_COLUMNS``, header first), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SWEEP_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in SWEEP_COLUMNS})
    atomic_write_text(path, buffer.getvalue())
