"""Training machinery: optimiser and schedule, checkpoints, the trainer (see docs/architecture.md)."""

from weclip.engine.checkpoint import find_latest_checkpoint, load_weights, save_checkpoint
from weclip.engine.optim import build_optimizer, build_scheduler, lr_factor
from weclip.engine.trainer import Trainer, run_training
