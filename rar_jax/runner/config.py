"""The config of a run, in one place: every key with its default
(`base_config`), the allowed values, and what a config means for one method
(`method_config`, `replay_parts`, `cell_config`). `rar_jax.runner.validate`
checks a config against them before any work.

Configs in ``configs/`` start from `base_config()` and override keys.
"""

from __future__ import annotations

import importlib.util
import os
from typing import List, Tuple

import optax
from ml_collections import ConfigDict, config_dict

from rar_jax.core import stages
from rar_jax.core.defaults import DEFAULTS
from rar_jax.core.method import Hyper, ReplayConfig
from rar_jax.core.optim import make_optimizer
from rar_jax.data.blurry import STREAM_DEFAULTS
from rar_jax.errors import ConfigError
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
  c.num_tasks = 5  # tasks (segments) of the stream, each with num_classes / num_tasks classes
  c.samples_per_task = 0  # 0 = every training sample of the task's classes
  c.shuffle_classes = False  # class order per seed, else 0..C-1
  # class_incremental (sharp task boundaries) | blurry (i-Blurry-N-M: classes leak across
  # boundaries) | gaussian (each class's samples spread around its task's slot); docs/streams.md
  c.stream = "class_incremental"
  # stream=blurry: the share of each task's classes seen only in their own task (i-Blurry's
  # N/100); None = 0.5
  c.disjoint_class_fraction = config_dict.placeholder(float)
  # stream=blurry: the share of each segment's samples from blurry classes of other tasks
  # (i-Blurry's M/100); None = 0.1
  c.blurry_sample_fraction = config_dict.placeholder(float)
  # stream=gaussian: the standard deviation of a class's position in the stream, in units of one
  # task's length; None = 0.25
  c.boundary_width = config_dict.placeholder(float)
  c.validation_fraction = 0.0  # held out of each class's training data (paper: 0.05)
  c.eval_split = "test"  # test | validation (for tuning)
  c.eval_protocol = "class"  # class (all logits) | task (the logits of the task's classes)
  # head (the model's output layer) | ncm (nearest class mean of the buffer's penultimate
  # features, the "NCM trick"; evaluation only, training unchanged)
  c.eval_classifier = "head"
  # Continual evaluation (docs/continual.md): > 0 also evaluates every eval_every steps of
  # each task and at its last step, inside the compiled stream (AAA, WC-ACC, stability gap,
  # continual.png); 0 = off: after each task only.
  c.eval_every = 0
  # Continual evaluation's samples of each task's evaluation split, spread equally over its
  # classes: a fixed subset, the same for every method, seed and sweep cell; 0 = the whole split.
  c.eval_samples_per_task = 0
  # The range of the images as the model sees them (uint8 pixels are divided by 255), which
  # RAR clips perturbed rows to: None = the data's own ([0, 1] for every built-in source and
  # uint8 arrays; a float .npz outside [0, 1] its own [min, max]); a pair "(low, high)" for
  # standardised inputs, which must then lie inside it.
  c.data_range = config_dict.placeholder(tuple)


