"""The config of a run, in one place: every key with its default
(`base_config`), the allowed values and cross-key checks (`validate_config`,
run before any work), and what a config means for one method
(`method_config`, `replay_parts`, `cell_config`).

Configs in ``configs/`` start from `base_config()` and override keys.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import List, Tuple

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict, config_dict

from rar_jax import data as data_lib
from rar_jax import models
from rar_jax.core import stages
from rar_jax.core.defaults import DEFAULTS
from rar_jax.core.method import (
  ASER_TYPES,
  ATTACK_PARAMS,
  CLEAN_ROWS,
  Hyper,
  ReplayConfig,
  parse_method,
)
from rar_jax.core.optim import make_optimizer
from rar_jax.core.step import init_train_state
from rar_jax.errors import ConfigError, RarError
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import data_check, loop
from rar_jax.runner import sweep as sweep_lib

# jax.default_matmul_precision's names for float32 dots and convolutions.
MATMUL_PRECISIONS = ("default", "float32", "tensorfloat32", "bfloat16", "highest", "high")


def _data_and_stream_keys(c: ConfigDict) -> None:
  """base_config's first keys: the data and the stream."""
  # digits | mnist | fashion_mnist | cifar10 | cifar100 | mini_imagenet | custom (your own
  # image folder or .npz: classes and image shape come from the data; docs/data.md)
  c.dataset = "digits"
  c.data_source = "auto"  # auto | embedded | idx | tfds | folder | npz
  c.data_dir = config_dict.placeholder(str)  # IDX folder, TFDS data_dir, image folder or .npz
  # Image folders: each image's shorter side resized to image_size, then centre-cropped to
  # image_size x image_size RGB uint8 (0 = the dataset's own: mini_imagenet 84). Decoded once,
  # then read from $RAR_JAX_DATA_CACHE (default ~/.cache/rar_jax/data).
  c.image_size = 0
  # Image folders: auto (mini_imagenet: per_class, else given) | given (DIR/train and DIR/test
  # as they are) | per_class (merge DIR/{train,val,test}, cut each class's sorted files by
  # train_fraction: the paper's mini-ImageNet protocol)
  c.folder_split = "auto"
  c.train_fraction = 0.8  # folder_split=per_class: each class's share for training (paper: 0.8)
  c.num_tasks = 5
  c.samples_per_task = 0  # 0 = every training sample of the task's classes
  c.shuffle_classes = False  # class order per seed, else 0..C-1
  c.validation_fraction = 0.0  # held out of each class's training data (paper: 0.05)
  c.eval_split = "test"  # test | validation (for tuning)
  c.eval_protocol = "class"  # class (all logits) | task (the logits of the task's classes)
  # head (the model's output layer) | ncm (nearest class mean of the buffer's penultimate
  # features, the "NCM trick"; evaluation only, training unchanged)
  c.eval_classifier = "head"


