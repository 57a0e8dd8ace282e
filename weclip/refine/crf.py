"""DenseCRF post-processing of segmentation scores (spec §9, the authors' ``utils/dcrf.py``).

The authors' ``crf_proc`` (commented out in ``test_msc_flip_voc.py``, run by ``test_msc_flip_seg.py``, the
seg-only script that can predict VOC test, spec §9.1, §9.3): multi-scale logits at
the network's output size → bilinear (align_corners=False) to the original image size → softmax →
fully connected CRF with unary −log(clip(prob, 1e-5, 1)), a Gaussian pairwise term (sxy=3,
compat=3) and a bilateral one on the uint8 RGB image (sxy=64, srgb=5, compat=4), 10 mean-field
iterations, argmax. All constants come from ``cfg.test.crf``.

``CRFPool`` runs these jobs in worker processes while the model works on the next images. What is
sent to a worker is compact: the logits at the network's output resolution (e.g. 21×32×24 for a
512-long VOC image, ~64 KB in float32, ~1/190 of the full-resolution probabilities), the target
size implied by the uint8 image, and the image itself. The worker upsamples and applies the
softmax, so the full-resolution probabilities of the split are never held anywhere. Logits travel
in float32 (the authors saved fp32 logits).

References: P. Krähenbühl and V. Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian
Edge Potentials", NeurIPS 2011; pydensecrf (https://github.com/lucasb-eyer/pydensecrf).
"""

import collections
import concurrent.futures as cf
import logging
import multiprocessing
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from weclip.errors import UserInputError

__all__ = [
    "CRF_KEYS",
    "CRFUnavailableError",
    "dense_crf",
    "logits_to_probs",
    "crf_from_logits",
    "CRFPool",
]

logger = logging.getLogger("weclip")

# keys of cfg.test.crf (configs/_base_/default_runtime.py), all required
CRF_KEYS = ("iter_max", "pos_xy_std", "pos_w", "bi_xy_std", "bi_rgb_std", "bi_w", "prob_clip")

ArrayLike = Union[np.ndarray, torch.Tensor]


class CRFUnavailableError(UserInputError, ImportError):
    """``--crf`` was asked for but ``pydensecrf`` is not installed (a user error: one ``error:`` line
    from the tools, and still an ``ImportError`` for library callers)."""


