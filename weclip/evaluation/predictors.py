"""Predict functions for :func:`weclip.evaluation.loop.run_on_dataset`: dataset item -> output dict.

* :class:`SegmentationPredictor`: multi-scale + flip segmentation (spec §9): ``labels`` (H, W), the merged
  ``logits`` at the network resolution (for DenseCRF and ``--save-logits``) and, on request, the
  single-scale by-product ``single_labels``. Used by ``tools/infer.py``, ``tools/visualize.py``, the API.
* :class:`PseudoLabelPredictor`: the model's own validation-mode pseudo-labels (``mode="pseudo"``) and the
  decoder's single-scale prediction at the image size. Used by ``Trainer.validate``, ``tools/visualize.py``
  and ``weclip.apis.pseudo_labels``.
* :class:`PseudoLabelRows`: the ablation rows of the paper (initial CAM, static refinement, RFM, each with
  and without PAR), composed by the model from the same pipeline stages (``tools/eval_pseudo.py``).

Every predictor takes the item's uint8 image and moves it to the model's device; outputs are on the CPU.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from weclip.evaluation.inference import fit_long_side, msc_flip_inference
from weclip.refine.pseudo_label import scores_to_labels
from weclip.utils.amp import autocast

__all__ = [
    "model_device",
    "SegmentationPredictor",
    "PseudoLabelPredictor",
    "PseudoLabelRows",
    "parse_rows",
    "crf_logits",
]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


class SegmentationPredictor:
    """Multi-scale + flip segmentation of one item (spec §9, ``weclip.evaluation.inference``).

    Args:
        model (nn.Module): a model of the library (``model(images)["seg_logits"]``, ``patch_size``).
        scales (Sequence[float]): ``test.scales``; the first is the reference size.
        flip (bool): ``test.flip``.
        resize_long (int, optional): ``test.resize_long`` (an image whose short side would fall below one
            patch gets a larger long side, :func:`~weclip.evaluation.inference.fit_long_side`).
        single_scale (bool): also return ``single_labels``, the reference scale's un-flipped prediction
            (the authors' "segs" line), a free by-product.
        amp (bool): bf16 autocast of the forward on CUDA.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        scales: Sequence[float],
        flip: bool,
        resize_long: Optional[int],
        single_scale: bool = False,
        amp: bool = False,
    ) -> None:
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip, self.resize_long = bool(flip), resize_long
        self.single_scale, self.amp = single_scale, amp
        self.device = model_device(model)

    def logits_fn(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            return self.model(images)["seg_logits"]

    def __call__(self, item: Mapping[str, Any]) -> Dict[str, Any]:
        image = item["image"][None].to(self.device)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        long_side = fit_long_side(
            size, self.resize_long, int(self.model.patch_size), min(self.scales)
        )
        out = msc_flip_inference(
            self.logits_fn,
            image,
            scales=self.scales,
            flip=self.flip,
            resize_long=long_side,
            out_size=size,
        )
        result = {"labels": out.labels[0].cpu(), "logits": out.msc_logits[0].cpu()}
        if self.single_scale:
            single = F.interpolate(
                out.single_logits, size=size, mode="bilinear", align_corners=False
            )
            result["single_labels"] = single.argmax(dim=1)[0].cpu()
        return result


class PseudoLabelPredictor:
    """The model's validation-mode pseudo-labels and decoder prediction at the image size.

    ``model(image, cls_labels, mode="pseudo", out_size=(H, W))``: the network sees the image cropped to a
    multiple of the patch size, the refined CAMs and the pseudo-labels are produced at the full image size
    with PAR guided by the whole image (the authors' ``validate()``, spec §4.6, §5.1), the decoder logits are
    resized bilinearly to the image size and argmaxed. The items need ``cls_labels`` (from the label file).

    Args:
        model (nn.Module): a model of the library supporting ``mode="pseudo"``.
        amp (bool): bf16 autocast of the forward on CUDA.

    Output:
        ``pseudo`` (H, W) and ``decoder`` (H, W) class ids, ``cams`` (P, h, w), ``cams_refined`` (P, H, W),
        ``class_index`` (P,) foreground ids.
    """

    def __init__(self, model: nn.Module, amp: bool = False) -> None:
        self.model, self.amp = model, amp
        self.device = model_device(model)

    def __call__(self, item: Mapping[str, Any]) -> Dict[str, Any]:
        if "cls_labels" not in item:
            raise ValueError(
                f"image {item.get('name')!r}: pseudo-labels need its image-level labels (label file)"
            )
        image = item["image"][None].to(self.device)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        with autocast(self.device, self.amp):
            out = self.model(
                image, item["cls_labels"][None].to(self.device), mode="pseudo", out_size=size
            )
        logits = F.interpolate(
            out["seg_logits"].float(), size=size, mode="bilinear", align_corners=False
        )
        return {
            "pseudo": out["pseudo_labels"][0].cpu(),
            "decoder": logits.argmax(dim=1)[0].cpu(),
            "cams": out["cams"].float().cpu(),
            "cams_refined": out["cams_refined"].float().cpu(),
            "class_index": out["class_index"].cpu(),
        }


def parse_rows(text: Optional[str], crf: bool, known: Sequence[str]) -> List[str]:
    """The pseudo-label rows to evaluate, in table order.

    Args:
        text (str, optional): ``--rows``: a comma list of base rows or ``<row>_crf``; None = every base row.
        crf (bool): also the ``_crf`` row of every requested base row.
        known (Sequence[str]): the model's base rows (``model.pseudo_rows``).

    Raises:
        ValueError: an unknown row name (the known ones are listed).
    """
    names = list(known) + [r + "_crf" for r in known]
    wanted = [r.strip() for r in text.split(",") if r.strip()] if text else list(known)
    bad = [r for r in wanted if r not in names]
    if bad:
        raise ValueError(f"unknown row(s) {bad}; known: {', '.join(names)}")
    if crf:
        wanted += [r + "_crf" for r in wanted if not r.endswith("_crf")]
    return [r for r in names if r in wanted]


def crf_logits(scores: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel normalised scores as log-probabilities, so that the CRF's softmax gives them back.

    Args:
        scores (torch.Tensor): (K, H, W) non-negative scores [bg; r_1..r_K].
        eps (float): floor before the log (far below the CRF's probability clip of 1e-5).

    Returns:
        torch.Tensor: (K, H, W) float32 ``log(scores / sum_k scores)``.
    """
    scores = scores.float().clamp_min(0)
    probs = scores / scores.sum(dim=0, keepdim=True).clamp_min(eps)
    return probs.clamp_min(eps).log()


class PseudoLabelRows:
    """The pseudo-label ablation rows of one item, at the image size.

    The model composes them from its pipeline stages (``model.pseudo_label_scores``; WeCLIP's rows are
    ``cam``, ``cam_par``, ``static``, ``static_par``, ``rfm``, ``rfm_par``). A ``<row>_crf`` row is the row's
    scores, normalised per pixel, as the probabilities of the DenseCRF of spec §9 (``CRFEvaluator``).

    Args:
        model (nn.Module): a model with ``pseudo_rows`` and ``pseudo_label_scores``.
        rows (Sequence[str]): rows from :func:`parse_rows`.
        fit (str): how the network input becomes a multiple of the patch size: "crop" (the authors'
            conv1) or "resize" (bilinear to the nearest multiples).

    Output:
        ``<row>``: (H, W) class ids for every base row; for every ``_crf`` row also ``<base>/logits``
        (K, H, W) and ``<base>/keys`` (K,) for the CRF evaluator.
    """

    def __init__(self, model: nn.Module, rows: Sequence[str], fit: str = "crop") -> None:
        self.model, self.fit = model, fit
        self.rows = list(rows)
        self.base = [r for r in self.rows if not r.endswith("_crf")]
        self.crf_bases = [r[: -len("_crf")] for r in self.rows if r.endswith("_crf")]
        self.device = model_device(model)

    def __call__(self, item: Mapping[str, Any]) -> Dict[str, Any]:
        if "cls_labels" not in item:
            raise ValueError(
                f"image {item.get('name')!r}: pseudo-labels need its image-level labels (label file)"
            )
        image = item["image"][None].to(self.device)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        needed = sorted(set(self.base) | set(self.crf_bases))
        scores, keys = self.model.pseudo_label_scores(
            image, item["cls_labels"][None].to(self.device), needed, size, fit=self.fit
        )
        out: Dict[str, Any] = {}
        for row in needed:
            out[row] = scores_to_labels(scores[row], keys)[0].cpu()
            if row in self.crf_bases:
                out[f"{row}/logits"] = crf_logits(scores[row][0]).cpu()
                out[f"{row}/keys"] = keys[0].cpu()
        return out
