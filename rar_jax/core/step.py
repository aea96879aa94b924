"""One online replay step, as a pure function: the incoming batch plus a
replay batch built by a chain of stages (`rar_jax.core.stages`: retrieve, mix,
perturb, loss), e.g. ER, MIR or ASER retrieval x MixUp x RAR x CE or ACE.

The step never touches data loading, I/O or the CLI. See `make_train_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rar_jax import models
from rar_jax.core import buffer as buffer_lib
from rar_jax.core import stages as stages_lib
from rar_jax.core.method import Hyper, ReplayConfig


class TrainState(struct.PyTreeNode):
  """Everything a run carries from one step to the next."""

  params: Any
  batch_stats: Any  # {} for models without batch norm
  opt_state: Any
  buffer: buffer_lib.BufferState
  key: jax.Array
  hyper: Hyper
  seen_classes: jax.Array  # [num_classes] bool: labels offered so far (ACE's replay classes)


class Group(NamedTuple):
  """Rows that share one loss term: ``weight * masked mean CE(x, targets)``."""

  x: jax.Array
  targets: jax.Array  # soft labels [n, num_classes]
  mask: jax.Array  # [n] bool
  weight: Any
  replay: bool = False  # which of the chain's losses applies (incoming or replay rows)


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
      raise ValueError("track_params_ema needs the parameters: tx.update(grads, state, params)")
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.params_ema, new)
    return updates, ParamsEmaState(params_ema=ema)

  return optax.GradientTransformation(init, update)


def make_optimizer(learning_rate: float, ema_decay: Optional[float] = None):
  """Plain SGD as in the paper; the rate sits in the state so sweeps can vary it.
  With ``ema_decay`` (also in the state) the optimiser also keeps a moving
  average of the weights, which evaluation then uses (`evaluation_params`)."""
  if ema_decay is None:
    return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)

  def sgd_with_average(learning_rate, ema_decay):
    return optax.chain(optax.sgd(learning_rate), track_params_ema(ema_decay))

  return optax.inject_hyperparams(sgd_with_average)(
    learning_rate=learning_rate, ema_decay=ema_decay
  )


def evaluation_params(state: "TrainState"):
  """The weights a run is evaluated with: the moving average where the
  optimiser keeps one, else the current weights (training uses the current ones).
  A state without an optimiser (anything with ``params``) is its current weights."""
  ema = optax.tree_utils.tree_get(getattr(state, "opt_state", ()), "params_ema", None)
  return state.params if ema is None else ema


def _masked_mean(values, mask):
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


class _Model:
  """Applies a Flax module the way the step needs: train-mode batch norm over
  the valid rows only, optional sown features."""

  def __init__(self, module: nn.Module, feature_layer: str, joint_rows: bool = False):
    self.module = module
    self.feature_layer = feature_layer
    self.joint_rows = joint_rows  # batch_norm_rows="joint"

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
    """Forward over several row groups. Without batch norm, or with joint
    statistics, one fused pass (the step is bound by reading the weights, so
    fewer passes is faster); with per-group statistics one pass per group, as
    the paper's code does."""
    if not batch_stats or self.joint_rows:
      logits, feats, batch_stats = self(
        params, batch_stats, jnp.concatenate(xs), jnp.concatenate(masks), features=features
      )
      splits = [sum(x.shape[0] for x in xs[:i]) for i in range(1, len(xs))]
      return (
        jnp.split(logits, splits),
        jnp.split(feats, splits) if features else None,
        batch_stats,
      )
    outs = []
    for x, m in zip(xs, masks):
      logits, feats, batch_stats = self(params, batch_stats, x, m, features=features)
      outs.append((logits, feats))
    return [o[0] for o in outs], ([o[1] for o in outs] if features else None), batch_stats


