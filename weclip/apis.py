"""The Python API: build a trained model, segment an image, compute an image's pseudo-labels.

    from weclip import init_model, segment, pseudo_labels

    model = init_model("configs/voc.py", "work_dirs/voc/checkpoints/iter_30000.pth")
    seg = segment(model, "dog.jpg")                      # MS+flip, the config's test setting
    seg.labels                                           # (H, W) class ids at the image size
    seg.probs                                            # (C, H, W) class probabilities
    seg.present()                                        # e.g. ["background", "dog"]
    seg = segment(model, "dog.jpg", crf=True)            # + DenseCRF (probabilities = CRF marginals)
    pl = pseudo_labels(model, "dog.jpg", ["dog"])        # the training signal from image-level labels
    pl.labels, pl.initial_cams, pl.refined_cams

Images are a path, a PIL image, an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor, of any size. The
same code paths run in the tools: ``segment`` is ``tools/infer.py``'s prediction
(``weclip.evaluation.predictors.SegmentationPredictor``) and ``pseudo_labels`` is ``Trainer.validate``'s
(``PseudoLabelPredictor``), as mmsegmentation's ``mmseg.apis`` sit under its tools.
"""

import dataclasses
import logging
import os
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from PIL import Image
from torch import nn

from weclip.config import load_config, validate_config
from weclip.data.images import read_rgb, to_rgb_uint8
from weclip.engine.checkpoint import load_weights
from weclip.errors import UserInputError
from weclip.evaluation.predictors import PseudoLabelPredictor, SegmentationPredictor
from weclip.models.registry import build_model
from weclip.refine.crf import dense_crf
from weclip.utils.seed import seed_everything

__all__ = ["init_model", "segment", "pseudo_labels", "read_image", "Segmentation", "PseudoLabels"]

logger = logging.getLogger("weclip")

ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]


