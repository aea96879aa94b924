"""One online replay step (ER / MIR, with MixUp and RAR), as a pure function.

The step never touches data loading, I/O or the CLI. See `make_train_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rar_jax import buffer as buffer_lib
from rar_jax import models
from rar_jax.attack import mifgsm
from rar_jax.method import Hyper, ReplayConfig
from rar_jax.mixup import mixup
from rar_jax.neighbors import neighbor_distances
from rar_jax.retrieval import mir_retrieve, random_retrieve


@struct.dataclass
class TrainState:
  """Everything a run carries from one step to the next."""

  params: Any
  batch_stats: Any  # {} for models without batch norm
  opt_state: Any
  buffer: buffer_lib.BufferState
  key: jax.Array
  hyper: Hyper
  step: jax.Array


class Group(NamedTuple):
  """Rows that share one loss term: ``weight * masked mean CE(x, targets)``."""

  x: jax.Array
  targets: jax.Array  # soft labels [n, num_classes]
  mask: jax.Array  # [n] bool
  weight: Any


def make_optimizer(learning_rate: float) -> optax.GradientTransformation:
  """Plain SGD as in the paper; the rate sits in the state so sweeps can vary it."""
  return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)


def _masked_mean(values, mask):
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


class _Model:
  """Applies a Flax module the way the step needs: train-mode batch norm over
  the valid rows only, optional sown features."""

  def __init__(self, module: nn.Module, feature_layer: str):
    self.module = module
    self.feature_layer = feature_layer

  def __call__(self, params, batch_stats, x, mask, *, features=False):
    variables = {"params": params}
    kwargs = {}
    mutable = []
    if batch_stats:
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
    """Forward over several row groups. Without batch norm one fused pass (the
    step is bound by reading the weights, so fewer passes is faster); with it,
    one pass per group, as the paper's code does, so statistics stay per group."""
    if not batch_stats:
      logits, feats, _ = self(params, batch_stats, jnp.concatenate(xs), jnp.concatenate(masks),
                              features=features)
      splits = [sum(x.shape[0] for x in xs[:i]) for i in range(1, len(xs))]
      return (jnp.split(logits, splits), jnp.split(feats, splits) if features else None,
              batch_stats)
    outs = []
    for x, m in zip(xs, masks):
      logits, feats, batch_stats = self(params, batch_stats, x, m, features=features)
      outs.append((logits, feats))
    return [o[0] for o in outs], ([o[1] for o in outs] if features else None), batch_stats


