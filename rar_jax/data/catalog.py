"""The names a config can give: datasets, sources and folder protocols."""

DATASETS = {  # name -> (num_classes, image shape)
  "digits": (10, (8, 8, 1)),
  "mnist": (10, (28, 28, 1)),
  "fashion_mnist": (10, (28, 28, 1)),
  "cifar10": (10, (32, 32, 3)),
  "cifar100": (100, (32, 32, 3)),
  # The paper's Split mini-ImageNet: an image folder, merged and cut 80/20 per class.
  "mini_imagenet": (100, (84, 84, 3)),
}
# The user's own data: classes and image shape come from the folder or the .npz.
CUSTOM = "custom"
DATASET_NAMES = tuple(DATASETS) + (CUSTOM,)
SOURCES = ("auto", "embedded", "idx", "tfds", "folder", "npz")
# How a folder's split folders become train and test (rar_jax.data.folder).
FOLDER_SPLITS = ("auto", "given", "per_class")
