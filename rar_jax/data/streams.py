"""Class-incremental streams over a labelled array: the class order, the
held-out validation split and every seed's minibatch indices."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional, Tuple

import numpy as np

from rar_jax.data import blurry
from rar_jax.errors import ArgumentError, DataError


def class_order(num_classes: int, shuffle: bool, rng: np.random.Generator) -> np.ndarray:
  order = np.arange(num_classes)
  return rng.permutation(order) if shuffle else order


def holdout_split(y: np.ndarray, fraction: float, seed: int):
  """Stratified ``(train_idx, val_idx)``: ``fraction`` of each class held out."""
  if not 0.0 <= fraction < 1.0:
    raise DataError(f"validation_fraction={fraction!r} must be in [0, 1)")
  rng = np.random.default_rng(seed)
  train, val = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    k = int(round(fraction * len(idx)))
    val.append(idx[:k])
    train.append(idx[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclasses.dataclass(frozen=True)
class Streams:
  """Minibatch index streams for several seeds over one training array."""

  index: np.ndarray  # [seeds, tasks, steps, batch] into the training array
  task_of_class: np.ndarray  # [seeds, num_classes]: each class's (home) task
  dropped_samples: int  # per seed, to make every task the same number of full batches
  # blurry streams: [seeds, num_classes], the classes seen only in their home task; else None
  disjoint_classes: Optional[np.ndarray] = None


def make_streams(
  y: np.ndarray,
  num_classes: int,
  num_tasks: int,
  samples_per_task: int,
  batch_size: int,
  seeds,
  shuffle_classes: bool,
  stream: str = "class_incremental",
  **stream_settings,
) -> Streams:
  """Streams of ``num_tasks`` equal segments (tasks).

  ``stream="class_incremental"``: task t holds classes ``order[t*k:(t+1)*k]``.
  Each seed draws its own class order (when shuffled), its own subsample of
  ``samples_per_task`` (0 = all) and its own order within a task. Every task
  gets the same number of full minibatches (that of the smallest task), so one
  compiled scan serves all tasks and seeds. ``"blurry"`` and ``"gaussian"``:
  streams whose boundaries blur (`rar_jax.data.blurry`), with their settings
  as keyword arguments (`blurry.STREAM_DEFAULTS` for the ones left out); the
  classes' home tasks as above.
  """
  if num_tasks < 1 or num_tasks > num_classes or num_classes % num_tasks:
    raise DataError(
      f"num_tasks={num_tasks} must divide num_classes={num_classes} "
      "(each task holds the same number of classes)"
    )
  settings = blurry.check_settings(stream, stream_settings)
  per_task = num_classes // num_tasks
  per_seed, disjoint = [], []
  for seed in seeds:
    rng = np.random.default_rng(seed)
    order = class_order(num_classes, shuffle_classes, rng)
    if stream == "blurry":
      tasks, mask = blurry.blurry_segments(
        y, num_classes, num_tasks, samples_per_task, order, rng, **settings
      )
      disjoint.append(mask)
    elif stream == "gaussian":
      tasks = blurry.gaussian_segments(
        y, num_classes, num_tasks, samples_per_task, order, rng, **settings
      )
    else:
      tasks = _class_incremental_tasks(y, num_tasks, per_task, samples_per_task, order, rng)
    per_seed.append((order, tasks))
  steps = min(len(ix) for _, tasks in per_seed for ix in tasks) // batch_size
  if steps == 0:
    raise DataError(f"a task holds fewer samples than one minibatch ({batch_size})")
  index = np.stack(
    [
      np.stack([ix[: steps * batch_size].reshape(steps, batch_size) for ix in tasks])
      for _, tasks in per_seed
    ]
  ).astype(np.int32)
  task_of_class = np.zeros((len(per_seed), num_classes), np.int32)
  for s, (order, _) in enumerate(per_seed):
    task_of_class[s, order] = np.arange(num_classes) // per_task
  dropped = (
    max(sum(len(ix) for ix in tasks) for _, tasks in per_seed) - num_tasks * steps * batch_size
  )
  return Streams(index, task_of_class, int(dropped), np.stack(disjoint) if disjoint else None)


def _class_incremental_tasks(y, num_tasks, per_task, samples_per_task, order, rng):
  tasks = []
  for t in range(num_tasks):
    idx = np.flatnonzero(np.isin(y, order[t * per_task : (t + 1) * per_task]))
    if len(idx) == 0:
      raise DataError(f"task {t} (classes {order[t * per_task : (t + 1) * per_task]}) is empty")
    idx = rng.permutation(idx)
    if samples_per_task:
      idx = idx[:samples_per_task]
    tasks.append(idx)
  return tasks


@dataclasses.dataclass(frozen=True)
class ClassIncremental:
  """A class-incremental benchmark over one labelled array, as train.py builds it.

  ``train_x``/``train_y`` hold only the training rows some stream visits (dtype
  kept: uint8 stays uint8); ``streams.index[s, t]`` are task ``t``'s minibatches
  for seed ``s`` as rows of ``train_x``; ``val_x``/``val_y`` are the held-out
  ``validation_fraction`` of each class (empty at 0).
  """

  train_x: np.ndarray
  train_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  streams: Streams
  num_classes: int
  # The images' range as the step sees them (`rar_jax.data.arrays.data_range_of`):
  # give it to build_method(..., data_range=bench.data_range).
  data_range: Tuple[float, float] = (0.0, 1.0)

  def task_classes(self, seed_index: int = 0) -> np.ndarray:
    """``[num_tasks, classes per task]``: the classes of each task for one seed."""
    tasks = self.streams.task_of_class[seed_index]
    return np.stack([np.flatnonzero(tasks == t) for t in range(tasks.max() + 1)])

  def batches(self, seed_index: int, task: int):
    """Task ``task``'s minibatches for one seed: ``(x float32 in [0, 1], y)``."""
    from rar_jax.data.arrays import to_unit_float

    for rows in self.streams.index[seed_index, task]:
      yield to_unit_float(self.train_x[rows]), self.train_y[rows]


