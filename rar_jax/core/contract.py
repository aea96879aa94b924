"""The stage contract, checked while the step is traced (shapes are static, so
this costs nothing at run time): a stage that returns the wrong structure or
shape is named with what it returned, instead of failing later inside XLA."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from rar_jax.errors import ArgumentError, StageError


def _describe(out: Any) -> str:
  def one(a):
    return f"{a.dtype}{list(a.shape)}" if hasattr(a, "shape") else type(a).__name__

  if isinstance(out, (tuple, list)):
    return f"{type(out).__name__} of {len(out)}: (" + ", ".join(one(a) for a in out) + ")"
  return one(out)


def _fail(stage, expected: str, out) -> StageError:
  return StageError(
    f"{stage.kind} stage {stage.name!r} returned {_describe(out)}; expected {expected}"
  )


def _shaped(a, shape: Sequence[int]) -> bool:
  return hasattr(a, "shape") and tuple(a.shape) == tuple(shape)


def retrieved(stage, out, n: int, x_shape: Sequence[int]):
  """``(x [n, *x_shape], y [n] int, mask [n] bool)``."""
  expected = f"(x [{n}, {', '.join(map(str, x_shape))}], y [{n}] int, mask [{n}] bool)"
  if not isinstance(out, (tuple, list)) or len(out) != 3:
    raise _fail(stage, expected, out)
  x, y, mask = out
  ok = (
    _shaped(x, (n, *x_shape))
    and _shaped(y, (n,))
    and jnp.issubdtype(y.dtype, jnp.integer)
    and _shaped(mask, (n,))
    and mask.dtype == jnp.bool_
  )
  if not ok:
    raise _fail(stage, expected, out)
  return x, y, mask


def mixed(stage, out, x, targets):
  """``(x, targets)`` of the shapes it was given."""
  expected = f"(x {list(x.shape)}, targets {list(targets.shape)})"
  if not isinstance(out, (tuple, list)) or len(out) != 2:
    raise _fail(stage, expected, out)
  if not (_shaped(out[0], x.shape) and _shaped(out[1], targets.shape)):
    raise _fail(stage, expected, out)
  return out[0], out[1]


def perturbed(stage, out, x, targets):
  """``([(x, targets, weight), ...], metrics)`` with rows shaped as the batch's."""
  expected = f"([(x {list(x.shape)}, targets {list(targets.shape)}, weight), ...], dict of scalars)"
  if not isinstance(out, (tuple, list)) or len(out) != 2:
    raise _fail(stage, expected, out)
  groups, metrics = out
  if not isinstance(groups, (tuple, list)) or not groups or not isinstance(metrics, dict):
    raise _fail(stage, expected, out)
  for g in groups:
    if not (
      isinstance(g, (tuple, list))
      and len(g) == 3
      and _shaped(g[0], x.shape)
      and _shaped(g[1], targets.shape)
      and jnp.ndim(g[2]) == 0
    ):
      raise StageError(
        f"perturb stage {stage.name!r} returned a group {_describe(g)}; expected {expected}"
      )
  if not all(jnp.ndim(v) == 0 for v in jax.tree.leaves(metrics)):
    raise StageError(f"perturb stage {stage.name!r} returned non-scalar metrics {metrics!r}")
  return groups, metrics


def incoming(buffer, x, y) -> None:
  """The incoming batch: float rows of the shape the state's buffer stores, one
  integer label each, and one state (not a stack)."""
  row = tuple(buffer.x.shape[1:])
  if buffer.y.ndim != 1:
    raise ArgumentError(
      "train_step acts on one state; vmap it over a stack (rar_jax.run_stream does)"
    )
  if tuple(x.shape[1:]) != row or not jnp.issubdtype(x.dtype, jnp.floating):
    raise ArgumentError(
      f"x of shape {tuple(x.shape)} ({x.dtype}) is invalid: float rows of shape {row}, the "
      "shape the state was built for"
    )
  if y.shape != x.shape[:1] or not jnp.issubdtype(y.dtype, jnp.integer):
    raise ArgumentError(
      f"y of shape {tuple(y.shape)} ({y.dtype}) is invalid: one integer label per row of x"
    )
