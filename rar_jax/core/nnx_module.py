"""NNX models in the step.

An NNX model comes as a factory ``make(rngs) -> nnx.Module``: its class, or
``functools.partial`` of it with its other arguments. `as_module` wraps the
factory into an `NNXModule`, which has the ``init``/``apply`` of a Linen module:
``init`` builds one model from a key and splits it (``nnx.split``) into a graph
definition, kept once, and its state, returned as plain dicts (``"params"``
for ``nnx.Param``, ``"batch_stats"`` for every other variable: batch
statistics, dropout's RNG counters); ``apply`` merges them back and calls the
model. The pure step, the compiled stream, vmapped seeds, checkpoints and
resume then carry an NNX model's state exactly as they carry Linen variables::

  class MyNet(nnx.Module):
    def __init__(self, num_classes, *, rngs):
      ...
    def __call__(self, x):
      h = ...
      self.sow(nnx.Intermediate, "penultimate", h)  # the layer RAR matches
      return self.head(h)

  state = rar_jax.init_train_state(functools.partial(MyNet, 10), tx, cfg, hyper, key, x)

Conventions are NNX's own: the model is put in ``model.train()`` mode for
the step and ``model.eval()`` mode for predictions (batch norm's running
averages, dropout off); features come from ``Module.sow(nnx.Intermediate,
name, value)`` read through ``nnx.capture``; a model with ``nnx.BatchNorm``
takes ``mask=`` (the rows batch statistics average over), as Linen models do.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import jax
from flax import nnx

from rar_jax import models
from rar_jax.errors import ModelError

PARAMS = "params"
STATS = "batch_stats"  # every variable that is not an nnx.Param


def factory_name(make: Callable) -> str:
  """``MyNet`` for ``MyNet``, ``partial(MyNet, 10)`` or a function ``make``."""
  while isinstance(make, functools.partial):
    make = make.func
  return getattr(make, "__qualname__", type(make).__name__)


def _to_tree(state: nnx.State) -> Dict[str, Any]:
  """Nested dicts with str keys (what optax, orbax and Linen use); RNG keys as
  raw uint32 data, which checkpoints store like any array."""
  out: Dict[str, Any] = {}
  for path, var in nnx.to_flat_state(state):
    value = var.get_value()
    if isinstance(var, nnx.RngKey):
      value = jax.random.key_data(value)
    node = out
    for k in path[:-1]:
      node = node.setdefault(str(k), {})
    node[str(path[-1])] = value
  return out


def _from_tree(template: nnx.State, tree: Dict[str, Any]) -> nnx.State:
  """The inverse of `_to_tree`, its structure and variable types from ``template``."""
  flat = []
  for path, var in nnx.to_flat_state(template):
    value: Any = tree
    for k in path:
      value = value[str(k)]
    if isinstance(var, nnx.RngKey):
      value = jax.random.wrap_key_data(value)
    flat.append((path, var.replace(value)))
  return nnx.from_flat_state(flat)


def _flat_intermediates(state: nnx.State) -> Dict[str, Any]:
  """``{"name": values}`` for the model's own sows, ``"sub/name"`` for a submodule's."""
  return {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(state)}


def _accepts(fn: Callable, name: str) -> bool:
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):  # not introspectable: do not pass it
    return False
  return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@dataclasses.dataclass(frozen=True, eq=True)
class NNXModule:
  """A factory ``make(rngs) -> nnx.Module`` with Linen's ``init``/``apply``.

  Equal (and hashed) by its factory, so one factory compiles one program.
  Build it with `as_module`; `rar_jax`'s functions do that for you.
  """

  make: Callable[..., Any]

  @property
  def name(self) -> str:
    return factory_name(self.make)

  def build(self, key: jax.Array) -> nnx.Module:
    """One model, its weights drawn from ``key``."""
    try:
      model = self.make(rngs=nnx.Rngs(key))
    except TypeError as e:
      raise ModelError(
        f"model {self.name} cannot be built as make(rngs=nnx.Rngs(key)): {e}; give an "
        "nnx.Module class or a factory taking rngs= (functools.partial for other arguments)"
      ) from None
    if not isinstance(model, nnx.Module):
      raise ModelError(
        f"model {self.name} returned {type(model).__name__}, not an nnx.Module: give an "
        "nnx.Module class, a factory make(rngs) -> nnx.Module, or a flax.linen module"
      )
    return model

  @functools.cached_property
  def _template(self):
    """``(graphdef, abstract params, abstract other state, takes mask=)``, once
    per factory: shapes only, no FLOPs."""
    model = nnx.eval_shape(lambda: self.build(jax.random.PRNGKey(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    takes_mask = _accepts(type(model).__call__, "mask")
    has_bn = any(isinstance(v, nnx.BatchStat) for _, v in nnx.to_flat_state(rest))
    if has_bn and not takes_mask:
      raise ModelError(
        f"model {self.name}.__call__ lacks keyword argument 'mask': a model with "
        "nnx.BatchNorm takes mask= (the rows batch statistics average over) and passes it "
        "to its BatchNorm layers, so padded replay rows never count"
      )
    return graphdef, params, rest, takes_mask

  def init(self, key: jax.Array, x: jax.Array, train: bool = False) -> Dict[str, Any]:
    """``{"params": ..., "batch_stats": ...}`` of a model built from ``key``
    (``x`` and ``train``: Linen's signature; an NNX model knows its shapes)."""
    del x, train
    _ = self._template  # checks the model once, before any state exists
    _, params, rest = nnx.split(self.build(key), nnx.Param, ...)  # type: ignore[misc]
    variables = {PARAMS: _to_tree(params)}
    if len(nnx.to_flat_state(rest)):
      variables[STATS] = _to_tree(rest)
    return variables

  def apply(
    self,
    variables: Dict[str, Any],
    x: jax.Array,
    train: bool = False,
    mutable: Any = False,
    mask: Optional[jax.Array] = None,
  ):
    """Linen's ``apply``: logits, and with ``mutable`` the updated collections
    (``"batch_stats"``, and ``"features"``: the sown intermediates)."""
    graphdef, params_t, rest_t, takes_mask = self._template
    model = nnx.merge(
      graphdef,
      _from_tree(params_t, variables[PARAMS]),
      _from_tree(rest_t, variables.get(STATS, {})),
    )
    # NNX's own modes: batch statistics of the rows and dropout on in train mode.
    if train:
      model.train()
    else:
      model.eval()
    kwargs = {"mask": mask} if takes_mask and mask is not None else {}
    # Always through nnx.capture: sow outside it is deprecated in Flax 0.12.
    logits, intermediates = nnx.capture(model, nnx.Intermediate)(x, **kwargs)
    if not mutable:
      return logits
    collections = [mutable] if isinstance(mutable, str) else list(mutable)
    updated: Dict[str, Any] = {}
    if STATS in collections and len(nnx.to_flat_state(rest_t)):
      updated[STATS] = _to_tree(nnx.state(model, nnx.Not(nnx.Param)))
    if models.FEATURES in collections:
      updated[models.FEATURES] = _flat_intermediates(intermediates)
    return logits, updated


@functools.lru_cache(maxsize=64)
def _cached(make: Callable) -> NNXModule:
  return NNXModule(make)


def as_module(model: Any) -> Any:
  """``model`` as the step applies it: a Linen module (or anything with
  ``init``/``apply``) as it is, an NNX factory as an `NNXModule`."""
  if isinstance(model, type) and issubclass(model, nn.Module):
    raise ModelError(
      f"model={model.__name__} is a flax.linen Module class: give an instance, e.g. "
      f"{model.__name__}(num_classes=...) (NNX models are given as their class)"
    )
  if hasattr(model, "init") and hasattr(model, "apply"):
    return model
  if isinstance(model, nnx.Module):
    raise ModelError(
      f"model={type(model).__name__}(...) is an nnx.Module instance: give its class or a "
      "factory make(rngs) (functools.partial(MyNet, ...)); rar_jax builds one model per seed"
    )
  if not callable(model):
    raise ModelError(
      f"model={model!r} is invalid: a flax.linen module, an nnx.Module class or a "
      "factory make(rngs) -> nnx.Module"
    )
  try:
    return _cached(model)
  except TypeError:  # unhashable factory: a fresh wrapper (compiles per call)
    return NNXModule(model)


def model_name(module: Any) -> str:
  """The name errors use: the NNX model's class, or the Linen module's."""
  return module.name if isinstance(module, NNXModule) else type(module).__name__