def base_config() -> ConfigDict:
  c = ConfigDict()
  _data_and_stream_keys(c)
  # Model and optimiser.
  c.model = "mlp"  # mlp | resnet18_reduced
  c.learning_rate = 0.1
  # > 0: evaluate an exponential moving average of the weights (decay per update; a
  # temporal ensemble, Soutif-Cormerais et al. 2023); training is unchanged. 0 = off.
  c.ema_decay = 0.0
  c.batch_size = 10
  # float32 matmul/conv precision: default (TF32 on recent NVIDIA GPUs) | float32 | tensorfloat32 |
  # bfloat16 (jax.default_matmul_precision); recorded in metrics.json.
  c.matmul_precision = "default"
  # Method.
  # The methods of a run, comma-separated (one: "er_rar"): several run on the same streams.
  c.methods = "er_rar"
  c.num_seeds = 5
  c.seed = 0  # seeds seed, seed+1, ..., seed+num_seeds-1
  c.mem_size = DEFAULTS["mem_size"]
  c.batch_size_mem = DEFAULTS["batch_size_mem"]
  c.storage_policy = DEFAULTS["storage_policy"]  # reservoir | class_balanced
  # Batch norm in one loss's pass: group (statistics per row group: incoming, replay,
  # perturbed replay; the paper's code) | joint (over all its rows, as Avalanche's
  # concatenated minibatch). Models without batch norm ignore it.
  c.batch_norm_rows = DEFAULTS["batch_norm_rows"]
  c.buffer_update = DEFAULTS["buffer_update"]  # online | per_experience
  # None = the loss's replay rule: exclude the incoming labels (CE, the paper's
  # code), replay from the whole buffer (ACE).
  c.exclude_current_labels = config_dict.placeholder(bool)
  c.mir_candidates = DEFAULTS["mir_candidates"]
  # Updates per incoming batch, each with a fresh replay draw (paper: 1).
  c.replay_iters = DEFAULTS["replay_iters"]
  # ASER retrieval (the paper's code's knn / subsample / coop_size / aser_type).
  c.aser_k = DEFAULTS["aser_k"]
  c.aser_candidates = DEFAULTS["aser_candidates"]
  c.aser_coop_size = DEFAULTS["aser_coop_size"]
  c.aser_type = DEFAULTS["aser_type"]  # asvm | asv | neg_sv
  # RAR (names as in Avalanche's RARPlugin).
  c.beta_coef = DEFAULTS["beta_coef"]
  c.epsilon_fgsm = DEFAULTS["epsilon_fgsm"]
  c.alpha_fgsm = config_dict.placeholder(float)  # None = epsilon_fgsm / iter_fgsm
  c.iter_fgsm = DEFAULTS["iter_fgsm"]
  c.decay_factor_fgsm = DEFAULTS["decay_factor_fgsm"]
  c.opt_lr = config_dict.placeholder(float)  # look-ahead step; None = learning_rate
  c.attack_target = DEFAULTS["attack_target"]  # features (paper) | label (Avalanche)
  # lookahead (paper) | current (the paper's code after ASER)
  c.attack_params = DEFAULTS["attack_params"]
  c.feature_layer = DEFAULTS["feature_layer"]  # Avalanche's name_ext_layer
  c.mixup_alpha = DEFAULTS["mixup_alpha"]
  # RAR's (1 - beta_coef) clean term after MixUp: unmixed (the retrieved rows and
  # their labels, the paper's code) | mixed (the mixed rows and soft labels).
  c.clean_rows = DEFAULTS["clean_rows"]
  # Sweep: "KEY=V1,V2;KEY2=..." over numeric keys, all cells x seeds in one program.
  c.sweep = ""
  # Running.
  c.run_batching = "auto"  # auto | vmap | map: how runs share a device (docs/reproducibility.md)
  c.stream_loop = "auto"  # auto | scan | host: how a chunk's steps run (docs/execution.md)
  c.conv_impl = "auto"  # auto | xla | im2col: how conv nets convolve (docs/execution.md)
  c.log_every_steps = 100  # steps per compiled chunk between progress updates
  c.checkpoint_every_steps = 0  # 0 = only at task boundaries; else every N steps into a task
  #                                (a multiple of log_every_steps)
  c.keep_checkpoints = 2  # 0 = no checkpoints (no resume)
  c.overwrite = False  # start afresh, discarding the workdir's checkpoints
  c.plot = True  # accuracy.png, comparison.png
  c.rar_samples = 8  # replay samples shown in rar_samples.png (RAR methods; 0 = no picture)
  c.progress = True
  return c


