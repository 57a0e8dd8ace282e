"""Run the authors' WeCLIP code (https://github.com/zbf1991/WeCLIP, VOC model) from a local clone.

The authors' code is imported at run time from the folder the user passes (their clone, or its
``WeCLIP/`` folder); nothing of it is copied into this repository. :class:`OfficialWeCLIP` builds
their ``WeCLIP_model.model_attn_aff_voc.WeCLIP`` and their ``PolyWarmupAdamW`` as their training
script (``scripts/dist_clip_voc.py``) does, and exposes what the parity recorder
(``tools/parity/record_official.py``) and the side-by-side benchmark need: one training step, their
validation-mode forward at the original image size, their ``validate()``, their multi-scale + flip
inference (``test_msc_flip_voc.py``) and their evaluation (``utils/evaluate.py``).

Runtime patches (scoped: active only while their code runs, listed in :attr:`OfficialWeCLIP.patches`):

- on CPU, ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return ``self`` (their code calls
  ``.cuda()`` unconditionally);
- in fp32 mode (the default), ``torch.Tensor.half`` returns ``self``: removes their fp16 casts
  (``clip/model.py`` ``upsample_pos_emb`` and ``convert_weights``, the out-projection of
  ``clip/myAtt.py``), so CLIP and the decoder run in fp32 like ours;
- modules their imports name but the path we run never uses are replaced, only if they are not
  installed and only during the import, by stubs that raise when touched: ``mmcv`` (an unused
  ``ConvModule`` import), ``lxml``, ``sklearn`` (``multilabel_score``), ``ttach`` (test-time
  smoothing), ``imageio``, ``joblib``, ``omegaconf``, ``matplotlib``, ``numpy.lib.utils`` (removed
  in NumPy 2; an unused ``deprecate`` import), ``pkg_resources`` (removed from recent setuptools;
  replaced by a module exposing the real ``packaging``), ``torch.utils.tensorboard``;
- where their model reads the ground-truth mask ``SegmentationClassAug/<name>.png`` to find the
  classes present (and, in validation mode, the output size), the harness writes that PNG into
  its own temporary dataset root: from the image-level labels for training steps (the PNG holds
  exactly those classes), the given mask for validation and inference.

Their code's own side effects on import (``CUDA_VISIBLE_DEVICES`` set to 0, ``"."`` appended to
``sys.path``) are undone; their top-level packages (``clip``, ``utils``, ``datasets``,
``WeCLIP_model``, ``pytorch_grad_cam``) are removed from ``sys.modules`` again after the import, so
they cannot shadow anything else in the process.
"""

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import shutil
import sys
import tempfile
import types
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["OFFICIAL_COMMIT", "OfficialWeCLIP", "find_official_root", "official_code_sha256"]

#: The commit of zbf1991/WeCLIP this harness was written against (``git rev-parse 0f47db4``).
OFFICIAL_COMMIT = "0f47db46b5a59ff3bd9293a6e357382ca6490399"

# Top-level packages of the authors' code; their modules import each other by these names.
_THEIR_PACKAGES = ("clip", "utils", "datasets", "WeCLIP_model", "pytorch_grad_cam")
# Their training-script settings (configs/voc_attn_reg.yaml, scripts/dist_clip_voc.py)
_RFM_COUNTER = 15000  # model_attn_aff_voc.py: RFM when the forward counter exceeds it
_DECODER_PREFIXES = ("decoder_fts_fuse.", "decoder.")
_NUM_FG = 20  # VOC: the model file hard-codes the 20 VOC prompts


def find_official_root(path: str) -> str:
    """The authors' ``WeCLIP/`` folder (holding ``WeCLIP_model/``), given their clone or that folder.

    Raises:
        FileNotFoundError: neither ``path/WeCLIP/WeCLIP_model`` nor ``path/WeCLIP_model`` exists.
    """
    for candidate in (os.path.join(path, "WeCLIP"), path):
        if os.path.isfile(os.path.join(candidate, "WeCLIP_model", "model_attn_aff_voc.py")):
            return os.path.abspath(candidate)
    raise FileNotFoundError(
        f"{path}: not a clone of zbf1991/WeCLIP (expected WeCLIP/WeCLIP_model/model_attn_aff_voc.py "
        "inside it, or WeCLIP_model/model_attn_aff_voc.py if you pass the WeCLIP/ folder)"
    )


def official_code_sha256(root: str) -> str:
    """sha256 over the relative paths and bytes of every ``.py`` file under the authors' folder,
    in sorted order (identifies the code a fixture was recorded from, with or without ``.git``)."""
    import hashlib

    digest = hashlib.sha256()
    files = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(directory, n) for n in names if n.endswith(".py")]
    for path in sorted(files):
        digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Import machinery: stubs for unused, missing modules; isolation of the authors' package names
