"""Checks of a config before any work (`validate_config`): keys and types,
choices, numbers, every sweep cell, and each method's chain against the model.
Each failure is one `ConfigError` naming the key, the value and what is allowed."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from rar_jax import data as data_lib
from rar_jax import models
from rar_jax.core.method import ASER_TYPES, ATTACK_PARAMS, CLEAN_ROWS, Hyper, parse_method
from rar_jax.core.rar import check_data_range
from rar_jax.core.step import init_train_state
from rar_jax.data.blurry import STREAMS, check_settings
from rar_jax.errors import ConfigError, DataError, RarError
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import cpu_conv, data_check, loop, user_model
from rar_jax.runner import sweep as sweep_lib
from rar_jax.runner.config import (
  HYPER_KEYS,
  MATMUL_PRECISIONS,
  STREAM_KEYS,
  base_config,
  cell_config,
  method_names,
  optimizer,
  replay_parts,
)


def _one_of(config: ConfigDict, key, allowed):
  if config[key] not in allowed:
    raise ConfigError(f"config.{key}={config[key]!r} is invalid: one of {tuple(allowed)}")


def _at_least(config: ConfigDict, key, low, kind=int):
  v = config[key]
  if not isinstance(v, kind) or isinstance(v, bool) or v < low:
    raise ConfigError(f"config.{key}={v!r} is invalid: {kind.__name__} >= {low}")


def validate_config(config: ConfigDict) -> None:
  """Every check that needs no data, before any work; raises `ConfigError`."""
  _check_keys_and_types(config)
  _check_choices(config)
  _check_numbers(config)
  _check_methods_and_model(config)


def _check_keys_and_types(config: ConfigDict) -> None:
  base = base_config()
  unknown = sorted(set(config.keys()) - set(base.keys()))
  if "method" in unknown:  # the key before `methods` was the only one
    raise ConfigError(
      f"config.method={config.method!r}: the key is now config.methods "
      f"(comma-separated; one method: methods={config.method!r})"
    )
  if unknown:
    raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(base.keys())}")
  for key in base.keys():
    if key not in config:
      raise ConfigError(f"config is missing key {key!r}; start configs from base_config()")
    want, got = base[key], config[key]
    if (
      want is not None
      and got is not None
      and not isinstance(got, type(want))
      and not (isinstance(want, float) and isinstance(got, int) and not isinstance(got, bool))
    ):
      raise ConfigError(
        f"config.{key}={got!r} has type {type(got).__name__}, expected {type(want).__name__}"
      )


def _check_choices(config: ConfigDict) -> None:
  _one_of(config, "dataset", data_lib.DATASET_NAMES)
  _one_of(config, "data_source", data_lib.SOURCES)
  _one_of(config, "folder_split", data_lib.FOLDER_SPLITS)
  if not user_model.is_import_path(config.model) and config.model not in models.MODELS:
    raise ConfigError(
      f"config.model={config.model!r} is invalid: one of {models.MODELS} or an import "
      "path package.module:name (docs/own_model.md)"
    )
  _one_of(config, "eval_split", ("test", "validation"))
  _one_of(config, "run_batching", ("auto",) + loop.BATCHINGS)
  _one_of(config, "conv_impl", ("auto",) + models.CONV_IMPLS)
  if config.conv_impl == "im2col" and user_model.is_import_path(config.model):
    raise ConfigError(
      f"config.conv_impl='im2col' applies to the built-in conv net; config.model="
      f"{config.model!r} runs its own convolutions: leave conv_impl at auto"
    )
  _one_of(config, "cpu_conv_library", ("auto",) + cpu_conv.CPU_CONV_LIBRARIES)
  _one_of(config, "stream_loop", ("auto",) + loop.STREAM_LOOPS)
  _one_of(config, "eval_protocol", ("class", "task"))
  _one_of(config, "eval_classifier", evaluator_lib.EVAL_CLASSIFIERS)
  _one_of(config, "matmul_precision", MATMUL_PRECISIONS)
  _one_of(config, "aser_type", ASER_TYPES)
  _one_of(config, "attack_params", ATTACK_PARAMS)
  _one_of(config, "clean_rows", CLEAN_ROWS)
  _one_of(config, "stream", STREAMS)
  if config.stream_loop == "host" and jax.process_count() > 1:
    raise ConfigError(
      "config.stream_loop='host' runs in one process; use 'scan' or 'auto' with several processes"
    )
  if config.run_batching == "map" and jax.device_count() > 1:
    raise ConfigError(
      f"config.run_batching='map' needs one device, this process sees "
      f"{jax.device_count()}; use 'vmap' or 'auto'"
    )
  if config.model == "mlp" and config.dataset.startswith("cifar"):
    logging.warning("an MLP on %s: the paper uses resnet18_reduced there", config.dataset)


def _check_numbers(config: ConfigDict) -> None:
  for key, low in (
    ("num_seeds", 1),
    ("seed", 0),
    ("num_tasks", 1),
    ("samples_per_task", 0),
    ("batch_size", 1),
    ("log_every_steps", 1),
    ("checkpoint_every_steps", 0),
    ("keep_checkpoints", 0),
    ("replay_iters", 1),
    ("rar_samples", 0),
    ("eval_every", 0),
    ("eval_samples_per_task", 0),
  ):
    _at_least(config, key, low)
  if config.eval_samples_per_task and not config.eval_every:
    raise ConfigError(
      f"config.eval_samples_per_task={config.eval_samples_per_task} needs continual "
      "evaluation: set config.eval_every > 0 (or eval_samples_per_task=0)"
    )
  data_check.check_data_keys(config)
  if config.dataset in data_lib.DATASETS:  # custom data: data_check.validate_data, once listed
    data_check.check_num_tasks(config, data_lib.DATASETS[config.dataset][0])
  if not 0.0 <= config.validation_fraction < 1.0:
    raise ConfigError(
      f"config.validation_fraction={config.validation_fraction} is invalid: a number in [0, 1)"
    )
  _check_ema_decay(config.ema_decay, "config.ema_decay")
  _check_stream(config)
  if config.eval_split == "validation" and config.validation_fraction == 0:
    raise ConfigError("config.eval_split='validation' needs config.validation_fraction > 0")
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ConfigError(
      f"config.checkpoint_every_steps={config.checkpoint_every_steps} must be a "
      f"multiple of config.log_every_steps={config.log_every_steps}"
    )


def _check_stream(config: ConfigDict) -> None:
  """The stream's settings (the data package's own check, before any data is
  loaded); no task identity at test time where the boundaries blur."""
  given = {k: config[k] for k in STREAM_KEYS if config[k] is not None}
  try:
    check_settings(config.stream, given)
  except DataError as e:
    raise ConfigError(f"config.{e}") from None
  if config.stream != "class_incremental" and config.eval_protocol == "task":
    raise ConfigError(
      f"config.eval_protocol='task' needs task identities at test time, which "
      f"stream={config.stream!r} does not have (its boundaries blur): use 'class'"
    )


def _check_ema_decay(value, where: str) -> None:
  if not 0.0 <= value < 1.0:
    raise ConfigError(
      f"{where}: ema_decay={value!r} is invalid: a number in [0, 1) (0 = the current weights)"
    )


def _check_hyper(config: ConfigDict, where: str) -> None:
  """The numeric keys a sweep may vary, whichever methods use them: a value no
  method of this run reads is still refused (a later run may read it)."""
  try:
    Hyper.create(
      opt_lr=config.learning_rate if config.opt_lr is None else config.opt_lr,
      **{k: config[k] for k in HYPER_KEYS},
    )
  except ValueError as e:
    raise ConfigError(f"{where}: {e}") from None


def _check_methods_and_model(config: ConfigDict) -> None:
  names = method_names(config)
  if not names or len(set(names)) != len(names):
    raise ConfigError(
      f"config.methods={config.methods!r} is invalid: one or more different "
      "methods, comma-separated (e.g. 'er_rar' or 'er,er_rar')"
    )
  for m in names:
    try:
      parse_method(m)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  num_classes, image_shape = data_check.catalog_shape(config)
  try:
    cells = sweep_lib.parse_sweep(config.sweep)
  except ConfigError as e:
    raise ConfigError(f"config.sweep={config.sweep!r}: {e}") from None
  _check_hyper(config, "config")
  if config.data_range is not None:
    try:
      check_data_range(tuple(config.data_range))
    except ValueError as e:
      raise ConfigError(f"config.{e}") from None
  # Every cell, the first included, through the same checks, in grid order.
  for overrides in cells if config.sweep.strip() else []:
    where = f"config.sweep cell {sweep_lib.cell_name(overrides)}"
    if "ema_decay" in overrides:
      _check_ema_decay(overrides["ema_decay"], where)
    cell = cell_config(config, overrides)
    _check_hyper(cell, where)
    for m in names:
      try:
        replay_parts(cell, m, num_classes)
      except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
  module = user_model.create(config, num_classes)
  if user_model.is_import_path(config.model):
    if config.dataset not in data_lib.DATASETS:
      return  # checked on the data's own classes and shape (data_check.validate_data)
    user_model.check_model(config, module, num_classes, image_shape)
  try:
    models.check_input_shape(config.model, module, image_shape)
  except ValueError as e:
    raise ConfigError(f"config.model={config.model!r} on {config.dataset}: {e}") from None
  for m in names:
    try:
      cfg, _, hyper = replay_parts(config, m, num_classes)
      # eval_shape: checks feature_layer against the model without any FLOPs.
      jax.eval_shape(
        lambda: init_train_state(
          module,
          optimizer(config),
          cfg,
          hyper,
          jax.random.PRNGKey(0),
          jnp.zeros((1, *image_shape)),
        )
      )
    except (ValueError, RarError) as e:
      raise ConfigError(f"config (method {m}): {e}") from None