def load_file(path: str) -> ConfigDict:
  """``get_config()`` of a config file (``configs/<name>.py``), as train.py's
  ``--config`` reads it; for scripts that build configs without flags."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  if spec is None or spec.loader is None or not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# Keys that change how a run is watched, not what it computes.
RUNTIME_KEYS = (
  "progress",
  "plot",
  "overwrite",
  "keep_checkpoints",
  "checkpoint_every_steps",
  "stream_loop",
  "rar_samples",
)


def method_names(config: ConfigDict) -> List[str]:
  """The methods of a run: ``config.methods``, comma-separated. One key, so an
  override on the command line can never be outvoted by another key."""
  return [m.strip() for m in config.methods.split(",") if m.strip()]


def method_config(config: ConfigDict, method: str) -> ConfigDict:
  """``config`` as one method's run sees it: its folder's config.json names
  that method alone."""
  return cell_config(config, {"methods": method})


# Config keys that are settings of a stage (`rar_jax.core.stages.from_method`
# routes each to the stages that take it) or of the structure (`ReplayConfig`).
STAGE_KEYS = (
  "mir_candidates",
  "aser_k",
  "aser_candidates",
  "aser_coop_size",
  "aser_type",
  "mixup_alpha",
  "beta_coef",
  "epsilon_fgsm",
  "alpha_fgsm",
  "iter_fgsm",
  "decay_factor_fgsm",
  "attack_target",
  "attack_params",
  "clean_rows",
)
# Config keys of the traced hyper-parameters (`Hyper`) besides the look-ahead rate.
HYPER_KEYS = (
  "beta_coef",
  "epsilon_fgsm",
  "alpha_fgsm",
  "iter_fgsm",
  "decay_factor_fgsm",
  "mixup_alpha",
)
STRUCTURE_KEYS = (
  "mem_size",
  "batch_size_mem",
  "exclude_current_labels",
  "feature_layer",
  "storage_policy",
  "batch_norm_rows",
  "buffer_update",
  "replay_iters",
)


def replay_parts(
  config: ConfigDict, method: str, num_classes: int
) -> Tuple[ReplayConfig, stages.Chain, Hyper]:
  """``method`` under ``config``: the `ReplayConfig` (structure), its chain of
  stages built from the config's keys, and the traced hyper-parameters those
  stages start from (the look-ahead rate ``opt_lr``, default ``learning_rate``)."""
  cfg, chain = stages.build_method(
    method, num_classes, **{k: config[k] for k in STAGE_KEYS + STRUCTURE_KEYS}
  )
  hyper = chain.hyper(config.learning_rate if config.opt_lr is None else config.opt_lr)
  return cfg, chain, hyper


def is_swept(config: ConfigDict, key: str) -> bool:
  """Whether ``config.sweep`` varies ``key`` (its cells then set their own)."""
  return any(key in o for o in sweep_lib.parse_sweep(config.sweep))


def averages_weights(config: ConfigDict) -> bool:
  """Whether the runs of ``config`` keep a moving average of their weights
  (``ema_decay`` > 0, or swept: a cell with decay 0 then evaluates the current weights)."""
  return config.ema_decay > 0 or is_swept(config, "ema_decay")


def optimizer(config: ConfigDict) -> optax.GradientTransformation:
  """The optimiser of ``config``'s runs (`make_optimizer`); sweeps set its
  injected hyper-parameters per run."""
  decay = config.ema_decay if averages_weights(config) else None
  return make_optimizer(config.learning_rate, decay)


def cell_config(config: ConfigDict, overrides) -> ConfigDict:
  """``config`` with one sweep cell's overrides applied."""
  c = ConfigDict(config.to_dict())
  c.update(overrides)
  return c


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
  _one_of(config, "model", models.MODELS)
  _one_of(config, "eval_split", ("test", "validation"))
  _one_of(config, "run_batching", ("auto",) + loop.BATCHINGS)
  _one_of(config, "conv_impl", ("auto",) + models.CONV_IMPLS)
  _one_of(config, "stream_loop", ("auto",) + loop.STREAM_LOOPS)
  _one_of(config, "eval_protocol", ("class", "task"))
  _one_of(config, "eval_classifier", evaluator_lib.EVAL_CLASSIFIERS)
  _one_of(config, "matmul_precision", MATMUL_PRECISIONS)
  _one_of(config, "aser_type", ASER_TYPES)
  _one_of(config, "attack_params", ATTACK_PARAMS)
  _one_of(config, "clean_rows", CLEAN_ROWS)
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
  ):
    _at_least(config, key, low)
  data_check.check_data_keys(config)
  if config.dataset in data_lib.DATASETS:  # custom data: data_check.validate_data, once listed
    data_check.check_num_tasks(config, data_lib.DATASETS[config.dataset][0])
  if not 0.0 <= config.validation_fraction < 1.0:
    raise ConfigError(
      f"config.validation_fraction={config.validation_fraction} is invalid: a number in [0, 1)"
    )
  _check_ema_decay(config.ema_decay, "config.ema_decay")
  if config.eval_split == "validation" and config.validation_fraction == 0:
    raise ConfigError("config.eval_split='validation' needs config.validation_fraction > 0")
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ConfigError(
      f"config.checkpoint_every_steps={config.checkpoint_every_steps} must be a "
      f"multiple of config.log_every_steps={config.log_every_steps}"
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
  module = models.create_model(config.model, num_classes)
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
