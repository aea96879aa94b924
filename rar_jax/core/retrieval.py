"""Choosing the replay batch: random (ER) or maximally interfered (MIR)."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from rar_jax.core import buffer as buffer_lib


def random_retrieve(
  buf: buffer_lib.BufferState, key: jax.Array, n: int, exclude_labels: Optional[jax.Array] = None
):
  """``n`` uniformly drawn eligible samples: ``(x, y, mask)``."""
  return buffer_lib.sample(buf, key, n, exclude_labels)


def mir_retrieve(
  buf: buffer_lib.BufferState,
  key: jax.Array,
  n: int,
  num_candidates: int,
  loss_now: Callable,
  loss_lookahead: Callable,
  exclude_labels: Optional[jax.Array] = None,
):
  """Maximally Interfered Retrieval (Aljundi et al., 2019).

  From ``num_candidates`` random eligible samples keep the ``n`` whose loss
  rises most from the current to the look-ahead parameters.
  ``loss_*(x, y, mask)`` return per-sample losses.
  """
  xc, yc, mc = buffer_lib.sample(buf, key, num_candidates, exclude_labels)
  interference = loss_lookahead(xc, yc, mc) - loss_now(xc, yc, mc)
  _, idx = jax.lax.top_k(jnp.where(mc, interference, -jnp.inf), n)
  return xc[idx], yc[idx], mc[idx]
