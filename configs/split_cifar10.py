"""Split-CIFAR10 as in the paper: 5 tasks x 2 classes, every training image, reduced
ResNet-18 (nf=20), memory 200, MIR-RAR with beta 0.5, eps = alpha = 0.0314, 2 steps, 15
seeds (memory 500: beta 0.1; 1000: Avalanche's comment gives 0.075).

  python train.py --config configs/split_cifar10.py --config.num_seeds=3

Data through TFDS (`pip install -e '.[tfds]'`; `tfds build cifar10` on a machine with
internet, then --config.data_dir=DIR).
Time: roughly 30-60 minutes per seed on 2 CPU cores (5000 MIR-RAR steps of a 32x32x3
ResNet, not measured end to end); a GPU is the place for 15 seeds.
Expect: not measured in this repository's results. A third-party report (Avalanche pull
request 1424, reduced ResNet-18) gives ER 32.76 ± 4.03 and ER+RAR 37.62 ± 2.46 at memory
200 (percent).
"""

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
