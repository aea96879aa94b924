"""Every config key, with its default. Configs in ``configs/`` start from
`base_config()` and override; `rar_jax.experiment.validate_config` rejects keys
not listed here, wrong types and out-of-range values before any work."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Data and stream.
  c.dataset = "digits"  # digits | mnist | fashion_mnist | cifar10 | cifar100
  c.data_source = "auto"  # auto | embedded | idx | tfds
  c.data_dir = config_dict.placeholder(str)  # IDX folder or TFDS data_dir
  c.num_tasks = 5
  c.samples_per_task = 0  # 0 = every training sample of the task's classes
  c.shuffle_classes = False  # class order per seed, else 0..C-1
  c.validation_fraction = 0.0  # held out of each class's training data (paper: 0.05)
  c.eval_split = "test"  # test | validation (for tuning)
  # Model and optimiser.
  c.model = "mlp"  # mlp | resnet18_reduced
  c.learning_rate = 0.1
  c.batch_size = 10
  # Method.
  c.method = "er_rar"
  c.methods = ""  # comma-separated: run several methods on the same streams
  c.num_seeds = 5
  c.seed = 0  # seeds seed, seed+1, ..., seed+num_seeds-1
  c.mem_size = 200
  c.batch_size_mem = 10
  c.storage_policy = "reservoir"  # reservoir | class_balanced
  c.buffer_update = "online"  # online | per_experience
  c.exclude_current_labels = True
  c.mir_candidates = 50
  # RAR (names as in Avalanche's RARPlugin).
  c.beta_coef = 0.3
  c.epsilon_fgsm = 0.3
  c.alpha_fgsm = config_dict.placeholder(float)  # None = epsilon_fgsm / iter_fgsm
  c.iter_fgsm = 5
  c.decay_factor_fgsm = 1.0
  c.opt_lr = config_dict.placeholder(float)  # look-ahead step; None = learning_rate
  c.attack_target = "features"  # features (paper) | label (Avalanche)
  c.feature_layer = "penultimate"  # Avalanche's name_ext_layer
  c.mixup_alpha = 1.0
  # Sweep: "KEY=V1,V2;KEY2=..." over numeric keys, all cells x seeds in one program.
  c.sweep = ""
  # Running.
  c.run_batching = "auto"  # auto | vmap | map: how runs share a device (README, Reproducibility)
  c.log_every_steps = 100  # steps per compiled chunk between progress updates
  c.checkpoint_every_steps = 0  # 0 = only at task boundaries; else every N steps into a task
  #                                (a multiple of log_every_steps)
  c.keep_checkpoints = 2  # 0 = no checkpoints (no resume)
  c.overwrite = False  # start afresh, discarding the workdir's checkpoints
  c.plot = True
  c.progress = True
  return c


# Keys that change how a run is watched, not what it computes.
RUNTIME_KEYS = ("progress", "plot", "overwrite", "keep_checkpoints", "checkpoint_every_steps")
