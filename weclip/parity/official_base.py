"""What the WeCLIP and WeCLIP+ harnesses share: running the authors' code from a user's clone.

WeCLIP (https://github.com/zbf1991/WeCLIP, folder ``WeCLIP/``, described in
``docs/official_code.md``) and WeCLIP+ (folder ``WeCLIP+/``, ``docs/official_code_plus.md``) are two
trees of the same repository with the same layout: ``clip/``, ``utils/`` (``optimizer.py``:
``PolyWarmupAdamW``), ``datasets/transforms.py`` (``normalize_img``), the VOC model
``<package>/model_attn_aff_voc.py`` and the training script ``scripts/dist_clip_voc.py``
(``setup_seed``, ``get_mask_by_radius``, the loss functions, ``validate``). Their VOC models call
the same per-image functions (``generate_clip_fts``, ``perform_single_voc_cam``,
``generate_cam_label``, ``_refine_cams``, ``clip_tool.scoremap2bbox`` / ``compute_trans_mat``, their
``GradCAM`` and ``PAR``), so one harness skeleton drives both:

- the isolated import (:func:`_isolated_import`): their code imported from the clone with their
  top-level package names removed from ``sys.modules`` again afterwards, ``sys.path`` and
  ``CUDA_VISIBLE_DEVICES`` (which their scripts set to 0) restored; modules their imports name but
  the recorded paths never use are stubbed, only while importing and only if not installed
  (:func:`_stub_plan`);
- the runtime patches (:func:`_runtime_patches`), active only while their code runs:
  ``torch.Tensor.cuda`` / ``torch.nn.Module.cuda`` return ``self`` on CPU (their code calls
  ``.cuda()`` unconditionally), ``torch.Tensor.half`` returns ``self`` in fp32 mode (their fp16
  casts: ``clip/model.py`` ``upsample_pos_emb`` and ``convert_weights``, the ``clip/myAtt.py``
  out-projection; spec §1.1);
- the tracing of their per-image functions (:func:`_trace_forward`) and of a fusion head's
  Dropout2d (:func:`_tap_fusion_head`);
- :class:`OfficialHarness`, the base of :class:`weclip.parity.official.OfficialWeCLIP` and
  :class:`weclip.parity.official_plus.OfficialWeCLIPPlus`: the temporary dataset root their model
  reads labels from, their model built after their ``setup_seed``, their ``PolyWarmupAdamW`` with
  the four parameter groups of their ``train()`` (spec §8, plus §6), the affinity-label radius
  window (spec §7.2), the trained parameters under their names, their input normalisation
  (spec §1.2) and one optimiser step.
"""

import contextlib
import hashlib
import importlib
import importlib.util
import io
import os
import sys
import tempfile
import types
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["OfficialHarness", "official_code_sha256"]

_NUM_FG = 20  # VOC: both model files hard-code the 20 VOC prompts
_PATCH = 16  # ViT-B/16: their affinity window is built for crop_size // 16 (spec §7.2)


def official_code_sha256(root: str) -> str:
    """sha256 over the relative paths and bytes of every ``.py`` file under the authors' folder,
    in sorted order (identifies the code a fixture was recorded from, with or without ``.git``)."""
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


def _check_inputs(files: Sequence[Tuple[str, str]], device: str) -> None:
    """The weight files (``(label, path)`` pairs) exist and ``device`` is one the harness runs.

    Raises:
        FileNotFoundError: a weight file is missing (named with its label).
        ValueError: ``device`` is neither "cpu" nor "cuda".
    """
    for label, path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{label} not found: {path}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def _training_settings(
    crop_size: int,
    radius: int,
    learning_rate: float,
    weight_decay: float,
    betas: Tuple[float, float],
    warmup_iter: int,
    max_iters: int,
    warmup_ratio: float,
    power: float,
) -> Dict[str, Any]:
    """The crop, affinity radius and their ``configs/voc_attn_reg.yaml`` optimiser and scheduler
    values, as plain numbers (the part of ``settings`` both harnesses have, in this order)."""
    return dict(
        crop_size=int(crop_size),
        radius=int(radius),
        learning_rate=float(learning_rate),
        weight_decay=float(weight_decay),
        betas=[float(b) for b in betas],
        warmup_iter=int(warmup_iter),
        max_iters=int(max_iters),
        warmup_ratio=float(warmup_ratio),
        power=float(power),
    )


