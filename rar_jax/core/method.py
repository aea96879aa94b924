"""What a replay method is made of: its name (`METHODS`: stage names), the
structure no stage owns (`ReplayConfig`, static) and the numeric
hyper-parameters the step traces (`Hyper`, a pytree in the state, so sweeps
vmap over it; the stages set its initial values, as optax's
``inject_hyperparams`` does)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Dict, Optional

import jax.numpy as jnp
from flax import struct

from rar_jax.core import buffer as buffer_lib
from rar_jax.core.defaults import DEFAULTS
from rar_jax.errors import ArgumentError

# A method is a chain of stages (see `rar_jax.core.stages`): one retrieval, then
# optionally a mix, a perturbation and a loss. Name -> stage names; any chain
# can also be named directly by its stages joined with "+" ("aser+mixup+rar").
METHODS = {
  "finetune": (),
  "er": ("random",),
  "er_mix": ("random", "mixup"),
  "er_rar": ("random", "rar"),
  "er_mix_rar": ("random", "mixup", "rar"),
  "mir": ("mir",),
  "mir_mix": ("mir", "mixup"),
  "mir_rar": ("mir", "rar"),
  "mir_mix_rar": ("mir", "mixup", "rar"),
  "aser": ("aser",),
  "aser_mix": ("aser", "mixup"),
  "aser_rar": ("aser", "rar"),
  "aser_mix_rar": ("aser", "mixup", "rar"),
  "er_ace": ("random", "ace"),
  "er_ace_rar": ("random", "rar", "ace"),
  "er_mix_ace_rar": ("random", "mixup", "rar", "ace"),
}
# Stage name -> kind, in chain order.
STAGES = {
  "random": "retrieve",
  "mir": "retrieve",
  "aser": "retrieve",
  "mixup": "mix",
  "rar": "perturb",
  "ce": "loss",
  "ace": "loss",
}
STAGE_KINDS = ("retrieve", "mix", "perturb", "loss")
ASER_TYPES = ("asvm", "asv", "neg_sv")
ATTACK_PARAMS = ("lookahead", "current")
ATTACK_TARGETS = ("features", "label")
# Which rows RAR's (1 - beta) clean term uses after a mix stage: the replay rows
# before mixing with their hard labels (the paper's code), or the mixed rows.
CLEAN_ROWS = ("unmixed", "mixed")
# Batch-norm statistics: per row group, one pass each (the paper's code), or
# joint over the rows of one loss (Avalanche concatenates incoming and replay rows).
BATCH_NORM_ROWS = ("group", "joint")
BUFFER_UPDATES = ("online", "per_experience")


def require(ok: bool, name: str, value, allowed: str):
  if not ok:
    raise ArgumentError(f"{name}={value!r} is invalid: {allowed}")


def is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_finite(v) -> bool:
  """A finite real number (not a bool)."""
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _stages_help() -> str:
  kinds = {k: "|".join(n for n, kind in STAGES.items() if kind == k) for k in STAGE_KINDS}
  return (
    "stage names joined by '+' in the order retrieve, mix, perturb, loss ("
    + "; ".join(f"{k}: {v}" for k, v in kinds.items())
    + ")"
  )


def parse_method(method: str) -> dict:
  """The stage names of ``method`` (a `METHODS` name or stage names joined by
  '+'), by kind: ``{"retrieve": "mir", "perturb": "rar", ...}`` (validated)."""
  if not isinstance(method, str):
    raise ArgumentError(f"method={method!r} is invalid: a string")
  if method in METHODS:
    names = METHODS[method]
  else:
    names = tuple(n.strip() for n in method.split("+"))
    require(
      len(names) > 1 or names[0] in STAGES,
      "method",
      method,
      f"one of {tuple(METHODS)}, or {_stages_help()}",
    )
    for n in names:
      require(n in STAGES, "method", method, f"unknown stage {n!r}; {_stages_help()}")
  kinds = [STAGES[n] for n in names]
  require(
    len(set(kinds)) == len(kinds),
    "method",
    method,
    "at most one stage of each kind; " + _stages_help(),
  )
  require(kinds == sorted(kinds, key=STAGE_KINDS.index), "method", method, _stages_help())
  by_kind = dict(zip(kinds, names))
  require(
    "retrieve" in by_kind or len(by_kind) == 0 or set(by_kind) == {"loss"},
    "method",
    method,
    "mix and perturb stages need a retrieve stage",
  )
  return by_kind


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
  """The shape of the replay step that no stage owns: the buffer, the replay
  batch size, updates per incoming batch, the feature layer and batch norm's
  row groups. Static under jit. What a method does is its chain of stages
  (`rar_jax.core.stages`), which carry their own settings."""

  num_classes: int
  mem_size: int = DEFAULTS["mem_size"]
  batch_size_mem: int = DEFAULTS["batch_size_mem"]
  # None = the loss stage's replay rule: exclude the incoming labels for CE (the
  # paper's code), the whole buffer for ACE (with exclusion ACE collapses).
  exclude_current_labels: Optional[bool] = DEFAULTS["exclude_current_labels"]
  replay_iters: int = DEFAULTS["replay_iters"]  # updates per incoming batch, fresh draws
  feature_layer: str = DEFAULTS["feature_layer"]
  batch_norm_rows: str = DEFAULTS["batch_norm_rows"]
  storage_policy: str = DEFAULTS["storage_policy"]
  buffer_update: str = DEFAULTS["buffer_update"]

  def __post_init__(self):
    for name, allowed in (
      ("batch_norm_rows", BATCH_NORM_ROWS),
      ("storage_policy", buffer_lib.POLICIES),
      ("buffer_update", BUFFER_UPDATES),
    ):
      value = getattr(self, name)
      require(value in allowed, name, value, f"one of {allowed}")
    require(
      self.exclude_current_labels in (None, True, False),
      "exclude_current_labels",
      self.exclude_current_labels,
      "True, False or None (the loss's rule)",
    )
    require(isinstance(self.feature_layer, str), "feature_layer", self.feature_layer, "a str")
    mem = self.mem_size
    for name, low, high, allowed in (
      ("num_classes", 2, None, "an int >= 2"),
      ("mem_size", 1, None, "an int >= 1"),
      ("batch_size_mem", 1, mem, f"an int in [1, mem_size={mem}]"),
      ("replay_iters", 1, None, "an int >= 1 (1 = one update per incoming batch, the paper)"),
    ):
      v = getattr(self, name)
      ok = is_int(v) and v >= low and (high is None or (is_int(high) and v <= high))
      require(ok, name, v, allowed)


class Hyper(struct.PyTreeNode):
  """Numeric hyper-parameters of the step; leaves may carry a sweep axis."""

  beta_coef: jnp.ndarray
  epsilon_fgsm: jnp.ndarray
  alpha_fgsm: jnp.ndarray
  iter_fgsm: jnp.ndarray
  decay_factor_fgsm: jnp.ndarray
  opt_lr: jnp.ndarray
  mixup_alpha: jnp.ndarray
  # Your stages' own sweepable settings by name (`rar_jax.stages.perturb(...,
  # hyper={"temperature": 0.5})`), read as ctx.hyper.extra["temperature"].
  extra: Dict[str, jnp.ndarray] = struct.field(default_factory=dict)

  @classmethod
  def create(
    cls,
    *,
    opt_lr,
    beta_coef=DEFAULTS["beta_coef"],
    epsilon_fgsm=DEFAULTS["epsilon_fgsm"],
    alpha_fgsm=DEFAULTS["alpha_fgsm"],
    iter_fgsm=DEFAULTS["iter_fgsm"],
    decay_factor_fgsm=DEFAULTS["decay_factor_fgsm"],
    mixup_alpha=DEFAULTS["mixup_alpha"],
    **extra,
  ) -> "Hyper":
    """Validates and packs; ``alpha_fgsm=None`` means ``epsilon_fgsm / iter_fgsm``.
    Other names are a custom stage's settings: finite numbers, kept as float32."""
    for name, value in extra.items():
      require(is_finite(value), name, value, "a finite number (a stage's sweepable setting)")
    require(is_int(iter_fgsm) and iter_fgsm >= 1, "iter_fgsm", iter_fgsm, "an int >= 1")
    if alpha_fgsm is None:
      alpha_fgsm = epsilon_fgsm / iter_fgsm
    for name, value, lo, hi in (
      ("beta_coef", beta_coef, 0.0, 1.0),
      ("epsilon_fgsm", epsilon_fgsm, 0.0, None),
      ("alpha_fgsm", alpha_fgsm, 0.0, None),
      ("decay_factor_fgsm", decay_factor_fgsm, 0.0, None),
      ("opt_lr", opt_lr, 0.0, None),
      ("mixup_alpha", mixup_alpha, 0.0, None),
    ):
      ok = (
        isinstance(value, numbers.Real)
        and value == value
        and float(value) >= lo
        and (hi is None or float(value) <= hi)
        and abs(float(value)) != float("inf")
      )
      if name == "mixup_alpha":
        ok = ok and value > 0
      require(
        ok,
        name,
        value,
        f"a finite number in [{lo}, {hi}]"
        if hi is not None
        else ("a finite number > 0" if name == "mixup_alpha" else f"a finite number >= {lo}"),
      )
    f = lambda v: jnp.asarray(v, jnp.float32)
    return cls(
      beta_coef=f(beta_coef),
      epsilon_fgsm=f(epsilon_fgsm),
      alpha_fgsm=f(alpha_fgsm),
      iter_fgsm=jnp.asarray(iter_fgsm, jnp.int32),
      decay_factor_fgsm=f(decay_factor_fgsm),
      opt_lr=f(opt_lr),
      mixup_alpha=f(mixup_alpha),
      extra={k: f(v) for k, v in sorted(extra.items())},
    )
