"""Split-MNIST as in the paper: 5 tasks x 2 classes, 1000 samples per task, MLP 2x400,
memory 200, MIR-RAR with beta 0.3, eps 0.3, alpha 0.075, 5 steps, 20 seeds.

  python train.py --config configs/split_mnist.py --config.data_dir=~/tensorflow_datasets

Data through TFDS (`pip install -e '.[tfds]'`; `tfds build mnist` on a machine with
internet), or IDX files with --config.data_source=idx --config.data_dir=DIR.
Time: about 2 minutes on 2 CPU cores once the data are prepared.
Expect: not measured in this repository's results (MNIST needs a download); on Split
Fashion-MNIST the same MLP setting gives MIR-RAR 0.661 ± 0.023 with RAR's keys tuned there
(docs/results.md).
"""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "mnist"
  c.num_tasks = 5
  c.samples_per_task = 1000
  c.model = "mlp"
  c.methods = "mir_rar"
  c.num_seeds = 20
  c.mem_size = 200
  c.beta_coef = 0.3
  c.epsilon_fgsm = 0.3
  c.alpha_fgsm = 0.075
  c.iter_fgsm = 5
  return c
