"""Arrays from any pipeline: one .npz with x_train, y_train, x_test, y_test
(images [N, H, W, C] uint8 or float in [0, 1], labels 0..C-1), as num_tasks
tasks of C / num_tasks classes.

  python train.py --config configs/arrays.py --config.data_dir=FILE.npz

The model must suit the images (mlp for any size; resnet18_reduced for
H, W >= 25). From Python: rar_jax.data.class_incremental. See docs/data.md.

With Fashion-MNIST written as such a file (every training sample, 1200 steps per task):

  python -c "import gzip, numpy as np; np.savez('fashion.npz', **{k: np.frombuffer(gzip.open(
    '/usr/share/datasets/fashion-mnist/' + f).read(), np.uint8, offset=o).reshape(s) for k, f, o, s
    in [('x_train', 'train-images-idx3-ubyte.gz', 16, (-1, 28, 28, 1)), ('y_train',
    'train-labels-idx1-ubyte.gz', 8, (-1,)), ('x_test', 't10k-images-idx3-ubyte.gz', 16,
    (-1, 28, 28, 1)), ('y_test', 't10k-labels-idx1-ubyte.gz', 8, (-1,))]})"
  python train.py --config configs/arrays.py --config.data_dir=fashion.npz

Time: about 1.5 minutes on 2 cores of an AMD EPYC (family 25) for both methods
(training 17 s for ER, 67 s for ER-RAR).
Expect: with that file (3 seeds) ER 0.716 ± 0.029, ER-RAR 0.738 ± 0.017 final
average accuracy; your own data has its own numbers."""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "custom"
  c.data_source = "npz"
  c.num_tasks = 5
  c.model = "mlp"
  c.methods = "er,er_rar"
  c.num_seeds = 3
  c.mem_size = 200
  return c
