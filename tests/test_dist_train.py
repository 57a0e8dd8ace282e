"""Distributed training on CPU: weclip/utils/dist.py and tools/dist_train.sh with 2 gloo processes; a user
error under torchrun is one line, printed once, with exit code 2."""

import glob
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from helpers import REPO, make_toy_root, single_thread, tiny_config, write_config

from weclip.engine.checkpoint import load_checkpoint
from weclip.engine.trainer import Trainer
from weclip.errors import UserInputError
from weclip.utils import dist as dist_utils
from weclip.utils.dist import DistInfo, init_distributed


def test_helpers_answer_as_a_single_process():
    t = torch.ones(2)
    assert dist_utils.all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0]  # no-op
    dist_utils.cleanup()
    info = init_distributed("none", "cpu")
    assert (info.rank, info.world_size, info.device.type, info.distributed) == (0, 1, "cpu", False)


def test_pytorch_launcher_needs_torchrun_environment(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserInputError, match="torchrun environment variables"):
        init_distributed("pytorch", "cpu")
    with pytest.raises(UserInputError, match="launcher"):
        init_distributed("slurm", "cpu")


def test_total_batch_must_split_over_ranks(tmp_path):
    # 2 images over 3 ranks: refused before anything is built (train.batch_size is the TOTAL batch)
    cfg = tiny_config(str(tmp_path), str(tmp_path / "no_data"), batch_size=2)
    fake = DistInfo(rank=0, local_rank=0, world_size=3, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(UserInputError, match="'train.batch_size' = 2 is the TOTAL batch"):
        Trainer(cfg, str(tmp_path / "work"), fake)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_train(config: str, work_dir: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PORT=str(_free_port()), OMP_NUM_THREADS="1", PYTHON=sys.executable)
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
    # total batch 4 -> 2 images per rank; check_sync compares the decoder weights of both ranks every step
    config = write_config(
        str(tmp_path),
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
    first = _dist_train(str(config), str(tmp_path / "a"))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    log = open(glob.glob(str(tmp_path / "a" / "*.log"))[0]).read()
    assert "World size 2, total batch 4 -> 2 image(s) per rank" in log
    for it in (1, 2, 4, 6):
        assert f"check_sync: the 2 ranks hold identical weights after iteration {it} " in log
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
        with pytest.raises(UserInputError, match="world size: checkpoint 2 vs now 1"):
            trainer.resume(str(tmp_path / "a" / "checkpoints" / "iter_3.pth"))
        trainer.close()


@pytest.mark.slow
def test_user_error_under_torchrun_is_one_line_and_exit_2(tmp_path):
    # batch 3 over 2 processes: every rank refuses it; rank 0 prints the one error line, the launcher one
    # summary line, and nothing of torchrun's ChildFailedError report reaches the user
    config = write_config(str(tmp_path), str(tmp_path / "no_data"))
    proc = _dist_train(config, str(tmp_path / "w"), "--cfg-options", "train.batch_size=3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'train.batch_size' = 3 is the TOTAL batch" in errors[0]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("train.py: stopped on a user error")
