"""Split-CIFAR100 as in the paper: 20 tasks x 5 classes, reduced ResNet-18
(nf=20), memory 1000 (10 per class), beta 0.4 (Avalanche's comment for
CIFAR-100), eps = alpha = 0.0314, 2 steps."""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "cifar100"
  c.num_tasks = 20
  c.model = "resnet18_reduced"
  c.methods = "mir_rar"
  c.num_seeds = 15
  c.mem_size = 1000
  c.beta_coef = 0.4
  c.epsilon_fgsm = 0.0314
  c.alpha_fgsm = 0.0314
  c.iter_fgsm = 2
  return c
