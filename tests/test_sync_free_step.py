"""The WeCLIP training step never waits for the device (docs/speed.md, "GPU-ready step").

On the "meta" device tensors have shapes but no values, so every operation that needs a value on
the host (``.item()``, ``.tolist()``, ``.cpu()``, ``bool(t)``, ``torch.equal``, ``nonzero``,
``bincount``, boolean-mask indexing, a ``repeat_interleave`` of unknown length, ...) raises: these
are exactly the operations that synchronise a GPU with the host. A forward (``mode="loss"``, static
refinement and the RFM) and its backward on meta therefore prove that the device code paths (the
ones a GPU takes: Grad-CAM "rows", box masks by label propagation, whole-batch PAR) read nothing
back, given image-level labels on the host. The CUDA test checks the same on a GPU with
``torch.cuda.set_sync_debug_mode("error")`` for a whole ``Trainer.train_step``.
"""

import pytest
import torch
from helpers import single_thread

from weclip.config import load_config
from weclip.models.registry import build_model

TINY = {
    "model.backbone.weights": "random",
    "model.decoder.embed_dim": 32,
    "model.decoder.num_heads": 4,
    "model.par.num_iter": 2,
    "model.refine.static_layers": 3,  # the tiny CLIP has 3 blocks
    "model.refine.rfm_layers": 2,
    "model.refine.rfm_start_iter": 5,
}


def _model(tiny_arch):
    cfg = load_config("configs/voc.py", dict(TINY))
    cfg.model.backbone.arch = tiny_arch
    torch.manual_seed(0)
    return build_model(cfg).train(), cfg


def _labels() -> torch.Tensor:
    labels = torch.zeros(3, 20)
    labels[0, [2, 7, 14]] = 1  # three classes
    labels[2, 4] = 1  # one; image 1 has none
    return labels


def test_meta_values_cannot_be_read():
    # the detector itself: each of these needs a value on the host and must fail on meta
    x = torch.ones(4, device="meta")
    for read in (
        lambda: x.sum().item(),
        lambda: x.tolist(),
        lambda: x.cpu(),
        lambda: bool(x.sum() > 0),
        lambda: torch.nonzero(x),
        lambda: x[x > 0],
    ):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize("iteration", [1, 5], ids=["static", "rfm"])
def test_loss_forward_and_backward_read_nothing_from_the_device(tiny_arch, iteration):
    with single_thread():
        model, _ = _model(tiny_arch)
        model.to("meta")
        images = torch.empty(3, 3, 40, 48, dtype=torch.uint8, device="meta")
        out = model(images, _labels(), mode="loss", iteration=iteration)
        assert out["use_rfm"] == (iteration >= 5)
        assert out["loss"].device.type == "meta" and out["loss"].shape == ()
        # pairs in the host order: image 0 classes 2, 7, 14, image 2 class 4
        assert out["cams"].shape == (4, 5, 6)
        assert out["pseudo_labels"].shape == (3, 40, 48)
        out["loss"].backward()
        grads = [p.grad for p in model.decoder.parameters()]
        assert all(g is not None and g.device.type == "meta" for g in grads)


def test_labels_on_the_device_need_one_host_read(tiny_arch):
    # labels kept on the device are read back once (the pair list): that is what meta refuses
    with single_thread():
        model, _ = _model(tiny_arch)
        model.to("meta")
        images = torch.empty(3, 3, 40, 48, dtype=torch.uint8, device="meta")
        with pytest.raises((RuntimeError, NotImplementedError)):
            model(images, _labels().to("meta"), mode="loss", iteration=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_train_step_without_synchronisation(tiny_arch, tmp_path):
    from weclip.engine.trainer import Trainer
    from weclip.utils.dist import DistInfo

    cfg = load_config("configs/voc.py", dict(TINY, **{"train.batch_size": 3, "train.amp": True}))
    cfg.model.backbone.arch = tiny_arch
    device = torch.device("cuda", torch.cuda.current_device())
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=device, backend=None)
    trainer = Trainer(cfg, str(tmp_path), info, train_dataset=[])
    batch = {
        "image": torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8).pin_memory(),
        "cls_labels": _labels(),
        "valid": torch.ones(3, 40, 48, dtype=torch.bool).pin_memory(),
    }
    for iteration in (1, 5):  # static, then the RFM
        trainer.train_step(batch, iteration)  # warm-up: lazy CUDA initialisation may synchronise
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = trainer.train_step(batch, iteration + 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(out["loss"]).item()
    trainer.close()
