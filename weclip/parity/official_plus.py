"""Run the authors' WeCLIP+ code (https://github.com/zbf1991/WeCLIP, folder ``WeCLIP+/``) from a clone.

WeCLIP+ (Zhang et al., "Frozen CLIP-DINO: A Strong Backbone for Weakly Supervised Semantic
Segmentation", TPAMI 2025, https://ieeexplore.ieee.org/document/10891864); what their code computes
is described in ``docs/official_code_plus.md``. The authors' code is imported at run time from the
folder the user passes (their clone, or its ``WeCLIP+/`` folder) and DINOv2's hub code from a local
clone of https://github.com/facebookresearch/dinov2; nothing of either is copied into this
repository. :class:`OfficialWeCLIPPlus` builds their ``WeCLIP_Plus.model_attn_aff_voc.WeCLIP_Plus``
and their ``PolyWarmupAdamW`` as their training script (``scripts/dist_clip_voc.py``) does, and
re-drives one iteration of that script's training loop per call (:meth:`OfficialWeCLIPPlus.
train_step`), with its self-training branch (``if n_iter > 18000``) and their Dice loss, which writes
into its target.

It shares the machinery of WeCLIP's harness (:mod:`weclip.parity.official`), which lives in
:mod:`weclip.parity.official_base`: the isolated import and the stubs for missing, unused modules,
the runtime patches (``.cuda()`` -> self on CPU, ``Tensor.half`` -> self for fp32), the tracing of
their per-image functions (WeCLIP+'s VOC model calls the same ``generate_clip_fts``,
``perform_single_voc_cam``, ``generate_cam_label`` and ``_refine_cams``), the optimizer's four
parameter groups, the affinity window and the trained parameters under their names. What differs,
each listed in :attr:`OfficialWeCLIPPlus.patches`:

- their model calls ``torch.hub.load('facebookresearch/dinov2', name)``: during construction the
  harness redirects that one call to the local clone (``source='local'``, the clone's hub builder
  as published), and the hub builder's ``torch.hub.load_state_dict_from_url`` to the weights file
  the user passes, whose name must be the official file name the URL ends with
  (``dinov2_vits14_pretrain.pth``); the builder loads it strictly as it loads the real file;
- their VOC model reads the image-level labels (and, in validation mode, the original size) from
  the VOC XML annotation ``<root>/Annotations/<name>.xml`` (doc §1.3): the harness writes one per
  image into its temporary dataset root, the objects in ascending class order;
- their ``clip/clip_tool.py`` parses that XML with ``lxml.etree.fromstring``; if ``lxml`` is not
  installed, a stand-in module whose ``fromstring`` is the standard library's
  ``xml.etree.ElementTree.fromstring`` is used during the import (their ``parse_xml_to_dict`` only
  uses ``len()``, iteration over children, ``.tag`` and ``.text``, on which the two parsers agree
  for XML without comments or processing instructions, as the harness writes it).

Their code's side effects on import are undone as for WeCLIP (:mod:`weclip.parity.official_base`);
their top-level packages (``clip``, ``utils``, ``datasets``, ``WeCLIP_Plus``, ``pytorch_grad_cam``)
and the hub code's ``dinov2`` package are removed from ``sys.modules`` after the import.
"""

import contextlib
import importlib
import os
import types
import urllib.parse
import warnings
import xml.etree.ElementTree as ElementTree
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from weclip.errors import MissingFileError
from weclip.parity.official_base import (
    _NUM_FG,
    OfficialHarness,
    _check_inputs,
    _isolated_import,
    _keep_mask,
    _np,
    _present_classes,
    _stub_notes,
    _stub_plan,
    _tap_fusion_head,
    _Trace,
    _training_settings,
    official_code_sha256,
)

__all__ = [
    "OfficialWeCLIPPlus",
    "find_official_plus_root",
    "find_dinov2_root",
    "official_code_sha256",
]

