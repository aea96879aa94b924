"""Split mini-ImageNet as in the paper's code (RAR-CL data.py, get_miniimagenet):
DIR/{train,val,test}/<class>/<image> merged (100 classes x 600 images), each
class cut 80/20 into train/test in sorted file order, images resized (shorter
side 84) and centre-cropped to 84x84, 20 tasks x 5 classes in order of first
appearance; reduced ResNet-18 (nf=20). RAR-CL's README gives commands for
Split CIFAR-10 and Split MNIST only: the CIFAR values are used, as in
split_cifar100.py (also 20 tasks x 5 classes): MIR-RAR, lr 0.1, batch 10 + 10
replayed, memory 1000, beta 0.4, eps = alpha = 0.0314 (8/255), 2 attack steps.

  python train.py --config configs/split_mini_imagenet.py --config.data_dir=DIR

The first run decodes the 60,000 images (12 s on 2 cores of an Intel Xeon,
`python bench/folder_decode.py`; docs/data.md) and caches them as uint8 (1.2 GB)
in $RAR_JAX_DATA_CACHE (default ~/.cache/rar_jax/data); later runs read the
cache in about a second."""

from rar_jax.runner.config import base_config


def get_config():
  c = base_config()
  c.dataset = "mini_imagenet"
  c.data_source = "folder"
  c.folder_split = "per_class"
  c.train_fraction = 0.8
  c.image_size = 84
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