def class_incremental(
  x: np.ndarray,
  y: np.ndarray,
  num_tasks: int,
  batch_size: int = 10,
  seeds=(0,),
  samples_per_task: int = 0,
  shuffle_classes: bool = False,
  validation_fraction: float = 0.0,
  holdout_seed: int = 0,
  num_classes: int = 0,
  stream: str = "class_incremental",
  data_range=None,
  **stream_settings,
) -> ClassIncremental:
  """Your arrays (``x`` ``[N, H, W, C]`` uint8 or float in [0, 1], ``y`` ints
  0..C-1) as the class-incremental streams train.py trains on: the stratified
  ``validation_fraction`` hold-out (drawn with ``holdout_seed``), then
  `make_streams` (``num_tasks`` tasks of C / num_tasks classes, per seed its
  class order when ``shuffle_classes``, ``samples_per_task`` (0 = all) and its
  own order) over the rest. ``num_classes`` 0: ``y.max() + 1``. ``stream``:
  ``"class_incremental"``, or ``"blurry"`` (settings ``disjoint_class_fraction``,
  ``blurry_sample_fraction``) or ``"gaussian"`` (``boundary_width``), streams
  whose task boundaries blur (`rar_jax.data.blurry`). ``data_range``: the
  range float images must lie in (None: [0, 1], or their own range if they
  leave it; uint8 is always [0, 1] once scaled); the result's ``data_range``
  is what RAR should clip to. For example::

    bench = class_incremental(x, y, num_tasks=5, batch_size=10, seeds=[0, 1])
    for task in range(5):
      for xb, yb in bench.batches(0, task):
        ...
  """
  from rar_jax.data.arrays import data_range_of, validate_arrays

  _check_stream_arguments(num_tasks, batch_size, seeds, samples_per_task, num_classes)
  x, y = np.asarray(x), np.asarray(y)
  if not (np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_):
    raise ArgumentError(f"y of dtype {y.dtype} is invalid: integer class labels 0..C-1")
  y = y.astype(np.int32)
  if not num_classes and len(y):
    num_classes = int(y.max()) + 1
  data_range = data_range_of(x) if data_range is None else tuple(map(float, data_range))
  validate_arrays("class_incremental", x, y, num_classes, data_range)
  train_idx, val_idx = holdout_split(y, validation_fraction, holdout_seed)
  streams = make_streams(
    y[train_idx], num_classes, num_tasks, samples_per_task, batch_size, seeds, shuffle_classes,
    stream, **stream_settings,
  )  # fmt: skip
  used = np.unique(streams.index)
  rows = train_idx[used]
  streams = dataclasses.replace(
    streams, index=np.searchsorted(used, streams.index).astype(np.int32)
  )
  return ClassIncremental(
    x[rows], y[rows], x[val_idx], y[val_idx], streams, num_classes, data_range
  )


def _check_stream_arguments(num_tasks, batch_size, seeds, samples_per_task, num_classes) -> None:
  def whole(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)

  for name, value, low in (
    ("num_tasks", num_tasks, 1),
    ("batch_size", batch_size, 1),
    ("samples_per_task", samples_per_task, 0),
    ("num_classes", num_classes, 0),
  ):
    if not (whole(value) and value >= low):
      raise ArgumentError(f"{name}={value!r} is invalid: an int >= {low}")
  if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
    raise ArgumentError(f"seeds={seeds!r} is invalid: a list of ints, e.g. [0, 1, 2]")
  if not len(list(seeds)) or not all(whole(s) for s in seeds):
    raise ArgumentError(f"seeds={seeds!r} is invalid: a non-empty list of ints, e.g. [0, 1, 2]")