# Their top-level packages (``WeCLIP+/``); the hub clone's package
_THEIR_PACKAGES = ("clip", "utils", "datasets", "WeCLIP_Plus", "pytorch_grad_cam")
_HUB_PACKAGES = ("dinov2", "hubconf")
_DINOV2_HUB = "facebookresearch/dinov2"
# Trained parameters (their names): CLIP head, DINO head, shared transformer decoder (doc §3)
_DECODER_PREFIXES = ("decoder_fts_fuse.", "dino_decoder_fts_fuse.", "decoder.")
_HEADS = {"clip": "decoder_fts_fuse", "dino": "dino_decoder_fts_fuse"}
# Constants of their training loop (scripts/dist_clip_voc.py train(), doc §5)
_SELF_TRAINING_AFTER = 18000  # `if n_iter > 18000` on the 0-based step index
_SELF_TRAINING_CONF = 0.75  # `pred_max > 0.75`
_CLIP_FLAG = 16  # configs/voc_attn_reg.yaml clip_init.clip_flag (ViT-B/16)


def find_official_plus_root(path: str) -> str:
    """The authors' ``WeCLIP+/`` folder (holding ``WeCLIP_Plus/``), given their clone or that folder.

    Raises:
        MissingFileError: neither ``path/WeCLIP+/WeCLIP_Plus`` nor ``path/WeCLIP_Plus`` exists.
    """
    for candidate in (os.path.join(path, "WeCLIP+"), path):
        if os.path.isfile(os.path.join(candidate, "WeCLIP_Plus", "model_attn_aff_voc.py")):
            return os.path.abspath(candidate)
    raise MissingFileError(
        f"{path}: not a clone of zbf1991/WeCLIP (expected WeCLIP+/WeCLIP_Plus/model_attn_aff_voc.py "
        "inside it, or WeCLIP_Plus/model_attn_aff_voc.py if you pass the WeCLIP+/ folder)"
    )


def find_dinov2_root(path: str) -> str:
    """A local clone of facebookresearch/dinov2 (``hubconf.py`` and ``dinov2/hub/backbones.py``).

    Raises:
        MissingFileError: ``path`` does not hold the hub code.
    """
    if os.path.isfile(os.path.join(path, "hubconf.py")) and os.path.isfile(
        os.path.join(path, "dinov2", "hub", "backbones.py")
    ):
        return os.path.abspath(path)
    raise MissingFileError(
        f"{path}: not a clone of facebookresearch/dinov2 (expected hubconf.py and "
        "dinov2/hub/backbones.py)"
    )


def _xml_stand_in() -> Dict[str, types.ModuleType]:
    """``lxml`` / ``lxml.etree`` modules whose ``fromstring`` is the standard library's."""
    etree = types.ModuleType("lxml.etree")
    etree.fromstring = ElementTree.fromstring  # type: ignore[attr-defined]
    package = types.ModuleType("lxml")
    package.etree = etree  # type: ignore[attr-defined]
    return {"lxml": package, "lxml.etree": etree}


@contextlib.contextmanager
def _local_dinov2_hub(hub_root: str, weights: str) -> Iterator[None]:
    """Redirect ``torch.hub.load('facebookresearch/dinov2', name)`` to the local clone, and the hub
    builder's weight download to ``weights`` (whose name must be the file the URL ends with)."""
    original_load = torch.hub.load
    original_url = torch.hub.load_state_dict_from_url

    def from_file(url: str, *args: Any, **kwargs: Any) -> Any:
        name = os.path.basename(urllib.parse.urlparse(url).path)
        if name != os.path.basename(weights):
            raise FileNotFoundError(
                f"the DINOv2 hub code asks for {name} ({url}); the harness was given "
                f"{weights}: pass a file named {name}"
            )
        return torch.load(weights, map_location="cpu", weights_only=True)

    def hub_load(repo_or_dir: str, model: str, *args: Any, **kwargs: Any) -> Any:
        if repo_or_dir != _DINOV2_HUB:
            raise ValueError(f"unexpected torch.hub.load({repo_or_dir!r}, ...) in their code")
        kwargs["source"] = "local"
        torch.hub.load_state_dict_from_url = from_file
        try:
            with _isolated_import(hub_root, {}, _HUB_PACKAGES), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*xFormers is not available")
                return original_load(hub_root, model, *args, **kwargs)
        finally:
            torch.hub.load_state_dict_from_url = original_url

    torch.hub.load = hub_load
    try:
        yield
    finally:
        torch.hub.load = original_load


