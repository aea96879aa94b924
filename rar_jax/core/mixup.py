"""MixUp (Zhang et al., 2018) of a masked replay batch, one lambda per batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def valid_permutation(key: jax.Array, mask: jax.Array) -> jax.Array:
  """A random permutation that maps valid rows onto valid rows.

  Mixing a sample with a padded (masked) row would throw the sample away, so
  valid rows are only ever paired with valid rows.
  """
  n = mask.shape[0]
  in_order = jnp.argsort(~mask, stable=True)  # valid rows first, by index
  shuffled = jnp.argsort(jnp.where(mask, jax.random.uniform(key, (n,)), 2.0))  # valid first, random
  return jnp.arange(n).at[in_order].set(shuffled)


def mixup(key: jax.Array, x: jax.Array, y_soft: jax.Array, mask: jax.Array, alpha):
  """Mixes each valid row with another valid row: ``lam*a + (1-lam)*b``.

  ``lam ~ Beta(alpha, alpha)``, one draw per batch. Returns ``(x, y_soft)``;
  masked rows stay masked.
  """
  k_lam, k_perm = jax.random.split(key)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(x.dtype)
  perm = valid_permutation(k_perm, mask)
  x_mix = lam * x + (1.0 - lam) * x[perm]
  y_mix = lam * y_soft + (1.0 - lam) * y_soft[perm]
  return x_mix, y_mix
