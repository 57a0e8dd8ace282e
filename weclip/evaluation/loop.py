"""The evaluation loop: one function that runs a prediction over a dataset and feeds evaluators.

Shaped like detectron2's ``inference_on_dataset`` + ``DatasetEvaluator``: ``tools/infer.py``,
``tools/eval_pseudo.py``, ``Trainer.validate`` and the benchmarks all call :func:`run_on_dataset` with a
predict function (``weclip.evaluation.predictors``) and the evaluators they want
(``weclip.evaluation.evaluators``): confusion matrices, PNG writers, the DenseCRF pool, logits files.

Distributed: rank r takes images r, r + W, r + 2W, ... of the first ``max_images`` (no padding, so every
image is counted exactly once); every rank must call :func:`run_on_dataset`, whose evaluators all-reduce
what they accumulated in ``evaluate()``.
"""

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from mmengine import dist as mmdist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from weclip.utils.dist import all_reduce_sum

__all__ = ["DatasetEvaluator", "run_on_dataset", "shard_indices"]

logger = logging.getLogger("weclip")

Item = Mapping[str, Any]
Output = Dict[str, Any]


class DatasetEvaluator:
    """What :func:`run_on_dataset` feeds: ``reset()``, then ``process(item, output)`` for every image of
    this rank, then ``evaluate()`` on every rank (a collective: it all-reduces), whose dict is merged
    into the loop's results.

    ``item`` is the dataset item (``image`` (3, H, W) uint8, ``name``, ``mask`` when the split has masks,
    ``cls_labels`` when requested); ``output`` is the predict function's dict for it (or the ``reuse``
    function's, marked ``"reused": True``).
    """

    def reset(self) -> None:
        """Forget everything (called once at the start of a run)."""

    def process(self, item: Item, output: Output) -> None:
        """Take one image's prediction."""
        raise NotImplementedError

    def evaluate(self) -> Dict[str, Any]:
        """Finish (all ranks) and return results keyed by the evaluator's name(s)."""
        return {}

    def close(self) -> None:
        """Release resources (worker processes); called by the loop even when it fails."""


def shard_indices(total: int, rank: int, world_size: int) -> List[int]:
    """Rank ``rank`` takes images ``rank, rank + W, rank + 2W, ...`` of the first ``total``.

    Args:
        total (int): images to process.
        rank (int): this process's rank.
        world_size (int): W.

    Returns:
        List[int]: dataset indices of this rank.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    return list(range(rank, total, world_size))


def run_on_dataset(
    predict_fn: Callable[[Item], Output],
    dataset: Any,
    evaluators: Sequence[DatasetEvaluator],
    *,
    max_images: Optional[int] = None,
    reuse: Optional[Callable[[Item], Optional[Output]]] = None,
    data_workers: int = 0,
    progress: bool = True,
    desc: str = "eval",
) -> Dict[str, Any]:
    """Predict this rank's share of ``dataset`` and feed every item's output to the evaluators.

    Args:
        predict_fn (Callable): item -> output dict (runs under ``torch.no_grad()``; a predictor that needs
            autograd, e.g. Grad-CAM, enables it itself).
        dataset: a map-style dataset of evaluation items (``build_dataset(..., train=False)``).
        evaluators (Sequence[DatasetEvaluator]): fed in order.
        max_images (int, optional): only the first N images.
        reuse (Callable, optional): item -> output or None; a non-None output (e.g. a prediction read back
            from a previous run's PNG, ``--skip-existing``) is used instead of calling ``predict_fn``.
        data_workers (int): data-loading processes.
        progress (bool): a tqdm bar on rank 0.
        desc (str): the bar's label.

    Returns:
        dict: ``results`` (the evaluators' merged dicts), ``num_images`` (over all ranks), ``reused``
        (outputs taken from ``reuse``, over all ranks) and ``seconds`` (this rank's loop time).
    """
    rank, world_size = mmdist.get_rank(), mmdist.get_world_size()
    total = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    indices = shard_indices(total, rank, world_size)
    # its own generator: the loader's worker seed is not drawn from the global RNG, so evaluating (e.g. the
    # trainer's validation) leaves the training run's random stream (dropout, augmentation) untouched
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=None,
        shuffle=False,
        num_workers=data_workers,
        generator=torch.Generator(),
    )
    reused = 0
    start = time.perf_counter()
    results: Dict[str, Any] = {}
    try:
        for evaluator in evaluators:
            evaluator.reset()
        with torch.no_grad():
            for item in tqdm(loader, desc=desc, disable=not (progress and rank == 0), leave=False):
                output = reuse(item) if reuse is not None else None
                if output is None:
                    output = predict_fn(item)
                else:
                    output = dict(output, reused=True)
                    reused += 1
                for evaluator in evaluators:
                    evaluator.process(item, output)
        seconds = time.perf_counter() - start
        for evaluator in evaluators:
            results.update(evaluator.evaluate())
    finally:
        for evaluator in evaluators:
            evaluator.close()
    counts = all_reduce_sum(torch.tensor([len(indices), reused], dtype=torch.int64))
    return {
        "results": results,
        "num_images": int(counts[0]),
        "reused": int(counts[1]),
        "seconds": seconds,
    }
