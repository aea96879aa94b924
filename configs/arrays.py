"""Arrays from any pipeline: one .npz with x_train, y_train, x_test, y_test
(images [N, H, W, C] uint8 or float in [0, 1], labels 0..C-1), as num_tasks
tasks of C / num_tasks classes.

  python train.py --config configs/arrays.py --config.data_dir=FILE.npz

The model must suit the images (mlp for any size; resnet18_reduced for
H, W >= 25). From Python: rar_jax.data.class_incremental. See docs/data.md."""

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
