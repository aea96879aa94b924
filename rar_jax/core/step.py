"""One online replay step, as a pure function: the incoming batch plus a
replay batch built by a chain of stages (`rar_jax.core.stages`: retrieve, mix,
perturb, loss), e.g. ER, MIR or ASER retrieval x MixUp x RAR x CE or ACE.

The step never touches data loading, I/O or the CLI. See `make_train_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rar_jax import models
from rar_jax.core import buffer as buffer_lib
from rar_jax.core import contract
from rar_jax.core import stages as stages_lib
from rar_jax.core.forward import Forward, check_module
from rar_jax.core.method import Hyper, ReplayConfig, is_int
from rar_jax.core.nnx_module import as_module, model_name
from rar_jax.errors import ArgumentError, ModelError


class TrainState(struct.PyTreeNode):
  """Everything a run carries from one step to the next."""

  params: Any
  batch_stats: Any  # {} for models without batch norm
  opt_state: Any
  buffer: buffer_lib.BufferState
  key: jax.Array
  hyper: Hyper
  seen_classes: jax.Array  # [num_classes] bool: labels offered so far (ACE's replay classes)


def check_key(key, name: str = "key") -> None:
  """A PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``), not a seed."""
  typed = hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  raw = hasattr(key, "dtype") and key.dtype == jnp.uint32 and key.shape[-1:] == (2,)
  if not (typed or raw):
    raise ArgumentError(
      f"{name}={key!r} is invalid: a PRNG key such as jax.random.PRNGKey(seed), not a seed"
    )


class Group(NamedTuple):
  """Rows that share one loss term: ``weight * masked mean loss(x, targets)``."""

  x: jax.Array
  targets: jax.Array  # soft labels [n, num_classes]
  mask: jax.Array  # [n] bool
  weight: Any
  replay: bool = False  # which of the chain's losses applies (incoming or replay rows)


def _masked_mean(values, mask):
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def init_train_state(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  hyper: Hyper,
  key: jax.Array,
  sample_x: jax.Array,
) -> TrainState:
  """Initialises parameters, optimiser and an empty buffer for one run.

  ``hyper``: the traced hyper-parameters (``chain.hyper(opt_lr)``, or
  `Hyper.create`). ``sample_x`` is one batch of inputs (its first axis is ignored).
  """
  check_key(key)
  module = as_module(module)  # an NNX factory: its Linen-like adapter
  if not isinstance(hyper, Hyper):
    raise ArgumentError(f"hyper={hyper!r} is invalid: a Hyper (chain.hyper(opt_lr))")
  k_init, k_run = jax.random.split(key)
  x1 = jnp.zeros((1, *sample_x.shape[1:]), jnp.float32)
  try:
    variables = module.init(k_init, x1, train=False)
  except ModelError:  # already one line naming the model
    raise
  except TypeError as e:
    check_module(module, batch_norm=False)
    raise ModelError(f"model {model_name(module)} cannot be initialised: {e}") from None
  check_module(module, batch_norm=False)  # mask=: checked where batch norm runs (Forward)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  logits, feats = jax.eval_shape(
    lambda: module.apply(variables, x1, train=False, mutable=[models.FEATURES])
  )
  if getattr(logits, "shape", None) != (1, cfg.num_classes):
    raise ModelError(
      f"model {model_name(module)} returns {getattr(logits, 'shape', type(logits))} for one "
      f"row: the step needs logits [rows, num_classes={cfg.num_classes}]"
    )
  layers = tuple(feats.get(models.FEATURES, {}).keys())
  if cfg.feature_layer not in layers:
    raise ModelError(
      f"feature_layer={cfg.feature_layer!r} is not sown by {model_name(module)}; it sows {layers}"
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

  def __init__(self, module, tx, cfg: ReplayConfig, chain: stages_lib.Chain, unroll: int = 0):
    self.tx, self.cfg, self.chain, self.unroll = tx, cfg, chain, unroll
    self.model = Forward(module, cfg.feature_layer, cfg.batch_norm_rows == "joint")
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
      declared_lookahead=None,
      batch_stats=batch_stats,
      x=x,
      y=y,
      buffer=state.buffer,
      exclude=y if self.exclude_current else None,
      present=present,
      seen=seen,
      unroll=self.unroll,
    )

  def current_group(self, ctx) -> Group:
    return Group(ctx.x, self.one_hot(ctx.y), jnp.ones(ctx.y.shape, bool), 1.0)

  def with_lookahead(self, ctx):
    """The incoming gradient, and ``ctx`` with θ' = θ - opt_lr * that gradient."""
    (loss, (batch_stats, _)), grads = self.grad_fn(
      ctx.params, ctx.batch_stats, [self.current_group(ctx)], ctx
    )
    lookahead = jax.tree.map(lambda p, g: p - ctx.hyper.opt_lr * g, ctx.params, grads)
    return loss, grads, ctx._replace(declared_lookahead=lookahead, batch_stats=batch_stats)

  def _for(self, stage, ctx):
    """``ctx`` as ``stage`` sees it: θ' only where it declares it needs θ'."""
    ctx = ctx._replace(stage=stage.name)
    return ctx if stage.needs_lookahead else ctx._replace(declared_lookahead=None)

  def replay_batch(self, ctx, k_ret, k_mix) -> stages_lib.ReplayBatch:
    """Retrieve, then mix: the rows before and after mixing."""
    stage = self.chain.retrieve
    assert stage is not None  # callers check
    xm, ym, mm = contract.retrieved(
      stage, stage.fn(self._for(stage, ctx), k_ret), self.cfg.batch_size_mem, ctx.x.shape[1:]
    )
    tm = self.one_hot(ym)
    batch = stages_lib.ReplayBatch(xm, tm, mm, xm, tm)
    if self.chain.mix is not None:
      stage = self.chain.mix
      xmix, tmix = contract.mixed(stage, stage.fn(self._for(stage, ctx), k_mix, xm, tm, mm), xm, tm)
      batch = batch._replace(x=xmix, targets=tmix)
    return batch

  def gradients(self, ctx, k_ret, k_mix):
    """``(grads, batch_stats, loss_current, loss_replay, replay_count, metrics)``."""
    zero = jnp.zeros((), jnp.float32)
    if self.chain.retrieve is None:
      (loss, (stats, _)), grads = self.grad_fn(
        ctx.params, ctx.batch_stats, [self.current_group(ctx)], ctx
      )
      return grads, stats, loss, zero, zero, {}
    if self.fused:
      b = self.replay_batch(ctx, k_ret, k_mix)
      groups = [self.current_group(ctx), Group(b.x, b.targets, b.mask, 1.0, True)]
      (_, (stats, terms)), grads = self.grad_fn(ctx.params, ctx.batch_stats, groups, ctx)
      return grads, stats, terms[0], terms[1], jnp.sum(b.mask), {}
    stats_before = ctx.batch_stats
    loss_cur, g_cur, ctx = self.with_lookahead(ctx)
    b = self.replay_batch(ctx, k_ret, k_mix)
    metrics, parts = {}, [(b.x, b.targets, 1.0)]
    if self.chain.perturb is not None:
      stage = self.chain.perturb
      # The perturb stage's key: RAR draws nothing, so this never moves a number.
      out = stage.fn(self._for(stage, ctx), jax.random.fold_in(k_mix, 1), b)
      parts, metrics = contract.perturbed(stage, out, b.x, b.targets)
    groups = [Group(gx, gt, b.mask, w, True) for gx, gt, w in parts]
    if self.model.joint_rows and ctx.batch_stats:
      # Joint statistics: the update's gradient from one pass over the incoming
      # and replay rows (the look-ahead pass only served the look-ahead; its
      # statistics are dropped so the incoming rows count once).
      groups = [self.current_group(ctx)] + groups
      (_, (stats, terms)), grads = self.grad_fn(ctx.params, stats_before, groups, ctx)
      loss_rep = sum(g.weight * t for g, t in zip(groups[1:], terms[1:]))
      return grads, stats, terms[0], loss_rep, jnp.sum(b.mask), metrics
    (loss_rep, (stats, _)), g_rep = self.grad_fn(ctx.params, ctx.batch_stats, groups, ctx)
    return jax.tree.map(jnp.add, g_cur, g_rep), stats, loss_cur, loss_rep, jnp.sum(b.mask), metrics

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


