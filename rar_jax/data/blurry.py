"""Streams without sharp task boundaries, in the `Streams` structure of
class-incremental ones (``index[seeds, tasks, steps, batch]``; ``task_of_class``
is each class's *home* task: the segment where most of its samples are).

- ``blurry`` (i-Blurry-N-M, Koh et al., ICLR 2022): a seeded choice marks
  ``disjoint_class_fraction`` (N/100) of each task's classes *disjoint* (seen
  only in their home segment); the others are *blurry*. In every segment a
  fraction ``blurry_sample_fraction`` (M/100) of the samples are samples of
  blurry classes whose home is another task (drawn uniformly among those),
  the rest samples of the segment's own classes.
- ``gaussian`` (task-free, after the Gaussian schedules of task-free
  benchmarks): each sample of a class is placed at its home task's centre plus
  ``boundary_width`` (in units of one task's length) times a standard normal
  draw; the stream is the samples in that order, cut into equal segments.

Every training sample is used at most once per seed; different seeds give
different streams, the same seed the same one.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from rar_jax.errors import DataError

# Each stream kind with its settings' defaults: the one source for `make_streams`,
# `class_incremental` and the config keys of the same names.
STREAM_DEFAULTS = {
  "class_incremental": {},
  "blurry": {"disjoint_class_fraction": 0.5, "blurry_sample_fraction": 0.1},
  "gaussian": {"boundary_width": 0.25},
}
STREAMS = tuple(STREAM_DEFAULTS)


def _homes(num_classes: int, num_tasks: int, order: np.ndarray) -> np.ndarray:
  per_task = num_classes // num_tasks
  home = np.zeros(num_classes, np.int32)
  home[order] = np.arange(num_classes) // per_task
  return home


def _draw(pools: Dict[int, np.ndarray], classes, n: int, rng: np.random.Generator) -> np.ndarray:
  """``n`` rows drawn uniformly without replacement from the pools of
  ``classes`` (fewer if they hold fewer), removed from the pools."""
  available = np.concatenate([pools[c] for c in classes]) if len(classes) else np.zeros(0, int)
  picked = available[rng.choice(len(available), min(n, len(available)), replace=False)]
  for c in classes:
    pools[c] = pools[c][~np.isin(pools[c], picked)]
  return picked


def check_settings(stream: str, settings) -> dict:
  """``settings`` of ``stream`` with the defaults filled in; `DataError` naming
  the setting for another stream's setting or a value out of range."""
  if stream not in STREAM_DEFAULTS:
    raise DataError(f"stream={stream!r} is invalid: one of {STREAMS}")
  own = STREAM_DEFAULTS[stream]
  unknown = sorted(set(settings) - set(own))
  if unknown:
    kinds = [k for k, v in STREAM_DEFAULTS.items() if unknown[0] in v]
    whose = f"a setting of stream={kinds[0]!r}" if kinds else "no stream's setting"
    raise DataError(
      f"{unknown[0]}={settings[unknown[0]]!r} is {whose}; {unknown} are not settings of "
      f"stream={stream!r} (its settings: {sorted(own) or 'none'})"
    )
  out = {**own, **settings}
  for name, v in out.items():
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
      raise DataError(f"{name}={v!r} is invalid: a number")
  for name in ("disjoint_class_fraction", "blurry_sample_fraction"):
    if name in out and not 0.0 <= out[name] <= 1.0:
      raise DataError(f"{name}={out[name]!r} is invalid: a number in [0, 1]")
  if out.get("blurry_sample_fraction") == 1.0:
    raise DataError(
      "blurry_sample_fraction=1.0 leaves every task with no samples of its own classes: "
      "a number in [0, 1)"
    )
  if out.get("disjoint_class_fraction") == 1.0 and out.get("blurry_sample_fraction"):
    raise DataError(
      "disjoint_class_fraction=1.0 leaves no blurry class to leak into other tasks "
      f"(blurry_sample_fraction={out['blurry_sample_fraction']}): lower it"
    )
  if "boundary_width" in out and not out["boundary_width"] > 0:
    raise DataError(f"boundary_width={out['boundary_width']!r} is invalid: a number > 0")
  return out


def blurry_segments(
  y: np.ndarray,
  num_classes: int,
  num_tasks: int,
  samples_per_task: int,
  order: np.ndarray,
  rng: np.random.Generator,
  disjoint_class_fraction: float,
  blurry_sample_fraction: float,
):
  """One seed's blurry segments (row lists, shuffled) and disjoint-class mask."""
  per_task = num_classes // num_tasks
  home = _homes(num_classes, num_tasks, order)
  disjoint = np.zeros(num_classes, bool)
  n_disjoint = int(round(disjoint_class_fraction * per_task))
  for t in range(num_tasks):
    disjoint[rng.choice(order[t * per_task : (t + 1) * per_task], n_disjoint, replace=False)] = True
  if blurry_sample_fraction > 0 and disjoint.all():
    raise DataError(
      f"disjoint_class_fraction={disjoint_class_fraction} leaves no blurry class to leak "
      f"into other tasks (blurry_sample_fraction={blurry_sample_fraction}): lower it"
    )
  pools = {c: rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)}
  own_sizes = [sum(len(pools[int(c)]) for c in np.flatnonzero(home == t)) for t in range(num_tasks)]
  length = samples_per_task or int(min(own_sizes) * (1 - blurry_sample_fraction))
  foreign_n = int(round(blurry_sample_fraction * length))
  segments: List[np.ndarray] = []
  for t in range(num_tasks):
    own = _draw(pools, list(np.flatnonzero(home == t)), length - foreign_n, rng)
    others = list(np.flatnonzero(~disjoint & (home != t)))
    foreign = _draw(pools, others, foreign_n, rng)
    segments.append(rng.permutation(np.concatenate([own, foreign])))
  return segments, disjoint


def gaussian_segments(
  y: np.ndarray,
  num_classes: int,
  num_tasks: int,
  samples_per_task: int,
  order: np.ndarray,
  rng: np.random.Generator,
  boundary_width: float,
) -> List[np.ndarray]:
  """One seed's Gaussian-schedule segments (row lists in stream order)."""
  home = _homes(num_classes, num_tasks, order)
  per_class = samples_per_task // (num_classes // num_tasks) if samples_per_task else 0
  rows, where = [], []
  for c in range(num_classes):
    idx = rng.permutation(np.flatnonzero(y == c))
    if per_class:
      idx = idx[:per_class]
    rows.append(idx)
    where.append(home[c] + 0.5 + boundary_width * rng.standard_normal(len(idx)))
  rows_all, where_all = np.concatenate(rows), np.concatenate(where)
  stream = rows_all[np.argsort(where_all, kind="stable")]
  length = len(stream) // num_tasks
  return [stream[t * length : (t + 1) * length] for t in range(num_tasks)]


__all__ = ["STREAM_DEFAULTS", "STREAMS", "check_settings", "blurry_segments", "gaussian_segments"]
