"""Distributed training on CPU: weclip/utils/dist.py and tools/dist_train.sh with 2 gloo processes."""

import glob
import os
import shutil
import socket
import subprocess

import pytest
import torch
from train_helpers import (
    REPO,
    VENV_BIN,
    make_toy_root,
    single_thread,
    tiny_config,
    tiny_config_text,
)

from weclip.engine.checkpoint import load_checkpoint
from weclip.engine.trainer import Trainer
from weclip.utils import dist as dist_utils
from weclip.utils.dist import DistInfo, init_distributed


def test_helpers_answer_as_a_single_process():
    assert not dist_utils.is_dist_initialized()
    assert dist_utils.get_rank() == 0 and dist_utils.get_world_size() == 1
    assert dist_utils.get_local_rank() == 0 and dist_utils.is_main_process()
    assert dist_utils.all_gather_object({"a": 1}) == [{"a": 1}]
    assert dist_utils.broadcast_object(5) == 5
    t = torch.ones(2)
    assert dist_utils.all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0]
    dist_utils.barrier()  # no-ops
    dist_utils.cleanup()
    info = init_distributed("none", "cpu")
    assert (info.rank, info.world_size, info.device.type, info.distributed) == (0, 1, "cpu", False)


def test_pytorch_launcher_needs_torchrun_environment(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun environment variables"):
        init_distributed("pytorch", "cpu")
    with pytest.raises(ValueError, match="launcher"):
        init_distributed("slurm", "cpu")


def test_total_batch_must_split_over_ranks(tmp_path):
    # 2 images over 3 ranks: refused before anything is built (train.batch_size is the TOTAL batch)
    cfg = tiny_config(str(tmp_path), str(tmp_path / "no_data"), batch_size=2)
    fake = DistInfo(rank=0, local_rank=0, world_size=3, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(ValueError, match="train.batch_size=2 is the TOTAL batch"):
        Trainer(cfg, str(tmp_path / "work"), fake)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_train(config: str, work_dir: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),
        PORT=str(_free_port()),
        OMP_NUM_THREADS="1",
    )
    cmd = [
        "bash",
        os.path.join(REPO, "tools", "dist_train.sh"),
        config,
        "2",
        "--device",
        "cpu",
        "--work-dir",
        work_dir,
        *extra,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=str(REPO))


@pytest.mark.slow
def test_two_cpu_processes_stay_in_sync_and_resume(tmp_path):
    root = make_toy_root(str(tmp_path))
    config = tmp_path / "tiny.py"
    # total batch 4 -> 2 images per rank; check_sync compares the decoder weights of both ranks every step
    config.write_text(
        tiny_config_text(
            root,
            max_iters=6,
            batch_size=4,
            ckpt_interval=3,
            eval_interval=3,
            eval_max_images=3,
            vis_interval=3,
            log_interval=2,
            check_sync=True,
        )
    )
    first = _dist_train(str(config), str(tmp_path / "a"))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    log = open(glob.glob(str(tmp_path / "a" / "*.log"))[0]).read()
    assert "World size 2, total batch 4 -> 2 image(s) per rank" in log
    for it in (1, 2, 4, 6):
        assert (
            f"check_sync: the 2 ranks hold identical decoder weights after iteration {it} " in log
        )
    assert (
        "val it 3 on val (3 images)" in log
    )  # 2 + 1 images on the two ranks, matrices all-reduced

    ckpt = load_checkpoint(str(tmp_path / "a" / "checkpoints" / "iter_3.pth"))
    assert ckpt["world_size"] == 2 and ckpt["data_positions"] == [6, 6]  # 3 iterations x 2 images
    states = ckpt["rng_states"]
    assert len(states) == 2 and not torch.equal(
        states[0]["torch"], states[1]["torch"]
    )  # seed + rank

    # resume from iteration 3 in a fresh work dir with 2 processes: the same final weights, bit for bit
    os.makedirs(tmp_path / "b" / "checkpoints")
    shutil.copy(tmp_path / "a" / "checkpoints" / "iter_3.pth", tmp_path / "b" / "checkpoints")
    (tmp_path / "b" / "checkpoints" / "latest").write_text("iter_3.pth\n")
    second = _dist_train(str(config), str(tmp_path / "b"), "--resume", "auto")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    assert "iteration 3 of 6" in second.stderr
    a = load_checkpoint(str(tmp_path / "a" / "checkpoints" / "iter_6.pth"))["model"]
    b = load_checkpoint(str(tmp_path / "b" / "checkpoints" / "iter_6.pth"))["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # one process cannot continue a 2-process run: the world size is part of the optimisation
    with single_thread():
        trainer = Trainer(
            tiny_config(
                str(tmp_path / "c"),
                root,
                check_sync=True,
                max_iters=6,
                batch_size=4,
                ckpt_interval=3,
                eval_interval=3,
                eval_max_images=3,
                vis_interval=3,
                log_interval=2,
            ),
            str(tmp_path / "c" / "work"),
            init_distributed("none", "cpu"),
        )
        with pytest.raises(ValueError, match="world size: checkpoint 2 vs now 1"):
            trainer.resume(str(tmp_path / "a" / "checkpoints" / "iter_3.pth"))
        trainer.close()
