"""The base class of the library's models: the part of the model interface they all share.

The contract itself (what the trainer, the evaluation loop, the API and the tools rely on) is described in
docs/architecture.md, "The model interface". :class:`SegmentationModel` holds what every model implements the
same way (the input normalisation, its constants and the class names) and declares the members each model
must define, so a model that forgets one fails when it is built, not deep in a training run.
"""

import abc
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from weclip.models.pixels import normalize_pixels

__all__ = ["SegmentationModel"]


class SegmentationModel(nn.Module, abc.ABC):
    """A segmentation model behind the library's model interface (docs/architecture.md).

    Contract: images enter ``forward(images, cls_labels=None, *, mode="predict" | "pseudo" | "loss",
    iteration=None, out_size=None, valid=None)`` as (B, 3, H, W) uint8 (or float 0-255) RGB and the model
    normalises them itself (:meth:`preprocess`); ``num_classes`` counts background; the network input is
    cropped to a multiple of ``patch_size`` (1 = any size); ``trainable_module()`` is the only trained part
    and the ``model`` entry of checkpoints.

    This class provides ``class_names``, ``preprocess`` and the ``pixel_mean`` / ``pixel_std`` buffers:
    (3,) float32, non-persistent (rebuilt from the config, never in a checkpoint), so the device follows
    the model. A subclass defines ``num_classes``, ``patch_size``, ``trainable_module`` and ``forward``,
    and may name in ``inference_only_keys`` the config sections its training never reads (``--resume``
    then lets them differ from the checkpoint's config, e.g. to re-score a finished run another way).

    Args:
        pixel_mean (Sequence[float]): the 3 per-channel means on 0-255 RGB.
        pixel_std (Sequence[float]): the 3 per-channel standard deviations on 0-255 RGB.
        class_names (Sequence[str], optional): C names, index = class id (for the API's outputs).
    """

    #: dotted config keys (and their subtrees) that only inference reads; the resume check ignores them
    inference_only_keys: Tuple[str, ...] = ()

    def __init__(
        self,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__()
        self.class_names = tuple(class_names) if class_names is not None else None
        for name, values in (("pixel_mean", pixel_mean), ("pixel_std", pixel_std)):
            self.register_buffer(name, torch.tensor(values).float().view(3), persistent=False)

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """C, classes including background."""

    @property
    @abc.abstractmethod
    def patch_size(self) -> int:
        """The network input is cropped to a multiple of it (1 = any size)."""

    @abc.abstractmethod
    def trainable_module(self) -> nn.Module:
        """The sub-module that trains: the optimiser's parameters, the ``model`` entry of checkpoints."""

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise 0-255 RGB images with the model's constants: (x - mean) / std per channel.

        Args:
            images (torch.Tensor): (B, 3, H, W) RGB, uint8 or float in 0-255.

        Returns:
            torch.Tensor: (B, 3, H, W) float32.
        """
        return normalize_pixels(images, self.pixel_mean, self.pixel_std)
