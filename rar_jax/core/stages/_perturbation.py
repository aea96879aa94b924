"""Perturb stages: RAR's clean and perturbed replay terms."""

from __future__ import annotations

from typing import Optional, Tuple

from rar_jax.core.defaults import DEFAULTS
from rar_jax.core.method import ATTACK_PARAMS, ATTACK_TARGETS, CLEAN_ROWS, Hyper, require
from rar_jax.core.rar import RarAttack, check_data_range, perturbation_sizes, rar_attack
from rar_jax.core.stages._base import ReplayBatch, Stage, StepContext


def rar(
  beta_coef: float = DEFAULTS["beta_coef"],
  epsilon_fgsm: float = DEFAULTS["epsilon_fgsm"],
  alpha_fgsm: Optional[float] = DEFAULTS["alpha_fgsm"],
  iter_fgsm: int = DEFAULTS["iter_fgsm"],
  decay_factor_fgsm: float = DEFAULTS["decay_factor_fgsm"],
  attack_params: str = DEFAULTS["attack_params"],
  attack_target: str = DEFAULTS["attack_target"],
  clean_rows: str = DEFAULTS["clean_rows"],
  data_range: Optional[Tuple[float, float]] = DEFAULTS["data_range"],
) -> Stage:
  """RAR (`rar_jax.core.rar.rar_attack`): replay loss
  ``(1 - beta_coef) * CE(clean rows) + beta_coef * CE(perturbed mixed rows)``.

  MI-FGSM with ``epsilon_fgsm``, ``alpha_fgsm`` (None = epsilon / steps),
  ``iter_fgsm`` steps and momentum ``decay_factor_fgsm`` (traced, sweepable).
  ``attack_params``: ``"lookahead"`` (θ', the paper) or ``"current"`` (θ; the
  paper's code after ASER). ``attack_target``: ``"features"`` (the paper) or
  ``"label"`` (Avalanche). ``clean_rows`` after a mix stage: ``"unmixed"`` (the
  retrieved rows with their hard labels, the paper's code) or ``"mixed"``.
  ``data_range``: ``(low, high)`` the perturbed rows are clipped to (pixels in
  [0, 1]), or None for inputs without bounds (standardised, tabular).
  """
  data_range = check_data_range(data_range)
  require(clean_rows in CLEAN_ROWS, "clean_rows", clean_rows, f"one of {CLEAN_ROWS}")
  # Validates the static choices now, not at the first trace.
  require(attack_params in ATTACK_PARAMS, "attack_params", attack_params, f"one of {ATTACK_PARAMS}")
  require(
    attack_target in ATTACK_TARGETS, "attack_target", attack_target, f"one of {ATTACK_TARGETS}"
  )

  def attack(ctx: StepContext, batch: ReplayBatch) -> RarAttack:
    return rar_attack(
      ctx,
      batch.x,
      batch.targets,
      batch.mask,
      attack_params=attack_params,
      attack_target=attack_target,
      data_range=data_range,
    )

  def fn(ctx: StepContext, key, batch: ReplayBatch):
    xa = attack(ctx, batch).x_adv
    beta = ctx.hyper.beta_coef
    if clean_rows == "unmixed":
      clean = (batch.x_unmixed, batch.targets_unmixed, 1.0 - beta)
    else:
      clean = (batch.x, batch.targets, 1.0 - beta)
    return [clean, (xa, batch.targets, beta)], perturbation_sizes(batch.x, xa, batch.mask)

  hyper = dict(
    beta_coef=beta_coef,
    epsilon_fgsm=epsilon_fgsm,
    alpha_fgsm=alpha_fgsm,
    iter_fgsm=iter_fgsm,
    decay_factor_fgsm=decay_factor_fgsm,
  )
  Hyper.create(opt_lr=0.0, **hyper)  # validates the numbers now
  # Even on θ the update takes the incoming gradient first, as the paper's code
  # does (unused, θ' costs nothing: XLA drops it).
  return Stage(
    "perturb", "rar", fn, needs_lookahead=True, attack=attack, hyper=hyper, data_range=data_range
  )