def _import_densecrf() -> Any:
    """Import ``pydensecrf.densecrf`` lazily, with an install hint when it is missing."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as err:
        raise CRFUnavailableError(
            "DenseCRF post-processing needs the `pydensecrf` module, which is not installed. "
            "Install the maintained fork with `pip install pydensecrf2` (it builds on recent "
            "Python versions and provides `pydensecrf`), or run without --crf."
        ) from err
    return dcrf


def _crf_params(crf_cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``cfg.test.crf`` (validated by ``weclip.schema.CRFConfig``) as a plain, picklable dict."""
    missing = [k for k in CRF_KEYS if k not in crf_cfg]
    if missing:
        raise KeyError(f"CRF parameters lack {missing} (cfg.test.crf, weclip.schema.CRFConfig)")
    return {k: (int if k == "iter_max" else float)(crf_cfg[k]) for k in CRF_KEYS}


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_image(image: np.ndarray, name: Optional[str] = None) -> np.ndarray:
    where = f"image '{name}': " if name else ""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{where}DenseCRF expects an RGB image of shape (H, W, 3), got {image.shape}"
        )
    if image.dtype != np.uint8:
        raise TypeError(
            f"{where}DenseCRF expects a uint8 RGB image (0-255), got dtype {image.dtype}"
        )
    image = np.ascontiguousarray(image)
    # pydensecrf takes a writable buffer (PIL-backed arrays are read-only)
    return image if image.flags.writeable else image.copy()


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    crf_cfg: Mapping[str, Any],
    return_probs: bool = False,
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Fully connected CRF on class probabilities (spec §9), then argmax.

    Args:
        image (np.ndarray): HxWx3 uint8 RGB image (the original, un-normalised pixels).
        probs (np.ndarray): CxHxW class probabilities (softmax output), float.
        crf_cfg (Mapping): ``cfg.test.crf`` with keys ``CRF_KEYS``: ``iter_max`` mean-field
            iterations, Gaussian ``pos_xy_std``/``pos_w``, bilateral ``bi_xy_std``/``bi_rgb_std``/
            ``bi_w``, ``prob_clip`` (unary = −log(clip(probs, prob_clip, 1))).
        return_probs (bool): also return the CRF marginals Q.

    Returns:
        np.ndarray: HxW int64 labels in [0, C); with ``return_probs`` also Q, CxHxW float32.
    """
    params = _crf_params(crf_cfg)
    image = _check_image(image)
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"DenseCRF expects probs of shape (C, H, W) with (H, W) = image size "
            f"{image.shape[:2]}, got {probs.shape}"
        )
    dcrf = _import_densecrf()
    C, H, W = probs.shape
    # unary energy = −log p, as pydensecrf.utils.unary_from_softmax (clip at prob_clip)
    unary = -np.log(np.clip(probs.astype(np.float32), params["prob_clip"], 1.0))
    unary = np.ascontiguousarray(unary.reshape(C, H * W), dtype=np.float32)

    crf = dcrf.DenseCRF2D(W, H, C)  # pydensecrf takes width first
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params["pos_xy_std"], compat=params["pos_w"])
    crf.addPairwiseBilateral(
        sxy=params["bi_xy_std"], srgb=params["bi_rgb_std"], rgbim=image, compat=params["bi_w"]
    )
    q = np.asarray(crf.inference(params["iter_max"]), dtype=np.float32).reshape(C, H, W)
    labels = q.argmax(axis=0).astype(np.int64)
    return (labels, q) if return_probs else labels


def logits_to_probs(logits: ArrayLike, size: Tuple[int, int]) -> np.ndarray:
    """Upsample logits bilinearly (align_corners=False) and apply the softmax over classes.

    This is the authors' ``crf_proc`` preparation (spec §9), computed in float32.

    Args:
        logits (np.ndarray | torch.Tensor): Cxhxw logits (any float dtype).
        size (Tuple[int, int]): target (H, W).

    Returns:
        np.ndarray: CxHxW float32 probabilities.
    """
    x = torch.as_tensor(_to_numpy(logits)).float()
    if x.ndim != 3:
        raise ValueError(f"logits must have shape (C, h, w), got {tuple(x.shape)}")
    x = F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return torch.softmax(x, dim=0).numpy()


def crf_from_logits(image: np.ndarray, logits: ArrayLike, crf_cfg: Mapping[str, Any]) -> np.ndarray:
    """Logits at the network's resolution → probabilities at the image size → DenseCRF labels.

    Args:
        image (np.ndarray): HxWx3 uint8 RGB image; its (H, W) is the target size.
        logits (np.ndarray | torch.Tensor): Cxhxw (multi-scale merged) logits.
        crf_cfg (Mapping): ``cfg.test.crf``.

    Returns:
        np.ndarray: HxW int64 labels.
    """
    image = _check_image(np.asarray(image))
    return dense_crf(image, logits_to_probs(logits, image.shape[:2]), crf_cfg)


def _worker_init() -> None:
    # one thread per worker: the pool itself is the parallelism
    torch.set_num_threads(1)


def _pool_job(
    name: str, image: np.ndarray, logits: np.ndarray, params: Dict[str, Any]
) -> Tuple[str, np.ndarray]:
    return name, crf_from_logits(image, logits, params)


class CRFPool:
    """DenseCRF jobs in worker processes, with at most ``max_in_flight`` jobs pending.

    Typical use inside an inference loop (the model keeps working while CRF jobs run)::

        with CRFPool(cfg.test.crf, num_workers=4) as pool:
            for batch in tqdm(loader):
                logits = ...                                   # (C, h, w), network resolution
                pool.submit(name, image_uint8, logits)          # blocks only when the pool is full
                for name, labels in pool.collect():             # finished jobs, non-blocking
                    metric.update(labels, gt[name])
            for name, labels in pool.finish():                  # the rest
                ...

    Args:
        crf_cfg (Mapping): ``cfg.test.crf``.
        num_workers (int): worker processes; 0 runs every job inline inside ``submit``.
        max_in_flight (int, optional): bound on submitted-but-unfinished jobs (memory bound);
            default ``2 * num_workers``.
        mp_context (str): multiprocessing start method; ``"spawn"`` (default) is safe when the
            parent holds CUDA state or threads.
    """

    def __init__(
        self,
        crf_cfg: Mapping[str, Any],
        num_workers: int,
        max_in_flight: Optional[int] = None,
        mp_context: str = "spawn",
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.params = _crf_params(crf_cfg)
        _import_densecrf()  # fail now, not inside a worker
        self.num_workers = int(num_workers)
        self.max_in_flight = int(max_in_flight or 2 * max(self.num_workers, 1))
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._pending: Deque[Tuple[str, cf.Future]] = collections.deque()
        self._ready: List[Tuple[str, np.ndarray]] = []
        self._executor: Optional[cf.ProcessPoolExecutor] = None
        if self.num_workers > 0:
            self._executor = cf.ProcessPoolExecutor(
                max_workers=self.num_workers,
                mp_context=multiprocessing.get_context(mp_context),
                initializer=_worker_init,
            )

    @property
    def in_flight(self) -> int:
        """Number of submitted jobs whose result has not been moved to the ready list yet."""
        return len(self._pending)

    def submit(self, name: str, image: ArrayLike, logits: ArrayLike) -> None:
        """Queue one image; blocks while ``max_in_flight`` jobs are unfinished.

        Args:
            name (str): image name, returned with the labels.
            image (np.ndarray | torch.Tensor): HxWx3 uint8 RGB, the original image.
            logits (np.ndarray | torch.Tensor): Cxhxw logits at the network's resolution (any
                device); they are moved to the CPU as float32.
        """
        image_np = _check_image(_to_numpy(image), name)
        logits_np = _to_numpy(logits)
        if logits_np.ndim != 3:
            raise ValueError(f"image '{name}': logits must be (C, h, w), got {logits_np.shape}")
        logits_np = np.ascontiguousarray(logits_np, dtype=np.float32)
        if self._executor is None:
            self._ready.append((name, crf_from_logits(image_np, logits_np, self.params)))
            return
        while len(self._pending) >= self.max_in_flight:
            cf.wait([f for _, f in self._pending], return_when=cf.FIRST_COMPLETED)
            self._move_done()
        future = self._executor.submit(_pool_job, name, image_np, logits_np, self.params)
        self._pending.append((name, future))

    def _move_done(self) -> None:
        still: Deque[Tuple[str, cf.Future]] = collections.deque()
        for name, future in self._pending:
            if future.done():
                self._ready.append(self._result(name, future))
            else:
                still.append((name, future))
        self._pending = still

    @staticmethod
    def _result(name: str, future: cf.Future) -> Tuple[str, np.ndarray]:
        try:
            return future.result()
        except Exception as err:  # re-raise with the image name (worker tracebacks are terse)
            raise RuntimeError(f"DenseCRF failed for image '{name}': {err!r}") from err

    def collect(self) -> List[Tuple[str, np.ndarray]]:
        """Finished jobs as ``(name, labels HxW int64)`` (submission order); does not block."""
        self._move_done()
        out, self._ready = self._ready, []
        return out

    def finish(self) -> List[Tuple[str, np.ndarray]]:
        """Wait for every pending job and return all results not collected yet."""
        while self._pending:
            name, future = self._pending.popleft()
            self._ready.append(self._result(name, future))
        out, self._ready = self._ready, []
        return out

    def close(self) -> None:
        """Stop the workers (pending jobs are cancelled if possible)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending.clear()

    def __enter__(self) -> "CRFPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
