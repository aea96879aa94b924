"""Momentum iterative FGSM (Dong et al., 2018) that *lowers* a per-sample loss."""

from __future__ import annotations

import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from rar_jax.errors import ArgumentError

L1_FLOOR = 1e-12  # keeps a zero gradient from becoming 0/0


def _check_nonneg(name, value):
  if isinstance(value, numbers.Number) and not value >= 0:
    raise ArgumentError(f"{name} must be >= 0, got {value!r}")


def mifgsm(
  loss_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  *,
  epsilon,
  alpha,
  steps,
  decay=1.0,
  clip_min: Optional[float] = 0.0,
  clip_max: Optional[float] = 1.0,
  unroll: int = 0,
) -> jax.Array:
  """Perturbs ``x`` to lower ``loss_fn`` inside an L-inf ball.

  ``loss_fn(x)`` returns per-sample losses ``[n]``. Each of ``steps`` steps:
  ``g`` = gradient of their sum, divided per sample by its L1 norm (floored at
  1e-12); ``m = decay*m + g``; ``x = x - alpha*sign(m)``; project onto
  ``[clip_min, clip_max]`` (the data range; None = unbounded) and then onto
  ``[x0-epsilon, x0+epsilon]``, so no perturbation ever exceeds ``epsilon``
  (rows of ``x0`` inside the data range stay inside it: for them both
  projections together are the projection onto the intersection). No random
  start. Numeric arguments may be traced (for sweeps under ``vmap``).

  ``unroll`` (a Python int): the first ``unroll`` steps compile without a loop
  (each skipped where ``steps`` is smaller), the rest, if any, in one. XLA's
  CPU convolutions run ~10x slower inside loop bodies (jax-ml/jax#12868).
  """
  for name, value in (("epsilon", epsilon), ("alpha", alpha), ("steps", steps), ("decay", decay)):
    _check_nonneg(name, value)
  if not (isinstance(unroll, numbers.Integral) and unroll >= 0):
    raise ArgumentError(f"unroll must be an int >= 0, got {unroll!r}")
  if isinstance(steps, numbers.Real) and float(steps) != round(float(steps)):
    raise ArgumentError(f"steps must be an integer, got {steps!r}")
  if (
    isinstance(clip_min, numbers.Real)
    and isinstance(clip_max, numbers.Real)
    and clip_min > clip_max
  ):
    raise ArgumentError(f"clip_min {clip_min} > clip_max {clip_max}")
  x0 = x
  grad_fn = jax.grad(lambda z: jnp.sum(loss_fn(z)))
  reduce_axes = tuple(range(1, x.ndim))

  def body(_, carry):
    xa, m = carry
    g = grad_fn(xa)
    g = g / jnp.maximum(jnp.sum(jnp.abs(g), axis=reduce_axes, keepdims=True), L1_FLOOR)
    m = decay * m + g
    xa = xa - alpha * jnp.sign(m)
    if clip_min is not None or clip_max is not None:
      xa = jnp.clip(xa, clip_min, clip_max)
    xa = jnp.clip(xa, x0 - epsilon, x0 + epsilon)
    return xa, m

  carry = (x0, jnp.zeros_like(x0))
  for i in range(unroll):
    carry = jax.tree.map(lambda new, old: jnp.where(i < steps, new, old), body(i, carry), carry)
  upper = jnp.maximum(steps, unroll) if unroll else steps
  xa, _ = jax.lax.fori_loop(unroll, upper, body, carry)
  return xa