# --------------------------------------------------------------------------------------------------
class _Unavailable:
    """Stands for an attribute of a stubbed module; fails loudly if the code path ever uses it."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{self._what} is not installed; weclip.parity.official stubbed it because the authors' "
            "code imports it on a path the harness does not run. Install it to use this path."
        )

    def __getattr__(self, name: str) -> "_Unavailable":
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{self._what}.{name}")


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{self.__name__}.{name}")


def _importable(name: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(name)
        return True
    except Exception:
        return False


def _stub_plan() -> Dict[str, types.ModuleType]:
    """Stub modules for what is missing here (module name -> stub)."""
    plan: Dict[str, types.ModuleType] = {}
    groups = (
        ("mmcv", "mmcv.cnn"),
        ("lxml", "lxml.etree"),
        ("sklearn", "sklearn.metrics"),
        ("ttach",),
        ("imageio", "imageio.v2"),
        ("joblib",),
        ("omegaconf",),
        ("matplotlib", "matplotlib.pyplot"),
    )
    for names in groups:
        if not all(_importable(n) for n in names):
            for n in names:
                plan[n] = _StubModule(n)
    if not _importable("numpy.lib.utils"):
        plan["numpy.lib.utils"] = _StubModule("numpy.lib.utils")
    if not _importable("pkg_resources"):
        import packaging.version

        stub = _StubModule("pkg_resources")
        stub.packaging = packaging  # what clip/clip.py uses: packaging.version.parse
        plan["pkg_resources"] = stub
    if not _importable("torch.utils.tensorboard"):
        plan["torch.utils.tensorboard"] = _StubModule("torch.utils.tensorboard")
    return plan


def _is_theirs(name: str, packages: Sequence[str] = _THEIR_PACKAGES) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@contextlib.contextmanager
def _isolated_import(
    root: str, stubs: Mapping[str, types.ModuleType], packages: Sequence[str] = _THEIR_PACKAGES
) -> Iterator[None]:
    """Import the authors' modules from ``root`` without leaving their names in ``sys.modules``
    (``packages``: their top-level package names)."""
    shadowed = {n: m for n, m in sys.modules.items() if _is_theirs(n, packages)}
    for name in shadowed:
        del sys.modules[name]
    saved_path = list(sys.path)
    saved_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    previous_stubs = {n: sys.modules.get(n) for n in stubs}
    sys.modules.update(stubs)
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        if saved_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda
        for name in [n for n in sys.modules if _is_theirs(n, packages)]:
            del sys.modules[name]
        sys.modules.update(shadowed)
        for name, module in previous_stubs.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _load_script(path: str, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------
# Runtime patches
# --------------------------------------------------------------------------------------------------
def _identity(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self


@contextlib.contextmanager
def _runtime_patches(no_cuda: bool, no_half: bool) -> Iterator[None]:
    """``.cuda()`` -> self (CPU), ``Tensor.half()`` -> self (fp32), restored on exit."""
    saved = []
    if no_cuda:
        saved += [(torch.Tensor, "cuda"), (torch.nn.Module, "cuda")]
    if no_half:
        saved += [(torch.Tensor, "half")]
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr in saved]
    for owner, attr, _ in originals:
        setattr(owner, attr, _identity)
    try:
        with warnings.catch_warnings():
            # clip/model.py calls the deprecated F.upsample on every forward
            warnings.filterwarnings("ignore", message=r".*nn\.functional\.upsample.*deprecated")
            yield
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


# --------------------------------------------------------------------------------------------------
# Tracing of intermediate values inside their forward
# --------------------------------------------------------------------------------------------------
def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().copy()
    return np.array(x, copy=True)


class _Trace:
    """Collects what their forward computes, per image, through wrappers of their functions.

    ``images``: one dict per image of the batch (in order), with the keys documented in
    :meth:`OfficialWeCLIP.train_step`.
    """

    def __init__(self) -> None:
        self.images: List[Dict[str, Any]] = []
        self.clip_block_out: Optional[np.ndarray] = None  # (11, B, L, D), their (L, B, D) layout
        self.clip_attn: Optional[np.ndarray] = None  # (11, B, L, L)

    @property
    def current(self) -> Dict[str, Any]:
        return self.images[-1]


class _GradCAMTap:
    """Wraps their ``GradCAM`` object: records each call's CAM, probabilities, last attention,
    activation and gradient."""

    def __init__(self, cam: Any, trace: _Trace) -> None:
        self._cam = cam
        self._trace = trace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cam, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        grayscale, probs, attn_last = self._cam(*args, **kwargs)
        record = self._trace.current
        record.setdefault("gradcam_cams", []).append(np.array(grayscale[0], copy=True))
        record.setdefault("gradcam_probs", []).append(_np(probs[0]))
        record.setdefault("attn_last", []).append(_np(attn_last[0]))
        acts = self._cam.activations_and_grads.activations
        grads = self._cam.activations_and_grads.gradients
        record.setdefault("gradcam_acts", []).append(_np(acts[0][0]))
        record.setdefault("gradcam_grads", []).append(_np(grads[0][0]))
        return grayscale, probs, attn_last


@contextlib.contextmanager
def _trace_forward(
    model_mod: types.ModuleType,
    clip_tool: types.ModuleType,
    model: torch.nn.Module,
    trace: Optional[_Trace],
) -> Iterator[None]:
    """Wrap their per-image functions so that ``trace`` receives the intermediate values.

    ``model_mod``: their model module (it imported ``generate_clip_fts``, ``perform_single_voc_cam``,
    ``generate_cam_label`` and defines ``_refine_cams``); ``clip_tool``: their ``clip.clip_tool``;
    ``model``: their model (``grad_cam``, ``par``). WeCLIP's and WeCLIP+'s VOC models share these
    names, so both harnesses use this.
    """
    if trace is None:
        yield
        return
    originals = {
        (model_mod, "generate_clip_fts"): model_mod.generate_clip_fts,
        (model_mod, "perform_single_voc_cam"): model_mod.perform_single_voc_cam,
        (model_mod, "generate_cam_label"): model_mod.generate_cam_label,
        (model_mod, "_refine_cams"): model_mod._refine_cams,
        (clip_tool, "scoremap2bbox"): clip_tool.scoremap2bbox,
        (clip_tool, "compute_trans_mat"): clip_tool.compute_trans_mat,
    }
    target_code = originals[(model_mod, "perform_single_voc_cam")].__code__

    def clip_fts(*args: Any, **kwargs: Any) -> Any:
        fts, attns = originals[(model_mod, "generate_clip_fts")](*args, **kwargs)
        trace.clip_block_out = np.stack([_np(f) for f in fts])
        trace.clip_attn = np.stack([_np(a) for a in attns])
        return fts, attns

    def single_cam(*args: Any, **kwargs: Any) -> Any:
        trace.images.append({})
        captured: Dict[str, Any] = {}

        def profiler(frame: Any, event: str, arg: Any) -> None:
            # their layer choice is a local of perform_single_voc_cam: read it on return
            if event == "return" and frame.f_code is target_code:
                for key in ("attn_diff", "diff_th", "attn_mask", "label_id_list"):
                    if key in frame.f_locals:
                        captured[key] = frame.f_locals[key]

        previous = sys.getprofile()
        sys.setprofile(profiler)
        try:
            out = originals[(model_mod, "perform_single_voc_cam")](*args, **kwargs)
        finally:
            sys.setprofile(previous)
        record = trace.current
        record["label_ids"] = np.asarray(captured["label_id_list"], dtype=np.int64)
        if "attn_diff" in captured:
            record["rfm_diff"] = _np(captured["attn_diff"])
            record["rfm_diff_mean"] = _np(captured["diff_th"])
            record["rfm_keep"] = _np(captured["attn_mask"][:, 0, 0]) > 0
        return out

    def cam_label(cam_refined_list: Any, keys: Any, w: int, h: int) -> Any:
        trace.current["cams_refined_lowres"] = np.stack([_np(c) for c in cam_refined_list])
        out = originals[(model_mod, "generate_cam_label")](cam_refined_list, keys, w, h)
        trace.current["cams_refined"] = _np(out["refined_cam"])
        trace.current["keys"] = np.asarray(out["keys"], dtype=np.int64)
        return out

    def refine_cams(ref_mod: Any, images: Any, cams: Any, valid_key: Any) -> Any:
        trace.current["par_in"] = _np(cams)
        trace.current["par_keys"] = _np(valid_key).astype(np.int64)
        return originals[(model_mod, "_refine_cams")](ref_mod, images, cams, valid_key)

    def boxes(*args: Any, **kwargs: Any) -> Any:
        box, count = originals[(clip_tool, "scoremap2bbox")](*args, **kwargs)
        trace.current.setdefault("boxes", []).append(np.asarray(box, dtype=np.int64)[:count])
        return box, count

    def trans_mat(attn_weight: Any) -> Any:
        out = originals[(clip_tool, "compute_trans_mat")](attn_weight)
        trace.current["affinity"] = _np(attn_weight)
        trace.current["trans_mat"] = _np(out)
        return out

    replacements = {
        (model_mod, "generate_clip_fts"): clip_fts,
        (model_mod, "perform_single_voc_cam"): single_cam,
        (model_mod, "generate_cam_label"): cam_label,
        (model_mod, "_refine_cams"): refine_cams,
        (clip_tool, "scoremap2bbox"): boxes,
        (clip_tool, "compute_trans_mat"): trans_mat,
    }
    grad_cam = model.grad_cam
    model.grad_cam = _GradCAMTap(grad_cam, trace)

    def par_hook(module: Any, inputs: Any, output: Any) -> None:
        trace.current["par_out"] = _np(output[0])

    handle = model.par.register_forward_hook(par_hook)
    for (owner, attr), fn in replacements.items():
        setattr(owner, attr, fn)
    try:
        yield
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
        model.grad_cam = grad_cam
        handle.remove()


def _trained_shapes(
    model: torch.nn.Module, prefixes: Tuple[str, ...]
) -> "OrderedDict[str, Tuple[int, ...]]":
    """Names and shapes of their model's parameters under ``prefixes`` (the trained parts)."""
    return OrderedDict(
        (n, tuple(p.shape)) for n, p in model.named_parameters() if n.startswith(prefixes)
    )


