"""Evaluators for :func:`weclip.evaluation.loop.run_on_dataset`.

* :class:`SegmentationEvaluator`: a confusion matrix of one output key against the masks (mIoU etc.);
* :class:`PNGWriter`: one output key as VOC-palette PNGs (``pred/<name>.png`` or the VOC evaluation-server
  layout), atomically, and the read-back that ``--skip-existing`` uses;
* :class:`LogitsWriter`: merged logits as compact ``.npz`` files (float16, network resolution);
* :class:`CRFEvaluator`: DenseCRF in a bounded worker pool (``weclip.refine.crf.CRFPool``) overlapping
  the model, whose results go to downstream evaluators as they come back.
"""

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from weclip.data.images import read_mask, save_png
from weclip.evaluation.loop import DatasetEvaluator, Item, Output
from weclip.evaluation.metrics import ConfusionMatrix
from weclip.refine.crf import CRFPool
from weclip.utils.dist import all_reduce_sum
from weclip.utils.io import atomic_path
from weclip.utils.visualize import voc_palette

__all__ = [
    "SERVER_DIR",
    "SegmentationEvaluator",
    "PNGWriter",
    "LogitsWriter",
    "CRFEvaluator",
    "load_logits",
]

logger = logging.getLogger("weclip")

#: the VOC evaluation server's folder for segmentation results (comp6: trained on extra data)
SERVER_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")


def _numpy_labels(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    return np.asarray(labels)


class SegmentationEvaluator(DatasetEvaluator):
    """Confusion matrix of ``output[key]`` (H, W) against ``item["mask"]``.

    Items without a mask are skipped (a split without masks); outputs without ``key`` are counted as
    ``missing`` (e.g. a by-product that images read back by ``--skip-existing`` do not have), so a caller
    can tell a partial result.

    Args:
        name (str): key of the result in the loop's ``results``.
        num_classes (int): C.
        key (str): output key holding the label map.
        ignore_index (int): the masks' ignore value.

    Result:
        ``{name: {"matrix": ConfusionMatrix (all-reduced), "missing": int}}``.
    """

    def __init__(self, name: str, num_classes: int, key: str = "labels", ignore_index: int = 255):
        self.name, self.key = name, key
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.reset()

    def reset(self) -> None:
        self.matrix = ConfusionMatrix(self.num_classes, self.ignore_index)
        self.missing = 0

    def process(self, item: Item, output: Output) -> None:
        if "mask" not in item:
            return
        if self.key not in output:
            self.missing += 1
            return
        self.matrix.update(output[self.key], item["mask"], name=item.get("name"))

    def evaluate(self) -> Dict[str, Any]:
        self.matrix.all_reduce()
        missing = int(all_reduce_sum(torch.tensor([self.missing]))[0])
        return {self.name: {"matrix": self.matrix, "missing": missing}}


class PNGWriter(DatasetEvaluator):
    """``output[key]`` (H, W) class ids as an indexed PNG with the VOC palette, ``<folder>/<name>.png``.

    Args:
        folder (str): output folder (e.g. ``OUT_DIR/pred`` or ``OUT_DIR/<SERVER_DIR>``).
        key (str): output key holding the label map.
    """

    def __init__(self, folder: str, key: str = "labels") -> None:
        self.folder, self.key = folder, key
        self.palette = voc_palette()

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name + ".png")

    def process(self, item: Item, output: Output) -> None:
        if self.key in output and not (
            output.get("reused") and os.path.isfile(self.path(item["name"]))
        ):
            save_png(self.path(item["name"]), _numpy_labels(output[self.key]), self.palette)

    def existing(self, item: Item) -> Optional[Output]:
        """``{key: labels}`` read back from this writer's PNG of the item, or None when there is none or
        it is unreadable or of another size (then the image is predicted again)."""
        path = self.path(item["name"])
        if not os.path.isfile(path):
            return None
        try:
            labels = read_mask(path)
        except ValueError:
            return None
        if labels.shape != tuple(item["image"].shape[-2:]):
            return None
        return {self.key: labels}


