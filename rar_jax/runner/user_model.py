"""The model a config names: a built-in one (``mlp``, ``resnet18_reduced``) or
an import path ``package.module:name``, built with ``config.model_kwargs``.

An import path names a Flax Linen module class, an NNX module class, or a
factory (a function returning a Linen module, or taking ``rngs=`` and
returning an NNX module); it is imported from the Python path with the
working directory first, as ``python -m`` does, and given ``num_classes``
when it takes that argument. `check_model` applies it to one row of the
data's shape (shapes only, no FLOPs), so a wrong path, a wrong object or a
wrong output width is one `ConfigError` naming ``config.model`` before any
training. `is_conv_model` says from a trace whether the model convolves enough
to run as the built-in conv net does (docs/execution.md).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import sys
from typing import Any, Dict, Iterator, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from rar_jax import models
from rar_jax.core.nnx_module import as_module
from rar_jax.errors import ConfigError, RarError
from rar_jax.runner import loop

WHAT = "a flax.linen module class, an nnx.Module class or a factory"


def is_import_path(name: str) -> bool:
  return isinstance(name, str) and ":" in name


def _first_line(e: BaseException) -> str:
  return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _frozen(value: Any) -> Any:
  """Lists as tuples, mappings as dicts: hashable module fields, and the same
  value whether it came from a config file or a run's config.json."""
  if isinstance(value, (ConfigDict, dict)):
    return {k: _frozen(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


def model_kwargs(config: ConfigDict) -> Dict[str, Any]:
  kwargs = config.get("model_kwargs") or {}
  if not isinstance(kwargs, (ConfigDict, dict)):
    raise ConfigError(
      f"config.model_kwargs={kwargs!r} is invalid: a dict of the model's arguments, "
      "e.g. --config.model_kwargs='{\"width\": 64}'"
    )
  return _frozen(kwargs)


def load(path: str) -> Any:
  """The object ``package.module:name`` names, imported with the working
  directory on the Python path."""
  where = f"config.model={path!r}"
  module_name, _, attr = path.partition(":")
  if not module_name or not attr:
    raise ConfigError(f"{where} is invalid: an import path package.module:name")
  if os.getcwd() not in sys.path and "" not in sys.path:  # `python train.py` leaves it out
    sys.path.insert(0, os.getcwd())
  try:
    obj: Any = importlib.import_module(module_name)
  except Exception as e:  # not found, or the user's file failed to import
    raise ConfigError(
      f"{where}: cannot import {module_name!r} ({type(e).__name__}: {_first_line(e)}); it is "
      "looked up on the Python path, the working directory first"
    ) from None
  for part in attr.split("."):
    if not hasattr(obj, part):
      names = sorted(n for n in vars(obj) if not n.startswith("_"))[:20]
      raise ConfigError(f"{where}: {module_name} has no {attr!r} (it defines {names})")
    obj = getattr(obj, part)
  return obj


def _takes(fn: Any, name: str) -> bool:
  if isinstance(fn, type):  # a class's own __init__ (NNX's metaclass hides it)
    fn = fn.__init__  # type: ignore[misc]
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
  return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build(obj: Any, kwargs: Dict[str, Any], num_classes: int, where: str) -> Any:
  """What the library takes: a Linen module instance, or an NNX factory
  ``make(rngs)`` with ``kwargs`` (and ``num_classes`` where it takes it) bound."""
  if isinstance(obj, nn.Module):  # an instance: already built
    if kwargs:
      raise ConfigError(f"{where} is a module instance: config.model_kwargs must stay empty")
    return obj
  if not callable(obj):
    raise ConfigError(f"{where} is a {type(obj).__name__}, not {WHAT}")
  if "num_classes" not in kwargs and _takes(obj, "num_classes"):
    kwargs = dict(kwargs, num_classes=num_classes)
  is_linen_class = isinstance(obj, type) and issubclass(obj, nn.Module)
  if not is_linen_class and _takes(obj, "rngs"):  # NNX: built per seed by the library
    return functools.partial(obj, **kwargs)
  try:
    module = obj(**kwargs)
  except TypeError as e:
    raise ConfigError(f"{where} cannot be built with {kwargs}: {_first_line(e)}") from None
  if not isinstance(module, nn.Module):
    raise ConfigError(
      f"{where} returned a {type(module).__name__}, not a flax.linen module (an NNX "
      "factory takes rngs=)"
    )
  return module


def create(config: ConfigDict, num_classes: int, conv_impl: str = "xla") -> Any:
  """The model ``config.model`` names, with ``config.model_kwargs``."""
  kwargs = model_kwargs(config)
  if not is_import_path(config.model):
    module = models.create_model(config.model, num_classes, conv_impl)
    try:  # a built-in's own fields (e.g. mlp's hidden widths)
      return module.clone(**kwargs) if kwargs else module
    except TypeError as e:
      raise ConfigError(
        f"config.model_kwargs={kwargs} is invalid for model {config.model!r}: {_first_line(e)}"
      ) from None
  return build(load(config.model), kwargs, num_classes, f"config.model={config.model!r}")


def check_model(config: ConfigDict, module: Any, num_classes: int, shape: Tuple[int, ...]) -> None:
  """``module`` takes one row of ``shape``, returns logits ``[1, num_classes]``
  and sows ``config.feature_layer``; shapes only."""
  where = f"config.model={config.model!r}"
  x = jnp.zeros((1, *shape), jnp.float32)
  try:
    flax_module = as_module(module)

    def forward():
      variables = flax_module.init(jax.random.PRNGKey(0), x, train=False)
      return flax_module.apply(variables, x, train=False, mutable=[models.FEATURES])

    logits, sown = jax.eval_shape(forward)
  except RarError as e:
    raise ConfigError(f"{where}: {e}") from None
  except Exception as e:  # the user's code: its first line says what broke
    raise ConfigError(
      f"{where} cannot take inputs of shape {tuple(shape)}: {type(e).__name__}: {_first_line(e)}"
    ) from None
  if not hasattr(logits, "shape") or tuple(logits.shape) != (1, num_classes):
    got = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
    raise ConfigError(
      f"{where} returns {got} for one input of shape {tuple(shape)}: it must return logits "
      f"[batch, {num_classes}] (the data's classes)"
    )
  layers = tuple(sown.get(models.FEATURES, {}))
  if config.feature_layer not in layers:
    raise ConfigError(
      f"{where} does not sow config.feature_layer={config.feature_layer!r}; it sows {layers} "
      "(Linen: self.sow('features', name, h); NNX: self.sow(nnx.Intermediate, name, h))"
    )


# The primitive every XLA convolution is traced as (flax's Conv, lax.conv, jax.scipy's).
CONVOLUTION = "conv_general_dilated"


def _inner_jaxprs(eqn) -> Iterator[Any]:
  """The programs an equation runs (jit, remat, scan, cond, custom derivatives)."""
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      inner = getattr(item, "jaxpr", item)  # a ClosedJaxpr holds its Jaxpr
      if hasattr(inner, "eqns"):
        yield inner


def _macs(jaxpr) -> int:
  """Multiply-adds of the convolutions ``jaxpr`` runs, nested programs included."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == CONVOLUTION:
      out, kernel = eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape
      out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      # A transposed convolution's dilated input holds zeros the library skips.
      zeros = math.prod(eqn.params.get("lhs_dilation") or (1,))
      total += math.prod(out) * math.prod(kernel) // out_features // zeros
    inner = [_macs(j) for j in _inner_jaxprs(eqn)]
    if inner:  # a cond runs one branch, a scan its body `length` times (a while loop: once)
      total += (
        max(inner) if eqn.primitive.name == "cond" else sum(inner) * eqn.params.get("length", 1)
      )
  return total


def conv_macs(module: Any, row_shape: Tuple[int, ...]) -> int:
  """Multiply-adds of the XLA convolutions in ``module``'s forward pass (Linen,
  or an NNX factory) on one input row of ``row_shape``: traced, shapes only."""
  flax_module = as_module(module)
  x = jax.ShapeDtypeStruct((1, *row_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: flax_module.init(jax.random.PRNGKey(0), x, train=False), x)

  def forward(variables, x):
    return flax_module.apply(variables, x, train=False, mutable=[models.FEATURES])

  return _macs(jax.make_jaxpr(forward)(variables, x).jaxpr)


def is_conv_model(module: Any, row_shape: Tuple[int, ...]) -> bool:
  """Whether ``module`` convolves enough to run as the built-in conv net does
  (`rar_jax.runner.loop.CONV_MODEL_MIN_MACS`)."""
  return conv_macs(module, row_shape) >= loop.CONV_MODEL_MIN_MACS


def model_is_conv(
  config: ConfigDict, num_classes: int, row_shape: Optional[Tuple[int, ...]]
) -> bool:
  """Whether ``config.model`` runs as a conv net: by name for the built-in
  models, by its trace (`is_conv_model`) for a model by import path."""
  if not is_import_path(config.model) or row_shape is None:
    return config.model in models.CONV_MODELS
  items = tuple(sorted(model_kwargs(config).items()))
  try:
    hash(items)
  except TypeError:  # a nested dict among the kwargs: traced again each time
    return _traced_is_conv.__wrapped__(config.model, items, num_classes, tuple(row_shape))
  return _traced_is_conv(config.model, items, num_classes, tuple(row_shape))


@functools.lru_cache(maxsize=16)  # one trace per model, kwargs and shape, not one per method
def _traced_is_conv(path: str, items: tuple, num_classes: int, row_shape: Tuple[int, ...]):
  module = build(load(path), dict(items), num_classes, f"config.model={path!r}")
  return is_conv_model(module, row_shape)