def read_image(image: ImageLike) -> torch.Tensor:
    """Any supported image as a (3, H, W) uint8 RGB tensor (the input format of the library's models).

    Args:
        image: a file path (``weclip.data.images.read_rgb``: 16-bit, CMYK, palette, alpha handled), a PIL
            image, an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor.
    """
    if isinstance(image, (str, os.PathLike)):
        array = read_rgb(image)
    elif isinstance(image, Image.Image):
        array = to_rgb_uint8(image)
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserInputError(
                f"an image array must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        array = image
    elif isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise UserInputError(
                f"an image tensor must be (3, H, W) uint8 RGB, got {tuple(image.shape)} {image.dtype}"
            )
        return image
    else:
        raise UserInputError(f"unsupported image type {type(image).__name__}")
    chw = np.ascontiguousarray(
        array.transpose(2, 0, 1)
    )  # a view when already contiguous (e.g. 1x1)
    return torch.from_numpy(chw if chw.flags.writeable else chw.copy())


def _seed_random_weights(cfg: Config, checkpoint: Optional[str]) -> None:
    """A random CLIP (tests, benchmarks) is only the trained one if it is drawn the same way: the trainer
    seeds with ``train.seed`` right before building the model, so do the same with the checkpoint's seed."""
    seed = int(cfg.train.seed)
    if checkpoint is not None and os.path.isfile(checkpoint):
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        except Exception:  # unreadable: load_weights reports it with the path
            state = None
        if isinstance(state, Mapping) and isinstance(state.get("config"), Mapping):
            seed = int((state["config"].get("train") or {}).get("seed", seed))
    logger.warning(
        "model.backbone.weights='random': CLIP initialised with seed %d (train.seed)", seed
    )
    seed_everything(seed)


def init_model(
    config: Union[str, Config],
    checkpoint: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
    cfg_options: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """Build the model a config describes and load its trained weights; eval mode.

    Args:
        config (str | Config): a config file (``configs/voc.py``) or a loaded config.
        checkpoint (str, optional): our training checkpoint (``iter_N.pth``), a converted or bare decoder
            state dict, or a checkpoint of the authors' code (converted on the fly); None keeps the
            untrained decoder. The frozen CLIP always comes from ``model.backbone.weights``.
        device (str | torch.device, optional): default CUDA when available, else CPU.
        cfg_options (Mapping, optional): overrides of existing config keys (``{"test.flip": False}``).

    Returns:
        nn.Module: the model, with ``model.cfg`` (the resolved config) and ``model.checkpoint_info``
        (``checkpoint``, ``iteration``, ``train_seed``).
    """
    if isinstance(config, (str, os.PathLike)):
        cfg = load_config(os.fspath(config), cfg_options)
    else:
        cfg = Config(config.to_dict() if hasattr(config, "to_dict") else dict(config))
        if cfg_options:
            cfg.merge_from_dict(dict(cfg_options))
        cfg = validate_config(cfg)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = cfg.model.get("backbone", {}).get("weights")
    if weights == "random":
        _seed_random_weights(cfg, checkpoint)
    model = build_model(cfg)
    info = {"checkpoint": checkpoint, "iteration": None, "train_seed": None}
    if checkpoint is not None:
        loaded = load_weights(model, checkpoint)
        info["iteration"] = loaded.get("iteration")
        info["train_seed"] = ((loaded.get("config") or {}).get("train") or {}).get("seed")
    model.cfg = cfg
    model.checkpoint_info = info
    return model.eval().to(device)


@dataclasses.dataclass
class Segmentation:
    """The result of :func:`segment`.

    Attributes:
        labels (np.ndarray): (H, W) int64 class ids at the input size.
        probs (np.ndarray): (C, H, W) float32 class probabilities (softmax of the merged logits, or the
            DenseCRF marginals with ``crf=True``).
        class_names (Tuple[str, ...]): C names, index = class id.
    """

    labels: np.ndarray
    probs: np.ndarray
    class_names: Tuple[str, ...]

    def present(self) -> list:
        """Names of the classes that occur in ``labels``, by class id."""
        return [self.class_names[i] for i in np.unique(self.labels).tolist()]


def _class_names(model: nn.Module) -> Tuple[str, ...]:
    names = getattr(model, "class_names", None)
    if names is None:
        names = tuple(model.cfg.data.class_names)
    return tuple(names)


def segment(
    model: nn.Module,
    image: ImageLike,
    *,
    scales: Optional[Sequence[float]] = None,
    flip: Optional[bool] = None,
    crf: bool = False,
) -> Segmentation:
    """Segment one image: multi-scale + flip inference (spec §9), optionally DenseCRF.

    Args:
        model (nn.Module): from :func:`init_model`.
        image: a path, PIL image, (H, W, 3) uint8 array or (3, H, W) uint8 tensor.
        scales (Sequence[float], optional): default the config's ``test.scales`` (VOC: 1.0, 0.75).
        flip (bool, optional): default ``test.flip``.
        crf (bool): DenseCRF with ``test.crf``.

    Returns:
        Segmentation: labels, probabilities and class names.
    """
    test = model.cfg.test
    predictor = SegmentationPredictor(
        model,
        scales=tuple(test.scales if scales is None else scales),
        flip=bool(test.flip if flip is None else flip),
        resize_long=test.resize_long,
    )
    pixels = read_image(image)
    out = predictor({"image": pixels, "name": "image"})
    size = tuple(pixels.shape[-2:])
    logits = F.interpolate(out["logits"][None], size=size, mode="bilinear", align_corners=False)
    probs = torch.softmax(logits[0], dim=0).numpy()
    labels = out["labels"].numpy().astype(np.int64)
    if crf:
        rgb = np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
        labels, probs = dense_crf(rgb, probs, test.crf, return_probs=True)
    return Segmentation(
        labels=labels, probs=probs.astype(np.float32), class_names=_class_names(model)
    )


@dataclasses.dataclass
class PseudoLabels:
    """The result of :func:`pseudo_labels`.

    Attributes:
        labels (np.ndarray): (H, W) int64 pseudo-label class ids at the input size.
        class_ids (np.ndarray): (K,) class ids of the given image-level labels, ascending.
        initial_cams (np.ndarray): (K, h, w) float32 initial CAMs (Grad-CAM, patch resolution).
        refined_cams (np.ndarray): (K, H, W) float32 refined CAMs at the input size.
        class_names (Tuple[str, ...]): C names, index = class id.
    """

    labels: np.ndarray
    class_ids: np.ndarray
    initial_cams: np.ndarray
    refined_cams: np.ndarray
    class_names: Tuple[str, ...]


def _label_ids(labels: Sequence[Union[str, int]], names: Sequence[str]) -> list:
    """Class ids (1..C-1) of image-level labels given as class names or ids."""
    lookup = {n.lower(): i for i, n in enumerate(names)}
    ids = []
    for label in labels:
        if isinstance(label, str):
            if label.lower() not in lookup:
                raise UserInputError(f"unknown class name {label!r}; known: {', '.join(names[1:])}")
            cid = lookup[label.lower()]
        else:
            cid = int(label)
        if not 1 <= cid < len(names):
            raise UserInputError(
                f"image-level label {label!r}: expected a foreground class (id 1..{len(names) - 1})"
            )
        ids.append(cid)
    if not ids:
        raise UserInputError("pseudo_labels needs at least one image-level label")
    return sorted(set(ids))


def pseudo_labels(
    model: nn.Module, image: ImageLike, labels: Sequence[Union[str, int]]
) -> PseudoLabels:
    """The pseudo-labels the model derives from image-level labels (validation mode: RFM + PAR).

    Args:
        model (nn.Module): from :func:`init_model` (a model supporting ``mode="pseudo"``).
        image: a path, PIL image, (H, W, 3) uint8 array or (3, H, W) uint8 tensor.
        labels (Sequence[str | int]): the classes present, as class names (``"dog"``) or class ids (1..C-1).

    Returns:
        PseudoLabels: labels, class ids, initial and refined CAMs, class names.
    """
    names = _class_names(model)
    ids = _label_ids(labels, names)
    multihot = torch.zeros(len(names) - 1)
    multihot[[i - 1 for i in ids]] = 1.0
    pixels = read_image(image)
    out = PseudoLabelPredictor(model)({"image": pixels, "name": "image", "cls_labels": multihot})
    return PseudoLabels(
        labels=out["pseudo"].numpy().astype(np.int64),
        class_ids=(out["class_index"].numpy() + 1).astype(np.int64),
        initial_cams=out["cams"].numpy(),
        refined_cams=out["cams_refined"].numpy(),
        class_names=names,
    )
