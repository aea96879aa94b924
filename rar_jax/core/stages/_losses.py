"""Loss stages: cross-entropy (CE) and ER-ACE's asymmetric cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rar_jax.core.stages._base import Stage, StepContext, loss


def ce() -> Stage:
  """Cross-entropy over every logit, incoming and replay rows alike."""
  return loss(
    lambda logits, targets, ctx, replay: optax.softmax_cross_entropy(logits, targets), "ce"
  )


def masked_cross_entropy(logits, targets, allowed):
  """Soft-label cross-entropy over the ``allowed`` classes only (``[C]`` bool)."""
  logp = jax.nn.log_softmax(jnp.where(allowed, logits, -jnp.inf))
  return -jnp.sum(jnp.where(allowed, targets * logp, 0.0), axis=-1)


def ace() -> Stage:
  """ER-ACE's asymmetric cross-entropy (Caccia et al., ICLR 2022): the incoming
  rows over the logits of the classes present in the batch only (so new
  classes do not push old logits down), replay rows over every class seen so
  far. Wants replay from the whole buffer."""

  def fn(logits, targets, ctx: StepContext, replay: bool):
    return masked_cross_entropy(logits, targets, ctx.seen if replay else ctx.present)

  return loss(fn, "ace", exclude_current_labels=False)
