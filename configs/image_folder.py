"""Your own image folder: DIR/train/<class>/<image> and DIR/test/<class>/<image>
(PNG or JPEG, any sizes), classes counted from the folder, each image resized
(shorter side) and centre-cropped to image_size, as num_tasks tasks.

  python train.py --config configs/image_folder.py --config.data_dir=DIR

Keys to set: image_size, num_tasks (must divide the class count), model
(resnet18_reduced needs image_size >= 25), folder_split=per_class to merge
DIR/{train,val,test} and cut each class by train_fraction. See docs/data.md.

With Fashion-MNIST written as such a folder (70000 PNGs, about 11 s):

  python -c "
  import gzip, os, numpy as np
  from PIL import Image
  d = '/usr/share/datasets/fashion-mnist/'
  for split, p in (('train', 'train'), ('test', 't10k')):
    x = np.frombuffer(gzip.open(d + p + '-images-idx3-ubyte.gz').read(), np.uint8, offset=16)
    y = np.frombuffer(gzip.open(d + p + '-labels-idx1-ubyte.gz').read(), np.uint8, offset=8)
    for i, (im, c) in enumerate(zip(x.reshape(-1, 28, 28), y)):
      os.makedirs(f'fashion_png/{split}/{c}', exist_ok=True)
      Image.fromarray(im).save(f'fashion_png/{split}/{c}/{i:05d}.png')
  "
  python train.py --config configs/image_folder.py --config.data_dir=fashion_png \
      --config.samples_per_task=1000

Time: about 17 minutes on 2 cores of an AMD EPYC (family 25), 2.5 GB peak memory: training
2.3 min for ER and 5.6 min for ER-RAR (the reduced ResNet-18 at 32x32x3, 3 seeds, 500 steps),
and about 47 s per evaluation of the 10000 test images after each task.
Expect: with that folder ER 0.671 ± 0.089, ER-RAR 0.672 ± 0.050 final average accuracy
(3 seeds: wide intervals); your own data has its own numbers."""

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