def base_config() -> ConfigDict:
  c = ConfigDict()
  _data_and_stream_keys(c)
  # Model and optimiser.
  # mlp | resnet18_reduced | an import path package.module:name (a Linen or NNX module class,
  # or a factory; docs/own_model.md), found on the Python path, the working directory first.
  c.model = "mlp"
  # The model's arguments, e.g. {"width": 64} (--config.model_kwargs='{"width": 64}');
  # num_classes is passed by the run where the model takes it.
  c.model_kwargs = {}
  c.learning_rate = 0.1  # SGD step size of every update
  # > 0: evaluate an exponential moving average of the weights (decay per update; a
  # temporal ensemble, Soutif-Cormerais et al. 2023); training is unchanged. 0 = off.
  c.ema_decay = 0.0
  c.batch_size = 10  # incoming minibatch size (the paper: 10)
  # float32 matmul/conv precision: default (TF32 on recent NVIDIA GPUs) | float32 = highest (full
  # float32) | tensorfloat32 = high | bfloat16 (jax.default_matmul_precision); recorded in
  # metrics.json.
  c.matmul_precision = "default"
  # Method.
  # The methods of a run, comma-separated (one: "er_rar"): several run on the same streams.
  c.methods = "er_rar"
  c.num_seeds = 5  # runs per method (and per sweep cell), trained side by side
  c.seed = 0  # seeds seed, seed+1, ..., seed+num_seeds-1
  c.mem_size = DEFAULTS["mem_size"]  # replay buffer capacity, in samples
  c.batch_size_mem = DEFAULTS["batch_size_mem"]  # replay batch drawn per update
  c.storage_policy = DEFAULTS["storage_policy"]  # reservoir | class_balanced
  # Batch norm in one loss's pass: group (statistics per row group: incoming, replay,
  # perturbed replay; the paper's code) | joint (over all its rows, as Avalanche's
  # concatenated minibatch). Models without batch norm ignore it.
  c.batch_norm_rows = DEFAULTS["batch_norm_rows"]
  c.buffer_update = DEFAULTS["buffer_update"]  # online | per_experience
  # None = the loss's replay rule: exclude the incoming labels (CE, the paper's
  # code), replay from the whole buffer (ACE).
  c.exclude_current_labels = config_dict.placeholder(bool)
  c.mir_candidates = DEFAULTS["mir_candidates"]  # MIR: buffer samples scored per update
  # Updates per incoming batch, each with a fresh replay draw (paper: 1).
  c.replay_iters = DEFAULTS["replay_iters"]
  # ASER retrieval.
  c.aser_k = DEFAULTS["aser_k"]  # ASER: neighbours K of the KNN Shapley values (paper's code: knn)
  c.aser_candidates = DEFAULTS["aser_candidates"]  # ASER: candidates drawn (subsample)
  c.aser_coop_size = DEFAULTS["aser_coop_size"]  # ASER: cooperative set, class-balanced (coop_size)
  c.aser_type = DEFAULTS["aser_type"]  # asvm | asv | neg_sv
  # RAR (Avalanche's names).
  # RAR: the replay loss is (1 - beta_coef) CE(clean replay) + beta_coef CE(perturbed replay)
  c.beta_coef = DEFAULTS["beta_coef"]
  c.epsilon_fgsm = DEFAULTS["epsilon_fgsm"]  # RAR: L-inf radius of the perturbation
  # RAR: MI-FGSM step; None = epsilon_fgsm / iter_fgsm (0.06 by default; the paper's Split-MNIST
  # line sets 0.075)
  c.alpha_fgsm = config_dict.placeholder(float)
  c.iter_fgsm = DEFAULTS["iter_fgsm"]  # RAR: MI-FGSM steps
  c.decay_factor_fgsm = DEFAULTS["decay_factor_fgsm"]  # RAR: MI-FGSM momentum decay
  c.opt_lr = config_dict.placeholder(float)  # look-ahead step; None = learning_rate
  c.attack_target = DEFAULTS["attack_target"]  # features (paper) | label (Avalanche)
  # lookahead (paper) | current (the paper's code after ASER)
  c.attack_params = DEFAULTS["attack_params"]
  # RAR's and ASER's feature space (Avalanche's name_ext_layer): a layer the model sows; mlp:
  # hidden0 | hidden1 | penultimate, resnet18_reduced: layer1 ... layer4 | penultimate
  c.feature_layer = DEFAULTS["feature_layer"]
  c.mixup_alpha = DEFAULTS["mixup_alpha"]  # MixUp: the Beta(alpha, alpha) of the mixing weights
  # RAR's (1 - beta_coef) clean term after MixUp: unmixed (the retrieved rows and
  # their labels, the paper's code) | mixed (the mixed rows and soft labels).
  c.clean_rows = DEFAULTS["clean_rows"]
  # Sweep: "KEY=V1,V2;KEY2=..." over numeric keys, all cells x seeds in one program.
  c.sweep = ""
  # Running.
  c.run_batching = "auto"  # auto | vmap | map: how runs share a device (docs/reproducibility.md)
  c.stream_loop = "auto"  # auto | scan | host: how a chunk's steps run (docs/execution.md)
  c.conv_impl = "auto"  # auto | xla | im2col: how conv nets convolve (docs/execution.md)
  # auto | default | eigen: the library behind XLA's CPU convolutions (docs/execution.md)
  c.cpu_conv_library = "auto"
  c.log_every_steps = 100  # steps per compiled chunk between progress updates
  c.checkpoint_every_steps = 0  # 0 = only at task boundaries; else every N steps into a task
  #                                (a multiple of log_every_steps; docs/running.md)
  c.keep_checkpoints = 2  # 0 = no checkpoints (no resume)
  c.overwrite = False  # start afresh, discarding the workdir's checkpoints
  c.plot = True  # accuracy.png, comparison.png
  c.rar_samples = 8  # replay samples shown in rar_samples.png (RAR methods; 0 = no picture)
  c.progress = True  # progress bar (terminal) or a line every 30 s (log) on stderr
  return c


STREAM_KEYS = ("disjoint_class_fraction", "blurry_sample_fraction", "boundary_width")


def stream_settings(config: ConfigDict) -> dict:
  """The settings of ``config.stream``: the config's values, the data package's
  defaults (`rar_jax.data.blurry.STREAM_DEFAULTS`) where None."""
  defaults = STREAM_DEFAULTS[config.stream]
  return {k: v if config[k] is None else config[k] for k, v in defaults.items()}


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
  config: ConfigDict, method: str, num_classes: int, data_range=DEFAULTS["data_range"]
) -> Tuple[ReplayConfig, stages.Chain, Hyper]:
  """``method`` under ``config``: the `ReplayConfig` (structure), its chain of
  stages built from the config's keys, and the traced hyper-parameters those
  stages start from (the look-ahead rate ``opt_lr``, default ``learning_rate``).
  ``data_range``: the dataset's, where ``config.data_range`` is None."""
  if config.data_range is not None:
    data_range = tuple(config.data_range)
  settings = {k: config[k] for k in STAGE_KEYS + STRUCTURE_KEYS}
  cfg, chain = stages.build_method(method, num_classes, data_range=data_range, **settings)
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
