"""Training and inference machinery (see docs/architecture.md, "weclip/engine")."""

from weclip.engine.optim import build_optimizer, build_scheduler, lr_factor
