"""Datasets as NumPy arrays, and class-incremental streams over them.

Sources: scikit-learn's embedded digits, MNIST-format IDX files, TFDS, an image
folder (`rar_jax.data.folder`) and an ``.npz`` of arrays (`rar_jax.data.arrays`);
`load` returns a `Dataset` (uint8 images stay uint8), `class_incremental` and
`make_streams` turn labelled arrays into every seed's task streams. This
package never imports the replay core, the runner, evaluation or the models.
"""

from rar_jax.data.arrays import (
  NPZ_KEYS,
  Dataset,
  describe_npz,
  finish,
  load_npz,
  to_unit_float,
  validate_arrays,
)
from rar_jax.data.catalog import CUSTOM, DATASET_NAMES, DATASETS, FOLDER_SPLITS, SOURCES
from rar_jax.data.folder import list_folder, load_folder
from rar_jax.data.loaders import (
  DEBIAN_FASHION_MNIST,
  IDX_FILES,
  describe,
  load,
  resolve_source,
)
from rar_jax.data.streams import (
  ClassIncremental,
  Streams,
  class_incremental,
  class_order,
  holdout_split,
  make_streams,
)
from rar_jax.data.tfds import TFDS_DOWNLOAD_HOST
from rar_jax.errors import DataError

__all__ = [
  "CUSTOM",
  "ClassIncremental",
  "DATASETS",
  "DATASET_NAMES",
  "DEBIAN_FASHION_MNIST",
  "DataError",
  "Dataset",
  "FOLDER_SPLITS",
  "IDX_FILES",
  "NPZ_KEYS",
  "SOURCES",
  "Streams",
  "TFDS_DOWNLOAD_HOST",
  "class_incremental",
  "class_order",
  "describe",
  "describe_npz",
  "finish",
  "holdout_split",
  "list_folder",
  "load",
  "load_folder",
  "load_npz",
  "make_streams",
  "resolve_source",
  "to_unit_float",
  "validate_arrays",
]
