"""The config checks that concern the data: the folder and .npz keys, the
task count against the class count, and `validate_data`, which lists an image
folder or reads an .npz's labels and headers before any work is done."""

from __future__ import annotations

from typing import Tuple

from ml_collections import ConfigDict

from rar_jax import data as data_lib
from rar_jax import models
from rar_jax.errors import ConfigError
from rar_jax.runner import user_model


def check_num_tasks(config: ConfigDict, num_classes: int) -> None:
  if config.num_tasks > num_classes or num_classes % config.num_tasks:
    raise ConfigError(
      f"config.num_tasks={config.num_tasks} is invalid for "
      f"{config.data_dir if config.dataset == data_lib.CUSTOM else config.dataset}: "
      f"it must divide its {num_classes} classes"
    )


def check_data_keys(config: ConfigDict) -> None:
  v = config.image_size
  if not isinstance(v, int) or isinstance(v, bool) or v < 0:
    raise ConfigError(f"config.image_size={v!r} is invalid: int >= 0 (0 = the dataset's own)")
  if config.image_size and config.data_source not in ("folder", "auto"):
    raise ConfigError(
      f"config.image_size={config.image_size} applies to image folders only "
      f"(data_source='folder'), not data_source={config.data_source!r}"
    )
  if not 0.0 < config.train_fraction < 1.0:
    raise ConfigError(
      f"config.train_fraction={config.train_fraction!r} is invalid: a number in (0, 1)"
    )


def catalog_shape(config: ConfigDict) -> Tuple[int, Tuple[int, ...]]:
  """``(num_classes, image shape)`` of ``config.dataset`` without its data; for
  custom data a stand-in (num_tasks classes, image_size or 32 square RGB) that
  `validate_data` replaces with the data's own."""
  if config.dataset in data_lib.DATASETS:
    num_classes, shape = data_lib.DATASETS[config.dataset]
    if config.image_size and config.dataset == "mini_imagenet":
      shape = (config.image_size, config.image_size, 3)
    return num_classes, shape
  side = config.image_size or 32
  return config.num_tasks, (side, side, 3)


def validate_data(config: ConfigDict) -> Tuple[int, Tuple[int, ...]]:
  """The checks that need the data's listing (an image folder's folders and
  files, an .npz's labels and headers), before any work: seconds, no
  decoding. Returns ``(num_classes, image shape)``; raises DataError/ConfigError."""
  num_classes, shape = data_lib.describe(
    config.dataset, config.data_source, config.data_dir, config.image_size, config.folder_split
  )
  if config.dataset not in data_lib.DATASETS:
    if num_classes < config.num_tasks:
      raise ConfigError(
        f"config.num_tasks={config.num_tasks} is invalid: {config.data_dir} holds "
        f"{num_classes} classes, fewer than one per task"
      )
    check_num_tasks(config, num_classes)
    module = user_model.create(config, num_classes)
    if user_model.is_import_path(config.model):
      user_model.check_model(config, module, num_classes, shape)
    try:
      models.check_input_shape(config.model, module, shape)
    except ValueError as e:
      raise ConfigError(f"config.model={config.model!r} on {config.data_dir}: {e}") from None
  return num_classes, shape
