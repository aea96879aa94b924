"""Retrieve stages: random (ER), MIR and ASER."""

from __future__ import annotations

from typing import Callable

from rar_jax.core import buffer as buffer_lib
from rar_jax.core.aser import aser_retrieve
from rar_jax.core.defaults import DEFAULTS
from rar_jax.core.method import ASER_TYPES, ReplayConfig, is_int, require
from rar_jax.core.retrieval import mir_retrieve
from rar_jax.core.stages._base import Stage, StepContext, retrieve


def random_replay() -> Stage:
  """ER: a uniform draw of ``batch_size_mem`` eligible buffer samples."""
  return retrieve(
    lambda ctx, key: buffer_lib.sample(ctx.buffer, key, ctx.cfg.batch_size_mem, ctx.exclude),
    "random",
  )


def _check_in_memory(name: str, value) -> Callable[[ReplayConfig], None]:
  def check(cfg: ReplayConfig) -> None:
    lo, hi = cfg.batch_size_mem, cfg.mem_size
    require(
      is_int(value) and lo <= value <= hi,
      name,
      value,
      f"an int in [batch_size_mem={lo}, mem_size={hi}]",
    )

  return check


def mir(mir_candidates: int = DEFAULTS["mir_candidates"]) -> Stage:
  """MIR: of ``mir_candidates`` random samples, those the look-ahead step hurts most."""

  def fn(ctx: StepContext, key):
    return mir_retrieve(
      ctx.buffer,
      key,
      ctx.cfg.batch_size_mem,
      mir_candidates,
      lambda x, y, m: ctx.per_sample_loss(ctx.params, x, y, m),
      lambda x, y, m: ctx.per_sample_loss(ctx.lookahead, x, y, m),
      ctx.exclude,
    )

  return Stage(
    "retrieve", "mir", fn, True, check=_check_in_memory("mir_candidates", mir_candidates)
  )


def aser(
  aser_k: int = DEFAULTS["aser_k"],
  aser_candidates: int = DEFAULTS["aser_candidates"],
  aser_coop_size: int = DEFAULTS["aser_coop_size"],
  aser_type: str = DEFAULTS["aser_type"],
) -> Stage:
  """ASER: KNN-Shapley-scored candidates under the current parameters
  (`rar_jax.core.aser`): ``aser_k`` neighbours, ``aser_candidates`` candidates,
  a class-balanced cooperative set of ``aser_coop_size``, score ``aser_type``."""
  require(aser_type in ASER_TYPES, "aser_type", aser_type, f"one of {ASER_TYPES}")

  def fn(ctx: StepContext, key):
    def features(xs, masks):
      _, feats, _ = ctx.model.forward_groups(ctx.params, ctx.batch_stats, xs, masks, features=True)
      return feats

    return aser_retrieve(
      ctx.buffer,
      key,
      ctx.cfg.batch_size_mem,
      features,
      ctx.x,
      ctx.y,
      num_candidates=aser_candidates,
      coop_size=aser_coop_size,
      k=aser_k,
      num_classes=ctx.cfg.num_classes,
      aser_type=aser_type,
      exclude_labels=ctx.exclude,
    )

  def check(cfg: ReplayConfig) -> None:
    _check_in_memory("aser_candidates", aser_candidates)(cfg)
    require(
      is_int(aser_k) and 1 <= aser_k <= aser_candidates,
      "aser_k",
      aser_k,
      f"an int in [1, aser_candidates={aser_candidates}]",
    )
    require(
      is_int(aser_coop_size) and 1 <= aser_coop_size <= cfg.mem_size,
      "aser_coop_size",
      aser_coop_size,
      f"an int in [1, mem_size={cfg.mem_size}]",
    )

  return Stage("retrieve", "aser", fn, check=check)
