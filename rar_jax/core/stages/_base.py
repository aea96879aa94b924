"""The stage contract: what a stage reads (`StepContext`), gets (`ReplayBatch`)
and is (`Stage`), a chain of stages (`Chain`, `chain`), and stages from a
user's functions (`retrieve`, `mix`, `perturb`, `loss`)."""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import optax

from rar_jax.core import buffer as buffer_lib
from rar_jax.core.method import STAGE_KINDS, Hyper, ReplayConfig
from rar_jax.errors import ArgumentError, StageError


class StepContext(NamedTuple):
  """What a stage may read during one update (arrays are traced)."""

  cfg: ReplayConfig
  hyper: Hyper
  model: Any  # model(params, batch_stats, x, mask, features=False) -> (logits, feats, stats)
  params: Any  # θ, before this update
  # θ' = θ - opt_lr * grad of the incoming loss, for a stage that declares it
  # (needs_lookahead=True), else None: read it as ctx.lookahead.
  declared_lookahead: Any
  batch_stats: Any
  x: jax.Array  # the incoming batch
  y: jax.Array
  buffer: buffer_lib.BufferState
  exclude: Optional[jax.Array]  # labels replay must skip (the incoming ones), or None
  present: jax.Array  # [num_classes] bool: classes in the incoming batch
  seen: jax.Array  # [num_classes] bool: classes seen so far, the incoming ones included
  unroll: int = 0  # inner loop iterations compiled without a loop (an execution choice)
  stage: str = ""  # the stage being traced (for its error messages)

  @property
  def lookahead(self):
    """θ'; only for stages built with ``needs_lookahead=True``."""
    return self._lookahead("lookahead")

  @property
  def lookahead_params(self):
    """θ' (the same as ``lookahead``)."""
    return self._lookahead("lookahead_params")

  def _lookahead(self, field: str):
    if self.declared_lookahead is None:
      raise StageError(
        f"stage {self.stage!r} read ctx.{field} but does not declare it: build it "
        "with needs_lookahead=True"
      )
    return self.declared_lookahead

  def features(self, params, x, mask):
    """Features at ``cfg.feature_layer`` (the neighbour space of RAR and ASER)."""
    return self.model(params, self.batch_stats, x, mask, features=True)[1]

  def per_sample_loss(self, params, x, y, mask):
    """Integer-label cross-entropy per row under ``params``."""
    logits, _, _ = self.model(params, self.batch_stats, x, mask)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


class ReplayBatch(NamedTuple):
  """The replay rows a perturb stage gets: after the mix stage (``x``,
  ``targets``) and before it (``x_unmixed``, ``targets_unmixed``: the retrieved
  rows and their one-hot labels; the same arrays when the chain has no mix)."""

  x: jax.Array
  targets: jax.Array
  mask: jax.Array
  x_unmixed: jax.Array
  targets_unmixed: jax.Array


class Stage(NamedTuple):
  """One link of a chain. ``needs_lookahead``: reads ``ctx.lookahead`` (so the
  incoming gradient is taken before replay); ``exclude_current_labels``: for a
  loss stage, the replay rule it wants when the config leaves it open;
  ``attack``: for a perturb stage, ``attack(ctx, batch) -> RarAttack``, the
  perturbation it applies (what `rar_jax.core.step.make_rar_preview` shows);
  ``hyper``: the initial values of the traced hyper-parameters it reads
  (`Hyper` field names; a user stage's own names go to ``Hyper.extra``);
  ``check(cfg)``: validates its settings against the `ReplayConfig` when the
  step is built; ``data_range``: the input range the
  stage clips rows to (`rar_jax.run_stream` checks the data against it)."""

  kind: str  # retrieve | mix | perturb | loss
  name: str
  fn: Callable
  needs_lookahead: bool = False
  exclude_current_labels: Optional[bool] = None
  attack: Optional[Callable] = None
  hyper: Dict[str, Any] = {}
  check: Optional[Callable[[ReplayConfig], None]] = None
  data_range: Optional[Tuple[float, float]] = None  # the input range it clips rows to


