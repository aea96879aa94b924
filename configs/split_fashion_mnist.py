"""Online Split Fashion-MNIST: 5 tasks x 2 classes, 1000 samples per task,
MLP 784-400-400-10, SGD lr 0.1, minibatch 10, replay batch 10, memory 200, 10 seeds.

  python train.py --config configs/split_fashion_mnist.py --config.methods=er,er_rar

Data: offline on Debian/Ubuntu with `apt-get install dataset-fashion-mnist`; TFDS
otherwise. RAR's keys (beta 0.1, epsilon 0.3, alpha 0.06, 5 steps) were tuned on the 5%
validation split (`python bench/quality.py --only tune`); the paper's Split-MNIST values
were beta 0.3, eps 0.3, alpha 0.075, 5 steps.
Time: about 1 minute on 2 CPU cores for both methods.
Expect: ER about 0.70, ER-RAR about 0.71 (20 seeds: ER 0.697 ± 0.013, ER-RAR 0.714 ±
0.010, paired +0.017 ± 0.012; docs/results.md). `--config.learning_rate=0.05` (tuned on
validation) lifts both: ER 0.719 ± 0.011, ER-RAR 0.725 ± 0.010.
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
