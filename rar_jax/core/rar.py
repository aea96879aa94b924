"""RAR's perturbation (Kumari et al., NeurIPS 2022): each replay row moved by
MI-FGSM towards its nearest incoming row in the feature space of the
look-ahead parameters. `rar_jax.core.stages.rar` makes it a perturb stage."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from rar_jax.core.attack import mifgsm
from rar_jax.core.method import ATTACK_PARAMS, ATTACK_TARGETS, require
from rar_jax.core.neighbors import neighbor_distances


class RarAttack(NamedTuple):
  """What RAR did to a replay batch (for the step, metrics and pictures)."""

  x_adv: jax.Array  # the perturbed replay rows
  nearest: jax.Array  # [n] int: each replay row's nearest incoming row in feature space
  found: jax.Array  # [n] bool: valid rows that had a neighbour (others stay unperturbed)


def check_data_range(data_range) -> Optional[Tuple[float, float]]:
  """``(low, high)`` with low < high, finite, or None (no clipping)."""
  if data_range is None:
    return None
  ok = (
    isinstance(data_range, (tuple, list))
    and len(data_range) == 2
    and all(isinstance(v, numbers.Real) and abs(float(v)) != float("inf") for v in data_range)
    and float(data_range[0]) < float(data_range[1])
  )
  require(ok, "data_range", data_range, "a pair (low, high) of finite numbers, low < high, or None")
  return float(data_range[0]), float(data_range[1])


def rar_attack(
  ctx: Any,
  xm: jax.Array,
  tm: jax.Array,
  mm: jax.Array,
  *,
  attack_params: str,
  attack_target: str,
  data_range: Optional[Tuple[float, float]],
) -> RarAttack:
  """Each valid replay row ``xm`` (soft targets ``tm``, mask ``mm``) moved
  towards its nearest incoming row of another label, under θ'
  (``attack_params="lookahead"``, the paper) or θ (``"current"``), by matching
  its features (``attack_target="features"``, the paper) or lowering the
  cross-entropy to the neighbour's label (``"label"``, Avalanche). The
  perturbation stays within ``epsilon_fgsm`` of ``xm`` (L-inf) and within
  ``data_range`` where ``xm`` is. Settings from ``ctx.hyper`` are traced."""
  require(attack_params in ATTACK_PARAMS, "attack_params", attack_params, f"one of {ATTACK_PARAMS}")
  require(
    attack_target in ATTACK_TARGETS, "attack_target", attack_target, f"one of {ATTACK_TARGETS}"
  )
  hyper = ctx.hyper
  theta = ctx.lookahead if attack_params == "lookahead" else ctx.params
  model, bs, x, y = ctx.model, ctx.batch_stats, ctx.x, ctx.y
  ym = jnp.argmax(tm, -1)
  _, (fm, fc), _ = model.forward_groups(
    theta, bs, [xm, x], [mm, jnp.ones_like(y, bool)], features=True
  )
  if ctx.exclude is not None:
    d = neighbor_distances(fm, fc)  # replay labels are never in the batch
  else:
    d = neighbor_distances(fm, fc, ym, y)
  nearest = jnp.argmin(d, axis=1)
  found = jnp.isfinite(jnp.min(d, axis=1)) & mm
  if attack_target == "features":
    target = jax.lax.stop_gradient(fc[nearest])

    def loss_fn(z):
      _, f, _ = model(theta, bs, z, mm, features=True)
      return jnp.where(found, jnp.mean(jnp.square(f - target), axis=-1), 0.0)
  else:  # Avalanche's variant: cross-entropy towards the neighbour's label
    target_y = y[nearest]

    def loss_fn(z):
      logits, _, _ = model(theta, bs, z, mm)
      return jnp.where(
        found, optax.softmax_cross_entropy_with_integer_labels(logits, target_y), 0.0
      )

  low, high = data_range if data_range is not None else (None, None)
  xa = mifgsm(
    loss_fn,
    xm,
    epsilon=hyper.epsilon_fgsm,
    alpha=hyper.alpha_fgsm,
    steps=hyper.iter_fgsm,
    decay=hyper.decay_factor_fgsm,
    clip_min=low,
    clip_max=high,
    unroll=ctx.unroll,
  )
  return RarAttack(jax.lax.stop_gradient(xa), nearest, found)


def perturbation_sizes(xm, xa, mm) -> dict:
  """Mean and max L-inf size of the perturbation over the valid replay rows."""
  linf = jnp.max(jnp.abs(xa - xm).reshape(xm.shape[0], -1), axis=1)
  return {
    "perturbation_mean": jnp.sum(jnp.where(mm, linf, 0.0)) / jnp.maximum(jnp.sum(mm), 1),
    "perturbation_max": jnp.max(jnp.where(mm, linf, 0.0)),
  }
