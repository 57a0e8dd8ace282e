"""Training and inference machinery (see docs/architecture.md, "weclip/engine")."""

from weclip.engine.checkpoint import (
    find_latest_checkpoint,
    load_decoder_checkpoint,
    save_checkpoint,
)
from weclip.engine.optim import build_optimizer, build_scheduler, lr_factor
from weclip.engine.trainer import Trainer, run_training
