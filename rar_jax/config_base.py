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
  c.eval_protocol = "class"  # class (all logits) | task (the logits of the task's classes)
  # Model and optimiser.
  c.model = "mlp"  # mlp | resnet18_reduced
  c.learning_rate = 0.1
  c.batch_size = 10
  # float32 matmul/conv precision: default (TF32 on recent NVIDIA GPUs) | float32 | tensorfloat32 |
  # bfloat16 (jax.default_matmul_precision); recorded in metrics.json.
  c.matmul_precision = "default"
  # Method.
  # The methods of a run, comma-separated (one: "er_rar"): several run on the same streams.
  c.methods = "er_rar"
  c.num_seeds = 5
  c.seed = 0  # seeds seed, seed+1, ..., seed+num_seeds-1
  c.mem_size = 200
  c.batch_size_mem = 10
  c.storage_policy = "reservoir"  # reservoir | class_balanced
  c.buffer_update = "online"  # online | per_experience
  # None = the loss's replay rule: exclude the incoming labels (CE, the paper's
  # code), replay from the whole buffer (ACE).
  c.exclude_current_labels = config_dict.placeholder(bool)
  c.mir_candidates = 50
  c.replay_iters = 1  # updates per incoming batch, each with a fresh replay draw (paper: 1)
  # ASER retrieval (the paper's code's knn / subsample / coop_size / aser_type).
  c.aser_k = 10
  c.aser_candidates = 50
  c.aser_coop_size = 100
  c.aser_type = "asvm"  # asvm | asv | neg_sv
  # RAR (names as in Avalanche's RARPlugin).
  c.beta_coef = 0.3
  c.epsilon_fgsm = 0.3
  c.alpha_fgsm = config_dict.placeholder(float)  # None = epsilon_fgsm / iter_fgsm
  c.iter_fgsm = 5
  c.decay_factor_fgsm = 1.0
  c.opt_lr = config_dict.placeholder(float)  # look-ahead step; None = learning_rate
  c.attack_target = "features"  # features (paper) | label (Avalanche)
  c.attack_params = "lookahead"  # lookahead (paper) | current (the paper's code after ASER)
  c.feature_layer = "penultimate"  # Avalanche's name_ext_layer
  c.mixup_alpha = 1.0
  # Sweep: "KEY=V1,V2;KEY2=..." over numeric keys, all cells x seeds in one program.
  c.sweep = ""
  # Running.
  c.run_batching = "auto"  # auto | vmap | map: how runs share a device (README, Reproducibility)
  c.stream_loop = "auto"  # auto | scan | host: how a chunk's steps run (README, Execution)
  c.conv_impl = "auto"  # auto | xla | im2col: how conv nets convolve (README, Execution)
  c.log_every_steps = 100  # steps per compiled chunk between progress updates
  c.checkpoint_every_steps = 0  # 0 = only at task boundaries; else every N steps into a task
  #                                (a multiple of log_every_steps)
  c.keep_checkpoints = 2  # 0 = no checkpoints (no resume)
  c.overwrite = False  # start afresh, discarding the workdir's checkpoints
  c.plot = True
  c.progress = True
  return c


# Keys that change how a run is watched, not what it computes.
RUNTIME_KEYS = ("progress", "plot", "overwrite", "keep_checkpoints", "checkpoint_every_steps",
                "stream_loop")
