"""Continual-learning metrics on an accuracy matrix ``acc[seed, i, j]``.

Row i: after training task i; column j: accuracy on task j.
"""

from __future__ import annotations

import numpy as np


def final_average_accuracy(acc: np.ndarray) -> np.ndarray:
  """Mean accuracy over all tasks after the last one, per seed."""
  return acc[:, -1, :].mean(axis=-1)


def average_accuracy_curve(acc: np.ndarray) -> np.ndarray:
  """``[seed, i]``: mean accuracy over the tasks seen after training task i."""
  t = acc.shape[-1]
  return np.stack([acc[:, i, : i + 1].mean(axis=-1) for i in range(t)], axis=-1)


def final_forgetting(acc: np.ndarray) -> np.ndarray:
  """Mean over tasks but the last of (best accuracy on task j after learning it,
  before the end) minus (final accuracy on task j), per seed. 0 for one task."""
  t = acc.shape[-1]
  if t < 2:
    return np.zeros(acc.shape[0])
  drops = [acc[:, j : t - 1, j].max(axis=-1) - acc[:, -1, j] for j in range(t - 1)]
  return np.mean(drops, axis=0)


def two_se(values, axis: int = 0) -> np.ndarray:
  """Two standard errors of the mean along ``axis`` (the ± of every table and
  plot); NaN with fewer than two values."""
  v = np.asarray(values, np.float64)
  n = v.shape[axis]
  if n < 2:
    return np.full(np.delete(v.shape, axis), np.nan)
  return 2 * v.std(axis=axis, ddof=1) / np.sqrt(n)


def summarize(per_seed: np.ndarray) -> dict:
  """``{"mean", "se2", "per_seed"}``; se2 = 2 x standard error (None for one seed)."""
  v = np.asarray(per_seed, np.float64)
  se2 = float(two_se(v)) if len(v) > 1 else None
  return {"mean": float(v.mean()), "se2": se2, "per_seed": [float(a) for a in v]}