def init_train_state(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  hyper: Hyper,
  key: jax.Array,
  sample_x: jax.Array,
) -> TrainState:
  """Initialises parameters, optimiser and an empty buffer for one run.

  ``sample_x`` is one batch of inputs (its first axis is ignored).
  """
  k_init, k_run = jax.random.split(key)
  x1 = jnp.zeros((1, *sample_x.shape[1:]), jnp.float32)
  variables = module.init(k_init, x1, train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  feats = jax.eval_shape(
    lambda: module.apply(variables, x1, train=False, mutable=[models.FEATURES])[1]
  )
  layers = tuple(feats.get(models.FEATURES, {}).keys())
  if cfg.feature_layer not in layers:
    raise ValueError(
      f"feature_layer={cfg.feature_layer!r} is not sown by "
      f"{type(module).__name__}; it sows {layers}"
    )
  buf = buffer_lib.init(
    cfg.mem_size, sample_x.shape[1:], policy=cfg.storage_policy, num_classes=cfg.num_classes
  )
  return TrainState(
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    buffer=buf,
    key=k_run,
    hyper=hyper,
    seen_classes=jnp.zeros((cfg.num_classes,), bool),
  )


class _Update:
  """One optimiser step on an incoming batch and a fresh replay draw, through
  a chain's stages; `make_train_step` wraps it into a step over the stream."""

  def __init__(
    self,
    module: nn.Module,
    tx: optax.GradientTransformation,
    cfg: ReplayConfig,
    chain: stages_lib.Chain,
  ):
    self.tx, self.cfg, self.chain = tx, cfg, chain
    self.model = _Model(module, cfg.feature_layer, cfg.batch_norm_rows == "joint")
    self.exclude_current = chain.excludes_current(cfg)
    # Without a look-ahead the replay batch does not depend on the incoming
    # gradient, so incoming and replay rows share one pass.
    self.fused = chain.perturb is None and not chain.needs_lookahead
    self.grad_fn = jax.value_and_grad(self._objective, has_aux=True)

  def one_hot(self, y):
    return jax.nn.one_hot(y, self.cfg.num_classes)

  def _objective(self, params, batch_stats, groups: Sequence[Group], ctx):
    logits, _, batch_stats = self.model.forward_groups(
      params, batch_stats, [g.x for g in groups], [g.mask for g in groups]
    )
    terms = [
      _masked_mean(self.chain.loss.fn(l, g.targets, ctx, g.replay), g.mask)
      for l, g in zip(logits, groups)
    ]
    return sum(g.weight * t for g, t in zip(groups, terms)), (batch_stats, terms)

  def context(self, state: TrainState, params, batch_stats, x, y, present, seen):
    return stages_lib.StepContext(
      cfg=self.cfg,
      hyper=state.hyper,
      model=self.model,
      params=params,
      lookahead=None,
      batch_stats=batch_stats,
      x=x,
      y=y,
      buffer=state.buffer,
      exclude=y if self.exclude_current else None,
      present=present,
      seen=seen,
    )

  def current_group(self, ctx) -> Group:
    return Group(ctx.x, self.one_hot(ctx.y), jnp.ones(ctx.y.shape, bool), 1.0)

  def with_lookahead(self, ctx):
    """The incoming gradient, and ``ctx`` with θ' = θ - opt_lr * that gradient."""
    (loss, (batch_stats, _)), grads = self.grad_fn(
      ctx.params, ctx.batch_stats, [self.current_group(ctx)], ctx
    )
    lookahead = jax.tree.map(lambda p, g: p - ctx.hyper.opt_lr * g, ctx.params, grads)
    return loss, grads, ctx._replace(lookahead=lookahead, batch_stats=batch_stats)

  def replay_batch(self, ctx, k_ret, k_mix):
    """Retrieve, then mix: ``(x, soft targets, mask)``."""
    xm, ym, mm = self.chain.retrieve.fn(ctx, k_ret)
    tm = self.one_hot(ym)
    if self.chain.mix is not None:
      xm, tm = self.chain.mix.fn(ctx, k_mix, xm, tm, mm)
    return xm, tm, mm

  def gradients(self, ctx, k_ret, k_mix):
    """``(grads, batch_stats, loss_current, loss_replay, replay_count, metrics)``."""
    zero = jnp.zeros((), jnp.float32)
    if self.chain.retrieve is None:
      (loss, (stats, _)), grads = self.grad_fn(
        ctx.params, ctx.batch_stats, [self.current_group(ctx)], ctx
      )
      return grads, stats, loss, zero, zero, {}
    if self.fused:
      xm, tm, mm = self.replay_batch(ctx, k_ret, k_mix)
      groups = [self.current_group(ctx), Group(xm, tm, mm, 1.0, True)]
      (_, (stats, terms)), grads = self.grad_fn(ctx.params, ctx.batch_stats, groups, ctx)
      return grads, stats, terms[0], terms[1], jnp.sum(mm), {}
    stats_before = ctx.batch_stats
    loss_cur, g_cur, ctx = self.with_lookahead(ctx)
    xm, tm, mm = self.replay_batch(ctx, k_ret, k_mix)
    metrics, parts = {}, [(xm, 1.0)]
    if self.chain.perturb is not None:
      parts, metrics = self.chain.perturb.fn(ctx, xm, tm, mm)
    groups = [Group(gx, tm, mm, w, True) for gx, w in parts]
    if self.model.joint_rows and ctx.batch_stats:
      # Joint statistics: the update's gradient from one pass over the incoming
      # and replay rows (the look-ahead pass only served the look-ahead; its
      # statistics are dropped so the incoming rows count once).
      groups = [self.current_group(ctx)] + groups
      (_, (stats, terms)), grads = self.grad_fn(ctx.params, stats_before, groups, ctx)
      loss_rep = sum(g.weight * t for g, t in zip(groups[1:], terms[1:]))
      return grads, stats, terms[0], loss_rep, jnp.sum(mm), metrics
    (loss_rep, (stats, _)), g_rep = self.grad_fn(ctx.params, ctx.batch_stats, groups, ctx)
    return jax.tree.map(jnp.add, g_cur, g_rep), stats, loss_cur, loss_rep, jnp.sum(mm), metrics

  def __call__(
    self, state: TrainState, params, batch_stats, opt_state, x, y, k_ret, k_mix, present, seen
  ):
    ctx = self.context(state, params, batch_stats, x, y, present, seen)
    grads, batch_stats, loss_cur, loss_rep, n_rep, metrics = self.gradients(ctx, k_ret, k_mix)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(
      metrics,
      loss_current=loss_cur,
      loss_replay=jnp.asarray(loss_rep, jnp.float32),
      replay_count=jnp.asarray(n_rep, jnp.int32),
    )
    return params, batch_stats, opt_state, metrics


def _chain_for(cfg: ReplayConfig, chain: Optional[stages_lib.Chain]) -> stages_lib.Chain:
  chain = stages_lib.from_config(cfg) if chain is None else chain
  if not isinstance(chain, stages_lib.Chain):
    raise ValueError(f"chain={chain!r} is invalid: build it with rar_jax.core.stages.chain(...)")
  return chain


def make_train_step(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  chain: Optional[stages_lib.Chain] = None,
):
  """Returns ``train_step(state, x, y) -> (state, metrics)`` for one minibatch.

  ``chain`` (`rar_jax.core.stages.chain`) replaces the stages ``cfg``'s method names
  (`rar_jax.core.stages.from_config`). Pure and jittable; scan it over a stream and
  vmap it over seeds. Metrics: ``loss_current``, ``loss_replay``,
  ``replay_count``, and for RAR ``perturbation_mean`` / ``perturbation_max``.
  """
  update = _Update(module, tx, cfg, _chain_for(cfg, chain))

  def train_step(state: TrainState, x: jax.Array, y: jax.Array):
    key, k_ret, k_mix, k_add = jax.random.split(state.key, 4)
    present = jnp.zeros((cfg.num_classes,), bool).at[y].set(True)
    seen = state.seen_classes | present
    if cfg.replay_iters == 1:
      params, batch_stats, opt_state, metrics = update(
        state, state.params, state.batch_stats, state.opt_state, x, y, k_ret, k_mix, present, seen
      )
    else:
      # Several updates on the same incoming batch, each with a fresh replay
      # draw; the batch enters the buffer once, after them.
      def body(carry, i):
        out = update(
          state,
          *carry,
          x,
          y,
          jax.random.fold_in(k_ret, i),
          jax.random.fold_in(k_mix, i),
          present,
          seen,
        )
        return out[:3], out[3]

      (params, batch_stats, opt_state), stacked = jax.lax.scan(
        body,
        (state.params, state.batch_stats, state.opt_state),
        jnp.arange(cfg.replay_iters),
        unroll=cfg.unroll >= cfg.replay_iters,
      )
      # The first update's losses are the online ones (before any step on x).
      metrics = jax.tree.map(lambda m: m[0], stacked)
    buf = state.buffer
    if cfg.buffer_update == "online":
      buf = buffer_lib.add(buf, x, y, k_add)
    new_state = state.replace(
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
      buffer=buf,
      key=key,
      seen_classes=seen,
    )
    return new_state, metrics

  return train_step


def make_rar_preview(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  chain: Optional[stages_lib.Chain] = None,
):
  """Returns ``preview(state, x, y, key) -> dict`` of what RAR does to one
  replay draw for the incoming batch ``(x, y)``, as the step does it but
  without updating anything: ``x_mem``, ``targets``, ``mask`` (the replay
  batch), ``x_adv`` (perturbed), ``nearest`` (index into ``x``) and ``found``."""
  update = _Update(module, tx, cfg, _chain_for(cfg, chain))
  perturb = update.chain.perturb
  if update.chain.retrieve is None or perturb is None or perturb.attack is None:
    raise ValueError(
      "a RAR preview needs a chain with a retrieve and a perturb stage that has an "
      "attack (stages.rar())"
    )
  attack_fn = perturb.attack

  def preview(state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array):
    k_ret, k_mix = jax.random.split(key)
    present = jnp.zeros((cfg.num_classes,), bool).at[y].set(True)
    ctx = update.context(
      state, state.params, state.batch_stats, x, y, present, state.seen_classes | present
    )
    _, _, ctx = update.with_lookahead(ctx)
    xm, tm, mm = update.replay_batch(ctx, k_ret, k_mix)
    attack = attack_fn(ctx, xm, tm, mm)  # the chain's own attack, as the step runs it
    return {
      "x_mem": xm,
      "targets": tm,
      "mask": mm,
      "x_adv": attack.x_adv,
      "nearest": attack.nearest,
      "found": attack.found,
    }

  return preview


def make_predict(module: nn.Module):
  """``predict(params, batch_stats, x) -> logits`` in evaluation mode."""

  def predict(params, batch_stats, x):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    return module.apply(variables, x, train=False)

  return predict
