"""How the step applies a user's Flax module: train-mode batch norm over the
valid rows only, optional sown features, and forward passes over row groups."""

from __future__ import annotations

import inspect
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rar_jax import models
from rar_jax.core.nnx_module import NNXModule
from rar_jax.errors import ModelError


def check_module(module: nn.Module, batch_norm: bool) -> None:
  """The module's ``__call__`` takes what the step passes: ``train=`` always,
  ``mask=`` (the valid rows batch norm averages over) when it has batch norm."""
  if isinstance(module, NNXModule):  # NNX's modes replace train=; mask= checked when built
    return
  try:
    params = inspect.signature(type(module).__call__).parameters
  except (TypeError, ValueError):  # not introspectable: let it be tried
    return
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    return
  needed = ["train"] + (["mask"] if batch_norm else [])
  missing = [n for n in needed if n not in params]
  if missing:
    raise ModelError(
      f"model {type(module).__name__}.__call__ lacks keyword argument(s) {missing}: the step "
      "calls it as module(x, train=...)"
      + (", mask=... (the valid rows batch norm averages over)" if batch_norm else "")
      + "; see rar_jax.models.MLP for the expected signature"
    )


class Forward:
  """Applies a Flax module the way the step needs: train-mode batch norm over
  the valid rows only, optional sown features."""

  def __init__(self, module: nn.Module, feature_layer: str, joint_rows: bool = False):
    self.module = module
    self.feature_layer = feature_layer
    self.joint_rows = joint_rows  # batch_norm_rows="joint"

  def __call__(self, params, batch_stats, x, mask, *, features=False):
    variables = {"params": params}
    kwargs = {}
    mutable = []
    if batch_stats:
      check_module(self.module, batch_norm=True)  # at trace time: free
      variables["batch_stats"] = batch_stats
      # All-padding batches would give 0/0 statistics; their loss weight is 0
      # and their statistics are discarded, so any rows do.
      kwargs["mask"] = jnp.where(jnp.any(mask), mask, True)
      mutable.append("batch_stats")
    if features:
      mutable.append(models.FEATURES)
    # Train mode throughout, as the paper's code: batch statistics of the rows.
    out = self.module.apply(variables, x, train=True, mutable=mutable or False, **kwargs)
    logits, updated = out if mutable else (out, {})
    feats = updated[models.FEATURES][self.feature_layer][0] if features else None
    new_stats = updated.get("batch_stats", batch_stats)
    if batch_stats:
      new_stats = jax.tree.map(lambda n, o: jnp.where(jnp.any(mask), n, o), new_stats, batch_stats)
    return logits, feats, new_stats

  def forward_groups(self, params, batch_stats, xs: Sequence, masks: Sequence, *, features=False):
    """Forward over several row groups. Without batch norm, or with joint
    statistics, one fused pass (the step is bound by reading the weights, so
    fewer passes is faster); with per-group statistics one pass per group, as
    the paper's code does."""
    if not batch_stats or self.joint_rows:
      logits, feats, batch_stats = self(
        params, batch_stats, jnp.concatenate(xs), jnp.concatenate(masks), features=features
      )
      splits = [sum(x.shape[0] for x in xs[:i]) for i in range(1, len(xs))]
      return (
        jnp.split(logits, splits),
        jnp.split(feats, splits) if features else None,
        batch_stats,
      )
    outs = []
    for x, m in zip(xs, masks):
      logits, feats, batch_stats = self(params, batch_stats, x, m, features=features)
      outs.append((logits, feats))
    return [o[0] for o in outs], ([o[1] for o in outs] if features else None), batch_stats
