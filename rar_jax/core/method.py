"""What a replay method is: static structure (`ReplayConfig`) and numeric
hyper-parameters (`Hyper`, a pytree, so sweeps can vmap over it)."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

import jax.numpy as jnp
from flax import struct

from rar_jax.core import buffer as buffer_lib

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
RETRIEVALS = ("none", "random", "mir", "aser")
LOSSES = ("ce", "ace")
ASER_TYPES = ("asvm", "asv", "neg_sv")
ATTACK_PARAMS = ("lookahead", "current")
ATTACK_TARGETS = ("features", "label")
# Batch-norm statistics: per row group, one pass each (the paper's code), or
# joint over the rows of one loss (Avalanche concatenates incoming and replay rows).
BATCH_NORM_ROWS = ("group", "joint")
BUFFER_UPDATES = ("online", "per_experience")
# Inputs are floats in [0, 1] (`rar_jax.data.to_unit_float`); RAR clips to this range.
DATA_RANGE = (0.0, 1.0)


def _require(ok: bool, name: str, value, allowed: str):
  if not ok:
    raise ValueError(f"{name}={value!r} is invalid: {allowed}")


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _stages_help() -> str:
  kinds = {k: "|".join(n for n, kind in STAGES.items() if kind == k) for k in STAGE_KINDS}
  return (
    "stage names joined by '+' in the order retrieve, mix, perturb, loss ("
    + "; ".join(f"{k}: {v}" for k, v in kinds.items())
    + ")"
  )


def parse_method(method: str) -> dict:
  """``method`` (a `METHODS` name or stage names joined by '+') as
  `ReplayConfig` fields: ``retrieval``, ``mixup``, ``use_adversarial_replay``, ``loss``."""
  if not isinstance(method, str):
    raise ValueError(f"method={method!r} is invalid: a string")
  if method in METHODS:
    names = METHODS[method]
  else:
    names = tuple(n.strip() for n in method.split("+"))
    _require(
      len(names) > 1 or names[0] in STAGES,
      "method",
      method,
      f"one of {tuple(METHODS)}, or {_stages_help()}",
    )
    for n in names:
      _require(n in STAGES, "method", method, f"unknown stage {n!r}; {_stages_help()}")
  kinds = [STAGES[n] for n in names]
  _require(
    len(set(kinds)) == len(kinds),
    "method",
    method,
    "at most one stage of each kind; " + _stages_help(),
  )
  _require(kinds == sorted(kinds, key=STAGE_KINDS.index), "method", method, _stages_help())
  by_kind = dict(zip(kinds, names))
  _require(
    "retrieve" in by_kind or len(by_kind) == 0 or set(by_kind) == {"loss"},
    "method",
    method,
    "mix and perturb stages need a retrieve stage",
  )
  return dict(
    retrieval=by_kind.get("retrieve", "none"),
    mixup="mix" in by_kind,
    use_adversarial_replay="perturb" in by_kind,
    loss=by_kind.get("loss", "ce"),
  )


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
  """The shape of one replay step. Everything here is static under jit."""

  num_classes: int
  retrieval: str = "random"
  mixup: bool = False
  use_adversarial_replay: bool = False
  loss: str = "ce"  # ce | ace (ER-ACE: incoming batch over its own classes only)
  mem_size: int = 200
  batch_size_mem: int = 10
  mir_candidates: int = 50
  # None = the loss's replay rule: exclude for CE (paper's code), whole buffer
  # for ACE (with exclusion ACE never sees a current-class replay and collapses).
  exclude_current_labels: Optional[bool] = None
  aser_k: int = 10  # K of the KNN Shapley values
  aser_candidates: int = 50  # the paper's code's `subsample`
  aser_coop_size: int = 100  # class-balanced cooperative evaluation set
  aser_type: str = "asvm"  # asvm (mean coop - mean adv) | asv (max coop - min adv) | neg_sv
  attack_params: str = "lookahead"  # lookahead (paper) | current (paper's code for ASER)
  replay_iters: int = 1  # updates per incoming batch, each with a fresh replay draw
  attack_target: str = "features"
  feature_layer: str = "penultimate"
  batch_norm_rows: str = "group"
  storage_policy: str = "reservoir"
  buffer_update: str = "online"
  # Iterations of the step's inner loops (RAR's attack steps; the `replay_iters`
  # updates when they are at most this many) compiled without a loop; 0 = loops.
  # How the step is compiled, not what it computes: the run plan sets it where
  # XLA's CPU convolutions would run inside a loop body (jax-ml/jax#12868).
  unroll: int = 0

  def __post_init__(self):
    self._check_choices()
    self._check_sizes()
    if self.use_adversarial_replay or self.mixup:
      _require(
        self.retrieval != "none",
        "retrieval",
        self.retrieval,
        "adversarial replay and MixUp need a replay retrieval",
      )

  def _check_choices(self) -> None:
    for name, allowed in (
      ("retrieval", RETRIEVALS),
      ("loss", LOSSES),
      ("aser_type", ASER_TYPES),
      ("attack_params", ATTACK_PARAMS),
      ("attack_target", ATTACK_TARGETS),
      ("batch_norm_rows", BATCH_NORM_ROWS),
      ("storage_policy", buffer_lib.POLICIES),
      ("buffer_update", BUFFER_UPDATES),
    ):
      value = getattr(self, name)
      _require(value in allowed, name, value, f"one of {allowed}")
    _require(
      self.exclude_current_labels in (None, True, False),
      "exclude_current_labels",
      self.exclude_current_labels,
      "True, False or None (the loss's rule)",
    )

  def _check_sizes(self) -> None:
    """Integer keys and their ranges, each range in terms of the others."""
    mem, batch = self.mem_size, self.batch_size_mem
    checks = [
      ("num_classes", 2, None, "an int >= 2"),
      ("mem_size", 1, None, "an int >= 1"),
      ("batch_size_mem", 1, mem, f"an int in [1, mem_size={mem}]"),
      ("replay_iters", 1, None, "an int >= 1 (1 = one update per incoming batch, the paper)"),
      ("unroll", 0, None, "an int >= 0 (0 = the step's inner loops stay loops)"),
    ]
    in_memory = f"an int in [batch_size_mem={batch}, mem_size={mem}]"
    if self.retrieval == "mir":
      checks.append(("mir_candidates", batch, mem, in_memory))
    if self.retrieval == "aser":
      checks += [
        ("aser_candidates", batch, mem, in_memory),
        (
          "aser_k",
          1,
          self.aser_candidates,
          f"an int in [1, aser_candidates={self.aser_candidates}]",
        ),
        ("aser_coop_size", 1, mem, f"an int in [1, mem_size={mem}]"),
      ]
    for name, low, high, allowed in checks:
      v = getattr(self, name)
      ok = _is_int(v) and v >= low and (high is None or (_is_int(high) and v <= high))
      _require(ok, name, v, allowed)

  @classmethod
  def from_method(cls, method: str, **kwargs) -> "ReplayConfig":
    """``method``: a `METHODS` name or stage names joined by '+' (``"aser+rar+ace"``)."""
    return cls(**parse_method(method), **kwargs)

  @property
  def uses_lookahead(self) -> bool:
    return self.use_adversarial_replay or self.retrieval == "mir"


class Hyper(struct.PyTreeNode):
  """Numeric hyper-parameters of the step; leaves may carry a sweep axis."""

  beta_coef: jnp.ndarray
  epsilon_fgsm: jnp.ndarray
  alpha_fgsm: jnp.ndarray
  iter_fgsm: jnp.ndarray
  decay_factor_fgsm: jnp.ndarray
  opt_lr: jnp.ndarray
  mixup_alpha: jnp.ndarray

  @classmethod
  def create(
    cls,
    *,
    opt_lr,
    beta_coef=0.5,
    epsilon_fgsm=0.0314,
    alpha_fgsm=None,
    iter_fgsm=2,
    decay_factor_fgsm=1.0,
    mixup_alpha=1.0,
  ) -> "Hyper":
    """Validates and packs; ``alpha_fgsm=None`` means ``epsilon_fgsm / iter_fgsm``."""
    _require(_is_int(iter_fgsm) and iter_fgsm >= 1, "iter_fgsm", iter_fgsm, "an int >= 1")
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
      _require(
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
    )
