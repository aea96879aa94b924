"""What a replay method is: static structure (`ReplayConfig`) and numeric
hyper-parameters (`Hyper`, a pytree, so sweeps can vmap over it)."""

from __future__ import annotations

import dataclasses
import numbers

import jax.numpy as jnp
from flax import struct

from rar_jax import buffer as buffer_lib

# name -> (retrieval, mixup, use_adversarial_replay)
METHODS = {
    "finetune": ("none", False, False),
    "er": ("random", False, False),
    "er_mix": ("random", True, False),
    "er_rar": ("random", False, True),
    "er_mix_rar": ("random", True, True),
    "mir": ("mir", False, False),
    "mir_mix": ("mir", True, False),
    "mir_rar": ("mir", False, True),
    "mir_mix_rar": ("mir", True, True),
}
RETRIEVALS = ("none", "random", "mir")
ATTACK_TARGETS = ("features", "label")
BUFFER_UPDATES = ("online", "per_experience")


def _require(ok: bool, name: str, value, allowed: str):
  if not ok:
    raise ValueError(f"{name}={value!r} is invalid: {allowed}")


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
  """The shape of one replay step. Everything here is static under jit."""

  num_classes: int
  retrieval: str = "random"
  mixup: bool = False
  use_adversarial_replay: bool = False
  mem_size: int = 200
  batch_size_mem: int = 10
  mir_candidates: int = 50
  exclude_current_labels: bool = True
  attack_target: str = "features"
  feature_layer: str = "penultimate"
  storage_policy: str = "reservoir"
  buffer_update: str = "online"
  data_min: float = 0.0
  data_max: float = 1.0

  def __post_init__(self):
    _require(_is_int(self.num_classes) and self.num_classes >= 2, "num_classes",
             self.num_classes, "an int >= 2")
    _require(self.retrieval in RETRIEVALS, "retrieval", self.retrieval, f"one of {RETRIEVALS}")
    _require(_is_int(self.mem_size) and self.mem_size >= 1, "mem_size", self.mem_size,
             "an int >= 1")
    _require(_is_int(self.batch_size_mem) and 1 <= self.batch_size_mem <= self.mem_size,
             "batch_size_mem", self.batch_size_mem, f"an int in [1, mem_size={self.mem_size}]")
    if self.retrieval == "mir":
      _require(_is_int(self.mir_candidates)
               and self.batch_size_mem <= self.mir_candidates <= self.mem_size,
               "mir_candidates", self.mir_candidates,
               f"an int in [batch_size_mem={self.batch_size_mem}, mem_size={self.mem_size}]")
    _require(self.attack_target in ATTACK_TARGETS, "attack_target", self.attack_target,
             f"one of {ATTACK_TARGETS}")
    _require(self.storage_policy in buffer_lib.POLICIES, "storage_policy", self.storage_policy,
             f"one of {buffer_lib.POLICIES}")
    _require(self.buffer_update in BUFFER_UPDATES, "buffer_update", self.buffer_update,
             f"one of {BUFFER_UPDATES}")
    _require(self.data_min < self.data_max, "data_min", self.data_min,
             f"below data_max={self.data_max}")
    if self.use_adversarial_replay or self.mixup:
      _require(self.retrieval != "none", "retrieval", self.retrieval,
               "adversarial replay and MixUp need a replay retrieval")

  @classmethod
  def from_method(cls, method: str, **kwargs) -> "ReplayConfig":
    _require(method in METHODS, "method", method, f"one of {tuple(METHODS)}")
    retrieval, mixup, rar = METHODS[method]
    return cls(retrieval=retrieval, mixup=mixup, use_adversarial_replay=rar, **kwargs)

  @property
  def uses_lookahead(self) -> bool:
    return self.use_adversarial_replay or self.retrieval == "mir"


@struct.dataclass
class Hyper:
  """Numeric hyper-parameters of the step; leaves may carry a sweep axis."""

  beta_coef: jnp.ndarray
  epsilon_fgsm: jnp.ndarray
  alpha_fgsm: jnp.ndarray
  iter_fgsm: jnp.ndarray
  decay_factor_fgsm: jnp.ndarray
  opt_lr: jnp.ndarray
  mixup_alpha: jnp.ndarray

  @classmethod
  def create(cls, *, opt_lr, beta_coef=0.5, epsilon_fgsm=0.0314, alpha_fgsm=None, iter_fgsm=2,
             decay_factor_fgsm=1.0, mixup_alpha=1.0) -> "Hyper":
    """Validates and packs; ``alpha_fgsm=None`` means ``epsilon_fgsm / iter_fgsm``."""
    _require(_is_int(iter_fgsm) and iter_fgsm >= 1, "iter_fgsm", iter_fgsm, "an int >= 1")
    if alpha_fgsm is None:
      alpha_fgsm = epsilon_fgsm / iter_fgsm
    for name, value, lo, hi in (("beta_coef", beta_coef, 0.0, 1.0),
                                ("epsilon_fgsm", epsilon_fgsm, 0.0, None),
                                ("alpha_fgsm", alpha_fgsm, 0.0, None),
                                ("decay_factor_fgsm", decay_factor_fgsm, 0.0, None),
                                ("opt_lr", opt_lr, 0.0, None),
                                ("mixup_alpha", mixup_alpha, 0.0, None)):
      ok = isinstance(value, numbers.Real) and value == value and value >= lo and (
          hi is None or value <= hi) and abs(value) != float("inf")
      if name == "mixup_alpha":
        ok = ok and value > 0
      _require(ok, name, value,
               f"a finite number in [{lo}, {hi}]" if hi is not None else
               ("a finite number > 0" if name == "mixup_alpha" else f"a finite number >= {lo}"))
    f = lambda v: jnp.asarray(v, jnp.float32)
    return cls(beta_coef=f(beta_coef), epsilon_fgsm=f(epsilon_fgsm), alpha_fgsm=f(alpha_fgsm),
               iter_fgsm=jnp.asarray(iter_fgsm, jnp.int32),
               decay_factor_fgsm=f(decay_factor_fgsm), opt_lr=f(opt_lr),
               mixup_alpha=f(mixup_alpha))
