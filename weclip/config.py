"""Configuration: a thin layer over mmengine's ``Config`` (python files with ``_base_`` inheritance).

Adds what mmengine leaves open: ``--cfg-options`` overrides may only *change* existing keys (a typo raises a
clear error instead of silently adding a new key), the work-dir rule of mmsegmentation (CLI > config > name),
and an atomic dump of the resolved config into the work dir.
"""

import os
from typing import Any, Mapping, Optional

from mmengine.config import Config, ConfigDict

from weclip.utils.io import atomic_path

__all__ = ["load_config", "check_override_keys", "resolve_work_dir", "dump_config", "to_plain"]


def check_override_keys(cfg: Config, options: Mapping[str, Any]) -> None:
    """Raise ``KeyError`` naming the first key of ``options`` that does not exist in ``cfg``.

    Args:
        cfg (Config): the loaded config.
        options (Mapping[str, Any]): dotted keys (``"train.max_iters"``) to their new values.
    """
    for dotted in options:
        node: Any = cfg
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, (dict, ConfigDict, Config)) or part not in node:
                parent = ".".join(parts[:depth]) or "<top level>"
                known = sorted(node.keys()) if isinstance(node, (dict, ConfigDict, Config)) else []
                raise KeyError(
                    f"Unknown config key '{dotted}' (no '{part}' under {parent}; "
                    f"known keys there: {', '.join(map(str, known)) or 'none, it is not a dict'})"
                )
            node = node[part]


def load_config(path: str, cfg_options: Optional[Mapping[str, Any]] = None) -> Config:
    """Load a python config file and apply ``key.sub=value`` overrides to existing keys only.

    Args:
        path (str): config file, e.g. ``configs/voc.py``.
        cfg_options (Mapping[str, Any], optional): overrides, as parsed by mmengine's ``DictAction``.

    Returns:
        Config: the resolved config.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file not found: {path}")
    cfg = Config.fromfile(path)
    if cfg_options:
        check_override_keys(cfg, cfg_options)
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def resolve_work_dir(cfg: Config, config_path: str, cli_work_dir: Optional[str] = None) -> str:
    """Work dir priority, as in mmsegmentation: CLI > ``work_dir`` in the config > ``work_dirs/<config stem>``."""
    if cli_work_dir:
        return cli_work_dir
    if cfg.get("work_dir"):
        return cfg.work_dir
    return os.path.join("work_dirs", os.path.splitext(os.path.basename(config_path))[0])


def dump_config(cfg: Config, work_dir: str, name: str = "config.py") -> str:
    """Write the resolved config to ``work_dir/name`` atomically and return the path."""
    path = os.path.join(work_dir, name)
    with atomic_path(path) as tmp:
        cfg.dump(tmp)
    return path


def to_plain(obj: Any) -> Any:
    """mmengine Config / ConfigDict (and tuples) as plain dicts and lists, e.g. for checkpoints or for
    open_clip's dataclass configs; tuples become lists (comparisons of stored configs ignore that)."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
