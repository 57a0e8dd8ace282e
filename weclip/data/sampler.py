"""Infinite, distributed-aware sampler that also hands out augmentation seeds (exact resume).

The stream is a pure function of (``seed``, epoch):

* epoch e draws, from ``np.random.default_rng([seed, e])``, a permutation of the dataset (identity
  when ``shuffle=False``) and one 63-bit augmentation seed per slot;
* drop-last: each epoch uses the first ``(N // world_size) * world_size`` slots; rank r takes slots
  r, r + world_size, r + 2·world_size, ... (disjoint shares, equal length);
* each rank yields ``(index, aug_seed)`` forever; the dataset draws all of that sample's randomness
  from ``np.random.default_rng(aug_seed)``.

The (index, aug_seed) pairs of an epoch do not depend on ``world_size``; only their assignment to
ranks does. Resume: ``start`` = samples this rank has already drawn (iterations done × per-rank
batch size); the stream then continues exactly where it stopped, augmentation included (worker count
and timing do not matter). The authors' loader (spec §8) reshuffles with ``shuffle=True,
drop_last=True`` and draws augmentation from global RNG state; statistically the same, but not
resumable.
"""

from typing import Iterator, Optional, Tuple

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["InfiniteSampler", "dist_rank_world"]

_SEED_HIGH = 2**63 - 1  # aug seeds are non-negative int64


def dist_rank_world() -> Tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class InfiniteSampler(Sampler):
    """Yields ``(index, aug_seed)`` pairs forever, deterministic in (seed, epoch), one share per
    rank.

    Args:
        size (int): dataset length N.
        seed (int): base seed (>= 0); the same seed gives the same stream on every run.
        shuffle (bool): per-epoch random permutation (True) or dataset order (False). Default: True.
        rank (int, optional): this process's rank; default from torch.distributed (0 when not
            initialised).
        world_size (int, optional): number of ranks; default from torch.distributed (1).
        start (int): number of samples this rank already consumed (for resume). Default: 0.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        start: int = 0,
    ) -> None:
        default_rank, default_world = dist_rank_world()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size = int(size)
        self.per_rank = self.size // self.world_size  # samples per rank per epoch (drop-last)
        if self.per_rank == 0:
            raise ValueError(f"dataset of {self.size} samples cannot feed {self.world_size} ranks")
        self.seed = int(seed)
        self.shuffle = shuffle
        self.start = int(start)

    def epoch_plan(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """All N slots of an epoch, before the rank split.

        Returns:
            Tuple[np.ndarray, np.ndarray]: indices (N,) int64 and aug seeds (N,) int64.
        """
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, _SEED_HIGH, size=self.size, dtype=np.int64)
        return order.astype(np.int64), seeds

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        position = self.start
        epoch, offset = divmod(position, self.per_rank)
        while True:
            order, seeds = self.epoch_plan(epoch)
            slots = np.arange(offset, self.per_rank) * self.world_size + self.rank
            for slot in slots:
                yield int(order[slot]), int(seeds[slot])
            epoch, offset = epoch + 1, 0
