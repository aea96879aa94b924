"""Online Split Fashion-MNIST: 5 tasks x 2 classes, 1000 samples per task,
MLP 784-400-400-10, SGD lr 0.1, minibatch 10, replay batch 10, memory 200.

Offline on Debian/Ubuntu with `apt-get install dataset-fashion-mnist`; TFDS
otherwise. RAR hyper-parameters: tuned on the 5% validation split
(`python bench/quality.py --only tune`, see BENCHMARKS.md); the paper's
Split-MNIST values were beta 0.3, eps 0.3, alpha 0.075, 5 steps.
"""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "fashion_mnist"
  c.data_source = "auto"
  c.num_tasks = 5
  c.samples_per_task = 1000
  c.validation_fraction = 0.05  # held out for tuning, as the paper does
  c.model = "mlp"
  c.methods = "er_rar"
  c.num_seeds = 10
  c.mem_size = 200
  c.batch_size_mem = 10
  c.beta_coef = 0.1
  c.epsilon_fgsm = 0.3
  c.alpha_fgsm = 0.06  # epsilon_fgsm / iter_fgsm
  c.iter_fgsm = 5
  return c
