"""InfiniteSampler: deterministic (index, aug_seed) stream, disjoint rank shares, exact resume."""

from itertools import islice

import pytest

from weclip.data.sampler import InfiniteSampler


def _take(sampler, n):
    return list(islice(iter(sampler), n))


def test_deterministic_and_seed_dependent():
    a = _take(InfiniteSampler(17, seed=5), 40)
    b = _take(InfiniteSampler(17, seed=5), 40)
    c = _take(InfiniteSampler(17, seed=6), 40)
    assert a == b
    assert a != c
    assert all(isinstance(i, int) and isinstance(s, int) and s >= 0 for i, s in a)


def test_each_epoch_is_a_permutation_with_fresh_seeds():
    n = 12
    pairs = _take(InfiniteSampler(n, seed=0), 3 * n)
    epochs = [pairs[k * n : (k + 1) * n] for k in range(3)]
    for epoch in epochs:
        assert sorted(i for i, _ in epoch) == list(range(n))
    assert [i for i, _ in epochs[0]] != [i for i, _ in epochs[1]]  # reshuffled
    seed_of = [dict(epoch) for epoch in epochs]
    # the same image gets a different augmentation seed in every epoch
    assert all(len({seed_of[k][i] for k in range(3)}) == 3 for i in range(n))


def test_no_shuffle_keeps_dataset_order():
    pairs = _take(InfiniteSampler(5, seed=1, shuffle=False), 10)
    assert [i for i, _ in pairs] == [0, 1, 2, 3, 4] * 2


def test_ranks_take_disjoint_equal_shares_of_the_same_epoch():
    n, world = 10, 3  # drop-last: 10 // 3 = 3 per rank, 9 of the 10 slots used per epoch
    single = _take(InfiniteSampler(n, seed=2, world_size=1, rank=0), n)
    shares = [_take(InfiniteSampler(n, seed=2, world_size=world, rank=r), 3) for r in range(world)]
    indices = [i for share in shares for i, _ in share]
    assert len(indices) == len(set(indices)) == 9
    # rank r takes slots r, r+3, r+6 of the epoch plan, whose pairs do not depend on world_size
    for r, share in enumerate(shares):
        assert share == [single[r], single[r + 3], single[r + 6]]
    # the 4th sample of each rank starts epoch 1 (the 10th slot of epoch 0 is dropped)
    nxt = [_take(InfiniteSampler(n, seed=2, world_size=world, rank=r), 4)[3] for r in range(world)]
    epoch1 = InfiniteSampler(n, seed=2, world_size=world, rank=0).epoch_plan(1)
    assert nxt[0] == (int(epoch1[0][0]), int(epoch1[1][0]))


@pytest.mark.parametrize("start", [0, 1, 4, 5, 11])
def test_resume_from_position_gives_the_same_tail(start):
    # per rank 7 // 2 = 3 samples per epoch, so starts 4, 5 and 11 land inside later epochs
    full = _take(InfiniteSampler(7, seed=9, world_size=2, rank=1), start + 8)
    resumed = _take(InfiniteSampler(7, seed=9, world_size=2, rank=1, start=start), 8)
    assert resumed == full[start:]


def test_bad_arguments():
    with pytest.raises(ValueError, match="cannot feed"):
        InfiniteSampler(2, world_size=3, rank=0)
    with pytest.raises(ValueError, match="rank"):
        InfiniteSampler(10, world_size=2, rank=2)
    with pytest.raises(ValueError, match="seed"):
        InfiniteSampler(10, seed=-1, world_size=1, rank=0)