class Chain(NamedTuple):
  retrieve: Optional[Stage]
  mix: Optional[Stage]
  perturb: Optional[Stage]
  loss: Stage

  @property
  def stages(self):
    return tuple(s for s in self if s is not None)

  @property
  def needs_lookahead(self) -> bool:
    return any(s.needs_lookahead for s in self.stages)

  @property
  def data_range(self) -> Optional[Tuple[float, float]]:
    """The input range a stage of the chain clips to (RAR's), or None."""
    return next((s.data_range for s in self.stages if s.data_range is not None), None)

  def excludes_current(self, cfg: ReplayConfig) -> bool:
    """The config decides when it says; otherwise the loss's replay rule."""
    if cfg.exclude_current_labels is not None:
      return cfg.exclude_current_labels
    return bool(self.loss.exclude_current_labels)

  def hyper(self, opt_lr) -> Hyper:
    """The traced hyper-parameters of a state that runs this chain: each
    stage's settings, library defaults for the rest, and the look-ahead rate."""
    values: Dict[str, Any] = {}
    for s in self.stages:
      values.update(s.hyper)  # a user stage's own names go to Hyper.extra
    return Hyper.create(opt_lr=opt_lr, **values)

  def check(self, cfg: ReplayConfig) -> None:
    for s in self.stages:
      if s.check is not None:
        s.check(cfg)


def chain(*stages: Stage) -> Chain:
  """Stages in any order, at most one of each kind; the loss defaults to CE."""
  by_kind: Dict[str, Stage] = {}
  for s in stages:
    if not isinstance(s, Stage) or s.kind not in STAGE_KINDS:
      raise ArgumentError(
        f"chain: {s!r} is not a stage; build stages with rar_jax.stages (kinds {STAGE_KINDS})"
      )
    if s.kind in by_kind:
      raise ArgumentError(
        f"chain: two {s.kind} stages ({by_kind[s.kind].name}, {s.name}); "
        "give at most one of each kind"
      )
    by_kind[s.kind] = s
  if ("mix" in by_kind or "perturb" in by_kind) and "retrieve" not in by_kind:
    raise ArgumentError("chain: mix and perturb stages need a retrieve stage")
  return Chain(
    by_kind.get("retrieve"),
    by_kind.get("mix"),
    by_kind.get("perturb"),
    by_kind.get("loss", _default_loss()),
  )


# ---------------------------------------------------------------- user stages


# Every user stage takes ``hyper``: its own numeric settings by name, traced in
# the state (``ctx.hyper.extra[name]``), so runs with different values share one
# compiled program (docs/methods.md, "Sweeping from Python").


def retrieve(
  fn: Callable, name: str = "user", *, needs_lookahead: bool = False, hyper=None
) -> Stage:
  """A user's retrieval: ``fn(ctx, key) -> (x, y, mask)``, ``batch_size_mem`` rows."""
  return _user("retrieve", name, fn, needs_lookahead, hyper)


def mix(fn: Callable, name: str = "user", *, needs_lookahead: bool = False, hyper=None) -> Stage:
  """A user's mix: ``fn(ctx, key, x, targets, mask) -> (x, targets)``, same shapes."""
  return _user("mix", name, fn, needs_lookahead, hyper)


def perturb(
  fn: Callable, name: str = "user", *, needs_lookahead: bool = False, hyper=None
) -> Stage:
  """A user's perturbation: ``fn(ctx, key, batch: ReplayBatch) -> (groups, metrics)``
  with ``groups`` a list of ``(x, targets, weight)`` and ``metrics`` a dict of scalars."""
  return _user("perturb", name, fn, needs_lookahead, hyper)


def loss(
  fn: Callable, name: str = "user", *, exclude_current_labels: bool = True, hyper=None
) -> Stage:
  """A user's loss: ``fn(logits, targets, ctx, replay) -> [rows]`` per-row losses.
  ``exclude_current_labels``: whether replay skips the incoming labels by default."""
  stage = _user("loss", name, fn, False, hyper)
  return stage._replace(exclude_current_labels=exclude_current_labels)


def _user(kind: str, name: str, fn: Callable, needs_lookahead: bool, hyper) -> Stage:
  if not callable(fn):
    raise ArgumentError(f"stages.{kind}: fn={fn!r} is invalid: a function")
  hyper = dict(hyper or {})
  builtin = set(Hyper.__dataclass_fields__) - {"extra"}
  taken = sorted(set(hyper) & builtin)
  if taken:
    raise ArgumentError(
      f"stages.{kind}: hyper names {taken} are the library's own settings; name yours "
      "differently (they are read as ctx.hyper.extra[name])"
    )
  Hyper.create(opt_lr=0.0, **hyper)  # validates the values now
  return Stage(kind, name, fn, needs_lookahead, hyper=hyper)


def _default_loss() -> Stage:
  from rar_jax.core.stages._losses import ce  # the losses are stages themselves

  return ce()