def _trained_state(
    model: torch.nn.Module, prefixes: Tuple[str, ...]
) -> "OrderedDict[str, torch.Tensor]":
    """A CPU copy of their model's parameters under ``prefixes``, under their names."""
    return OrderedDict(
        (n, p.detach().cpu().clone()) for n, p in model.named_parameters() if n.startswith(prefixes)
    )


def _load_trained_state(
    model: torch.nn.Module, prefixes: Tuple[str, ...], state: Mapping[str, torch.Tensor]
) -> None:
    """Copy ``state`` (their names, every parameter under ``prefixes``) into their model.

    Raises:
        KeyError: a missing or unexpected name (listed).
        ValueError: a shape mismatch (named).
    """
    params = {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(f"decoder state: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, param in params.items():
            value = torch.as_tensor(state[name])
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"decoder state '{name}': shape {tuple(value.shape)}, model {tuple(param.shape)}"
                )
            param.copy_(value.to(param.dtype))


def _normalize_images(transforms: types.ModuleType, images: torch.Tensor) -> torch.Tensor:
    """Their ``datasets.transforms.normalize_img`` (module ``transforms``) on (B, 3, H, W) or
    (3, H, W) uint8 RGB -> float32 of the same shape."""
    single = images.dim() == 3
    batch = images[None] if single else images
    if batch.dtype != torch.uint8:
        raise ValueError(f"normalize expects uint8 images, got {batch.dtype}")
    hwc = batch.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([transforms.normalize_img(x) for x in hwc]).transpose(0, 3, 1, 2)
    out = torch.from_numpy(np.ascontiguousarray(out))
    return out[0] if single else out


# --------------------------------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------------------------------
class _ImageList(torch.utils.data.Dataset):
    """(name, image (3,H,W) normalised, mask (H,W) long, cls_label (20,)) items, as their
    ``VOC12SegDataset`` yields them, for their ``validate()`` functions."""

    def __init__(self, items: Sequence[Tuple[str, torch.Tensor, torch.Tensor, np.ndarray]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tuple[str, torch.Tensor, torch.Tensor, np.ndarray]:
        return self.items[index]


class OfficialWeCLIP:
    """The authors' VOC WeCLIP model, optimizer and procedures, run from their clone.

    Args:
        repo_path (str): their clone (or its ``WeCLIP/`` folder).
        clip_weights (str): CLIP ViT-B/16 weights in OpenAI's layout (``ViT-B-16.pt`` or the
            random stand-in of :mod:`weclip.parity.random_clip`).
        num_classes (int): 21 (the VOC model; their COCO model is not wrapped).
        seed (int): their ``setup_seed(seed)`` runs before the model is built (their script: 1), so
            the decoder starts from their own initialisation unless ``decoder_state`` is given.
        decoder_state (Mapping[str, Tensor], optional): decoder weights under their names
            (``decoder_fts_fuse.*``, ``decoder.*``), loaded after construction (all of them).
        device (str): "cpu" (``.cuda()`` patched away) or "cuda" (their code runs natively).
        fp32 (bool): remove their fp16 casts (``Tensor.half`` patched away); False runs them as
            published (fp16 CLIP on GPU).
        crop_size (int): training crop (320); training steps need square inputs of this size
            (their affinity-label window is built for ``crop_size // 16``).
        radius (int): affinity window radius (8, their ``--radius``).
        learning_rate, weight_decay, betas, warmup_iter, max_iters, warmup_ratio, power: their
            ``configs/voc_attn_reg.yaml`` optimizer and scheduler values.
        optimizer_start_step (int): their optimizer's ``global_step`` before the first step (0 in
            their runs); e.g. 49 puts the next two steps on the last warm-up step and the first
            poly step.
    """

    def __init__(
        self,
        repo_path: str,
        clip_weights: str,
        *,
        num_classes: int = 21,
        seed: int = 1,
        decoder_state: Optional[Mapping[str, torch.Tensor]] = None,
        device: str = "cpu",
        fp32: bool = True,
        crop_size: int = 320,
        radius: int = 8,
        learning_rate: float = 2e-4,
        weight_decay: float = 0.01,
        betas: Tuple[float, float] = (0.9, 0.999),
        warmup_iter: int = 50,
        max_iters: int = 30000,
        warmup_ratio: float = 1e-6,
        power: float = 1.0,
        optimizer_start_step: int = 0,
    ) -> None:
        if num_classes != 21:
            raise ValueError(
                f"num_classes={num_classes}: only the authors' VOC model (21 classes) is wrapped"
            )
        if not os.path.isfile(clip_weights):
            raise FileNotFoundError(f"CLIP weights not found: {clip_weights}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.root = find_official_root(repo_path)
        self.device = torch.device(device)
        self.num_classes = num_classes
        self.crop_size = int(crop_size)
        self._no_cuda = device == "cpu"
        self._no_half = bool(fp32)
        self._tmp = tempfile.TemporaryDirectory(prefix="weclip_official_")
        self._data_root = self._tmp.name
        os.makedirs(os.path.join(self._data_root, "SegmentationClassAug"))
        self._names = 0
        self.settings = dict(
            seed=int(seed),
            device=device,
            fp32=bool(fp32),
            crop_size=int(crop_size),
            radius=int(radius),
            learning_rate=float(learning_rate),
            weight_decay=float(weight_decay),
            betas=[float(b) for b in betas],
            warmup_iter=int(warmup_iter),
            max_iters=int(max_iters),
            warmup_ratio=float(warmup_ratio),
            power=float(power),
            optimizer_start_step=int(optimizer_start_step),
        )

        stubs = _stub_plan()
        self.patches: List[str] = []
        if self._no_cuda:
            self.patches.append("torch.Tensor.cuda / torch.nn.Module.cuda -> return self (CPU)")
        if self._no_half:
            self.patches.append(
                "torch.Tensor.half -> return self (fp32: removes the fp16 casts of clip/model.py "
                "upsample_pos_emb and convert_weights and of the clip/myAtt.py out-projection)"
            )
        self.patches += [f"stub module {n} (not installed, unused on this path)" for n in stubs]
        self.patches.append(
            "GT masks: SegmentationClassAug/<name>.png written by the harness (image-level labels "
            "for training steps, the given mask for validation/inference)"
        )

        with _isolated_import(self.root, stubs), self._patched():
            self._model_mod = importlib.import_module("WeCLIP_model.model_attn_aff_voc")
            self._clip_tool = importlib.import_module("clip.clip_tool")
            self._optim_mod = importlib.import_module("utils.optimizer")
            self._evaluate = importlib.import_module("utils.evaluate")
            self._transforms = importlib.import_module("datasets.transforms")
            self._train_script = _load_script(
                os.path.join(self.root, "scripts", "dist_clip_voc.py"), "weclip_official_train"
            )
            self._test_script = _load_script(
                os.path.join(self.root, "test_msc_flip_voc.py"), "weclip_official_test"
            )
            self._train_script.setup_seed(int(seed))
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load / F.upsample deprecation notes
                self.model = self._model_mod.WeCLIP(
                    num_classes=num_classes,
                    clip_model=clip_weights,
                    embedding_dim=256,
                    in_channels=[768, 768, 768, 768],
                    dataset_root_path=self._data_root,
                    device=device,
                )
            self.model.to(self.device)
        if decoder_state is not None:
            self.load_decoder_state(decoder_state)

        groups = self.model.get_param_groups()
        lr, wd = float(learning_rate), float(weight_decay)
        # the four groups of their train(): only the last one holds parameters (the decoder)
        self.optimizer = self._optim_mod.PolyWarmupAdamW(
            params=[
                {"params": groups[0], "lr": lr, "weight_decay": wd},
                {"params": groups[1], "lr": 0.0, "weight_decay": 0.0},
                {"params": groups[2], "lr": lr * 10, "weight_decay": wd},
                {"params": groups[3], "lr": lr * 10, "weight_decay": wd},
            ],
            lr=lr,
            weight_decay=wd,
            betas=tuple(float(b) for b in betas),
            warmup_iter=int(warmup_iter),
            max_iter=int(max_iters),
            warmup_ratio=float(warmup_ratio),
            power=float(power),
        )
        self.optimizer.global_step = int(optimizer_start_step)
        grid = self.crop_size // 16
        self._aff_window = self._train_script.get_mask_by_radius(h=grid, w=grid, radius=int(radius))

    # ---------------------------------------------------------------------------------------------
    # basics
    # ---------------------------------------------------------------------------------------------
    def _patched(self) -> contextlib.AbstractContextManager:
        return _runtime_patches(self._no_cuda, self._no_half)

    def close(self) -> None:
        """Delete the temporary dataset root (also done at garbage collection)."""
        self._tmp.cleanup()

    @property
    def iteration(self) -> int:
        """Their forward counter (``WeCLIP.iter_num``): the RFM runs when it exceeds 15000."""
        return int(self.model.iter_num)

    def decoder_shapes(self) -> "OrderedDict[str, Tuple[int, ...]]":
        """Names (theirs) and shapes of the trained parameters (fusion head + decoder)."""
        return _trained_shapes(self.model, _DECODER_PREFIXES)

    def decoder_state(self) -> "OrderedDict[str, torch.Tensor]":
        """A CPU copy of the trained parameters under their names."""
        return _trained_state(self.model, _DECODER_PREFIXES)

    def load_decoder_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy decoder weights (their names, every one of them) into their model.

        Raises:
            KeyError: a missing or unexpected name (listed).
            ValueError: a shape mismatch (named).
        """
        _load_trained_state(self.model, _DECODER_PREFIXES, state)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Their ``datasets.transforms.normalize_img`` on (B, 3, H, W) or (3, H, W) uint8 RGB.

        Returns:
            torch.Tensor: float32 of the same shape (ImageNet mean/std on 0-255 values).
        """
        return _normalize_images(self._transforms, images)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> their normalisation; float -> taken as already normalised."""
        if images.dtype == torch.uint8:
            images = self.normalize(images)
        return images.float().to(self.device)

    def _new_names(self, count: int) -> List[str]:
        names = [f"img{self._names + i:06d}" for i in range(count)]
        self._names += count
        return names

    def _write_mask(self, name: str, mask: np.ndarray) -> None:
        path = os.path.join(self._data_root, "SegmentationClassAug", name + ".png")
        Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8))).save(path)

    def _write_label_masks(self, names: Sequence[str], cls_labels: torch.Tensor) -> None:
        """Masks holding exactly the classes of ``cls_labels`` (their code reads the classes
        present from the mask: ``np.unique(mask) - 1`` on uint8, background and 255 wrap to
        255 and 254 and are dropped)."""
        labels = torch.as_tensor(cls_labels)
        if labels.dim() != 2 or labels.shape[1] != _NUM_FG:
            raise ValueError(f"cls_labels must be (B, {_NUM_FG}), got {tuple(labels.shape)}")
        for name, row in zip(names, labels):
            present = torch.nonzero(row > 0).flatten().tolist()
            self._write_mask(name, np.array([[0] + [c + 1 for c in present]], dtype=np.uint8))

    # ---------------------------------------------------------------------------------------------
    # tracing
    # ---------------------------------------------------------------------------------------------
    def _tracing(self, trace: Optional[_Trace]) -> contextlib.AbstractContextManager:
        """Wrap their per-image functions so that ``trace`` receives the intermediate values."""
        return _trace_forward(self._model_mod, self._clip_tool, self.model, trace)

    @contextlib.contextmanager
    def _decoder_taps(
        self, keep: Optional[torch.Tensor], out: Dict[str, torch.Tensor]
    ) -> Iterator[None]:
        """Record the fusion output before/after Dropout2d and the kept channels; with ``keep``
        (B, 256) bool, apply that mask instead of the drawn one (``x * keep / (1 - p)``)."""
        fuse = self.model.decoder_fts_fuse

        def pre_hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            out["fuse_pre_dropout"] = output.detach().cpu().clone()

        def drop_hook(module: Any, inputs: Any, output: torch.Tensor) -> Optional[torch.Tensor]:
            x = inputs[0]
            if keep is not None and module.training:
                scale = keep.to(x.device).float() / (1.0 - module.p)
                output = x * scale[:, :, None, None]
            out["fused"] = output.detach().cpu().clone()
            if module.training:
                out["dropout_keep"] = output.detach().flatten(2).ne(0).any(dim=2).cpu()
            return output

        handles = [
            fuse.linear_fuse.register_forward_hook(pre_hook),
            fuse.dropout.register_forward_hook(drop_hook),
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    # ---------------------------------------------------------------------------------------------
    # training step
    # ---------------------------------------------------------------------------------------------
    def train_step(
        self,
        images: torch.Tensor,
        cls_labels: torch.Tensor,
        *,
        iteration: Optional[int] = None,
        dropout_keep: Optional[torch.Tensor] = None,
        optimize: bool = True,
        return_grads: bool = False,
        trace: bool = False,
    ) -> Dict[str, Any]:
        """One iteration of their training loop (``scripts/dist_clip_voc.py`` ``train()``).

        Forward of their model in training mode, then, as their loop does: logits upsampled to
        the pseudo-label size, affinity labels (``cams_to_affinity_label`` with their radius
        window), ``get_aff_loss``, ``get_seg_loss``, ``loss = seg + 0.1 aff``, ``zero_grad``,
        ``backward``, ``PolyWarmupAdamW.step``.

        Args:
            images (torch.Tensor): (B, 3, S, S), S = ``crop_size``: uint8 RGB (normalised with
                their ``normalize_img``) or float (already normalised).
            cls_labels (torch.Tensor): (B, 20) multi-hot image-level labels (the classes their
                code finds in the GT mask the harness writes).
            iteration (int, optional): their forward counter *during* this forward (1-indexed;
                > 15000 = RFM); default: their counter + 1.
            dropout_keep (torch.Tensor, optional): (B, 256) bool Dropout2d keep mask to apply
                instead of drawing one (to replay a recorded step).
            optimize (bool): run backward and the optimizer step (False: forward and losses).
            return_grads (bool): include the decoder gradients (their names).
            trace (bool): include the per-image intermediate values.

        Returns:
            dict: ``seg_logits`` (B, 21, S/16, S/16) before upsampling, ``pseudo_labels``
            (B, S, S) long, ``attn_pred`` (B, n, n), ``aff_label`` (B, n, n), ``seg_loss``,
            ``aff_loss``, ``loss``, ``aff_pos_count``, ``aff_neg_count`` (0-d), ``fuse_pre_dropout``
            and ``fused`` (B, 256, S/16, S/16), ``dropout_keep`` (B, 256) bool, ``iteration``,
            ``rfm`` (bool), ``lr`` (the 4 group learning rates this step used; None without
            ``optimize``), ``grads`` (name -> tensor) with ``return_grads``, and with ``trace``:
            ``clip_block_out`` (11, L, B, D) and ``clip_attn`` (11, B, L, L) as numpy arrays,
            ``images``: per image a dict with ``label_ids`` (K,), ``gradcam_cams`` (K x (h, w)),
            ``gradcam_probs`` (K x (K+25,)), ``attn_last``, ``gradcam_acts``/``gradcam_grads``
            (K x (768, h, w)), ``boxes`` (K x (n_k, 4) x0,y0,x1,y1), ``affinity`` and
            ``trans_mat`` (n, n), ``rfm_diff``/``rfm_diff_mean``/``rfm_keep`` (RFM only),
            ``cams_refined_lowres`` (K, h, w), ``cams_refined`` (K, S, S), ``keys``, ``par_in``,
            ``par_out`` (K+1, S, S), ``par_keys``.
        """
        inputs = self._inputs(images)
        b, _, h, w = inputs.shape
        if (h, w) != (self.crop_size, self.crop_size):
            raise ValueError(
                f"training images must be {self.crop_size}x{self.crop_size} (their affinity window "
                f"is built for crop_size // 16), got {h}x{w}"
            )
        names = self._new_names(b)
        self._write_label_masks(names, cls_labels)
        if iteration is not None:
            if iteration < 1:
                raise ValueError(f"iteration is 1-indexed, got {iteration}")
            self.model.iter_num = int(iteration) - 1
        if dropout_keep is not None:
            dropout_keep = torch.as_tensor(dropout_keep, dtype=torch.bool)
            if tuple(dropout_keep.shape) != (b, 256):
                raise ValueError(
                    f"dropout_keep must be ({b}, 256), got {tuple(dropout_keep.shape)}"
                )
        tr = _Trace() if trace else None
        taps: Dict[str, torch.Tensor] = {}
        script = self._train_script
        self.model.train()
        with self._patched(), self._tracing(tr), self._decoder_taps(dropout_keep, taps):
            segs, cam, attn_pred = self.model(inputs, names)
            pseudo_label = cam
            segs_up = F.interpolate(
                segs, size=pseudo_label.shape[1:], mode="bilinear", align_corners=False
            )
            aff_label = script.cams_to_affinity_label(
                cam.clone(), mask=self._aff_window, ignore_index=255
            )
            attn_loss, pos_count, neg_count = script.get_aff_loss(attn_pred, aff_label)
            seg_loss = script.get_seg_loss(segs_up, pseudo_label.type(torch.long), ignore_index=255)
            loss = 1 * seg_loss + 0.1 * attn_loss
            lrs = None
            grads = None
            if optimize:
                self.optimizer.zero_grad()
                loss.backward()
                if return_grads:
                    grads = OrderedDict(
                        (n, p.grad.detach().cpu().clone())
                        for n, p in self.model.named_parameters()
                        if n.startswith(_DECODER_PREFIXES) and p.grad is not None
                    )
                self.optimizer.step()
                lrs = tuple(float(g["lr"]) for g in self.optimizer.param_groups)
        out: Dict[str, Any] = {
            "seg_logits": segs.detach().cpu(),
            "pseudo_labels": pseudo_label.detach().cpu().long(),
            "attn_pred": attn_pred.detach().cpu(),
            "aff_label": aff_label.detach().cpu(),
            "seg_loss": seg_loss.detach().cpu(),
            "aff_loss": attn_loss.detach().cpu(),
            "loss": loss.detach().cpu(),
            "aff_pos_count": pos_count.detach().cpu(),
            "aff_neg_count": neg_count.detach().cpu(),
            "iteration": self.iteration,
            "rfm": self.iteration > _RFM_COUNTER,
            "lr": lrs,
            **taps,
        }
        if grads is not None:
            out["grads"] = grads
        if tr is not None:
            out["clip_block_out"] = tr.clip_block_out
            out["clip_attn"] = tr.clip_attn
            out["images"] = tr.images
        return out

    def lr_schedule(self, steps: Sequence[int]) -> np.ndarray:
        """The learning rates their ``PolyWarmupAdamW`` sets at the given ``global_step`` values.

        A separate instance with this harness's settings (same four groups) over one dummy
        parameter without gradient, so the model is untouched.

        Returns:
            np.ndarray: (len(steps), 4) float64, one column per parameter group.
        """
        s = self.settings
        dummy = torch.nn.Parameter(torch.zeros(1))
        lr, wd = s["learning_rate"], s["weight_decay"]
        opt = self._optim_mod.PolyWarmupAdamW(
            params=[
                {"params": [], "lr": lr, "weight_decay": wd},
                {"params": [], "lr": 0.0, "weight_decay": 0.0},
                {"params": [], "lr": lr * 10, "weight_decay": wd},
                {"params": [dummy], "lr": lr * 10, "weight_decay": wd},
            ],
            lr=lr,
            weight_decay=wd,
            betas=tuple(s["betas"]),
            warmup_iter=s["warmup_iter"],
            max_iter=s["max_iters"],
            warmup_ratio=s["warmup_ratio"],
            power=s["power"],
        )
        rows = []
        for step in steps:
            opt.global_step = int(step)
            opt.step()
            rows.append([float(g["lr"]) for g in opt.param_groups])
        return np.asarray(rows, dtype=np.float64)

    # ---------------------------------------------------------------------------------------------
    # validation and inference
    # ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _mode(self, train: bool) -> Iterator[None]:
        previous = self.model.training
        self.model.train(train)
        try:
            yield
        finally:
            self.model.train(previous)

    def validation_forward(
        self,
        image: torch.Tensor,
        mask: np.ndarray,
        *,
        train_mode: bool = False,
        trace: bool = False,
    ) -> Dict[str, Any]:
        """Their forward in ``mode='val'`` on one whole image, as their ``validate()`` calls it.

        Validation mode always uses the RFM, and the refined CAMs and pseudo-labels come out at
        the size of the GT mask (the original image size), with the whole, uncropped image as
        PAR's guide (their patch convolution alone drops the rows/columns beyond a multiple of 16).
        Their counter advances, as in their code.

        Args:
            image (torch.Tensor): (3, H, W) uint8 RGB or normalised float.
            mask (np.ndarray): (H, W) GT mask (0 = background, 1..20, 255 = ignore): the classes
                present and the output size, as their code reads them.
            train_mode (bool): run with Dropout2d active (their in-training ``validate()`` never
                calls ``model.eval()``); default eval mode, deterministic.
            trace (bool): include the per-image intermediate values (see :meth:`train_step`).

        Returns:
            dict: ``seg_logits`` (1, 21, h, w), ``pseudo_labels`` (H, W) long, ``attn_pred``
            (1, n, n), ``fused`` (1, 256, h, w), and with ``trace`` the per-image record.
        """
        inputs = self._inputs(image[None] if image.dim() == 3 else image)
        name = self._new_names(1)[0]
        self._write_mask(name, np.asarray(mask))
        tr = _Trace() if trace else None
        taps: Dict[str, torch.Tensor] = {}
        with self._mode(train_mode), self._patched(), self._tracing(tr):
            with self._decoder_taps(None, taps):
                segs, cam, attn_pred = self.model(inputs, [name], "val")
        out: Dict[str, Any] = {
            "seg_logits": segs.detach().cpu(),
            "pseudo_labels": cam[0].detach().cpu().long(),
            "attn_pred": attn_pred.detach().cpu(),
            "fused": taps["fused"],
        }
        if tr is not None:
            out["clip_block_out"] = tr.clip_block_out
            out["clip_attn"] = tr.clip_attn
            out["images"] = tr.images
        return out

    def _items(
        self, images: Sequence[torch.Tensor], masks: Sequence[np.ndarray]
    ) -> List[Tuple[str, torch.Tensor, torch.Tensor, np.ndarray]]:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        items = []
        for image, mask in zip(images, masks):
            mask = np.asarray(mask)
            if tuple(mask.shape) != tuple(image.shape[-2:]):
                raise ValueError(f"mask {mask.shape} does not match image {tuple(image.shape)}")
            name = self._new_names(1)[0]
            self._write_mask(name, mask)
            label = np.zeros(_NUM_FG, dtype=np.uint8)
            present = [int(v) - 1 for v in np.unique(mask) if 0 < v < 255]
            label[present] = 1
            norm = self._inputs(image[None] if image.dim() == 3 else image)[0].cpu()
            items.append((name, norm, torch.from_numpy(mask.astype(np.int64)), label))
        return items

    def validate(
        self,
        images: Sequence[torch.Tensor],
        masks: Sequence[np.ndarray],
        *,
        train_mode: bool = False,
        trace: bool = False,
    ) -> Dict[str, Any]:
        """Their ``validate()`` of ``scripts/dist_clip_voc.py`` over these images (batch 1).

        Args:
            images (Sequence[torch.Tensor]): (3, H, W) uint8 or normalised float, any sizes.
            masks (Sequence[np.ndarray]): (H, W) GT masks (classes present, size, evaluation).
            train_mode (bool): see :meth:`validation_forward` (default eval mode).
            trace (bool): include the per-image intermediate values (``images``, see
                :meth:`train_step`).

        Returns:
            dict: ``seg_score`` and ``cam_score`` (their score dicts: ``pAcc``, ``mAcc``,
            ``miou``, ``iou``), and per image ``seg_logits`` (1, 21, h, w) and ``pseudo_labels``
            (H, W) long, as their model returned them.
        """
        items = self._items(images, masks)
        outputs: List[Tuple[torch.Tensor, torch.Tensor]] = []

        def hook(module: Any, inputs: Any, output: Any) -> None:
            outputs.append((output[0].detach().cpu(), output[1][0].detach().cpu().long()))

        loader = torch.utils.data.DataLoader(_ImageList(items), batch_size=1, shuffle=False)
        handle = self.model.register_forward_hook(hook)
        tr = _Trace() if trace else None
        try:
            with self._mode(train_mode), self._patched(), self._tracing(tr):
                with contextlib.redirect_stderr(io.StringIO()):  # their tqdm bar
                    seg_score, cam_score = self._train_script.validate(
                        model=self._with_mode(train_mode), data_loader=loader, cfg=None
                    )
        finally:
            handle.remove()
        out: Dict[str, Any] = {
            "seg_score": seg_score,
            "cam_score": cam_score,
            "seg_logits": [o[0] for o in outputs],
            "pseudo_labels": [o[1] for o in outputs],
        }
        if tr is not None:
            out["images"] = tr.images
        return out

    def _with_mode(self, train_mode: bool) -> Any:
        """Their validate() ends with ``model.train()``; give it a proxy whose ``train()`` is a
        no-op so the harness restores the mode itself."""
        model = self.model

        class _Proxy:
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return model(*args, **kwargs)

            def train(self, mode: bool = True) -> Any:
                return self

            def eval(self) -> Any:
                return self

            def cuda(self, *args: Any, **kwargs: Any) -> Any:
                return self

        return _Proxy()

    def msc_flip_inference(
        self,
        image: torch.Tensor,
        mask: np.ndarray,
        *,
        scales: Sequence[float] = (1.0, 0.75),
        resize_long: int = 512,
    ) -> Dict[str, Any]:
        """Their ``test_msc_flip_voc.py`` ``validate()`` on one image (eval mode, as their script).

        Their procedure: long side resized to ``resize_long``, for each scale a forward of
        [x, flip(x)] in ``mode='val'``, flip-averaged logits, the non-reference scales resized to
        the reference scale's logit size, mean over scales, bilinear to the mask size, argmax.

        Args:
            image (torch.Tensor): (3, H, W) uint8 or normalised float at its original size.
            mask (np.ndarray): (H, W) GT mask (their forward reads the classes from it; their
                evaluation compares with it).
            scales (Sequence[float]): their ``test_scales`` ([1, 0.75]).
            resize_long (int): their ``--resize_long`` (512).

        Returns:
            dict: ``msc_logits`` and ``single_logits`` (1, 21, h, w) (what their script saves as
            ``msc_segs`` / ``segs``), ``labels`` and ``single_labels`` (H, W) long (their
            ``msc_seg_preds`` / ``seg_preds``), ``cams`` (H, W) long (their script's
            pseudo-labels: val mode on the resized input, at the mask size), ``hists`` (their
            three confusion matrices: seg, msc seg, cams).
        """
        items = self._items([image], [mask])
        name = items[0][0]
        work = tempfile.mkdtemp(prefix="msc_", dir=self._data_root)
        os.makedirs(os.path.join(work, "logit"))
        script = self._test_script
        script.args = argparse.Namespace(resize_long=int(resize_long), work_dir=work)
        try:
            with self._mode(False), self._patched(), contextlib.redirect_stderr(io.StringIO()):
                result = script.validate(
                    self._with_mode(False), _ImageList(items), test_scales=list(scales)
                )
            gts, preds, msc_preds, cams, preds_hist, msc_hist, cams_hist = result
            saved = np.load(os.path.join(work, "logit", name + ".npy"), allow_pickle=True).item()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {
            "msc_logits": torch.from_numpy(saved["msc_segs"]),
            "single_logits": torch.from_numpy(saved["segs"]),
            "labels": torch.from_numpy(np.asarray(msc_preds[0])).long(),
            "single_labels": torch.from_numpy(np.asarray(preds[0])).long(),
            "cams": torch.from_numpy(np.asarray(cams[0])).long(),
            "hists": {"seg": preds_hist, "msc_seg": msc_hist, "cams": cams_hist},
        }

    def scores(
        self, gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], num_classes: int = 21
    ) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Their ``utils.evaluate.scores`` over prediction/GT pairs, from an empty histogram.

        Returns:
            Tuple[np.ndarray, dict]: the (C, C) confusion matrix (rows GT) and their scores
            (``pAcc``, ``mAcc``, ``miou``, ``iou``: class -> IoU).
        """
        hist = np.zeros((num_classes, num_classes))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # their 0/0 for absent classes
            return self._evaluate.scores(
                [np.asarray(g) for g in gts], [np.asarray(p) for p in preds], hist, num_classes
            )

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run any callable under the harness's runtime patches (e.g. one of their functions)."""
        with self._patched():
            return fn(*args, **kwargs)
