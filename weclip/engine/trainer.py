"""The training loop: one process, many GPUs (DDP), many nodes; periodic log, images, validation,
checkpoints; exact resume. Model-agnostic: it trains any model of the library's interface
(docs/architecture.md, "The model interface").

One iteration (spec §8 "per-iteration order", App. A), for it = 1 .. train.max_iters::

    batch -> model(images, cls_labels, mode="loss", iteration=it, valid=...)   # forward + the model's losses
          -> zero_grad -> out["loss"].backward() -> optimizer.step() -> scheduler.step()

so optimizer step t = it - 1 runs with lr(t) (App. C.9: lr(0) = 2e-9 is the first step's lr). Then, in this
order: log line (every ``train.log_interval``), TensorBoard images (``vis_interval``), validation
(``eval_interval``), checkpoint (``ckpt_interval`` and the last iteration). The checkpoint comes last, so it
holds the RNG state at the very end of its iteration, and validation runs between saved RNG states
(:meth:`Trainer.validate` restores them), so neither changes what training computes.

Distributed: ``train.batch_size`` is the TOTAL batch; each of the W ranks loads ``batch_size / W`` images
(a config error when not divisible), draws its own share of the sampler stream and its own Dropout2d masks
(seed + rank); ``DistributedDataParallel`` averages the gradients of the trained module. ``train.check_sync``
(debugging aid) all-gathers a checksum of the trained weights after every step and stops with an error as
soon as two ranks disagree.

``train.amp``: on CUDA, the model forward runs under bf16 autocast (losses in fp32); ignored on CPU. The step
never waits on the host: losses are accumulated on the device and read at log intervals only, and a model
with ``labels_on_host`` (WeCLIP) gets the image-level labels on the CPU, where it reads which classes are
present (docs/speed.md).

Numbers for people and programs: the log (``WORK_DIR/<timestamp>.log``), TensorBoard (``WORK_DIR/tb``) and
``WORK_DIR/scalars.jsonl``: one JSON object per log interval (``{"kind": "train", "iteration", "loss", ...,
"lr", "img_per_s", "memory_mib", "pixel_acc"}``) and per validation (``{"kind": "val", "iteration",
"pseudo_miou", "decoder_miou", "num_images"}``).
"""

import inspect
import json
import logging
import os
import resource
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F
from mmengine import dist as mmdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function
from tqdm import tqdm

from weclip.engine.checkpoint import (
    LATEST_NAME,
    RESUME_IGNORED_KEYS,
    check_resume_compatible,
    checkpoint_dir,
    find_latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_of,
)
from weclip.engine.optim import build_optimizer, build_scheduler
from weclip.errors import CheckpointError, ConfigError
from weclip.evaluation.evaluators import SegmentationEvaluator
from weclip.evaluation.loop import run_on_dataset
from weclip.evaluation.predictors import PseudoLabelPredictor
from weclip.utils.amp import autocast
from weclip.utils.dist import DistInfo, all_reduce_sum
from weclip.utils.io import atomic_write_text
from weclip.utils.logging import create_tb_writer
from weclip.utils.seed import get_rng_state, seed_everything, set_rng_state
from weclip.utils.visualize import cam_overlay, hstack_panels, label_overlay

__all__ = [
    "Trainer",
    "run_training",
    "per_rank_batch_size",
    "process_memory_mib",
    "pixel_accuracy",
    "SCALARS_NAME",
]

logger = logging.getLogger("weclip")

SCALARS_NAME = "scalars.jsonl"


def per_rank_batch_size(total: int, world_size: int) -> int:
    """Images per rank per iteration: ``total / world_size`` (``train.batch_size`` is the total batch).

    Args:
        total (int): ``train.batch_size``.
        world_size (int): number of ranks.

    Returns:
        int: e.g. 4 images on 4 GPUs -> 1; 4 on 3 GPUs raises ConfigError.
    """
    if total < 1 or world_size < 1:
        raise ValueError(f"batch size and world size must be >= 1, got {total} and {world_size}")
    if total % world_size:
        raise ConfigError(
            f"config key 'train.batch_size' = {total} is the TOTAL batch over all processes and must be "
            f"divisible by the number of processes ({world_size}): choose a multiple of {world_size} "
            "(--cfg-options train.batch_size=N) or another number of processes"
        )
    return total // world_size


