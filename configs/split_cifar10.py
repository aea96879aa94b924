"""Split-CIFAR10 as in the paper: 5 tasks x 2 classes, reduced ResNet-18
(nf=20), memory 200, MIR-RAR with beta 0.5, eps = alpha = 0.0314, 2 steps
(memory 500: beta 0.1; 1000: Avalanche's comment gives 0.075)."""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "cifar10"
  c.num_tasks = 5
  c.model = "resnet18_reduced"
  c.methods = "mir_rar"
  c.num_seeds = 15
  c.mem_size = 200
  c.beta_coef = 0.5
  c.epsilon_fgsm = 0.0314
  c.alpha_fgsm = 0.0314
  c.iter_fgsm = 2
  return c
