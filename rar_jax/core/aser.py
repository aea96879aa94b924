"""Adversarial Shapley value Experience Replay (ASER; Shim et al., AAAI 2021),
as the RAR paper's code uses it (`retrieve_by_knn_sv`).

Replay candidates are scored by their KNN Shapley values (Jia et al., 2019) in
the model's feature space: high value for the buffer (cooperative set, drawn
class-balanced) and low value for the incoming batch (adversarial) means a
sample that both represents its class and sits close to the incoming classes.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rar_jax.core import buffer as buffer_lib


def knn_shapley(
  dist: jax.Array, eval_y: jax.Array, cand_y: jax.Array, k, cand_mask: Optional[jax.Array] = None
) -> jax.Array:
  """KNN Shapley value of every candidate for every evaluation point, ``[n_eval, n_cand]``.

  ``dist[e, i]``: distance from evaluation point ``e`` to candidate ``i``.
  With the valid candidates sorted nearest first (alpha_1..alpha_N) for one
  evaluation point of label ``y_e``::

    s(alpha_N) = 1[y_N = y_e] / N
    s(alpha_i) = s(alpha_{i+1}) + (1[y_i = y_e] - 1[y_{i+1} = y_e]) * min(K, i) / (i * K)

  Invalid candidates (``cand_mask`` False) take no part and get 0. Ties go to
  the lower index.
  """
  n_eval, n_cand = dist.shape
  valid = jnp.ones((n_cand,), bool) if cand_mask is None else cand_mask
  # Invalid candidates sort last; the recursion then runs over the N valid ones.
  order = jnp.argsort(jnp.where(valid[None, :], dist, jnp.inf), axis=1, stable=True)
  n_valid = jnp.sum(valid).astype(jnp.float32)
  hit = ((cand_y[order] == eval_y[:, None]) & valid[order]).astype(jnp.float32)
  hit_next = jnp.concatenate([hit[:, 1:], jnp.zeros((n_eval, 1), hit.dtype)], axis=1)
  i = jnp.arange(1, n_cand + 1, dtype=jnp.float32)
  k = jnp.asarray(k, jnp.float32)
  factor = jnp.where(
    i < n_valid,
    jnp.minimum(k, i) / (i * k),
    jnp.where(i == n_valid, 1.0 / jnp.maximum(n_valid, 1.0), 0.0),
  )
  # s(alpha_i) is the sum of the increments from i to N: a reversed cumsum.
  sorted_sv = jnp.cumsum((hit - hit_next)[:, ::-1] * factor[::-1], axis=1)[:, ::-1]
  rows = jnp.arange(n_eval)[:, None]
  return jnp.zeros((n_eval, n_cand), jnp.float32).at[rows, order].set(sorted_sv)


def sample_indices(
  buf: buffer_lib.BufferState, key: jax.Array, n: int, exclude_labels: Optional[jax.Array] = None
):
  """``n`` distinct uniformly drawn eligible slots: ``(index, mask)``, as `buffer.sample`."""
  cap = buf.y.shape[0]
  eligible = jnp.arange(cap) < buf.size
  if exclude_labels is not None:
    ex = jnp.asarray(exclude_labels).reshape(-1)
    eligible &= ~jnp.any((buf.y[:, None] == ex[None, :]) & (ex[None, :] >= 0), axis=1)
  _, idx = jax.lax.top_k(jnp.where(eligible, jax.random.uniform(key, (cap,)), -1.0), n)
  return idx, eligible[idx]


def class_balanced_indices(
  buf: buffer_lib.BufferState, key: jax.Array, n: int, pool: jax.Array, num_classes: int
):
  """``n`` distinct slots of ``pool`` (bool ``[capacity]``) drawn without replacement
  with weights inversely proportional to their class's count in the pool
  (the paper's code's `sample_class_balanced`, `torch.multinomial`): Gumbel top-k."""
  counts = jnp.zeros((num_classes,), jnp.float32).at[buf.y].add(pool.astype(jnp.float32))
  log_w = -jnp.log(jnp.maximum(counts[buf.y], 1.0))
  scores = jnp.where(pool, log_w + jax.random.gumbel(key, pool.shape), -jnp.inf)
  _, idx = jax.lax.top_k(scores, n)
  return idx, pool[idx]


def _sq_distances(a, b):
  # |a|^2 - 2ab + |b|^2: one matmul; at ASER's sizes (110 x 50 rows) the
  # direct difference would move 100x more memory.
  a = a.reshape(a.shape[0], -1)
  b = b.reshape(b.shape[0], -1)
  d = jnp.sum(a * a, 1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, 1)[None, :]
  return jnp.maximum(d, 0.0)


def _masked_mean(v, mask):
  return jnp.sum(jnp.where(mask[:, None], v, 0.0), 0) / jnp.maximum(jnp.sum(mask), 1)


def aser_scores(sv_adv, adv_mask, sv_coop, coop_mask, aser_type: str):
  """Per-candidate score from the two SV matrices (higher = replay it)."""
  if aser_type == "neg_sv":
    return -jnp.sum(jnp.where(adv_mask[:, None], sv_adv, 0.0), 0)
  if aser_type == "asv":  # extremal values
    coop = jnp.max(jnp.where(coop_mask[:, None], sv_coop, -jnp.inf), 0)
    adv = jnp.min(jnp.where(adv_mask[:, None], sv_adv, jnp.inf), 0)
    return jnp.where(jnp.isfinite(coop), coop, 0.0) - jnp.where(jnp.isfinite(adv), adv, 0.0)
  return _masked_mean(sv_coop, coop_mask) - _masked_mean(sv_adv, adv_mask)  # asvm


class Scored(NamedTuple):
  """The draws of one ASER retrieval and every candidate's score (buffer slots;
  a mask marks the rows that hold an eligible item)."""

  candidates: jax.Array
  candidate_mask: jax.Array
  coop: Optional[jax.Array]  # None for neg_sv, which has no cooperative set
  coop_mask: Optional[jax.Array]
  score: jax.Array  # per candidate, higher = replay it


def score_candidates(
  buf: buffer_lib.BufferState,
  key: jax.Array,
  features,
  x,
  y,
  *,
  num_candidates: int,
  coop_size: int,
  k,
  num_classes: int,
  aser_type: str = "asvm",
  exclude_labels: Optional[jax.Array] = None,
) -> Scored:
  """ASER's candidates and their scores (`aser_retrieve` keeps the best).

  ``num_candidates`` random eligible buffer samples (current labels excluded
  when ``exclude_labels`` is given); a cooperative set of ``coop_size`` other
  buffer samples, class-balanced; ``features(xs, masks) -> feats`` maps a list
  of row groups to their features (one call, so the model runs once).
  """
  k_cand, k_coop = jax.random.split(key)
  ic, mc = sample_indices(buf, k_cand, num_candidates, exclude_labels)
  yc = buf.y[ic]
  mx = jnp.ones(y.shape, bool)
  if aser_type == "neg_sv":  # no cooperative set
    fx, fc = features([x, buf.x[ic]], [mx, mc])
    score = aser_scores(knn_shapley(_sq_distances(fx, fc), y, yc, k, mc), mx, None, None, aser_type)
    return Scored(ic, mc, None, None, score)
  cap = buf.y.shape[0]
  pool = (jnp.arange(cap) < buf.size) & ~jnp.zeros((cap,), bool).at[ic].set(mc)
  ip, mp = class_balanced_indices(buf, k_coop, coop_size, pool, num_classes)
  fx, fc, fp = features([x, buf.x[ic], buf.x[ip]], [mx, mc, mp])
  sv_adv = knn_shapley(_sq_distances(fx, fc), y, yc, k, mc)
  sv_coop = knn_shapley(_sq_distances(fp, fc), buf.y[ip], yc, k, mc)
  return Scored(ic, mc, ip, mp, aser_scores(sv_adv, mx, sv_coop, mp, aser_type))


def aser_retrieve(buf: buffer_lib.BufferState, key: jax.Array, n: int, features, x, y, **kw):
  """ASER retrieval: ``(x, y, mask)`` of the ``n`` best-scored candidates of
  `score_candidates` (same keyword arguments)."""
  s = score_candidates(buf, key, features, x, y, **kw)
  _, idx = jax.lax.top_k(jnp.where(s.candidate_mask, s.score, -jnp.inf), n)
  slots = s.candidates[idx]
  return buf.x[slots], buf.y[slots], s.candidate_mask[idx]
