"""Nearest-class-mean classification from the replay buffer (the "NCM trick").

Online class-incremental learners are biased towards the classes of the last
task: their output layer sees those classes far more often than the buffered
ones. Classifying by the nearest mean of the buffer's features per class
(iCaRL; Mai et al., 2021, "Online continual learning in image classification:
an empirical survey", whose `ncm_trick` this follows) removes that bias at
evaluation time, without touching training: every feature and every class
mean is L2-normalised, and a sample goes to the class whose mean is nearest.
A class with no buffered sample cannot be predicted (that code gives it a
random mean).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rar_jax import models
from rar_jax.core.buffer import BufferState
from rar_jax.core.nnx_module import as_module

_EPS = 1e-12  # an all-zero ReLU feature row stays zero instead of NaN


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), _EPS)


def class_means(features: jax.Array, labels: jax.Array, valid: jax.Array, num_classes: int):
  """``(means[C, D], present[C])``: per class, the unit mean of the unit
  feature rows (``[N, D]``) whose ``valid`` is true; ``present`` says which
  classes have at least one such row (their mean is meaningful)."""
  f = jnp.where(valid[:, None], _unit(features.reshape(features.shape[0], -1)), 0.0)
  sums = jax.ops.segment_sum(f, labels, num_classes)
  counts = jax.ops.segment_sum(valid.astype(jnp.float32), labels, num_classes)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  return _unit(means), counts > 0


def ncm_scores(features: jax.Array, means: jax.Array, present: jax.Array) -> jax.Array:
  """``[B, C]`` scores whose argmax is the nearest class mean: minus the
  squared distance of each unit feature row to each unit mean, ``-inf`` for
  classes without a mean."""
  f = _unit(features.reshape(features.shape[0], -1))
  d = jnp.sum(jnp.square(f[:, None, :] - means[None, :, :]), axis=-1)
  return jnp.where(present[None, :], -d, -jnp.inf)


def make_features(module: nn.Module, layer: str = models.PENULTIMATE):
  """``features(params, batch_stats, x)``: the sown ``layer`` in evaluation mode."""
  module = as_module(module)

  def features(params, batch_stats, x):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    _, sown = module.apply(variables, x, train=False, mutable=[models.FEATURES])
    return sown[models.FEATURES][layer][0]

  return features


def buffer_class_means(
  features_fn, params, batch_stats, buf: BufferState, num_classes: int, chunk: int = 1000
):
  """`class_means` of the buffer's held items under the model ``params``; a
  buffer larger than ``chunk`` goes through the model ``chunk`` rows at a time
  (bounded memory for large buffers and models)."""
  n = buf.y.shape[0]
  valid = jnp.arange(n) < buf.size
  if n <= chunk:
    feats = features_fn(params, batch_stats, buf.x)
  else:
    rows = (-n) % chunk
    xp = jnp.pad(buf.x, [(0, rows)] + [(0, 0)] * (buf.x.ndim - 1))
    feats = jax.lax.map(
      lambda xb: features_fn(params, batch_stats, xb), xp.reshape(-1, chunk, *buf.x.shape[1:])
    )
    feats = feats.reshape(n + rows, -1)[:n]
  return class_means(feats, buf.y, valid, num_classes)
