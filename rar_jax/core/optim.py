"""The optimiser of a run: SGD as in the paper, its rate in the state (so
sweeps vary it), and optionally an exponential moving average of the weights
that evaluation uses."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from rar_jax.core.method import is_finite
from rar_jax.errors import ArgumentError


class ParamsEmaState(NamedTuple):
  params_ema: Any


def track_params_ema(decay) -> optax.GradientTransformation:
  """Passes the updates through and keeps an exponential moving average of the
  parameters they produce (a temporal ensemble: Soutif-Cormerais et al., 2023).
  It starts at the initial parameters; ``decay`` may be a traced scalar."""

  def init(params):
    return ParamsEmaState(params_ema=jax.tree.map(jnp.asarray, params))

  def update(updates, state, params=None):
    if params is None:
      raise ArgumentError("track_params_ema needs the parameters: tx.update(grads, state, params)")
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.params_ema, new)
    return updates, ParamsEmaState(params_ema=ema)

  return optax.GradientTransformation(init, update)


def make_optimizer(learning_rate: float, ema_decay: Optional[float] = None):
  """Plain SGD as in the paper; the rate sits in the state so sweeps can vary it.
  With ``ema_decay`` (also in the state) the optimiser also keeps a moving
  average of the weights, which evaluation then uses (`evaluation_params`).
  ``learning_rate``: a finite number > 0; ``ema_decay``: in [0, 1)."""
  if not is_finite(learning_rate) or learning_rate <= 0:
    raise ArgumentError(f"learning_rate={learning_rate!r} is invalid: a finite number > 0")
  if ema_decay is not None and not (is_finite(ema_decay) and 0.0 <= ema_decay < 1.0):
    raise ArgumentError(
      f"ema_decay={ema_decay!r} is invalid: a number in [0, 1) (the weight of the old "
      "average per update), or None for no average"
    )
  if ema_decay is None:
    return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)

  def sgd_with_average(learning_rate, ema_decay):
    return optax.chain(optax.sgd(learning_rate), track_params_ema(ema_decay))

  return optax.inject_hyperparams(sgd_with_average)(
    learning_rate=learning_rate, ema_decay=ema_decay
  )


def evaluation_params(state: Any):
  """The weights a run is evaluated with: the moving average where the
  optimiser keeps one, else the current weights (training uses the current ones).
  A state without an optimiser (anything with ``params``) is its current weights."""
  ema = optax.tree_utils.tree_get(getattr(state, "opt_state", ()), "params_ema", None)
  return state.params if ema is None else ema
