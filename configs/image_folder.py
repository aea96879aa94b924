"""Your own image folder: DIR/train/<class>/<image> and DIR/test/<class>/<image>
(PNG or JPEG, any sizes), classes counted from the folder, each image resized
(shorter side) and centre-cropped to image_size, as num_tasks tasks.

  python train.py --config configs/image_folder.py --config.data_dir=DIR

Keys to set: image_size, num_tasks (must divide the class count), model
(resnet18_reduced needs image_size >= 25), folder_split=per_class to merge
DIR/{train,val,test} and cut each class by train_fraction. See docs/data.md."""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "custom"
  c.data_source = "folder"
  c.image_size = 32
  c.folder_split = "given"
  c.num_tasks = 5
  c.model = "resnet18_reduced"
  c.methods = "er,er_rar"
  c.num_seeds = 3
  c.mem_size = 200
  c.beta_coef = 0.5
  c.epsilon_fgsm = 0.0314
  c.alpha_fgsm = 0.0314
  c.iter_fgsm = 2
  return c