def process_memory_mib(device: torch.device) -> Dict[str, Any]:
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
    """Share of non-ignored pixels where the argmax of the logits equals the pseudo-label (spec §8 logging).

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
        valid = labels != ignore_index
        count = int(valid.sum())
        return (
            float((logits.argmax(dim=1) == labels)[valid].sum()) / count if count else float("nan")
        )


class Trainer:
    """Trains the trainable module of a model of the library; see the module docstring.

    Args:
        cfg: the resolved, validated config (``weclip.config.load_config``).
        work_dir (str): where checkpoints, the log file, TensorBoard events and scalars.jsonl go.
        dist_info (DistInfo): from ``weclip.utils.dist.init_distributed``.
        model_builder (callable, optional): ``cfg -> nn.Module``, called once the seed is set (so that a
            randomly initialised model is the same on every rank and every run); default
            ``weclip.models.registry.build_model`` (``cfg.model.type``).
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
        self.ignore_index = int(cfg.data.ignore_index)
        self.num_classes = int(cfg.data.num_classes)
        self.use_amp = bool(self.tcfg.amp) and self.device.type == "cuda"
        if bool(self.tcfg.amp) and not self.use_amp:
            logger.warning(
                "train.amp is set but the device is %s: bf16 autocast is CUDA-only, ignored",
                self.device,
            )

        # Same seed on every rank for construction (identical random CLIP/decoder init), then seed + rank.
        seed_everything(self.seed)
        if model_builder is None:
            from weclip.models.registry import build_model as model_builder
        model = model_builder(cfg)
        self.model_without_ddp = model.to(self.device)
        self.model_without_ddp.train()
        if bool(getattr(self.tcfg, "compile", False)):
            # in place: the module keeps its parameters and state-dict keys (checkpoints unchanged)
            trainable_of(self.model_without_ddp).compile()
            logger.info("train.compile: the trained module runs through torch.compile")
        seed_everything(self.seed + self.rank)

        self.optimizer = build_optimizer(trainable_of(self.model_without_ddp), cfg.optim)
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
            # device_ids=None: train_step moves the inputs itself (DDP would also move the image-level
            # labels a `labels_on_host` model reads on the host)
            self.model = DistributedDataParallel(self.model_without_ddp, device_ids=None, **no_sync)

        if train_dataset is None:
            from weclip.data import build_dataset

            train_dataset = build_dataset(cfg.data, cfg.data.train_split, train=True)
        self.train_dataset = train_dataset
        self._eval_dataset = eval_dataset
        self.writer = create_tb_writer(os.path.join(work_dir, "tb")) if self.is_main else None
        self.scalars_path = os.path.join(work_dir, SCALARS_NAME)
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
            self._truncate_scalars(0)
            return 0
        path = find_latest_checkpoint(self.work_dir) if resume == "auto" else resume
        if path is None:
            logger.info("--resume auto: no checkpoint in %s, starting from scratch", self.work_dir)
            self._truncate_scalars(0)
            return 0
        ckpt = load_checkpoint(path, map_location="cpu")
        ignored = RESUME_IGNORED_KEYS + tuple(
            getattr(self.model_without_ddp, "inference_only_keys", ())
        )
        check_resume_compatible(
            ckpt, self.model_without_ddp, self.cfg, self.world_size, path, ignored=ignored
        )
        iteration = int(ckpt["iteration"])
        position = int(ckpt["data_positions"][self.rank])
        if position != iteration * self.batch_size:
            raise CheckpointError(
                f"checkpoint {path}: rank {self.rank} data position {position} != iteration {iteration} x "
                f"per-rank batch {self.batch_size}"
            )
        trainable_of(self.model_without_ddp).load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.start_iter, self.data_position = iteration, position
        # Restored right before the first iteration (after the data loader has drawn its base seed).
        self._resume_rng = ckpt["rng_states"][self.rank]
        self._truncate_scalars(iteration)
        logger.info("Resumed from %s: iteration %d of %d", path, iteration, self.max_iters)
        return iteration

    # ------------------------------------------------------------------ scalars.jsonl
    def _truncate_scalars(self, iteration: int) -> None:
        """Keep the records up to ``iteration`` (what a resumed run will not write again)."""
        if not self.is_main or not os.path.isfile(self.scalars_path):
            return
        with open(self.scalars_path) as f:
            kept = [
                line for line in f if line.strip() and json.loads(line)["iteration"] <= iteration
            ]
        atomic_write_text(self.scalars_path, "".join(kept))

    def _write_scalars(self, record: Dict[str, Any]) -> None:
        if not self.is_main:
            return
        os.makedirs(self.work_dir, exist_ok=True)
        with open(self.scalars_path, "a") as f:
            f.write(json.dumps(record) + "\n")

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

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Dict[str, Any], iteration: int) -> Dict[str, Any]:
        """Forward with the model's losses, backward and optimiser/scheduler step for 1-indexed ``iteration``.

        Args:
            batch (dict): ``image`` Bx3xSxS uint8, ``cls_labels`` Bx(C-1), ``valid`` BxSxS (per-rank batch)
                and, with ``data.train_mask_dir``, ``mask`` BxSxS (passed to the model as ``targets``).
            iteration (int): 1-indexed; e.g. selects WeCLIP's static refinement or the RFM.

        Returns:
            dict: the model outputs (``loss``, ``log``, ...) plus ``lr`` (the lr of this step, a float).
        """
        images = batch["image"].to(self.device, non_blocking=True)
        cls_labels = batch["cls_labels"]
        if not getattr(self.model_without_ddp, "labels_on_host", False):
            cls_labels = cls_labels.to(self.device, non_blocking=True)
        extra = {"valid": batch["valid"].to(self.device, non_blocking=True)}  # crop padding
        if (
            "mask" in batch
        ):  # data.train_mask_dir: pseudo-masks / ground truth of a mask-supervised model
            extra["targets"] = batch["mask"].to(self.device, non_blocking=True)
        with autocast(self.device, self.use_amp):
            out = self.model(images, cls_labels, mode="loss", iteration=iteration, **extra)
        self.optimizer.zero_grad(set_to_none=True)
        with record_function("train/backward"):
            out["loss"].backward()
        lr = self.optimizer.param_groups[0]["lr"]  # lr(t) with t = iteration - 1
        with record_function("train/optimizer"):
            self.optimizer.step()
            self.scheduler.step()
        out["lr"] = lr
        return out

    def _check_sync(self, iteration: int, verbose: bool = False) -> None:
        """All-gather (sum, sum of squares) of the trained weights in float64; error if ranks differ.

        Args:
            iteration (int): the iteration just finished (for the messages).
            verbose (bool): log the agreement at INFO (else DEBUG).
        """
        with torch.no_grad():
            params = [
                p.detach().double() for p in trainable_of(self.model_without_ddp).parameters()
            ]
            local = (
                torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)])
                .cpu()
                .tolist()
            )
        checksums = mmdist.all_gather_object(local)
        if any(c != checksums[0] for c in checksums):
            raise RuntimeError(
                f"train.check_sync: trained weights differ between ranks after iteration {iteration}: "
                + ", ".join(f"rank {r}: {c}" for r, c in enumerate(checksums))
            )
        logger.log(
            logging.INFO if verbose else logging.DEBUG,
            "check_sync: the %d ranks hold identical weights after iteration %d (checksum %r)",
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
        names: List[str] = []
        sums: Optional[torch.Tensor] = None  # on the device: no host sync inside the interval
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
        tcfg = self.tcfg
        for iteration in range(self.start_iter + 1, self.max_iters + 1):
            batch = next(batches)
            out = self.train_step(batch, iteration)
            self.data_position += self.batch_size
            if tcfg.check_sync and self.world_size > 1:
                self._check_sync(
                    iteration, verbose=iteration == 1 or iteration % tcfg.log_interval == 0
                )
            if not names:
                names = ["loss"] + sorted(out.get("log", {}))
            values = torch.stack(
                [out["loss"].detach().double()] + [out["log"][k].double() for k in names[1:]]
            )
            sums = values if sums is None else sums + values
            count += 1
            progress.update(1)

            if iteration % tcfg.log_interval == 0 or iteration == self.max_iters:
                last_log = self._log(iteration, out, names, sums, count, time.perf_counter() - tick)
                progress.set_postfix(loss=f"{last_log['loss']:.4f}", lr=f"{last_log['lr']:.2e}")
                sums, count, tick = None, 0, time.perf_counter()
            if self.is_main and tcfg.vis_interval > 0 and iteration % tcfg.vis_interval == 0:
                self._visualize(iteration, batch, out)
            if tcfg.eval_interval > 0 and iteration % tcfg.eval_interval == 0:
                last_val = self.validate(iteration)
                tick = time.perf_counter()  # keep validation out of the throughput
            if (
                tcfg.ckpt_interval > 0 and iteration % tcfg.ckpt_interval == 0
            ) or iteration == self.max_iters:
                self.save(iteration)
                tick = time.perf_counter()
        progress.close()
        if self.writer is not None:
            self.writer.flush()
        mmdist.barrier()
        return {"iteration": iteration, "last_log": last_log, "last_val": last_val}

    # ------------------------------------------------------------------ periodic work
    def _log(
        self,
        iteration: int,
        out: Dict[str, Any],
        names: List[str],
        sums: torch.Tensor,
        count: int,
        seconds: float,
    ) -> Dict[str, float]:
        """Mean losses over the interval (and over ranks), lr, throughput, memory, pseudo-label accuracy."""
        stats = torch.cat(
            [sums, torch.tensor([float(count)], dtype=torch.float64, device=sums.device)]
        )
        stats = all_reduce_sum(stats.clone())
        means = (stats[:-1] / stats[-1]).tolist()
        memory = process_memory_mib(self.device)
        record: Dict[str, float] = dict(zip(names, means))
        record["lr"] = float(out["lr"])
        if "pseudo_labels" in out:
            record["pixel_acc"] = pixel_accuracy(
                out["seg_logits"], out["pseudo_labels"], self.ignore_index
            )
        record["img_per_s"] = count * self.total_batch / max(seconds, 1e-9)
        record["memory_mib"] = memory["memory_mib"]
        remaining = (self.max_iters - iteration) * seconds / max(count, 1)
        parts = ", ".join(f"{k} {record[k]:.4f}" for k in names[1:])
        logger.info(
            "it %d/%d | loss %.4f (%s) | lr %.3e |%s %.2f img/s | mem %.0f MiB (%s, rank 0) | eta %s",
            iteration,
            self.max_iters,
            record["loss"],
            parts,
            record["lr"],
            f" pseudo-label acc {record['pixel_acc']:.4f} |" if "pixel_acc" in record else "",
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
        self._write_scalars(dict(kind="train", iteration=iteration, **record))
        return record

    def _visualize(self, iteration: int, batch: Dict[str, Any], out: Dict[str, Any]) -> None:
        """TensorBoard panel of the first image: input | CAM | refined CAM | pseudo-label | prediction."""
        if self.writer is None:
            return
        with torch.no_grad():
            rgb = batch["image"][0].permute(1, 2, 0).numpy()  # (S, S, 3) uint8
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
            if "pseudo_labels" in out:
                panels.append(label_overlay(rgb, out["pseudo_labels"][0]))
            logits = F.interpolate(
                out["seg_logits"][:1].float(), size=size, mode="bilinear", align_corners=False
            )
            panels.append(label_overlay(rgb, logits.argmax(dim=1)[0]))
        self.writer.add_image(
            "train/input_cam_refined_pseudo_pred",
            hstack_panels(panels),
            iteration,
            dataformats="HWC",
        )

    def save(self, iteration: int) -> Optional[str]:
        """Gather every rank's RNG state and data position; rank 0 writes the checkpoint (see checkpoint.py)."""
        rng_states = mmdist.all_gather_object(get_rng_state())
        positions = mmdist.all_gather_object(self.data_position)
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
        mmdist.barrier()  # nobody runs ahead (or exits) before the file is complete
        return path

    # ------------------------------------------------------------------ validation
    @property
    def eval_dataset(self) -> Any:
        if self._eval_dataset is None:
            from weclip.data import build_dataset

            self._eval_dataset = build_dataset(
                self.cfg.data, self.tcfg.eval_split, train=False, with_labels=True
            )
            if not self._eval_dataset.with_mask:
                raise ConfigError(
                    f"config key 'train.eval_split' = {self.tcfg.eval_split!r}: this split has no masks "
                    "(data.mask_free_splits); validate on a split with masks"
                )
        return self._eval_dataset

    def validate(self, iteration: int) -> Dict[str, float]:
        """Pseudo-label mIoU and decoder mIoU on ``train.eval_split`` (spec §8, §12.7).

        The same evaluation loop and predictor as ``tools/eval_pseudo.py``'s ``rfm_par`` row and
        ``weclip.apis.pseudo_labels`` (``PseudoLabelPredictor``): each image at its original size, the network
        on the patch-multiple crop, refined CAMs and pseudo-labels at the mask size with PAR guided by the
        whole image (the authors' validation mode), the decoder logits resized to the mask size. Eval mode
        (Dropout2d off; the authors validated in train mode) under ``no_grad`` (Grad-CAM enables grad
        itself), iteration None (RFM). The first ``train.eval_max_images`` images are split over the ranks;
        the confusion matrices are summed. RNG states are saved and restored around it.

        Args:
            iteration (int): for the log, TensorBoard and scalars.jsonl.

        Returns:
            dict: ``pseudo_miou``, ``decoder_miou`` (fractions), ``num_images``.
        """
        rng = get_rng_state()
        model = self.model_without_ddp
        model.eval()
        try:
            evaluators = [
                SegmentationEvaluator(
                    name, self.num_classes, key=name, ignore_index=self.ignore_index
                )
                for name in ("pseudo", "decoder")
            ]
            run = run_on_dataset(
                PseudoLabelPredictor(model, amp=self.use_amp),
                self.eval_dataset,
                evaluators,
                max_images=self.tcfg.eval_max_images,
                desc=f"val {iteration}",
            )
        finally:
            model.train()
            set_rng_state(rng)
        results = run["results"]
        record = {
            "pseudo_miou": results["pseudo"]["matrix"].scores()["miou"],
            "decoder_miou": results["decoder"]["matrix"].scores()["miou"],
            "num_images": float(run["num_images"]),
        }
        logger.info(
            "val it %d on %s (%d images): pseudo-label mIoU %.2f, decoder mIoU %.2f",
            iteration,
            self.tcfg.eval_split,
            run["num_images"],
            100 * record["pseudo_miou"],
            100 * record["decoder_miou"],
        )
        if self.writer is not None:
            self.writer.add_scalar("val/pseudo_miou", record["pseudo_miou"], iteration)
            self.writer.add_scalar("val/decoder_miou", record["decoder_miou"], iteration)
        self._write_scalars(dict(kind="val", iteration=iteration, **record))
        return record

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
        model_builder (callable, optional): cfg -> model (default ``build_model``).

    Returns:
        dict: from :meth:`Trainer.train`.
    """
    trainer = Trainer(cfg, work_dir, dist_info, model_builder=model_builder)
    try:
        trainer.resume(resume)
        return trainer.train()
    finally:
        trainer.close()
