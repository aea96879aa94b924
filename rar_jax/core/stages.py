"""A replay method as a chain of small stages, in the spirit of `optax.chain`.

One update on an incoming batch ``(x, y)`` runs

  retrieve -> mix -> perturb -> loss

- ``retrieve(ctx, key) -> (x_mem, y_mem, mask)``: the replay batch (random, MIR,
  ASER, or any function of the `StepContext`).
- ``mix(ctx, key, x_mem, targets, mask) -> (x_mem, targets)``: soft targets in, out
  (MixUp).
- ``perturb(ctx, x_mem, targets, mask) -> ([(x, weight), ...], metrics)``: the
  replay row groups and their loss weights (RAR: clean and perturbed).
- ``loss(logits, targets, ctx, replay) -> per-row loss``: for the incoming rows
  (``replay=False``) and the replay rows (``replay=True``); CE or ACE.

`chain(...)` takes stages in any order; each kind at most once; no retrieve
stage means no replay. `from_config` builds the chain a method name stands
for. ``make_train_step(module, tx, cfg, chain=...)`` runs a user's chain.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from rar_jax.core import buffer as buffer_lib
from rar_jax.core.aser import aser_retrieve
from rar_jax.core.attack import mifgsm
from rar_jax.core.method import DATA_RANGE, STAGE_KINDS, Hyper, ReplayConfig
from rar_jax.core.mixup import mixup as mixup_fn
from rar_jax.core.neighbors import neighbor_distances
from rar_jax.core.retrieval import mir_retrieve


class StepContext(NamedTuple):
  """What a stage may read during one update (arrays are traced)."""

  cfg: ReplayConfig
  hyper: Hyper
  model: Any  # model(params, batch_stats, x, mask, features=False) -> (logits, feats, stats)
  params: Any  # θ, before this update
  lookahead: Any  # θ' = θ - opt_lr * grad of the incoming loss; None where no stage needs it
  batch_stats: Any
  x: jax.Array  # the incoming batch
  y: jax.Array
  buffer: buffer_lib.BufferState
  exclude: Optional[jax.Array]  # labels replay must skip (the incoming ones), or None
  present: jax.Array  # [num_classes] bool: classes in the incoming batch
  seen: jax.Array  # [num_classes] bool: classes seen so far, the incoming ones included

  def features(self, params, x, mask):
    """Features at ``cfg.feature_layer`` (the neighbour space of RAR and ASER)."""
    return self.model(params, self.batch_stats, x, mask, features=True)[1]

  def per_sample_loss(self, params, x, y, mask):
    """Integer-label cross-entropy per row under ``params``."""
    logits, _, _ = self.model(params, self.batch_stats, x, mask)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


class Stage(NamedTuple):
  """One link of a chain. ``needs_lookahead``: reads ``ctx.lookahead`` (so the
  incoming gradient is taken before replay); ``exclude_current_labels``: for a
  loss stage, the replay rule it wants when the config leaves it open;
  ``attack``: for a perturb stage, ``attack(ctx, xm, tm, mm) -> RarAttack``, the
  perturbation it applies (what `rar_jax.core.step.make_rar_preview` shows)."""

  kind: str  # retrieve | mix | perturb | loss
  name: str
  fn: Callable
  needs_lookahead: bool = False
  exclude_current_labels: Optional[bool] = None
  attack: Optional[Callable] = None


class Chain(NamedTuple):
  retrieve: Optional[Stage]
  mix: Optional[Stage]
  perturb: Optional[Stage]
  loss: Stage

  @property
  def needs_lookahead(self) -> bool:
    return any(s is not None and s.needs_lookahead for s in (self.retrieve, self.mix, self.perturb))

  def excludes_current(self, cfg: ReplayConfig) -> bool:
    """The config decides when it says; otherwise the loss's replay rule."""
    if cfg.exclude_current_labels is not None:
      return cfg.exclude_current_labels
    return bool(self.loss.exclude_current_labels)


