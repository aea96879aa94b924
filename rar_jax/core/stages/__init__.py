"""A replay method as a chain of small stages, in the spirit of `optax.chain`.

One update on an incoming batch ``(x, y)`` runs

  retrieve -> mix -> perturb -> loss

- ``retrieve(ctx, key) -> (x_mem, y_mem, mask)``: the replay batch, ``batch_size_mem``
  rows (random, MIR, ASER, or any function of the `StepContext`).
- ``mix(ctx, key, x_mem, targets, mask) -> (x_mem, targets)``: soft targets in,
  out (MixUp).
- ``perturb(ctx, key, batch) -> ([(x, targets, weight), ...], metrics)``: the
  replay row groups and their loss weights (RAR: clean and perturbed), from a
  `ReplayBatch` that holds the rows before and after the mix stage.
- ``loss(logits, targets, ctx, replay) -> per-row loss``: for the incoming rows
  (``replay=False``) and the replay rows (``replay=True``); CE or ACE.

Each stage carries its own settings, as an optax transformation does
(``mir(mir_candidates=50)``, ``rar(epsilon_fgsm=0.3, iter_fgsm=5)``). Numeric
settings a sweep may vary (`rar_jax.core.method.Hyper`'s fields) are the
initial values of the traced hyper-parameters in the train state
(`Chain.hyper`), so a sweep is one compiled program; the stage reads them from
``ctx.hyper``. `from_method` builds the chain a method name stands for.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Tuple

from rar_jax.core.method import METHODS, STAGES, ReplayConfig, parse_method
from rar_jax.core.rar import RarAttack
from rar_jax.core.stages._base import (
  Chain,
  ReplayBatch,
  Stage,
  StepContext,
  chain,
  loss,
  mix,
  perturb,
  retrieve,
)
from rar_jax.core.stages._losses import ace, ce, masked_cross_entropy
from rar_jax.core.stages._mixing import mixup
from rar_jax.core.stages._perturbation import rar
from rar_jax.core.stages._retrieval import aser, mir, random_replay
from rar_jax.errors import ArgumentError


def _builtin(name: str) -> Callable[..., Stage]:
  return {
    "rar": rar,
    "random": random_replay,
    "mir": mir,
    "aser": aser,
    "mixup": mixup,
    "ce": ce,
    "ace": ace,
  }[name]


def settings_of(name: str) -> tuple:
  """The settings a built-in stage takes (its keyword arguments)."""
  return tuple(inspect.signature(_builtin(name)).parameters)


def from_method(method: str, **settings) -> Chain:
  """The chain ``method`` stands for (a `METHODS` name, or stage names joined
  by '+': ``"aser+mixup+rar"``), each stage built with the ``settings`` it
  takes, by name (``from_method("mir_rar", mir_candidates=20, beta_coef=0.5)``);
  settings no stage of the chain takes are ignored, unknown names are errors."""
  known = {k for n in STAGES for k in settings_of(n)}
  unknown = sorted(set(settings) - known)
  if unknown:
    raise ArgumentError(
      f"unknown settings {unknown}: stage settings are {sorted(known)}, structure "
      f"settings (ReplayConfig) {list(STRUCTURE_SETTINGS)}"
    )
  names = parse_method(method).values()
  return chain(
    *(_builtin(n)(**{k: v for k, v in settings.items() if k in settings_of(n)}) for n in names)
  )


STRUCTURE_SETTINGS = tuple(
  f.name for f in dataclasses.fields(ReplayConfig) if f.name != "num_classes"
)


def build_method(method: str, num_classes: int, **settings) -> Tuple[ReplayConfig, Chain]:
  """``(ReplayConfig, Chain)`` of ``method`` from flat settings named as the
  config keys: structure ones (``mem_size``, ``replay_iters``, ...) go to the
  `ReplayConfig`, the others to the stages that take them (`from_method`)."""
  structure = {k: v for k, v in settings.items() if k in STRUCTURE_SETTINGS}
  rest = {k: v for k, v in settings.items() if k not in STRUCTURE_SETTINGS}
  cfg = ReplayConfig(num_classes=num_classes, **structure)
  chain_ = from_method(method, **rest)
  chain_.check(cfg)
  return cfg, chain_


def by_name(name: str, **settings) -> Stage:
  """A built-in stage by its name (`rar_jax.core.method.STAGES`)."""
  if name not in STAGES:
    raise ArgumentError(f"stage {name!r} is invalid: one of {tuple(STAGES)}")
  return _builtin(name)(**settings)


__all__ = [
  "METHODS",
  "StepContext",
  "ReplayBatch",
  "Stage",
  "Chain",
  "chain",
  "retrieve",
  "mix",
  "perturb",
  "loss",
  "random_replay",
  "mir",
  "aser",
  "mixup",
  "rar",
  "RarAttack",
  "ce",
  "ace",
  "masked_cross_entropy",
  "from_method",
  "build_method",
  "by_name",
  "settings_of",
]
