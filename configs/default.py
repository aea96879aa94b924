"""Offline default: scikit-learn's bundled 8x8 digits as 5 tasks of 2 classes, ER-RAR
next to ER, 10 seeds each, memory 100, the paper's MNIST values for RAR.

  python train.py --config configs/default.py

Time: about 20 s on 2 CPU cores (most of it start-up and compilation).
Expect: final average accuracy ER 0.859 ± 0.019, ER-RAR 0.876 ± 0.010 (mean ± 2SE over the
10 seeds), forgetting 0.129 / 0.095; identical on one CPU kind and core count.
"""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "digits"
  c.data_source = "embedded"
  c.num_tasks = 5
  c.methods = "er,er_rar"
  c.num_seeds = 10
  c.mem_size = 100
  c.batch_size_mem = 10
  c.beta_coef = 0.3
  c.epsilon_fgsm = 0.3
  c.alpha_fgsm = 0.075
  c.iter_fgsm = 5
  c.log_every_steps = 36
  return c