def load_logits(path: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Read a file of :class:`LogitsWriter`: (Cxhxw float32 logits, (H, W) of the image)."""
    try:
        with np.load(path) as data:
            logits, size = data["logits"], data["size"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a logits file of tools/infer.py ({err})") from err
    return torch.from_numpy(logits.astype(np.float32)), (int(size[0]), int(size[1]))


class LogitsWriter(DatasetEvaluator):
    """``output[key]`` (C, h, w) merged logits as ``<folder>/<name>.npz``: float16 at the network's
    resolution plus the image size (``size``), never full-resolution float maps (``--save-logits``).
    ``weclip.refine.crf.crf_from_logits(image, logits, cfg.test.crf)`` runs the CRF on them later."""

    def __init__(self, folder: str, key: str = "logits") -> None:
        self.folder, self.key = folder, key

    def process(self, item: Item, output: Output) -> None:
        if self.key not in output:
            return
        with atomic_path(os.path.join(self.folder, item["name"] + ".npz")) as tmp:
            np.savez_compressed(
                tmp,
                logits=output[self.key].detach().cpu().to(torch.float16).numpy(),
                size=np.asarray(item["image"].shape[-2:], dtype=np.int64),
            )


class CRFEvaluator(DatasetEvaluator):
    """DenseCRF on ``output[logits_key]`` in a worker pool; the CRF labels go to ``downstream``.

    The logits (network resolution, or already the image size) are upsampled and softmaxed inside the
    worker (spec §9); the image's own uint8 pixels are the bilateral term's guide. At most
    ``2 * workers`` jobs are in flight, so memory stays bounded while the model runs ahead. An output marked
    ``reused`` already holds final (post-CRF) labels and is passed through. With ``keys_key``, the CRF's
    channel indices are mapped to class ids through ``output[keys_key]`` (K,) (pseudo-label rows, whose
    channels are [bg; present classes]).

    Args:
        crf_cfg (Mapping): ``cfg.test.crf``.
        workers (int): CRF processes (0 = inline).
        logits_key (str): output key of the (K, h, w) logits.
        out_key (str): output key under which downstream evaluators receive the (H, W) labels.
        downstream (Sequence[DatasetEvaluator]): fed ``(item without its image, {out_key: labels})``.
        keys_key (str, optional): output key of the channel -> class id map.
    """

    def __init__(
        self,
        crf_cfg: Mapping[str, Any],
        workers: int,
        logits_key: str,
        out_key: str,
        downstream: Sequence[DatasetEvaluator],
        keys_key: Optional[str] = None,
    ) -> None:
        self.crf_cfg, self.workers = crf_cfg, int(workers)
        self.logits_key, self.out_key, self.keys_key = logits_key, out_key, keys_key
        self.downstream = list(downstream)
        self.pool: Optional[CRFPool] = None
        self.waiting: Dict[str, Tuple[Dict[str, Any], Optional[np.ndarray]]] = {}

    def reset(self) -> None:
        self.close()
        self.pool = CRFPool(self.crf_cfg, num_workers=self.workers)
        self.waiting = {}
        for evaluator in self.downstream:
            evaluator.reset()

    def _forward(self, done: List[Tuple[str, np.ndarray]]) -> None:
        for name, labels in done:
            item, keys = self.waiting.pop(name)
            if keys is not None:
                labels = keys[labels]
            for evaluator in self.downstream:
                evaluator.process(item, {self.out_key: labels})

    def process(self, item: Item, output: Output) -> None:
        light = {k: v for k, v in item.items() if k != "image"}
        light["image_size"] = tuple(item["image"].shape[-2:])
        if output.get("reused"):
            for evaluator in self.downstream:
                evaluator.process(item, output)
            return
        if self.logits_key not in output:
            return
        assert self.pool is not None, "CRFEvaluator.process before reset"
        keys = None if self.keys_key is None else _numpy_labels(output[self.keys_key])
        self.waiting[item["name"]] = (light, keys)
        rgb = item["image"].permute(1, 2, 0).numpy()  # (H, W, 3) uint8, the bilateral guide
        self.pool.submit(item["name"], rgb, output[self.logits_key])
        self._forward(self.pool.collect())

    def evaluate(self) -> Dict[str, Any]:
        assert self.pool is not None, "CRFEvaluator.evaluate before reset"
        try:
            self._forward(self.pool.finish())
        finally:
            self.close()
        results: Dict[str, Any] = {}
        for evaluator in self.downstream:
            results.update(evaluator.evaluate())
        return results

    def close(self) -> None:
        """Stop the workers (also on errors)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
