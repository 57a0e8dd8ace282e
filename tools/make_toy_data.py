"""Write the synthetic toy dataset (weclip/data/toy.py) in the VOC layout.

    python tools/make_toy_data.py                      # -> data/toy, as configs/toy.py expects
    python tools/make_toy_data.py configs/toy.py --root /tmp/toy --force

With no arguments it reads ``configs/toy.py`` (``toy.*`` generator parameters, ``data.root``) and skips all work
when the dataset there is already complete with the same parameters.
"""

import argparse
from typing import List, Optional

from weclip.config import load_config
from weclip.data.toy import ToyWorldConfig, write_toy_dataset
from weclip.errors import ConfigError
from weclip.utils.cli import run_main


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the toy shapes dataset in the VOC layout.")
    parser.add_argument(
        "config", nargs="?", default="configs/toy.py", help="config holding toy.* and data.root"
    )
    parser.add_argument(
        "--root", default=None, help="output directory (default: the config's data.root)"
    )
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if the dataset is complete"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    """Write the dataset; return the output directory."""
    args = parse_args(argv)
    cfg = load_config(args.config)
    if "toy" not in cfg:
        raise ConfigError(f"{args.config}: no 'toy' section with the generator parameters")
    root = args.root or cfg.data.root
    world = ToyWorldConfig.from_cfg(cfg.toy)
    names = write_toy_dataset(
        root,
        world,
        seed=cfg.toy.seed,
        num_train=cfg.toy.num_train,
        num_val=cfg.toy.num_val,
        force=args.force,
    )
    print(f"toy dataset in {root}: " + ", ".join(f"{len(v)} {k}" for k, v in names.items()))
    return root


if __name__ == "__main__":
    run_main(main)
