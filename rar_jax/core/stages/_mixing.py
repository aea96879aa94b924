"""Mix stages: MixUp of the replay batch."""

from __future__ import annotations

from rar_jax.core.defaults import DEFAULTS
from rar_jax.core.mixup import mixup as mixup_fn
from rar_jax.core.stages._base import Stage


def mixup(mixup_alpha: float = DEFAULTS["mixup_alpha"]) -> Stage:
  """MixUp of the replay batch, one Beta(mixup_alpha, mixup_alpha) λ per batch
  (``mixup_alpha`` traced: ``ctx.hyper.mixup_alpha``)."""
  return Stage(
    "mix",
    "mixup",
    lambda ctx, key, x, t, m: mixup_fn(key, x, t, m, ctx.hyper.mixup_alpha),
    hyper={"mixup_alpha": mixup_alpha},
  )