def chain(*stages: Stage) -> Chain:
  """Stages in any order, at most one of each kind; the loss defaults to CE."""
  by_kind: Dict[str, Stage] = {}
  for s in stages:
    if not isinstance(s, Stage) or s.kind not in STAGE_KINDS:
      raise ValueError(
        f"chain: {s!r} is not a stage; build stages with rar_jax.core.stages (kinds {STAGE_KINDS})"
      )
    if s.kind in by_kind:
      raise ValueError(
        f"chain: two {s.kind} stages ({by_kind[s.kind].name}, {s.name}); "
        "give at most one of each kind"
      )
    by_kind[s.kind] = s
  if ("mix" in by_kind or "perturb" in by_kind) and "retrieve" not in by_kind:
    raise ValueError("chain: mix and perturb stages need a retrieve stage")
  return Chain(
    by_kind.get("retrieve"), by_kind.get("mix"), by_kind.get("perturb"), by_kind.get("loss", ce())
  )


# ---------------------------------------------------------------- retrieve


def retrieve(fn: Callable, name: str = "user", *, needs_lookahead: bool = False) -> Stage:
  """A user's retrieval: ``fn(ctx, key) -> (x, y, mask)`` (fixed shapes)."""
  return Stage("retrieve", name, fn, needs_lookahead)


def random_replay() -> Stage:
  """ER: a uniform draw of ``batch_size_mem`` eligible buffer samples."""
  return retrieve(
    lambda ctx, key: buffer_lib.sample(ctx.buffer, key, ctx.cfg.batch_size_mem, ctx.exclude),
    "random",
  )


def mir() -> Stage:
  """MIR: of ``mir_candidates`` random samples, those the look-ahead step hurts most."""

  def fn(ctx: StepContext, key):
    return mir_retrieve(
      ctx.buffer,
      key,
      ctx.cfg.batch_size_mem,
      ctx.cfg.mir_candidates,
      lambda x, y, m: ctx.per_sample_loss(ctx.params, x, y, m),
      lambda x, y, m: ctx.per_sample_loss(ctx.lookahead, x, y, m),
      ctx.exclude,
    )

  return retrieve(fn, "mir", needs_lookahead=True)


def aser() -> Stage:
  """ASER: KNN-Shapley-scored candidates under the current parameters (`rar_jax.core.aser`)."""

  def fn(ctx: StepContext, key):
    cfg = ctx.cfg

    def features(xs, masks):
      _, feats, _ = ctx.model.forward_groups(ctx.params, ctx.batch_stats, xs, masks, features=True)
      return feats

    return aser_retrieve(
      ctx.buffer,
      key,
      cfg.batch_size_mem,
      features,
      ctx.x,
      ctx.y,
      num_candidates=cfg.aser_candidates,
      coop_size=cfg.aser_coop_size,
      k=cfg.aser_k,
      num_classes=cfg.num_classes,
      aser_type=cfg.aser_type,
      exclude_labels=ctx.exclude,
    )

  return retrieve(fn, "aser")


# ---------------------------------------------------------------- mix


def mixup() -> Stage:
  """MixUp of the replay batch, one Beta(mixup_alpha, mixup_alpha) λ per batch."""
  return Stage(
    "mix", "mixup", lambda ctx, key, x, t, m: mixup_fn(key, x, t, m, ctx.hyper.mixup_alpha)
  )


# ---------------------------------------------------------------- perturb


class RarAttack(NamedTuple):
  """What RAR did to a replay batch (for the step, metrics and pictures)."""

  x_adv: jax.Array  # the perturbed replay rows
  nearest: jax.Array  # [n] int: each replay row's nearest incoming row in feature space
  found: jax.Array  # [n] bool: valid rows that had a neighbour (others stay unperturbed)