# --------------------------------------------------------------------------------------------------
# Import machinery: stubs for unused, missing modules; isolation of the authors' package names
# --------------------------------------------------------------------------------------------------
class _Unavailable:
    """Stands for an attribute of a stubbed module; fails loudly if the code path ever uses it."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{self._what} is not installed; weclip.parity.official_base stubbed it because the "
            "authors' code imports it on a path the harness does not run. Install it to use this "
            "path."
        )

    def __getattr__(self, name: str) -> "_Unavailable":
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{self._what}.{name}")


class _StubModule(types.ModuleType):
    """A module whose every attribute is an :class:`_Unavailable`."""

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
    """Stub modules for what is missing here (module name -> stub).

    The modules their imports name on paths the harnesses never run: ``mmcv`` (an unused
    ``ConvModule`` import), ``lxml``, ``sklearn`` (``multilabel_score``), ``ttach`` (test-time
    smoothing), ``imageio``, ``joblib``, ``omegaconf``, ``matplotlib``, ``numpy.lib.utils``
    (removed in NumPy 2; an unused ``deprecate`` import), ``pkg_resources`` (removed from recent
    setuptools; replaced by a module exposing the real ``packaging``, which ``clip/clip.py`` uses),
    ``torch.utils.tensorboard``.
    """
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


def _stub_notes(names: Sequence[str]) -> List[str]:
    """The ``patches`` lines of the stubbed modules ``names``."""
    return [f"stub module {n} (not installed, unused on this path)" for n in names]


def _is_theirs(name: str, packages: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@contextlib.contextmanager
def _isolated_import(
    root: str, stubs: Mapping[str, types.ModuleType], packages: Sequence[str]
) -> Iterator[None]:
    """Import the authors' modules from ``root`` without leaving their names in ``sys.modules``.

    Args:
        root (str): the folder holding their top-level packages (put first on ``sys.path``).
        stubs (Mapping[str, ModuleType]): modules placed in ``sys.modules`` during the import
            (the previous entries are restored afterwards).
        packages (Sequence[str]): their top-level package names; modules already imported under
            these names are set aside during the import and put back afterwards.
    """
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
    """Execute one of their scripts (not a package module) as the module ``name``."""
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


def _runtime_patch_notes(no_cuda: bool, no_half: bool) -> List[str]:
    """The ``patches`` lines of :func:`_runtime_patches`."""
    notes = []
    if no_cuda:
        notes.append("torch.Tensor.cuda / torch.nn.Module.cuda -> return self (CPU)")
    if no_half:
        notes.append(
            "torch.Tensor.half -> return self (fp32: removes the fp16 casts of clip/model.py "
            "upsample_pos_emb and convert_weights and of the clip/myAtt.py out-projection)"
        )
    return notes


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
    :meth:`weclip.parity.official.OfficialWeCLIP.train_step`.
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


def _tap_fusion_head(
    head: torch.nn.Module,
    keep: Optional[torch.Tensor],
    out: Dict[str, Any],
    keys: Tuple[str, str, str],
) -> List[Any]:
    """Hooks on one of their fusion heads (``segformer_head.py: SegFormerHead``, spec §6.1).

    Record the head's ``linear_fuse`` output (before Dropout2d) under ``keys[0]``, the Dropout2d
    output under ``keys[1]`` and, in training mode, the kept channels (B, 256) bool under
    ``keys[2]``; with ``keep`` (B, 256) bool, apply that mask instead of the drawn one
    (``x * keep / (1 - p)``, what Dropout2d computes for that draw).

    Returns:
        list: the hook handles (remove them to detach the taps).
    """
    pre_key, fused_key, keep_key = keys

    def pre_hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
        out[pre_key] = output.detach().cpu().clone()

    def drop_hook(module: Any, inputs: Any, output: torch.Tensor) -> Optional[torch.Tensor]:
        x = inputs[0]
        if keep is not None and module.training:
            scale = keep.to(x.device).float() / (1.0 - module.p)
            output = x * scale[:, :, None, None]
        out[fused_key] = output.detach().cpu().clone()
        if module.training:
            out[keep_key] = output.detach().flatten(2).ne(0).any(dim=2).cpu()
        return output

    return [
        head.linear_fuse.register_forward_hook(pre_hook),
        head.dropout.register_forward_hook(drop_hook),
    ]


def _keep_mask(mask: Any, batch: int, what: str) -> torch.Tensor:
    """A Dropout2d keep mask as a (batch, 256) bool tensor (``what`` names it in the error)."""
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if tuple(mask.shape) != (batch, 256):
        raise ValueError(f"{what} must be ({batch}, 256), got {tuple(mask.shape)}")
    return mask


def _present_classes(cls_labels: torch.Tensor) -> List[List[int]]:
    """Per row of (B, 20) multi-hot image-level labels, the 0-based foreground ids present.

    Raises:
        ValueError: ``cls_labels`` is not (B, 20).
    """
    labels = torch.as_tensor(cls_labels)
    if labels.dim() != 2 or labels.shape[1] != _NUM_FG:
        raise ValueError(f"cls_labels must be (B, {_NUM_FG}), got {tuple(labels.shape)}")
    return [torch.nonzero(row > 0).flatten().tolist() for row in labels]


# --------------------------------------------------------------------------------------------------
# The base harness
# --------------------------------------------------------------------------------------------------
class OfficialHarness:
    """The part of the WeCLIP and WeCLIP+ harnesses that does not depend on the model.

    A subclass finds the authors' folder, calls this constructor, imports their code inside
    :meth:`_their_code` (with :meth:`_import_common` and :meth:`_build_model`) and finishes with
    :meth:`_setup_training`.

    Args:
        root (str): the authors' folder (``WeCLIP/`` or ``WeCLIP+/``) holding their packages.
        settings (dict): the harness's settings (``seed``, ``device``, ``fp32``, ...,
            :func:`_training_settings`), kept as :attr:`settings`.
        num_classes (int): 21 (their VOC models).
        trained_prefixes (Tuple[str, ...]): the names (theirs) of the trained parameters start
            with one of these (fusion head(s) and decoder).
        labels_dir (str): the folder of the temporary dataset root their model reads the image
            labels from (``SegmentationClassAug`` for WeCLIP, ``Annotations`` for WeCLIP+).
        tmp_prefix (str): prefix of the temporary dataset root's name.
    """

    def __init__(
        self,
        root: str,
        settings: Dict[str, Any],
        *,
        num_classes: int,
        trained_prefixes: Tuple[str, ...],
        labels_dir: str,
        tmp_prefix: str,
    ) -> None:
        self.root = root
        self.device = torch.device(settings["device"])
        self.num_classes = num_classes
        self.crop_size = int(settings["crop_size"])
        self._no_cuda = settings["device"] == "cpu"
        self._no_half = bool(settings["fp32"])
        self._trained_prefixes = trained_prefixes
        self._tmp = tempfile.TemporaryDirectory(prefix=tmp_prefix)
        self._data_root = self._tmp.name
        os.makedirs(os.path.join(self._data_root, labels_dir))
        self._names = 0
        self.settings = settings

    # ---------------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------------
    def _runtime_patch_notes(self) -> List[str]:
        """The ``patches`` lines of the ``.cuda()`` / ``.half()`` patches this harness applies."""
        return _runtime_patch_notes(self._no_cuda, self._no_half)

    @contextlib.contextmanager
    def _their_code(
        self, stubs: Mapping[str, types.ModuleType], packages: Sequence[str]
    ) -> Iterator[None]:
        """Their folder importable (isolated, with ``stubs``) under the runtime patches."""
        with _isolated_import(self.root, stubs, packages), self._patched():
            yield

    def _import_common(self, model_module: str, train_script_name: str) -> None:
        """Import what both trees have (inside :meth:`_their_code`).

        Sets ``_model_mod`` (``model_module``, their VOC model file), ``_clip_tool``
        (``clip.clip_tool``), ``_optim_mod`` (``utils.optimizer``), ``_transforms``
        (``datasets.transforms``) and ``_train_script`` (``scripts/dist_clip_voc.py``, executed
        as the module ``train_script_name``).
        """
        self._model_mod = importlib.import_module(model_module)
        self._clip_tool = importlib.import_module("clip.clip_tool")
        self._optim_mod = importlib.import_module("utils.optimizer")
        self._transforms = importlib.import_module("datasets.transforms")
        self._train_script = _load_script(
            os.path.join(self.root, "scripts", "dist_clip_voc.py"), train_script_name
        )

    def _build_model(self, build: Callable[[], torch.nn.Module]) -> None:
        """Their ``setup_seed(seed)`` (their script seeds before building the model, spec §8),
        then ``build()`` (their model's constructor) with its prints and warnings silenced, moved
        to the device, as :attr:`model`."""
        self._train_script.setup_seed(int(self.settings["seed"]))
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load / F.upsample deprecation notes
            self.model = build()
        self.model.to(self.device)

    def _setup_training(self, decoder_state: Optional[Mapping[str, torch.Tensor]]) -> None:
        """After the model is built: load ``decoder_state`` if given, build :attr:`optimizer`
        over the model's ``get_param_groups()`` and the affinity window for the crop size."""
        if decoder_state is not None:
            self.load_decoder_state(decoder_state)
        self.optimizer = self._their_optimizer(self.model.get_param_groups())
        grid = self.crop_size // _PATCH
        radius = int(self.settings["radius"])
        self._aff_window = self._train_script.get_mask_by_radius(h=grid, w=grid, radius=radius)

    def _their_optimizer(self, groups: Sequence[Sequence[torch.nn.Parameter]]) -> Any:
        """Their ``PolyWarmupAdamW`` with the four parameter groups of their ``train()``.

        As their script sets it up (spec §8; plus §6): groups 0 (lr, wd), 1 (lr 0, wd 0), 2 and 3
        (10 x lr, wd); with their models' ``get_param_groups()`` only group 3 holds parameters
        (the trained heads and decoder). Values from :attr:`settings`.

        Args:
            groups (Sequence[Sequence[Parameter]]): the parameters of the four groups.
        """
        s = self.settings
        lr, wd = s["learning_rate"], s["weight_decay"]
        return self._optim_mod.PolyWarmupAdamW(
            params=[
                {"params": groups[0], "lr": lr, "weight_decay": wd},
                {"params": groups[1], "lr": 0.0, "weight_decay": 0.0},
                {"params": groups[2], "lr": lr * 10, "weight_decay": wd},
                {"params": groups[3], "lr": lr * 10, "weight_decay": wd},
            ],
            lr=lr,
            weight_decay=wd,
            betas=tuple(s["betas"]),
            warmup_iter=s["warmup_iter"],
            max_iter=s["max_iters"],
            warmup_ratio=s["warmup_ratio"],
            power=s["power"],
        )

    # ---------------------------------------------------------------------------------------------
    # basics
    # ---------------------------------------------------------------------------------------------
    def _patched(self) -> contextlib.AbstractContextManager:
        return _runtime_patches(self._no_cuda, self._no_half)

    def close(self) -> None:
        """Delete the temporary dataset root (also done at garbage collection)."""
        self._tmp.cleanup()

    def decoder_shapes(self) -> "OrderedDict[str, Tuple[int, ...]]":
        """Names (theirs) and shapes of the trained parameters (fusion head(s) + decoder)."""
        return OrderedDict(
            (n, tuple(p.shape))
            for n, p in self.model.named_parameters()
            if n.startswith(self._trained_prefixes)
        )

    def decoder_state(self) -> "OrderedDict[str, torch.Tensor]":
        """A CPU copy of the trained parameters under their names."""
        return OrderedDict(
            (n, p.detach().cpu().clone())
            for n, p in self.model.named_parameters()
            if n.startswith(self._trained_prefixes)
        )

    def load_decoder_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy trained weights (their names, every one of them) into their model.

        Raises:
            KeyError: a missing or unexpected name (listed).
            ValueError: a shape mismatch (named).
        """
        params = {
            n: p for n, p in self.model.named_parameters() if n.startswith(self._trained_prefixes)
        }
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise KeyError(f"decoder state: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for name, param in params.items():
                value = torch.as_tensor(state[name])
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(
                        f"decoder state '{name}': shape {tuple(value.shape)}, "
                        f"model {tuple(param.shape)}"
                    )
                param.copy_(value.to(param.dtype))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Their ``datasets.transforms.normalize_img`` on (B, 3, H, W) or (3, H, W) uint8 RGB.

        Returns:
            torch.Tensor: float32 of the same shape (ImageNet mean/std on 0-255 values, spec §1.2).
        """
        single = images.dim() == 3
        batch = images[None] if single else images
        if batch.dtype != torch.uint8:
            raise ValueError(f"normalize expects uint8 images, got {batch.dtype}")
        hwc = batch.permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([self._transforms.normalize_img(x) for x in hwc]).transpose(0, 3, 1, 2)
        out = torch.from_numpy(np.ascontiguousarray(out))
        return out[0] if single else out

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> their normalisation; float -> taken as already normalised."""
        if images.dtype == torch.uint8:
            images = self.normalize(images)
        return images.float().to(self.device)

    def _training_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`_inputs` of a training batch, which must be square crops of ``crop_size``.

        Raises:
            ValueError: the images are not ``crop_size`` x ``crop_size``.
        """
        inputs = self._inputs(images)
        _, _, h, w = inputs.shape
        if (h, w) != (self.crop_size, self.crop_size):
            raise ValueError(
                f"training images must be {self.crop_size}x{self.crop_size} (their affinity window "
                f"is built for crop_size // 16), got {h}x{w}"
            )
        return inputs

    def _new_names(self, count: int) -> List[str]:
        names = [f"img{self._names + i:06d}" for i in range(count)]
        self._names += count
        return names

    @contextlib.contextmanager
    def _mode(self, train: bool) -> Iterator[None]:
        """Their model in training (``train``) or eval mode, the previous mode restored after."""
        previous = self.model.training
        self.model.train(train)
        try:
            yield
        finally:
            self.model.train(previous)

    # ---------------------------------------------------------------------------------------------
    # tracing and the optimiser step
    # ---------------------------------------------------------------------------------------------
    def _tracing(self, trace: Optional[_Trace]) -> contextlib.AbstractContextManager:
        """Wrap their per-image functions so that ``trace`` receives the intermediate values."""
        return _trace_forward(self._model_mod, self._clip_tool, self.model, trace)

    @staticmethod
    def _add_trace(out: Dict[str, Any], trace: Optional[_Trace]) -> None:
        """Put a forward's ``trace`` (CLIP block outputs and attention, per-image records) in
        ``out``."""
        if trace is not None:
            out["clip_block_out"] = trace.clip_block_out
            out["clip_attn"] = trace.clip_attn
            out["images"] = trace.images

    def _optimise(
        self, loss: torch.Tensor, return_grads: bool
    ) -> Tuple[Tuple[float, ...], Optional["OrderedDict[str, torch.Tensor]"]]:
        """Their loop's ``zero_grad``, ``loss.backward()``, ``optimizer.step()`` (which sets the
        learning rates from its ``global_step`` first, spec §8).

        Returns:
            Tuple: the four group learning rates the step used, and with ``return_grads`` the
            gradients of the trained parameters (their names; else None).
        """
        self.optimizer.zero_grad()
        loss.backward()
        grads = None
        if return_grads:
            grads = OrderedDict(
                (n, p.grad.detach().cpu().clone())
                for n, p in self.model.named_parameters()
                if n.startswith(self._trained_prefixes) and p.grad is not None
            )
        self.optimizer.step()
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups), grads
