"""The WeCLIP training loop: one process, many GPUs (DDP), many nodes; periodic log, images, validation,
checkpoints; exact resume.

One iteration (spec §8 "per-iteration order", App. A), for it = 1 .. train.max_iters::

    batch -> model(images, cls_labels, iteration=it)          # CLIP, decoder, Grad-CAM, refinement, PAR
          -> L = seg_weight * L_seg(seg_logits, pseudo_labels)             (logits upsampled inside, §7.1)
               + aff_weight * L_aff(aff, affinity_labels(pseudo_labels))    (§7.2)
          -> zero_grad -> backward -> optimizer.step() -> scheduler.step()

so optimizer step t = it - 1 runs with lr(t) (App. C.9: lr(0) = 2e-9 is the first step's lr). Then, in this
order: log line (every ``train.log_interval``), TensorBoard images (``vis_interval``), validation
(``eval_interval``), checkpoint (``ckpt_interval`` and the last iteration). The checkpoint comes last, so it
holds the RNG state at the very end of its iteration, and validation runs between saved RNG states
(:meth:`Trainer.validate` restores them), so neither changes what training computes.

Distributed: ``train.batch_size`` is the TOTAL batch; each of the W ranks loads ``batch_size / W`` images
(an error when not divisible), draws its own share of the sampler stream and its own Dropout2d masks
(seed + rank); ``DistributedDataParallel`` averages the decoder gradients. CLIP is frozen and has no
gradient. ``train.check_sync`` (debugging aid, default False) all-gathers a checksum of the decoder weights
after every step and stops with an error as soon as two ranks disagree.

``train.amp``: on CUDA, the model forward runs under bf16 autocast (losses in fp32); ignored on CPU.

Config keys read: ``train.{max_iters, batch_size, seed, num_workers, amp, log_interval, vis_interval,
ckpt_interval, eval_interval, eval_split, eval_max_images, check_sync}``, ``loss``, ``optim``, ``sched``,
``data`` (datasets), ``model`` (through ``build_weclip``).
"""

import contextlib
import inspect
import logging
import os
import resource
import time
from typing import Any, Callable, Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from weclip.engine.checkpoint import (
    LATEST_NAME,
    check_resume_compatible,
    checkpoint_dir,
    decoder_of,
    find_latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from weclip.engine.optim import build_optimizer, build_scheduler
from weclip.evaluation.metrics import ConfusionMatrix
from weclip.losses import total_loss
from weclip.utils.dist import DistInfo, all_gather_object, all_reduce_sum, barrier
from weclip.utils.logging import create_tb_writer
from weclip.utils.seed import get_rng_state, seed_everything, set_rng_state
from weclip.utils.visualize import cam_overlay, denormalize, hstack_panels, label_overlay

__all__ = [
    "Trainer",
    "per_rank_batch_size",
    "process_memory_mib",
    "pixel_accuracy",
    "crop_to_patch_multiple",
]

logger = logging.getLogger("weclip")

_TRAIN_KEYS = (
    "max_iters",
    "batch_size",
    "seed",
    "num_workers",
    "amp",
    "log_interval",
    "vis_interval",
    "ckpt_interval",
    "eval_interval",
    "eval_split",
    "eval_max_images",
)


def per_rank_batch_size(total: int, world_size: int) -> int:
    """Images per rank per iteration: ``total / world_size`` (``train.batch_size`` is the total batch).

    Args:
        total (int): ``train.batch_size``.
        world_size (int): number of ranks.

    Returns:
        int: e.g. 4 images on 4 GPUs -> 1; 4 on 3 GPUs raises ``ValueError``.
    """
    if total < 1 or world_size < 1:
        raise ValueError(f"batch size and world size must be >= 1, got {total} and {world_size}")
    if total % world_size:
        raise ValueError(
            f"train.batch_size={total} is the TOTAL batch over all processes and must be divisible by the "
            f"world size {world_size}; choose a multiple of {world_size} (--cfg-options train.batch_size=N) "
            "or another number of GPUs"
        )
    return total // world_size


def process_memory_mib(device: torch.device) -> Dict[str, float]:
    """Memory figure for the log: CUDA peak allocated since the last call, else the process RSS.

    Args:
        device (torch.device): the training device.

    Returns:
        dict: ``{"memory_mib": float, "kind": "cuda_peak" | "rss"}``.
    """
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return {"memory_mib": peak, "kind": "cuda_peak"}
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])  # resident set size in pages
        return {"memory_mib": pages * os.sysconf("SC_PAGE_SIZE") / 2**20, "kind": "rss"}
    except (OSError, ValueError, IndexError):  # not Linux: peak RSS (kB on Linux, bytes on macOS)
        return {
            "memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "kind": "rss",
        }