def rar_attack(ctx: StepContext, xm, tm, mm, params: Optional[str] = None) -> RarAttack:
  """Each replay row moved (MI-FGSM) towards its nearest incoming row in the
  feature space of θ' (``params="lookahead"``, the paper) or θ (``"current"``)."""
  cfg, hyper = ctx.cfg, ctx.hyper
  theta = ctx.lookahead if (params or cfg.attack_params) == "lookahead" else ctx.params
  model, bs, x, y = ctx.model, ctx.batch_stats, ctx.x, ctx.y
  ym = jnp.argmax(tm, -1)
  _, (fm, fc), _ = model.forward_groups(
    theta, bs, [xm, x], [mm, jnp.ones_like(y, bool)], features=True
  )
  if ctx.exclude is not None:
    d = neighbor_distances(fm, fc)  # replay labels are never in the batch
  else:
    d = neighbor_distances(fm, fc, ym, y)
  nearest = jnp.argmin(d, axis=1)
  found = jnp.isfinite(jnp.min(d, axis=1)) & mm
  if cfg.attack_target == "features":
    target = jax.lax.stop_gradient(fc[nearest])

    def loss_fn(z):
      _, f, _ = model(theta, bs, z, mm, features=True)
      return jnp.where(found, jnp.mean(jnp.square(f - target), axis=-1), 0.0)
  else:  # Avalanche's variant: cross-entropy towards the neighbour's label
    target_y = y[nearest]

    def loss_fn(z):
      logits, _, _ = model(theta, bs, z, mm)
      return jnp.where(
        found, optax.softmax_cross_entropy_with_integer_labels(logits, target_y), 0.0
      )

  xa = mifgsm(
    loss_fn,
    xm,
    epsilon=hyper.epsilon_fgsm,
    alpha=hyper.alpha_fgsm,
    steps=hyper.iter_fgsm,
    decay=hyper.decay_factor_fgsm,
    clip_min=DATA_RANGE[0],
    clip_max=DATA_RANGE[1],
    unroll=cfg.unroll,
  )
  return RarAttack(jax.lax.stop_gradient(xa), nearest, found)


def perturbation_sizes(xm, xa, mm) -> dict:
  """Mean and max L-inf size of the perturbation over the valid replay rows."""
  linf = jnp.max(jnp.abs(xa - xm).reshape(xm.shape[0], -1), axis=1)
  return {
    "perturbation_mean": jnp.sum(jnp.where(mm, linf, 0.0)) / jnp.maximum(jnp.sum(mm), 1),
    "perturbation_max": jnp.max(jnp.where(mm, linf, 0.0)),
  }


def rar(params: Optional[str] = None) -> Stage:
  """RAR (`rar_attack`): replay loss ``(1-beta)*clean + beta*perturbed``.

  ``params``: ``"lookahead"`` (the paper, θ') or ``"current"`` (θ; what the
  paper's code does after ASER retrieval); None = ``cfg.attack_params``.
  """

  def attack(ctx: StepContext, xm, tm, mm) -> RarAttack:
    return rar_attack(ctx, xm, tm, mm, params)

  def fn(ctx: StepContext, xm, tm, mm):
    xa = attack(ctx, xm, tm, mm).x_adv
    beta = ctx.hyper.beta_coef
    return [(xm, 1.0 - beta), (xa, beta)], perturbation_sizes(xm, xa, mm)

  # Even on θ the update takes the incoming gradient first, as the paper's code
  # does (unused, θ' costs nothing: XLA drops it).
  return Stage("perturb", "rar", fn, needs_lookahead=True, attack=attack)


# ---------------------------------------------------------------- loss


def ce() -> Stage:
  """Cross-entropy over every logit, incoming and replay rows alike."""
  return Stage(
    "loss",
    "ce",
    lambda logits, targets, ctx, replay: optax.softmax_cross_entropy(logits, targets),
    exclude_current_labels=True,
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

  return Stage("loss", "ace", fn, exclude_current_labels=False)


# ---------------------------------------------------------------- names

_BY_NAME = {
  "random": random_replay,
  "mir": mir,
  "aser": aser,
  "mixup": mixup,
  "rar": rar,
  "ce": ce,
  "ace": ace,
}


def from_config(cfg: ReplayConfig) -> Chain:
  """The chain of ``cfg``'s method (its retrieval, mixup, RAR and loss fields)."""
  stages = []
  if cfg.retrieval != "none":
    stages.append(_BY_NAME[cfg.retrieval]())
  if cfg.mixup:
    stages.append(mixup())
  if cfg.use_adversarial_replay:
    stages.append(rar())
  stages.append(_BY_NAME[cfg.loss]())
  return chain(*stages)


def by_name(name: str) -> Stage:
  """A built-in stage by its name (`rar_jax.core.method.STAGES`)."""
  if name not in _BY_NAME:
    raise ValueError(f"stage {name!r} is invalid: one of {tuple(_BY_NAME)}")
  return _BY_NAME[name]()
