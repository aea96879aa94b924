"""Split-CIFAR100 as in the paper: 20 tasks x 5 classes, every training image, reduced
ResNet-18 (nf=20), memory 1000 (10 per class), MIR-RAR with beta 0.4 (Avalanche's comment
for CIFAR-100), eps = alpha = 0.0314, 2 steps, 15 seeds.

  python train.py --config configs/split_cifar100.py --config.num_seeds=3

Data through TFDS (`pip install -e '.[tfds]'`; `tfds build cifar100` on a machine with
internet, then --config.data_dir=DIR).
Time: roughly 30-60 minutes per seed on 2 CPU cores (5000 MIR-RAR steps of a 32x32x3
ResNet, not measured end to end); a GPU is the place for 15 seeds.
Expect: not measured in this repository's results.
"""

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