def pixel_accuracy(
    seg_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255
) -> float:
    """Share of non-ignored pixels where the decoder's argmax equals the pseudo-label (spec §8 logging).

    Args:
        seg_logits (torch.Tensor): BxCxhxw, upsampled bilinearly (align_corners=False) to the labels.
        labels (torch.Tensor): BxHxW pseudo-labels.
        ignore_index (int): label excluded from the count.

    Returns:
        float: in [0, 1]; NaN when every pixel is ignored.
    """
    with torch.no_grad():
        logits = F.interpolate(
            seg_logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
        pred = logits.argmax(dim=1)
        valid = labels != ignore_index
        count = int(valid.sum())
        return float((pred == labels)[valid].sum()) / count if count else float("nan")


def crop_to_patch_multiple(image: torch.Tensor, patch_size: int, name: str = "") -> torch.Tensor:
    """Crop the bottom/right remainder so that H and W are multiples of the patch size.

    This is exactly what the authors' stride-p patch convolution does to an image of any size (spec §1.3:
    "remainder pixels dropped"), so validation at the original size sees the same patch grid as theirs.

    Args:
        image (torch.Tensor): 3xHxW (or Bx3xHxW).
        patch_size (int): p.
        name (str): image name for the error message.

    Returns:
        torch.Tensor: ...x(p*floor(H/p))x(p*floor(W/p)), a view.
    """
    h, w = image.shape[-2:]
    hc, wc = (h // patch_size) * patch_size, (w // patch_size) * patch_size
    if hc == 0 or wc == 0:
        raise ValueError(
            f"image {name!r} is {w}x{h} (WxH), smaller than the {patch_size}-pixel patch"
        )
    return image[..., :hc, :wc]


class Trainer:
    """Trains the decoder of a ``WeCLIP`` model; see the module docstring.

    Args:
        cfg: the resolved config (``weclip.config.load_config``).
        work_dir (str): where checkpoints, the log file and TensorBoard events go.
        dist_info (DistInfo): from ``weclip.utils.dist.init_distributed``.
        model_builder (callable, optional): ``cfg -> nn.Module``, called once the seed is set (so that a
            randomly initialised model is the same on every rank and every run); default
            ``weclip.models.weclip.build_weclip``. The model must follow the ``WeCLIP`` contract
            (docs/architecture.md): ``decoder`` and ``backbone`` (with ``patch_size``) sub-modules and
            ``forward(images, cls_labels, iteration, out_size=None, valid=None) -> dict(seg_logits, aff,
            pseudo_labels, cams, cams_refined, batch_index, class_index)``; ``out_size`` is used in
            validation, ``valid`` only with ``model.pseudo_label.ignore_padding``.
        train_dataset (Dataset, optional): default ``build_dataset(cfg.data, cfg.data.train_split, train=True)``.
        eval_dataset (Dataset, optional): default built at the first validation from ``train.eval_split``.
    """

    def __init__(
        self,
        cfg: Any,
        work_dir: str,
        dist_info: DistInfo,
        model_builder: Optional[Callable[[Any], nn.Module]] = None,
        train_dataset: Optional[Any] = None,
        eval_dataset: Optional[Any] = None,
    ) -> None:
        missing = [k for k in _TRAIN_KEYS if k not in cfg.train]
        if missing:
            raise KeyError(
                f"train config lacks {missing} (see configs/_base_/schedules/poly_30k.py)"
            )
        self.cfg = cfg
        self.tcfg = cfg.train
        self.work_dir = work_dir
        self.info = dist_info
        self.device = dist_info.device
        self.rank, self.world_size = dist_info.rank, dist_info.world_size
        self.is_main = self.rank == 0
        self.max_iters = int(self.tcfg.max_iters)
        self.total_batch = int(self.tcfg.batch_size)
        self.batch_size = per_rank_batch_size(self.total_batch, self.world_size)
        self.seed = int(self.tcfg.seed)
        self.check_sync = bool(self.tcfg.get("check_sync", False))
        self.ignore_index = int(cfg.loss.ignore_index)
        self.num_classes = int(cfg.data.num_classes)
        self.ignore_padding = bool(cfg.model.get("pseudo_label", {}).get("ignore_padding", False))
        self.use_amp = bool(self.tcfg.amp) and self.device.type == "cuda"
        if bool(self.tcfg.amp) and not self.use_amp:
            logger.warning(
                "train.amp is set but the device is %s: bf16 autocast is CUDA-only, ignored",
                self.device,
            )

        # Same seed on every rank for construction (identical random CLIP/decoder init), then seed + rank.
        seed_everything(self.seed)
        if model_builder is None:
            from weclip.models.weclip import (
                build_weclip as model_builder,  # lazy: tests inject small models
            )
        model = model_builder(cfg)
        self.model_without_ddp = model.to(self.device)
        self.model_without_ddp.train()
        seed_everything(self.seed + self.rank)

        self.optimizer = build_optimizer(self.model_without_ddp, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, self.max_iters)
        self.model: nn.Module = self.model_without_ddp
        if dist_info.distributed:
            # Buffers are constants (text embeddings, PAR kernels): no per-forward buffer broadcast. Newer torch
            # renamed the switch (``forward_sync_buffers``) and deprecates the old one.
            no_sync = (
                {"forward_sync_buffers": False}
                if "forward_sync_buffers"
                in inspect.signature(DistributedDataParallel.__init__).parameters
                else {"broadcast_buffers": False}
            )
            self.model = DistributedDataParallel(
                self.model_without_ddp,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **no_sync,
            )

        if train_dataset is None:
            from weclip.data import build_dataset

            train_dataset = build_dataset(cfg.data, cfg.data.train_split, train=True)
        self.train_dataset = train_dataset
        self._eval_dataset = eval_dataset
        self.writer = create_tb_writer(os.path.join(work_dir, "tb")) if self.is_main else None
        self.norm = cfg.data.norm_constants[cfg.data.normalize]
        self.start_iter = 0
        self.data_position = 0  # samples this rank's sampler has handed out
        self._resume_rng: Optional[Dict[str, Any]] = None
        logger.info(
            "World size %d, total batch %d -> %d image(s) per rank; device %s; amp %s; %d iterations",
            self.world_size,
            self.total_batch,
            self.batch_size,
            self.device,
            "bf16" if self.use_amp else "off",
            self.max_iters,
        )

    # ------------------------------------------------------------------ resume
    def resume(self, resume: Optional[str]) -> int:
        """Restore a checkpoint before :meth:`train`.

        Args:
            resume (str, optional): None (fresh start), "auto" (``WORK_DIR/checkpoints/latest``, fresh start
                when there is none) or a checkpoint path.

        Returns:
            int: the completed iterations to continue from (0 for a fresh start).
        """
        if resume is None:
            if os.path.isfile(os.path.join(checkpoint_dir(self.work_dir), LATEST_NAME)):
                logger.warning(
                    "%s already holds checkpoints; starting from scratch and overwriting them "
                    "(--resume continues instead)",
                    self.work_dir,
                )
            return 0
        path = find_latest_checkpoint(self.work_dir) if resume == "auto" else resume
        if path is None:
            logger.info("--resume auto: no checkpoint in %s, starting from scratch", self.work_dir)
            return 0
        ckpt = load_checkpoint(path, map_location="cpu")
        check_resume_compatible(ckpt, self.model_without_ddp, self.cfg, self.world_size, path)
        iteration = int(ckpt["iteration"])
        position = int(ckpt["data_positions"][self.rank])
        if position != iteration * self.batch_size:
            raise ValueError(
                f"Checkpoint {path}: rank {self.rank} data position {position} != iteration {iteration} x "
                f"per-rank batch {self.batch_size}"
            )
        decoder_of(self.model_without_ddp).load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.start_iter, self.data_position = iteration, position
        # Restored right before the first iteration (after the data loader has drawn its base seed).
        self._resume_rng = ckpt["rng_states"][self.rank]
        logger.info("Resumed from %s: iteration %d of %d", path, iteration, self.max_iters)
        return iteration

    # ------------------------------------------------------------------ data
    def _train_batches(self) -> Iterator[Dict[str, Any]]:
        from weclip.data import build_train_loader

        loader = build_train_loader(
            self.train_dataset,
            batch_size=self.batch_size,
            seed=self.seed,
            start_iter=self.start_iter,
            num_workers=int(self.tcfg.num_workers),
            rank=self.rank,
            world_size=self.world_size,
        )
        return iter(loader)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Dict[str, Any], iteration: int) -> Dict[str, Any]:
        """Forward, losses, backward and optimiser/scheduler step for 1-indexed ``iteration``.

        Args:
            batch (dict): ``image`` Bx3xSxS, ``cls_labels`` Bx(C-1), ``valid`` BxSxS (per-rank batch).
            iteration (int): 1-indexed; selects static refinement vs RFM inside the model.

        Returns:
            dict: the model outputs plus ``losses`` (detached scalars: loss, seg_loss, aff_loss) and ``lr``
            (the decoder lr of this step).
        """
        images = batch["image"].to(self.device, non_blocking=True)
        cls_labels = batch["cls_labels"].to(self.device, non_blocking=True)
        extra = {}
        if self.ignore_padding:
            # the model labels zero-padded crop pixels 255 (off by default: the authors label them, spec §12.5)
            extra["valid"] = batch["valid"].to(self.device, non_blocking=True)
        with self._autocast():
            out = self.model(images, cls_labels, iteration=iteration, **extra)
        losses = total_loss(
            out["seg_logits"].float(), out["aff"].float(), out["pseudo_labels"], self.cfg.loss
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        lr = self.optimizer.param_groups[0]["lr"]  # lr(t) with t = iteration - 1
        self.optimizer.step()
        self.scheduler.step()
        out["losses"] = {k: losses[k].detach() for k in ("loss", "seg_loss", "aff_loss")}
        out["lr"] = lr
        return out

    def _check_sync(self, iteration: int, verbose: bool = False) -> None:
        """All-gather (sum, sum of squares) of the decoder weights in float64; error if ranks differ.

        Args:
            iteration (int): the iteration just finished (for the messages).
            verbose (bool): log the agreement at INFO (else DEBUG).
        """
        with torch.no_grad():
            params = [p.detach().double() for p in decoder_of(self.model_without_ddp).parameters()]
            local = (
                torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)])
                .cpu()
                .tolist()
            )
        checksums = all_gather_object(local)
        if any(c != checksums[0] for c in checksums):
            raise RuntimeError(
                f"train.check_sync: decoder weights differ between ranks after iteration {iteration}: "
                + ", ".join(f"rank {r}: {c}" for r, c in enumerate(checksums))
            )
        logger.log(
            logging.INFO if verbose else logging.DEBUG,
            "check_sync: the %d ranks hold identical decoder weights after iteration %d (checksum %r)",
            len(checksums),
            iteration,
            local,
        )

    # ------------------------------------------------------------------ loop
    def train(self) -> Dict[str, Any]:
        """Run iterations ``start_iter + 1 .. max_iters``.

        Returns:
            dict: ``iteration`` (the last one), ``last_log`` (the last logged figures), ``last_val`` (the
            last validation figures, empty if none).
        """
        batches = self._train_batches()
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        self.model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        count, tick = 0, time.perf_counter()
        last_log: Dict[str, float] = {}
        last_val: Dict[str, float] = {}
        progress = tqdm(
            total=self.max_iters,
            initial=self.start_iter,
            desc="train",
            dynamic_ncols=True,
            disable=not self.is_main,
            mininterval=1.0,
        )
        if self.start_iter >= self.max_iters:
            logger.info(
                "Nothing to do: iteration %d >= train.max_iters %d", self.start_iter, self.max_iters
            )
        iteration = self.start_iter
        log_interval = int(self.tcfg.log_interval)
        for iteration in range(self.start_iter + 1, self.max_iters + 1):
            batch = next(batches)
            out = self.train_step(batch, iteration)
            self.data_position += self.batch_size
            if self.check_sync and self.world_size > 1:
                self._check_sync(iteration, verbose=iteration == 1 or iteration % log_interval == 0)
            losses = out["losses"]
            sums += torch.stack([losses["loss"], losses["seg_loss"], losses["aff_loss"]]).double()
            count += 1
            progress.update(1)

            if iteration % log_interval == 0 or iteration == self.max_iters:
                last_log = self._log(iteration, out, sums, count, time.perf_counter() - tick)
                progress.set_postfix(loss=f"{last_log['loss']:.4f}", lr=f"{last_log['lr']:.2e}")
                sums.zero_()
                count, tick = 0, time.perf_counter()
            vis_interval = int(self.tcfg.vis_interval)
            if self.is_main and vis_interval > 0 and iteration % vis_interval == 0:
                self._visualize(iteration, batch, out)
            eval_interval = int(self.tcfg.eval_interval)
            if eval_interval > 0 and (iteration % eval_interval == 0):
                last_val = self.validate(iteration)
                tick = time.perf_counter()  # keep validation out of the throughput
            ckpt_interval = int(self.tcfg.ckpt_interval)
            if (
                ckpt_interval > 0 and iteration % ckpt_interval == 0
            ) or iteration == self.max_iters:
                self.save(iteration)
                tick = time.perf_counter()
        progress.close()
        if self.writer is not None:
            self.writer.flush()
        barrier()
        return {"iteration": iteration, "last_log": last_log, "last_val": last_val}

    # ------------------------------------------------------------------ periodic work
    def _log(
        self, iteration: int, out: Dict[str, Any], sums: torch.Tensor, count: int, seconds: float
    ) -> Dict[str, float]:
        """Mean losses over the interval (and over ranks), lr, throughput, memory, pseudo-label accuracy."""
        stats = torch.cat(
            [sums, torch.tensor([float(count)], dtype=torch.float64, device=sums.device)]
        )
        stats = all_reduce_sum(stats.clone())
        means = (stats[:3] / stats[3]).tolist()
        memory = process_memory_mib(self.device)
        record = {
            "loss": means[0],
            "seg_loss": means[1],
            "aff_loss": means[2],
            "lr": float(out["lr"]),
            "pixel_acc": pixel_accuracy(out["seg_logits"], out["pseudo_labels"], self.ignore_index),
            "img_per_s": count * self.total_batch / max(seconds, 1e-9),
            "memory_mib": memory["memory_mib"],
        }
        remaining = (self.max_iters - iteration) * seconds / max(count, 1)
        logger.info(
            "it %d/%d | loss %.4f (seg %.4f, aff %.4f) | lr %.3e | pseudo-label acc %.4f | %.2f img/s | "
            "mem %.0f MiB (%s, rank 0) | eta %s",
            iteration,
            self.max_iters,
            record["loss"],
            record["seg_loss"],
            record["aff_loss"],
            record["lr"],
            record["pixel_acc"],
            record["img_per_s"],
            record["memory_mib"],
            memory["kind"],
            time.strftime("%H:%M:%S", time.gmtime(remaining))
            if remaining < 86400
            else f"{remaining / 3600:.0f} h",
        )
        if self.writer is not None:
            for key, value in record.items():
                self.writer.add_scalar(f"train/{key}", value, iteration)
        return record

    def _visualize(self, iteration: int, batch: Dict[str, Any], out: Dict[str, Any]) -> None:
        """TensorBoard panel of the first image: input | CAM | refined CAM | pseudo-label | prediction."""
        if self.writer is None:
            return
        with torch.no_grad():
            rgb = denormalize(batch["image"][0], self.norm["mean"], self.norm["std"])
            size = rgb.shape[:2]
            pairs = (
                (out["batch_index"] == 0).nonzero().flatten().tolist()
                if "batch_index" in out
                else []
            )
            panels = [rgb]
            if pairs:  # first present class of image 0
                panels.append(cam_overlay(rgb, out["cams"][pairs[0]]))
                panels.append(cam_overlay(rgb, out["cams_refined"][pairs[0]]))
            logits = F.interpolate(
                out["seg_logits"][:1].float(), size=size, mode="bilinear", align_corners=False
            )
            panels.append(label_overlay(rgb, out["pseudo_labels"][0]))
            panels.append(label_overlay(rgb, logits.argmax(dim=1)[0]))
        self.writer.add_image(
            "train/input_cam_refined_pseudo_pred",
            hstack_panels(panels),
            iteration,
            dataformats="HWC",
        )

    def save(self, iteration: int) -> Optional[str]:
        """Gather every rank's RNG state and data position; rank 0 writes the checkpoint (see checkpoint.py)."""
        rng_states = all_gather_object(get_rng_state())
        positions = all_gather_object(self.data_position)
        path = None
        if self.is_main:
            path = save_checkpoint(
                self.work_dir,
                model=self.model_without_ddp,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                iteration=iteration,
                config=self.cfg,
                rng_states=rng_states,
                data_positions=positions,
                num_classes=self.num_classes,
            )
        barrier()  # nobody runs ahead (or exits) before the file is complete
        return path

    # ------------------------------------------------------------------ validation
    @property
    def eval_dataset(self) -> Any:
        if self._eval_dataset is None:
            from weclip.data import build_dataset

            self._eval_dataset = build_dataset(
                self.cfg.data, self.tcfg.eval_split, train=False, with_labels=True
            )
        return self._eval_dataset

    def validate(self, iteration: int) -> Dict[str, float]:
        """Pseudo-label mIoU (RFM path) and decoder mIoU on ``train.eval_split`` (spec §8, §12.7).

        Each image is used at its original size, with the bottom/right remainder beyond a multiple of the
        patch size cropped off (what the authors' patch convolution ignores, see
        :func:`crop_to_patch_multiple`); the decoder logits are resized bilinearly to the mask size and
        argmaxed; the refined CAMs and pseudo-labels are produced at the mask size (``out_size``: CAMs
        resized to it, PAR on the image resized to it, as the authors' validation mode, spec §4.6). The model runs
        in eval mode (Dropout2d off; the authors validated in train mode) under ``no_grad`` (the model
        enables grad for Grad-CAM itself), with ``iteration=None`` (RFM). The first ``train.eval_max_images``
        images are split over the ranks (rank r takes r, r + W, ...); the confusion matrices are summed over
        ranks. RNG states are saved and restored around it.

        Args:
            iteration (int): for the log and TensorBoard.

        Returns:
            dict: ``pseudo_miou``, ``decoder_miou`` (fractions), ``num_images``.
        """
        rng = get_rng_state()
        model = self.model_without_ddp
        model.eval()
        dataset = self.eval_dataset
        limit = self.tcfg.eval_max_images
        total = len(dataset) if limit is None else min(int(limit), len(dataset))
        patch = int(unwrap_model(model).backbone.patch_size)
        pseudo_cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        decoder_cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        indices = range(self.rank, total, self.world_size)
        with torch.no_grad():
            for index in tqdm(
                indices, desc=f"val {iteration}", disable=not self.is_main, leave=False
            ):
                item = dataset[index]
                name = item.get("name", str(index))
                if "mask" not in item or "cls_labels" not in item:
                    raise ValueError(
                        f"validation split {self.tcfg.eval_split!r}: item {name} lacks a mask or image-level "
                        "labels (choose a split with masks and label-file entries for train.eval_split)"
                    )
                mask = item["mask"].to(self.device)
                image = crop_to_patch_multiple(item["image"], patch, name)[None].to(self.device)
                cls_labels = item["cls_labels"][None].to(self.device)
                with self._autocast():
                    out = model(image, cls_labels, iteration=None, out_size=tuple(mask.shape))
                logits = F.interpolate(
                    out["seg_logits"].float(), size=mask.shape, mode="bilinear", align_corners=False
                )
                decoder_cm.update(logits.argmax(dim=1)[0], mask, name=name)
                pseudo = out["pseudo_labels"][:1]
                if pseudo.shape[-2:] != mask.shape:  # a model that ignores out_size
                    pseudo = F.interpolate(
                        pseudo[:, None].float(), size=mask.shape, mode="nearest"
                    )[:, 0]
                pseudo_cm.update(pseudo[0].long(), mask, name=name)
        pseudo_cm.all_reduce()
        decoder_cm.all_reduce()
        model.train()
        set_rng_state(rng)
        result = {
            "pseudo_miou": pseudo_cm.scores()["miou"],
            "decoder_miou": decoder_cm.scores()["miou"],
            "num_images": float(decoder_cm.num_images),
        }
        logger.info(
            "val it %d on %s (%d images): pseudo-label mIoU %.2f, decoder mIoU %.2f",
            iteration,
            self.tcfg.eval_split,
            decoder_cm.num_images,
            100 * result["pseudo_miou"],
            100 * result["decoder_miou"],
        )
        if self.writer is not None:
            self.writer.add_scalar("val/pseudo_miou", result["pseudo_miou"], iteration)
            self.writer.add_scalar("val/decoder_miou", result["decoder_miou"], iteration)
        return result

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def run_training(
    cfg: Any,
    work_dir: str,
    dist_info: DistInfo,
    resume: Optional[str] = None,
    model_builder: Optional[Callable[[Any], nn.Module]] = None,
) -> Dict[str, Any]:
    """Build a :class:`Trainer`, resume if asked, train, close. Used by ``tools/train.py``.

    Args:
        cfg: resolved config.
        work_dir (str): run directory.
        dist_info (DistInfo): process placement.
        resume (str, optional): None, "auto" or a checkpoint path.
        model_builder (callable, optional): cfg -> model (default ``build_weclip``).

    Returns:
        dict: from :meth:`Trainer.train`.
    """
    trainer = Trainer(cfg, work_dir, dist_info, model_builder=model_builder)
    try:
        trainer.resume(resume)
        return trainer.train()
    finally:
        trainer.close()