def init_train_state(module: nn.Module, tx: optax.GradientTransformation, cfg: ReplayConfig,
                     hyper: Hyper, key: jax.Array, sample_x: jax.Array) -> TrainState:
  """Initialises parameters, optimiser and an empty buffer for one run.

  ``sample_x`` is one batch of inputs (its first axis is ignored).
  """
  k_init, k_run = jax.random.split(key)
  x1 = jnp.zeros((1, *sample_x.shape[1:]), jnp.float32)
  variables = module.init(k_init, x1, train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  feats = jax.eval_shape(
      lambda: module.apply(variables, x1, train=False, mutable=[models.FEATURES])[1])
  layers = tuple(feats.get(models.FEATURES, {}).keys())
  if cfg.feature_layer not in layers:
    raise ValueError(f"feature_layer={cfg.feature_layer!r} is not sown by "
                     f"{type(module).__name__}; it sows {layers}")
  buf = buffer_lib.init(cfg.mem_size, sample_x.shape[1:], policy=cfg.storage_policy,
                        num_classes=cfg.num_classes)
  return TrainState(params=params, batch_stats=batch_stats, opt_state=tx.init(params),
                    buffer=buf, key=k_run, hyper=hyper, step=jnp.zeros((), jnp.int32))


def make_train_step(module: nn.Module, tx: optax.GradientTransformation, cfg: ReplayConfig):
  """Returns ``train_step(state, x, y) -> (state, metrics)`` for one minibatch.

  Pure and jittable; scan it over a stream and vmap it over seeds.
  """
  model = _Model(module, cfg.feature_layer)
  one_hot = lambda y: jax.nn.one_hot(y, cfg.num_classes)

  def objective(params, batch_stats, groups: Sequence[Group]):
    logits, _, batch_stats = model.forward_groups(
        params, batch_stats, [g.x for g in groups], [g.mask for g in groups])
    terms = [_masked_mean(optax.softmax_cross_entropy(l, g.targets), g.mask)
             for l, g in zip(logits, groups)]
    return sum(g.weight * t for g, t in zip(groups, terms)), (batch_stats, terms)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def per_sample_ce(params, batch_stats):
    def fn(x, y, mask):
      logits, _, _ = model(params, batch_stats, x, mask)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return fn

  def perturb(lookahead, batch_stats, x, y, xm, ym, mm, hyper: Hyper):
    """RAR: move replay rows towards their nearest current row under θ'."""
    _, (fm, fc), _ = model.forward_groups(lookahead, batch_stats, [xm, x],
                                          [mm, jnp.ones_like(y, bool)], features=True)
    if cfg.exclude_current_labels:
      d = neighbor_distances(fm, fc)  # replay labels are never in the batch
    else:
      d = neighbor_distances(fm, fc, ym, y)
    nearest = jnp.argmin(d, axis=1)
    found = jnp.isfinite(jnp.min(d, axis=1)) & mm
    if cfg.attack_target == "features":
      target = jax.lax.stop_gradient(fc[nearest])

      def loss_fn(z):
        _, f, _ = model(lookahead, batch_stats, z, mm, features=True)
        return jnp.where(found, jnp.mean(jnp.square(f - target), axis=-1), 0.0)
    else:  # Avalanche's variant: cross-entropy towards the neighbour's label
      target_y = y[nearest]

      def loss_fn(z):
        logits, _, _ = model(lookahead, batch_stats, z, mm)
        return jnp.where(found, optax.softmax_cross_entropy_with_integer_labels(logits, target_y),
                         0.0)

    xa = mifgsm(loss_fn, xm, epsilon=hyper.epsilon_fgsm, alpha=hyper.alpha_fgsm,
                steps=hyper.iter_fgsm, decay=hyper.decay_factor_fgsm,
                clip_min=cfg.data_min, clip_max=cfg.data_max)
    return jax.lax.stop_gradient(xa)

  def train_step(state: TrainState, x: jax.Array, y: jax.Array):
    key, k_ret, k_mix, k_add = jax.random.split(state.key, 4)
    hyper = state.hyper
    current = Group(x, one_hot(y), jnp.ones(y.shape, bool), 1.0)
    exclude = y if cfg.exclude_current_labels else None
    n_mem = cfg.batch_size_mem
    zero = jnp.zeros((), jnp.float32)
    metrics = {}

    if cfg.retrieval == "none":
      (loss, (batch_stats, _)), grads = grad_fn(state.params, state.batch_stats, [current])
      loss_cur, loss_rep, n_rep = loss, zero, zero
    elif not cfg.uses_lookahead:
      # ER / ER-mix: the replay batch does not depend on the gradient, so the
      # current and replay rows go through one pass.
      xm, ym, mm = random_retrieve(state.buffer, k_ret, n_mem, exclude)
      tm = one_hot(ym)
      if cfg.mixup:
        xm, tm = mixup(k_mix, xm, tm, mm, hyper.mixup_alpha)
      (_, (batch_stats, terms)), grads = grad_fn(state.params, state.batch_stats,
                                                 [current, Group(xm, tm, mm, 1.0)])
      loss_cur, loss_rep, n_rep = terms[0], terms[1], jnp.sum(mm)
    else:
      (loss_cur, (batch_stats, _)), g_cur = grad_fn(state.params, state.batch_stats, [current])
      lookahead = jax.tree.map(lambda p, g: p - hyper.opt_lr * g, state.params, g_cur)
      if cfg.retrieval == "mir":
        xm, ym, mm = mir_retrieve(state.buffer, k_ret, n_mem, cfg.mir_candidates,
                                  per_sample_ce(state.params, batch_stats),
                                  per_sample_ce(lookahead, batch_stats), exclude)
      else:
        xm, ym, mm = random_retrieve(state.buffer, k_ret, n_mem, exclude)
      tm = one_hot(ym)
      if cfg.mixup:
        xm, tm = mixup(k_mix, xm, tm, mm, hyper.mixup_alpha)
      if cfg.use_adversarial_replay:
        xa = perturb(lookahead, batch_stats, x, y, xm, jnp.argmax(tm, -1), mm, hyper)
        groups = [Group(xm, tm, mm, 1.0 - hyper.beta_coef), Group(xa, tm, mm, hyper.beta_coef)]
        metrics["perturbation_linf"] = jnp.max(jnp.where(
            mm, jnp.max(jnp.abs(xa - xm).reshape(n_mem, -1), axis=1), 0.0))
      else:
        groups = [Group(xm, tm, mm, 1.0)]
      (loss_rep, (batch_stats, _)), g_rep = grad_fn(state.params, batch_stats, groups)
      grads = jax.tree.map(jnp.add, g_cur, g_rep)
      n_rep = jnp.sum(mm)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    buf = state.buffer
    if cfg.buffer_update == "online":
      buf = buffer_lib.add(buf, x, y, k_add)
    metrics.update(loss_current=loss_cur, loss_replay=jnp.asarray(loss_rep, jnp.float32),
                   replay_count=jnp.asarray(n_rep, jnp.int32))
    new_state = state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state,
                              buffer=buf, key=key, step=state.step + 1)
    return new_state, metrics

  return train_step


def make_predict(module: nn.Module):
  """``predict(params, batch_stats, x) -> logits`` in evaluation mode."""

  def predict(params, batch_stats, x):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    return module.apply(variables, x, train=False)

  return predict
