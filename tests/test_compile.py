"""``train.compile``: the trained module through torch.compile (docs/speed.md).

The trainer compiles the trainable module in place (``nn.Module.compile()``): the parameters and
checkpoint keys stay the same. The compiled decoder must compute what the eager one computes, within
fp32 rounding (inductor fuses elementwise chains; the matrix products are the same library calls).
"""

import shutil

import pytest
import torch
from helpers import single_thread

from weclip.config import load_config
from weclip.models.decoder import WeCLIPDecoder

_COMPILER = hasattr(torch, "compile") and bool(shutil.which("g++") or shutil.which("c++"))


def test_trainer_compiles_the_trained_module_in_place(tiny_arch, tmp_path):
    from weclip.engine.trainer import Trainer
    from weclip.utils.dist import DistInfo

    options = {
        "model.backbone.weights": "random",
        "model.decoder.embed_dim": 32,
        "model.decoder.num_heads": 4,
        "model.refine.static_layers": 3,
        "model.refine.rfm_layers": 2,
        "train.compile": True,
    }
    cfg = load_config("configs/voc.py", options)
    cfg.model.backbone.arch = tiny_arch
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
    with single_thread():
        trainer = Trainer(cfg, str(tmp_path), info, train_dataset=[])
    decoder = trainer.model_without_ddp.decoder
    assert decoder._compiled_call_impl is not None  # compiled lazily, at the first call
    assert not any(k.startswith("_orig_mod") for k in decoder.state_dict())
    assert load_config("configs/voc.py").train.compile is False  # off by default
    trainer.close()


@pytest.mark.slow
@pytest.mark.skipif(not _COMPILER, reason="torch.compile or a C++ compiler is unavailable")
def test_compiled_decoder_matches_eager():
    torch.manual_seed(0)
    eager = WeCLIPDecoder(
        in_dim=64, num_inputs=2, embed_dim=16, num_heads=2, num_layers=1, num_classes=5
    ).eval()  # eval: no Dropout2d masks (those come from another generator when compiled)
    compiled = WeCLIPDecoder(
        in_dim=64, num_inputs=2, embed_dim=16, num_heads=2, num_layers=1, num_classes=5
    ).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    feats = [torch.randn(2, 17, 64) for _ in range(2)]
    with single_thread():
        ref_logits, ref_fused = eager(feats, (4, 4))
        logits, fused = compiled(feats, (4, 4))
        # O(1) values through ~10 fused fp32 operations: differences ~1e-7, tolerance 1e-5
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused, ref_fused, atol=1e-5, rtol=1e-5)
        ref_logits.square().sum().backward()
        logits.square().sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        scale = max(float(p.grad.abs().max()), 1e-6)
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5 * scale, rtol=1e-4, msg=name)
