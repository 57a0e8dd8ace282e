"""The model registry: ``cfg.model.type`` -> the builder and the config schema of that model.

A model plugs into the library by registering itself (see docs/architecture.md, "The model interface")::

    @register_model("WeCLIP", model_schema=WeCLIPModelConfig, loss_schema=WeCLIPLossConfig)
    def build_weclip(cfg) -> nn.Module: ...

``weclip.config.load_config`` validates the ``model`` and ``loss`` sections with the registered schemas, and
the trainer, the evaluation loop, the API and every tool build models with :func:`build_model`; a second model
is a new file that registers itself and a config naming it, nothing else.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

from torch import nn

from weclip.errors import ConfigError

__all__ = ["ModelEntry", "register_model", "model_entry", "build_model", "registered_models"]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder ``cfg -> nn.Module`` and the schema dataclasses of its sections."""

    name: str
    build: Callable[[Any], nn.Module]
    model_schema: Any
    loss_schema: Optional[Any]


_MODELS: Dict[str, ModelEntry] = {}


def register_model(
    name: str, *, model_schema: Any, loss_schema: Optional[Any] = None
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Decorator registering ``build(cfg) -> nn.Module`` under ``name`` (the value of ``cfg.model.type``).

    Args:
        name (str): the model type.
        model_schema: dataclass of the ``model`` section (``weclip.schema``).
        loss_schema: dataclass of the ``loss`` section, or None when the model has no ``loss`` section.
    """

    def wrap(build: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _MODELS and _MODELS[name].build is not build:
            raise ValueError(f"model type {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, build, model_schema, loss_schema)
        return build

    return wrap


def registered_models() -> Dict[str, ModelEntry]:
    """Every registered model (importing ``weclip.models`` registers the library's own)."""
    import weclip.models  # noqa: F401  (registers the built-in models)

    return dict(_MODELS)


def model_entry(name: Any) -> ModelEntry:
    """The entry of ``cfg.model.type``; ConfigError listing the known types."""
    models = registered_models()
    if name not in models:
        raise ConfigError(
            f"config key 'model.type' = {name!r}: expected one of {', '.join(sorted(models))}"
        )
    return models[name]


def build_model(cfg: Any) -> nn.Module:
    """Build the model ``cfg.model.type`` names from a loaded (validated) config, on CPU."""
    return model_entry(cfg["model"]["type"]).build(cfg)
