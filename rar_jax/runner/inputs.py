"""What the public training API receives, checked once per call (never per
step): images, labels, index streams and task maps. Each check raises an
`ArgumentError` whose one line names the argument, the value and what is
allowed; the value checks are one pass over the data (`bench/boundary_checks.py`
measures what they cost)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from rar_jax.errors import ArgumentError


def _xp(a):
  return np if isinstance(a, np.ndarray) else jnp


def _array(name: str, a):
  if isinstance(a, (np.ndarray, jax.Array)):
    return a
  try:
    return np.asarray(a)
  except (TypeError, ValueError) as e:
    raise ArgumentError(f"{name} is invalid: an array ({type(e).__name__}: {e})") from None


def _integer(a) -> bool:
  return jnp.issubdtype(a.dtype, jnp.integer) and a.dtype != jnp.bool_


def images(
  name: str,
  x,
  *,
  row_shape: Optional[Tuple[int, ...]] = None,
  data_range: Optional[Tuple[float, float]] = None,
):
  """``x`` as the step takes it: float32, uint8 pixels divided by 255 (as
  `rar_jax.data.to_unit_float` does). Rejects other integer or non-numeric
  dtypes, rows of another shape than ``row_shape`` (the shape the states were
  built for), NaN/Inf and, with ``data_range``, pixels outside it."""
  x = _array(name, x)
  xp = _xp(x)
  if x.ndim < 2 or x.shape[0] == 0:
    raise ArgumentError(
      f"{name} of shape {tuple(x.shape)} is invalid: a non-empty batch [rows, ...]"
    )
  if row_shape is not None and tuple(x.shape[1:]) != tuple(row_shape):
    raise ArgumentError(
      f"{name} rows of shape {tuple(x.shape[1:])} are invalid: the states were built for rows "
      f"of shape {tuple(row_shape)} (init_states' sample_x is a batch: x[:1], not x[0])"
    )
  if x.dtype == np.uint8:
    return x.astype(xp.float32) / 255.0  # the documented uint8 scaling
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ArgumentError(
      f"{name} of dtype {x.dtype} is invalid: float images (in the data range) or uint8 "
      "pixels 0..255 (scaled to [0, 1])"
    )
  if x.dtype != xp.float32:  # no copy of data that already is float32
    x = x.astype(xp.float32)
  low, high = float(xp.min(x)), float(xp.max(x))  # NaN propagates through both
  if not (np.isfinite(low) and np.isfinite(high)):
    raise ArgumentError(f"{name} is invalid: it holds NaN or Inf pixels")
  if data_range is not None and (low < data_range[0] or high > data_range[1]):
    raise ArgumentError(
      f"{name} has pixels in [{low:.4g}, {high:.4g}], outside data_range={tuple(data_range)} "
      "that RAR clips perturbed rows to: give build_method data_range=(low, high) of your "
      "data (or None for unbounded inputs), or scale the images"
    )
  return x


def labels(name: str, y, *, rows: int, num_classes: int):
  """``y`` as int32 class labels: integers, one per row, in ``[0, num_classes)``."""
  y = _array(name, y)
  if not _integer(y):
    raise ArgumentError(f"{name} of dtype {y.dtype} is invalid: integer class labels")
  if y.ndim != 1 or y.shape[0] != rows:
    raise ArgumentError(f"{name} of shape {tuple(y.shape)} is invalid: one label per row, [{rows}]")
  xp = _xp(y)
  low, high = int(xp.min(y)), int(xp.max(y))
  if low < 0 or high >= num_classes:
    raise ArgumentError(
      f"{name} holds labels in [{low}, {high}]: the states were built for num_classes="
      f"{num_classes}, labels 0..{num_classes - 1}"
    )
  return y.astype(xp.int32)


def index(name: str, idx, *, axes: Sequence[str], runs: int, rows: int):
  """``idx`` as int32 row numbers ``[runs, *axes[1:]]`` into ``rows`` rows."""
  idx = jnp.asarray(_array(name, idx))
  shape = "[" + ", ".join((f"runs={runs}", *axes[1:])) + "]"
  if idx.ndim != len(axes) or idx.shape[0] != runs or not _integer(idx):
    raise ArgumentError(
      f"{name} of shape {tuple(idx.shape)} ({idx.dtype}) is invalid: ints {shape} into x"
    )
  if idx.size and (int(jnp.min(idx)) < 0 or int(jnp.max(idx)) >= rows):
    raise ArgumentError(
      f"{name} holds rows [{int(jnp.min(idx))}, {int(jnp.max(idx))}]: x has {rows} rows, "
      f"0..{rows - 1}"
    )
  return idx.astype(jnp.int32)


def task_of_class(name: str, t, *, runs: Optional[int], num_classes: int):
  """``t`` as int32 ``[runs, num_classes]`` (``[num_classes]`` when ``runs``
  is None): every class's task, tasks 0, 1, ... each with a class."""
  t = jnp.asarray(_array(name, t))
  want = (num_classes,) if runs is None else (runs, num_classes)
  if tuple(t.shape) != want or not _integer(t):
    raise ArgumentError(
      f"{name} of shape {tuple(t.shape)} ({t.dtype}) is invalid: ints {list(want)}, one task "
      "per class the states were built for"
    )
  rows = t.reshape(-1, num_classes)
  for r in np.asarray(rows):
    if r.min() < 0 or set(np.unique(r)) != set(range(int(r.max()) + 1)):
      raise ArgumentError(
        f"{name} row {r.tolist()} is invalid: tasks numbered 0, 1, ... each holding a class"
      )
  return t.astype(jnp.int32)


def num_classes_of(states) -> int:
  """The classes a state (or stack) was built for."""
  return int(states.seen_classes.shape[-1])


def row_shape_of(states, stacked: bool) -> Tuple[int, ...]:
  """The shape of one input row the states' buffer stores."""
  return tuple(states.buffer.x.shape[2 if stacked else 1 :])


__all__ = ["images", "labels", "index", "task_of_class", "num_classes_of", "row_shape_of"]