class _StopForward(Exception):
    """Raised by a hook to leave their forward once the decoder outputs are known."""


class OfficialWeCLIPPlus(OfficialHarness):
    """The authors' VOC WeCLIP+ model, optimizer and training-loop iteration, run from their clone.

    Args:
        repo_path (str): their clone (or its ``WeCLIP+/`` folder).
        clip_weights (str): CLIP ViT-B/16 weights in OpenAI's layout (``ViT-B-16.pt`` or the
            random stand-in of :mod:`weclip.parity.random_clip`).
        dinov2_repo (str): a local clone of facebookresearch/dinov2 (its hub code builds DINOv2).
        dino_weights (str): the official-layout weights, named as the official file
            (``dinov2_vits14_pretrain.pth`` or the random stand-in of
            :mod:`weclip.parity.random_dino`).
        dino_model (str): their ``dino_init.dino_model`` (``dinov2_vits14``, the configs' default).
        dino_dim (int): their ``dino_fts_fuse_dim`` (384 for ViT-S).
        decoder_layers (int): their ``decoder_layer`` (3 for DINOv2 S/B).
        seed (int): their ``setup_seed(seed)`` runs before the model is built (their script: 1).
        decoder_state (Mapping[str, Tensor], optional): trained weights under their names
            (``decoder_fts_fuse.*``, ``dino_decoder_fts_fuse.*``, ``decoder.*``), all of them.
        device (str): "cpu" (``.cuda()`` patched away) or "cuda" (their code runs natively).
        fp32 (bool): remove their fp16 casts (``Tensor.half`` patched away).
        crop_size (int): training crop (320); training steps need square inputs of this size.
        radius (int): affinity window radius (8, their ``--radius``).
        learning_rate, weight_decay, betas, warmup_iter, max_iters, warmup_ratio, power: their
            ``configs/voc_attn_reg.yaml`` optimizer and scheduler values (lr 2e-5, x10 on the
            only non-empty group: 2e-4, doc §6).
    """

    def __init__(
        self,
        repo_path: str,
        clip_weights: str,
        dinov2_repo: str,
        dino_weights: str,
        *,
        dino_model: str = "dinov2_vits14",
        dino_dim: int = 384,
        decoder_layers: int = 3,
        seed: int = 1,
        decoder_state: Optional[Mapping[str, torch.Tensor]] = None,
        device: str = "cpu",
        fp32: bool = True,
        crop_size: int = 320,
        radius: int = 8,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.01,
        betas: Tuple[float, float] = (0.9, 0.999),
        warmup_iter: int = 50,
        max_iters: int = 30000,
        warmup_ratio: float = 1e-6,
        power: float = 1.0,
    ) -> None:
        _check_inputs([("CLIP weights", clip_weights), ("DINOv2 weights", dino_weights)], device)
        root = find_official_plus_root(repo_path)
        self.dinov2_root = find_dinov2_root(dinov2_repo)
        settings = dict(
            seed=int(seed),
            device=device,
            fp32=bool(fp32),
            dino_model=dino_model,
            dino_dim=int(dino_dim),
            decoder_layers=int(decoder_layers),
            **_training_settings(
                crop_size,
                radius,
                learning_rate,
                weight_decay,
                betas,
                warmup_iter,
                max_iters,
                warmup_ratio,
                power,
            ),
        )
        super().__init__(
            root,
            settings,
            num_classes=21,
            trained_prefixes=_DECODER_PREFIXES,
            labels_dir="Annotations",
            tmp_prefix="weclip_official_plus_",
        )
        self.n_iter = 0  # their training loop's 0-based step index

        stubs = _stub_plan()
        xml_stand_in = "lxml" in stubs
        if xml_stand_in:
            stubs.update(_xml_stand_in())
        self.patches: List[str] = self._runtime_patch_notes()
        self.patches += _stub_notes([n for n in stubs if not n.startswith("lxml")])
        if xml_stand_in:
            self.patches.append(
                "lxml.etree stand-in (lxml not installed): fromstring = "
                "xml.etree.ElementTree.fromstring (their parse_xml_to_dict uses len(), iteration, "
                ".tag and .text only)"
            )
        self.patches += [
            f"torch.hub.load('{_DINOV2_HUB}', '{dino_model}') -> the local clone of "
            f"{_DINOV2_HUB} given (source='local'); the hub builder's load_state_dict_from_url "
            f"-> the weights file given, named {os.path.basename(dino_weights)} (strict load)",
            "VOC XML annotations Annotations/<name>.xml written by the harness (the image-level "
            "labels in ascending class order, the image size)",
        ]

        def build() -> torch.nn.Module:
            with _local_dinov2_hub(self.dinov2_root, dino_weights):
                return self._model_mod.WeCLIP_Plus(
                    num_classes=self.num_classes,
                    clip_model=clip_weights,
                    dino_model=dino_model,
                    dino_fts_dim=int(dino_dim),
                    decoder_layers=int(decoder_layers),
                    embedding_dim=256,
                    in_channels=[768, 768, 768, 768],
                    dataset_root_path=self._data_root,
                    clip_flag=_CLIP_FLAG,
                    device=device,
                )

        with self._their_code(stubs, _THEIR_PACKAGES):
            self._import_common("WeCLIP_Plus.model_attn_aff_voc", "weclip_official_plus_train")
            self._dice_mod = importlib.import_module("WeCLIP_Plus.dice_loss")
            self._build_model(build)
            self._criterion_dice = self._dice_mod.DiceLoss()
        # the four groups of their train(): only the last one holds parameters (both heads and
        # the shared decoder, doc §6); the affinity window for crop_size // clip_flag (16)
        self._setup_training(decoder_state)

    # ---------------------------------------------------------------------------------------------
    # basics
    # ---------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> List[str]:
        """Their 20 VOC class names (``clip/clip_text.py: class_names``), as the XML holds them."""
        return list(self._model_mod.class_names)

    def write_annotation(self, name: str, class_ids: Sequence[int], width: int, height: int) -> str:
        """Write ``Annotations/<name>.xml`` as VOC does: the image size and one ``<object>`` per
        class, in the given order (0-based foreground ids; their code keeps the order of first
        appearance, doc §1.3). Returns the path."""
        names = self.class_names
        root = ElementTree.Element("annotation")
        ElementTree.SubElement(root, "filename").text = f"{name}.jpg"
        size = ElementTree.SubElement(root, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 3)):
            ElementTree.SubElement(size, tag).text = str(int(value))
        for class_id in class_ids:
            if not 0 <= int(class_id) < _NUM_FG:
                raise ValueError(f"class id {class_id} is not a VOC foreground id (0..19)")
            obj = ElementTree.SubElement(root, "object")
            ElementTree.SubElement(obj, "name").text = names[int(class_id)]
        path = os.path.join(self._data_root, "Annotations", f"{name}.xml")
        ElementTree.ElementTree(root).write(path, encoding="unicode")
        return path

    def _write_label_annotations(
        self, names: Sequence[str], cls_labels: torch.Tensor, size: Tuple[int, int]
    ) -> None:
        for name, present in zip(names, _present_classes(cls_labels)):
            if not present:
                raise ValueError(f"image {name}: no class present (their XML needs an object)")
            self.write_annotation(name, present, width=size[1], height=size[0])

    # ---------------------------------------------------------------------------------------------
    # taps on their forward
    # ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _taps(
        self,
        keep: Mapping[str, Optional[torch.Tensor]],
        out: Dict[str, Any],
        trace: Optional[_Trace],
    ) -> Iterator[None]:
        """Record the DINO patch tokens, both heads before/after Dropout2d and their kept channels,
        the two decoder inputs; with ``keep[head]`` (B, 256) bool, apply that mask instead of the
        drawn one (``x * keep / (1 - p)``). With a trace, also each image's gate probabilities
        (the ``seg_dino_cam`` argument of ``perform_single_voc_cam``)."""
        model = self.model
        handles = []
        for head, attr in _HEADS.items():
            keys = (f"{head}_pre_dropout", f"{head}_fused", f"{head}_keep")
            handles += _tap_fusion_head(getattr(model, attr), keep.get(head), out, keys)

        decoder_inputs: List[torch.Tensor] = []

        def decoder_hook(m: Any, inputs: Any, output: Any) -> None:
            decoder_inputs.append(inputs[0].detach().cpu().clone())

        handles.append(model.decoder.register_forward_hook(decoder_hook))
        dino = model.dino_encoder
        forward_features = dino.forward_features

        def dino_features(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            result = forward_features(x, *args, **kwargs)
            out["dino_input_size"] = tuple(x.shape[-2:])
            out["dino_tokens"] = result["x_norm_patchtokens"].detach().cpu().clone()
            return result

        dino.forward_features = dino_features
        model_mod = self._model_mod
        single_cam = model_mod.perform_single_voc_cam

        def gate_tap(*args: Any, **kwargs: Any) -> Any:
            result = single_cam(*args, **kwargs)
            if trace is not None:
                trace.current["gate_probs"] = _np(kwargs["seg_dino_cam"])
            return result

        model_mod.perform_single_voc_cam = gate_tap
        try:
            yield
        finally:
            model_mod.perform_single_voc_cam = single_cam
            del dino.forward_features  # back to the class's method
            for h in handles:
                h.remove()
            if len(decoder_inputs) == 2:
                out["decoder_input_clip"], out["decoder_input_dino"] = decoder_inputs

    # ---------------------------------------------------------------------------------------------
    # the decoder alone (to set up fixtures)
    # ---------------------------------------------------------------------------------------------
    def classifier_inputs(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The inputs of their shared classifier ``decoder.linear_pred`` for both branches, from
        their forward in eval mode (no dropout), left as soon as both are known (no Grad-CAM).

        Args:
            images (torch.Tensor): (B, 3, H, W) uint8 or normalised float.

        Returns:
            Tuple[Tensor, Tensor]: (B, 256, h, w) of the CLIP branch and of the DINO branch.
        """
        inputs = self._inputs(images)
        names = self._new_names(inputs.shape[0])
        # their forward needs no annotation before the CAM loop; none is written
        captured: List[torch.Tensor] = []

        def pre_hook(m: Any, args: Any) -> None:
            captured.append(args[0].detach().cpu().clone())
            if len(captured) == 2:
                raise _StopForward

        handle = self.model.decoder.linear_pred.register_forward_pre_hook(pre_hook)
        try:
            with self._mode(False), self._patched(), torch.no_grad():
                self.model(inputs, names)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if len(captured) != 2:
            raise RuntimeError("their forward did not reach the classifier twice")
        return captured[0], captured[1]

    # ---------------------------------------------------------------------------------------------
    # one iteration of their training loop
    # ---------------------------------------------------------------------------------------------
    def train_step(
        self,
        images: torch.Tensor,
        cls_labels: torch.Tensor,
        *,
        n_iter: Optional[int] = None,
        dropout_keep: Optional[Mapping[str, torch.Tensor]] = None,
        optimize: bool = True,
        return_grads: bool = False,
        trace: bool = False,
    ) -> Dict[str, Any]:
        """One iteration of their training loop (``scripts/dist_clip_voc.py`` ``train()``), doc §5.

        In their order: forward in training mode -> ``segs_clip, segs_dino, cam, attn_pred``; the
        mean logits and both branches upsampled to the pseudo-label size; the softmax maxima and
        argmaxes of the three; affinity labels from a clone of the pseudo-labels; ``get_aff_loss``;
        ``if n_iter > 18000``: confident pixels of the mean prediction (> 0.75) replace the
        pseudo-labels *in place*; ``get_seg_loss``; their ``DiceLoss`` on the same label tensor
        (which it modifies: 255 -> 21); the two cross-branch losses; ``loss = seg + 0.1 aff +
        0.1 (clip + dino) + dice``; ``zero_grad``, ``backward``, ``PolyWarmupAdamW.step``. Their
        optimizer's ``global_step`` equals ``n_iter`` in their loop; the harness keeps it so.

        Args:
            images (torch.Tensor): (B, 3, S, S), S = ``crop_size``: uint8 RGB (normalised with
                their ``normalize_img``) or float (already normalised).
            cls_labels (torch.Tensor): (B, 20) multi-hot image-level labels (written into the XML
                annotations their code reads).
            n_iter (int, optional): their 0-based step index for this iteration (> 18000 =
                self-training); default: the harness's counter (0, then +1 per optimised step).
            dropout_keep (Mapping[str, Tensor], optional): ``{"clip": (B, 256), "dino": (B, 256)}``
                bool Dropout2d keep masks of the two heads, applied instead of drawn ones.
            optimize (bool): run backward and the optimizer step (False: forward and losses).
            return_grads (bool): include the gradients of the trained parameters (their names).
            trace (bool): include the per-image intermediate values.

        Returns:
            dict: ``seg_clip``, ``seg_dino`` (B, 21, S/16, S/16) before upsampling;
            ``pseudo_labels`` (B, S, S) long, their online labels Y (before self-training);
            ``train_labels`` (B, S, S) long, the same tensor after self-training and the Dice
            (what L_seg and the Dice saw); ``pred_max``/``pred_label_seg`` (B, S, S), softmax
            maximum and argmax of the upsampled mean logits; ``pred_label_clip``,
            ``pred_label_dino`` (B, S, S) (targets of the other branch's loss); ``attn_pred`` and
            ``aff_label`` (B, n, n); ``seg_loss``, ``dice_loss``, ``cross_clip_loss``,
            ``cross_dino_loss``, ``aff_loss``, ``loss``, ``aff_pos_count``, ``aff_neg_count``
            (0-d); ``self_training`` (bool), ``n_iter``; ``lr`` (the 4 group learning rates;
            None without ``optimize``); ``grads`` with ``return_grads``; the taps
            ``dino_tokens`` (B, hd·wd, Dd), ``dino_input_size``, ``clip_pre_dropout`` /
            ``clip_fused`` (B, 256, h, w), ``dino_pre_dropout`` / ``dino_fused`` (B, 256, hd, wd),
            ``clip_keep`` / ``dino_keep`` (B, 256) bool, ``decoder_input_clip`` /
            ``decoder_input_dino`` (B, 256, h, w: F_clip and F_dino resized); with ``trace``:
            ``clip_block_out`` (11, L, B, D), ``clip_attn`` (11, B, L, L) and per image the
            records of :meth:`weclip.parity.official.OfficialWeCLIP.train_step` (Grad-CAM, RFM+
            layer choice ``rfm_diff``/``rfm_diff_mean``/``rfm_keep``, ``affinity`` (R ⊙ A),
            ``trans_mat``, refined CAMs, PAR) plus ``gate_probs`` (21, h, w).
        """
        inputs = self._training_inputs(images)
        b, _, h, w = inputs.shape
        if n_iter is not None:
            if n_iter < 0:
                raise ValueError(f"n_iter is 0-based, got {n_iter}")
            self.n_iter = int(n_iter)
        step_index = self.n_iter
        keep: Dict[str, Optional[torch.Tensor]] = {}
        for head, mask in (dropout_keep or {}).items():
            if head not in _HEADS:
                raise ValueError(f"dropout_keep keys are {sorted(_HEADS)}, got {head!r}")
            keep[head] = _keep_mask(mask, b, f"dropout_keep[{head!r}]")
        names = self._new_names(b)
        self._write_label_annotations(names, cls_labels, (h, w))
        tr = _Trace() if trace else None
        taps: Dict[str, Any] = {}
        script = self._train_script
        self.model.train()
        with self._patched(), self._tracing(tr), self._taps(keep, taps, tr):
            # ---- their loop body (scripts/dist_clip_voc.py train()), in their order ----
            segs_clip, segs_dino, cam, attn_pred = self.model(inputs, names)
            pseudo_label = cam
            online_labels = cam.detach().clone()  # Y, for the record (their loop mutates cam)
            size = pseudo_label.shape[1:]
            segs = 0.5 * segs_clip + 0.5 * segs_dino
            segs = F.interpolate(segs, size=size, mode="bilinear", align_corners=False)
            segs_clip_up = F.interpolate(segs_clip, size=size, mode="bilinear", align_corners=False)
            segs_dino_up = F.interpolate(segs_dino, size=size, mode="bilinear", align_corners=False)
            _, pred_label_clip = torch.max(F.softmax(segs_clip_up, dim=1), dim=1)
            _, pred_label_dino = torch.max(F.softmax(segs_dino_up, dim=1), dim=1)
            pred_max, pred_label_seg = torch.max(F.softmax(segs, dim=1), dim=1)
            fts_cam = cam.clone()
            aff_label = self._affinity_labels(fts_cam)
            attn_loss, pos_count, neg_count = script.get_aff_loss(attn_pred, aff_label)
            self_training = step_index > _SELF_TRAINING_AFTER
            if self_training:
                confident = pred_max > _SELF_TRAINING_CONF
                pseudo_label[confident] = pred_label_seg[confident]
            seg_loss = script.get_seg_loss(segs, pseudo_label.type(torch.long), ignore_index=255)
            seg_loss2 = self._criterion_dice(segs, pseudo_label.type(torch.long))
            seg_clip_loss2 = script.get_seg_loss(
                segs_clip_up, pred_label_dino.type(torch.long), ignore_index=255
            )
            seg_dino_loss2 = script.get_seg_loss(
                segs_dino_up, pred_label_clip.type(torch.long), ignore_index=255
            )
            loss = (
                1 * seg_loss + 0.1 * attn_loss + 0.1 * (seg_clip_loss2 + seg_dino_loss2) + seg_loss2
            )
            lrs = None
            grads = None
            if optimize:
                self.optimizer.global_step = step_index
                lrs, grads = self._optimise(loss, return_grads)
                self.n_iter = step_index + 1
        out: Dict[str, Any] = {
            "seg_clip": segs_clip.detach().cpu(),
            "seg_dino": segs_dino.detach().cpu(),
            "pseudo_labels": online_labels.cpu().long(),
            "train_labels": pseudo_label.detach().cpu().long(),
            "pred_max": pred_max.detach().cpu(),
            "pred_label_seg": pred_label_seg.detach().cpu(),
            "pred_label_clip": pred_label_clip.detach().cpu(),
            "pred_label_dino": pred_label_dino.detach().cpu(),
            "attn_pred": attn_pred.detach().cpu(),
            "aff_label": aff_label.detach().cpu(),
            "seg_loss": seg_loss.detach().cpu(),
            "dice_loss": seg_loss2.detach().cpu(),
            "cross_clip_loss": seg_clip_loss2.detach().cpu(),
            "cross_dino_loss": seg_dino_loss2.detach().cpu(),
            "aff_loss": attn_loss.detach().cpu(),
            "loss": loss.detach().cpu(),
            "aff_pos_count": pos_count.detach().cpu(),
            "aff_neg_count": neg_count.detach().cpu(),
            "self_training": bool(self_training),
            "n_iter": step_index,
            "lr": lrs,
            **taps,
        }
        if grads is not None:
            out["grads"] = grads
        self._add_trace(out, tr)
        return out

    def _affinity_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Their ``cams_to_affinity_label(fts_cam, mask=attn_mask, ignore_index=255,
        clip_flag=16)`` call of the training loop."""
        return self._train_script.cams_to_affinity_label(
            labels, mask=self._aff_window, ignore_index=255, clip_flag=_CLIP_FLAG
        )
