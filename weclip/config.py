"""Configuration: a thin layer over mmengine's ``Config`` (python files with ``_base_`` inheritance).

Adds what mmengine leaves open:

* a config that does not load (missing file, syntax error, missing ``_base_``) is a
  :class:`~weclip.errors.ConfigError` naming the file (and line);
* ``--cfg-options`` overrides may only *change* existing keys (a typo is an error, not a new key);
* every section is checked against its schema (``weclip.schema``; the model's own sections against the schema
  its type registered, ``weclip.models.registry``) once, here: wrong types and ranges are errors naming the
  key, absent optional keys get their defaults;
* the work-dir rule of mmsegmentation (CLI > config > name) and an atomic dump of the resolved config.
"""

import ast
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from mmengine.config import Config, ConfigDict

from weclip.errors import ConfigError, MissingFileError
from weclip.utils.io import atomic_path

__all__ = [
    "load_config",
    "validate_config",
    "check_override_keys",
    "resolve_work_dir",
    "dump_config",
    "to_plain",
]

# Top-level sections a config may hold (besides the model's own `model` / `loss`).
_OPTIONAL_SECTIONS = ("toy", "work_dir")


def check_override_keys(cfg: Config, options: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the first key of ``options`` that does not exist in ``cfg``.

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
                raise ConfigError(
                    f"--cfg-options: unknown config key '{dotted}' (no '{part}' under {parent}; "
                    f"known keys there: {', '.join(map(str, known)) or 'none, it is not a dict'})"
                )
            node = node[part]


def _syntax_error(path: str, seen: Tuple[str, ...] = ()) -> Optional[str]:
    """``"FILE:LINE: message"`` of the first syntax error in ``path`` or its ``_base_`` files (mmengine's
    SyntaxError does not say which file)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except SyntaxError as err:
        return f"{path}:{err.lineno}: {err.msg}"
    except OSError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "_base_" for t in node.targets
        ):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return None
            for base in [bases] if isinstance(bases, str) else list(bases):
                full = os.path.normpath(os.path.join(os.path.dirname(path), base))
                if full not in seen:
                    found = _syntax_error(full, seen + (path,))
                    if found:
                        return found
    return None


def _read(path: str) -> Config:
    if not os.path.isfile(path):
        raise MissingFileError(f"config file not found: {path}")
    try:
        return Config.fromfile(path)
    except SyntaxError as err:
        where = _syntax_error(path) or f"{path}:{err.lineno}: {err.msg}"
        raise ConfigError(
            f"{where.split(': ', 1)[0]}: the config does not parse: {where.split(': ', 1)[1]}"
        ) from err
    except Exception as err:  # mmengine raises plain exceptions for missing _base_, NameError, ...
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: cannot load the config: {type(err).__name__}: {text}") from err


def validate_config(cfg: Union[Config, Mapping[str, Any]]) -> Config:
    """Check every section against its schema; return the config with defaults filled in.

    Raises:
        ConfigError: an unknown section or key, a missing key, a wrong type or range (key named).
    """
    from weclip import schema
    from weclip.models.registry import model_entry

    plain = to_plain(cfg)
    filename = getattr(cfg, "filename", None)
    model = plain.get("model")
    if not isinstance(model, Mapping) or "type" not in model:
        raise ConfigError(
            "config key 'model.type' is missing (which model to build, e.g. 'WeCLIP')"
        )
    entry = model_entry(model["type"])
    sections: Dict[str, Any] = {
        "data": schema.DataConfig,
        "model": entry.model_schema,
        "optim": schema.OptimConfig,
        "sched": schema.SchedConfig,
        "train": schema.TrainConfig,
        "test": schema.TestConfig,
    }
    if entry.loss_schema is not None:
        sections["loss"] = entry.loss_schema
    known = set(sections) | set(_OPTIONAL_SECTIONS)
    unknown = sorted(set(plain) - known)
    if unknown:
        raise ConfigError(
            f"unknown top-level config key '{unknown[0]}' (known: {', '.join(sorted(known))}); "
            "helper variables of a config file must be deleted with `del` at its end"
        )
    out: Dict[str, Any] = {}
    for name, cls in sections.items():
        if name not in plain:
            raise ConfigError(f"config section '{name}' is missing")
        out[name] = schema.validate_section(cls, plain[name], name)
    if "toy" in plain:
        out["toy"] = schema.validate_section(schema.ToyConfig, plain["toy"], "toy")
    work_dir = plain.get("work_dir")
    if work_dir is not None and not isinstance(work_dir, str):
        raise ConfigError(f"config key 'work_dir' = {work_dir!r}: expected a string or None")
    out["work_dir"] = work_dir
    return Config(out, filename=filename)


def load_config(path: str, cfg_options: Optional[Mapping[str, Any]] = None) -> Config:
    """Load a python config file, apply ``key.sub=value`` overrides to existing keys only, validate.

    Args:
        path (str): config file, e.g. ``configs/voc.py``.
        cfg_options (Mapping[str, Any], optional): overrides, as parsed by mmengine's ``DictAction``.

    Returns:
        Config: the resolved, validated config.
    """
    cfg = _read(path)
    if cfg_options:
        check_override_keys(cfg, cfg_options)
        cfg.merge_from_dict(dict(cfg_options))
    try:
        return validate_config(cfg)
    except ConfigError as err:
        source = f"{path}" + (" with --cfg-options" if cfg_options else "")
        raise ConfigError(f"{source}: {err}") from None


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
