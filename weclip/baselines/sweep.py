"""Background-threshold sweeps through the evaluation loop: thresholds x checkpoints -> mIoU.

The threshold t of the CAM rule (label = argmax(t, present classes' CAMs), ``weclip.baselines.cam``)
and the training checkpoint are picked together by scoring every pair on a split with masks (IRN and
AffinityNet tune it on the training set's ground truth the same way). One pass per checkpoint: a
predictor returns each image's CAMs (the model's ``cam_maps``: ``model.pseudo`` scales and flip, at the
image size), and :class:`ThresholdSweepEvaluator` fills one confusion matrix per threshold
(:class:`~weclip.baselines.cam.ThresholdSweep`), all-reduced over ranks like every evaluator of
``weclip.evaluation``. ``tools/sweep_cams.py`` is the command line.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from torch import nn

from weclip.baselines.cam import ThresholdSweep
from weclip.evaluation.loop import DatasetEvaluator, Item, Output, run_on_dataset
from weclip.evaluation.predictors import model_device

__all__ = ["CAMPredictor", "ThresholdSweepEvaluator", "sweep_checkpoint", "parse_thresholds"]


class CAMPredictor:
    """Item -> ``{"cams": (K, H, W)}``, the model's normalised CAMs at the image size.

    Args:
        model (nn.Module): a model with ``preprocess`` and ``cam_maps`` (``CAMClassifierModel``).
    """

    def __init__(self, model: nn.Module) -> None:
        if not hasattr(model, "cam_maps"):
            raise ValueError(f"{type(model).__name__} has no CAMs to sweep (no cam_maps method)")
        self.model = model
        self.device = model_device(model)

    def __call__(self, item: Mapping[str, Any]) -> Dict[str, Any]:
        image = item["image"][None].to(self.device)
        return {"cams": self.model.cam_maps(self.model.preprocess(image))[0].float().cpu()}


class ThresholdSweepEvaluator(DatasetEvaluator):
    """One confusion matrix per background threshold, from ``output["cams"]`` and the item's mask and
    image-level labels (absent classes never win).

    Args:
        num_classes (int): C.
        thresholds (Sequence[float]): the thresholds t.
        ignore_index (int): the masks' ignore value.

    Result:
        ``{"sweep": ThresholdSweep}`` (matrices summed over ranks).
    """

    def __init__(
        self, num_classes: int, thresholds: Sequence[float], ignore_index: int = 255
    ) -> None:
        self.num_classes, self.thresholds = int(num_classes), tuple(thresholds)
        self.ignore_index = int(ignore_index)
        self.reset()

    def reset(self) -> None:
        self.sweep = ThresholdSweep(self.num_classes, self.thresholds, self.ignore_index)

    def process(self, item: Item, output: Output) -> None:
        if "mask" not in item:
            return
        if "cls_labels" not in item:
            raise ValueError(f"image {item.get('name')!r}: the sweep needs its image-level labels")
        self.sweep.update(
            output["cams"][None], item["mask"][None], item["cls_labels"][None], [item["name"]]
        )

    def evaluate(self) -> Dict[str, Any]:
        for matrix in self.sweep.matrices:
            matrix.all_reduce()
        return {"sweep": self.sweep}


def sweep_checkpoint(
    model: nn.Module,
    dataset: Any,
    thresholds: Sequence[float],
    *,
    max_images: Optional[int] = None,
    data_workers: int = 0,
    ignore_index: int = 255,
    desc: str = "sweep",
) -> ThresholdSweep:
    """Sweep one model over ``dataset`` (evaluation items with masks and labels) in one pass."""
    run = run_on_dataset(
        CAMPredictor(model),
        dataset,
        [ThresholdSweepEvaluator(model.num_classes, thresholds, ignore_index)],
        max_images=max_images,
        data_workers=data_workers,
        desc=desc,
    )
    return run["results"]["sweep"]


def parse_thresholds(text: str) -> List[float]:
    """``"0.1:0.9:0.1"`` (start:stop:step, stop included when reached) or ``"0.2,0.3"`` -> thresholds.

    Raises:
        ValueError: not numbers, a non-positive step, stop < start, or values outside [0, 1].
    """
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError("expected start <= stop and step > 0")
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError as err:
        raise ValueError(
            f"thresholds {text!r}: {err} (write START:STOP:STEP, e.g. 0.1:0.9:0.1, or a comma list)"
        ) from None
    if not values or any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"thresholds {text!r}: expected values in [0, 1], got {values}")
    return values
