"""The data of a run: the dataset loaded once and the class-incremental
streams of every seed (`prepare_data`)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np
from ml_collections import ConfigDict

from rar_jax import data as data_lib
from rar_jax.errors import ArgumentError, ConfigError
from rar_jax.evaluation import continual
from rar_jax.runner import config as config_lib
from rar_jax.runner import hooks as hooks_lib

_say = hooks_lib.say


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """The dataset's training subset that some stream visits (float32 in
  [0, 1]), every seed's stream into it, and the evaluation split. ``ds`` is the
  dataset without its images (``train_x``/``test_x`` hold no rows)."""

  ds: data_lib.Dataset
  streams: data_lib.Streams
  train_x: np.ndarray
  train_y: np.ndarray
  eval_x: np.ndarray
  eval_y: np.ndarray
  # Continual evaluation's rows (config.eval_every > 0), else None.
  curve_x: Optional[np.ndarray] = None
  curve_y: Optional[np.ndarray] = None


def _no_rows(x: np.ndarray) -> np.ndarray:
  return np.empty((0,) + x.shape[1:], x.dtype)  # not x[:0], a view that keeps x alive


def prepare_data(config: ConfigDict) -> PreparedData:
  """Loads the dataset and builds every seed's stream.

  Only the training samples some stream visits are kept, and the streams index
  into that subset: with 1000 samples per task the device holds 5000 images
  per seed, not the whole training set.
  """
  ds = data_lib.load(
    config.dataset,
    config.data_source,
    config.data_dir,
    image_size=config.image_size,
    folder_split=config.folder_split,
    train_fraction=config.train_fraction,
    progress=config.progress and jax.process_index() == 0,
    data_range=config.data_range,
  )
  bench = data_lib.class_incremental(
    ds.train_x,
    ds.train_y,
    config.num_tasks,
    config.batch_size,
    [config.seed + i for i in range(config.num_seeds)],
    config.samples_per_task,
    config.shuffle_classes,
    config.validation_fraction,
    holdout_seed=config.seed,
    num_classes=ds.num_classes,
    stream=config.stream,
    data_range=ds.data_range,
    **config_lib.stream_settings(config),
  )
  streams = bench.streams
  if config.data_range is None and tuple(ds.data_range) != (0.0, 1.0):
    _say(
      f"data_range {tuple(ds.data_range)}: the images' own range (they leave [0, 1]); RAR "
      "clips perturbed rows to it (set config.data_range to choose)"
    )
  if config.eval_split == "validation":
    eval_x, eval_y = bench.val_x, bench.val_y
  else:
    eval_x, eval_y = ds.test_x, ds.test_y
  per_task = streams.index.shape[2] * config.batch_size
  if per_task < config.samples_per_task // config.batch_size * config.batch_size:
    _say(
      f"warning: samples_per_task={config.samples_per_task} is more than the smallest task "
      f"holds; every task uses {per_task} samples ({streams.index.shape[2]} minibatches of "
      f"{config.batch_size})"
    )
  if streams.dropped_samples:
    _say(
      f"{streams.dropped_samples} training samples per seed dropped so every task has "
      f"{streams.index.shape[2]} full minibatches"
    )
  eval_x = data_lib.to_unit_float(eval_x)
  curve_x = curve_y = None
  if config.eval_every:  # the whole split itself, or its fixed subset
    curve_x, curve_y = eval_x, eval_y
    if config.eval_samples_per_task:
      try:
        rows = continual.evaluation_subset(
          eval_y, ds.num_classes // config.num_tasks, config.eval_samples_per_task
        )
      except ArgumentError as e:
        raise ConfigError(f"config.{e} ({config.eval_split} split)") from None
      curve_x, curve_y = eval_x[rows], eval_y[rows]
  return PreparedData(
    # The source's own image arrays are done with: the run keeps only the float32 images it
    # uses (at mini-ImageNet's size the uint8 copy alone is 1.3 GB).
    dataclasses.replace(ds, train_x=_no_rows(ds.train_x), test_x=_no_rows(ds.test_x)),
    streams,
    data_lib.to_unit_float(bench.train_x),
    bench.train_y,
    eval_x,
    eval_y,
    curve_x,
    curve_y,
  )