def as_chain(chain) -> stages_lib.Chain:
  """``chain``: a `rar_jax.core.stages.Chain`, or a method name (its chain with
  the library's default settings, `rar_jax.core.stages.from_method`)."""
  if isinstance(chain, str):
    return stages_lib.from_method(chain)
  if not isinstance(chain, stages_lib.Chain):
    raise ArgumentError(f"chain={chain!r} is invalid: a method name or rar_jax.stages.chain(...)")
  return chain


def _update(module, tx, cfg, chain, unroll) -> _Update:
  if not isinstance(cfg, ReplayConfig):
    raise ArgumentError(f"cfg={cfg!r} is invalid: a rar_jax.ReplayConfig")
  if not (is_int(unroll) and unroll >= 0):
    raise ArgumentError(f"unroll={unroll!r} is invalid: an int >= 0")
  chain = as_chain(chain)
  chain.check(cfg)
  return _Update(as_module(module), tx, cfg, chain, unroll)


def make_train_step(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  chain,
  *,
  unroll: int = 0,
):
  """Returns ``train_step(state, x, y) -> (state, metrics)`` for one minibatch.

  ``chain``: the method's stages (`rar_jax.core.stages.chain`, e.g.
  ``chain(mir(mir_candidates=50), rar(epsilon_fgsm=0.3))``) or a method name
  (``"er_rar"``: its stages with default settings). ``unroll``: iterations of
  the step's inner loops (RAR's attack steps; ``replay_iters`` updates when at
  most this many) compiled without a loop, 0 = loops; how the step compiles,
  not what it computes (XLA's CPU convolutions run ~10x slower in loop bodies,
  jax-ml/jax#12868). Pure and jittable; scan it over a stream and vmap it over
  seeds. Metrics: ``loss_current``, ``loss_replay``, ``replay_count``, and for
  RAR ``perturbation_mean`` / ``perturbation_max``.
  """
  update = _update(module, tx, cfg, chain, unroll)

  def train_step(state: TrainState, x: jax.Array, y: jax.Array):
    contract.incoming(state.buffer, x, y)
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
        unroll=unroll >= cfg.replay_iters,
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

  train_step.data_range = update.chain.data_range  # type: ignore[attr-defined]
  # The runner reads the model to pick how a stream of this step runs ("auto").
  train_step.module = module  # type: ignore[attr-defined]
  return train_step


def make_rar_preview(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  chain,
  *,
  unroll: int = 0,
):
  """Returns ``preview(state, x, y, key) -> dict`` of what RAR does to one
  replay draw for the incoming batch ``(x, y)``, as the step does it but
  without updating anything: ``x_mem``, ``targets``, ``mask`` (the replay
  batch), ``x_adv`` (perturbed), ``nearest`` (index into ``x``) and ``found``."""
  update = _update(module, tx, cfg, chain, unroll)
  perturb = update.chain.perturb
  if update.chain.retrieve is None or perturb is None or perturb.attack is None:
    raise ArgumentError(
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
    batch = update.replay_batch(ctx, k_ret, k_mix)
    attack = attack_fn(update._for(perturb, ctx), batch)  # the chain's own attack
    return {
      "x_mem": batch.x,
      "targets": batch.targets,
      "mask": batch.mask,
      "x_adv": attack.x_adv,
      "nearest": attack.nearest,
      "found": attack.found,
    }

  return preview


def make_predict(module: nn.Module):
  """``predict(params, batch_stats, x) -> logits`` in evaluation mode."""
  module = as_module(module)

  def predict(params, batch_stats, x):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    return module.apply(variables, x, train=False)

  return predict
