"""`load` and `describe`: a config's dataset and source to a `Dataset`, and
the embedded digits and MNIST-format IDX sources. The TFDS, image-folder and
.npz sources live in their own modules."""

from __future__ import annotations

import gzip
import os
import struct as _struct
import zlib
from typing import Optional, Tuple

import numpy as np

from rar_jax.data import folder as folder_lib
from rar_jax.data.arrays import Dataset, describe_npz, finish, load_npz
from rar_jax.data.catalog import CUSTOM, DATASETS, FOLDER_SPLITS, SOURCES
from rar_jax.data.tfds import load_tfds
from rar_jax.errors import DataError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
  "train_x": "train-images-idx3-ubyte",
  "train_y": "train-labels-idx1-ubyte",
  "test_x": "t10k-images-idx3-ubyte",
  "test_y": "t10k-labels-idx1-ubyte",
}


def _load_digits() -> Dataset:
  from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

  d = load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]
  y = d.target.astype(np.int32)
  # A fixed 80/20 split that keeps the class proportions.
  test = np.zeros(len(y), bool)
  for c in range(10):
    idx = np.flatnonzero(y == c)
    test[idx[::5]] = True
  return finish("digits", "embedded", x[~test], y[~test], x[test], y[test], 10)


def _read_idx(path: str) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:  # a cut-off or damaged .gz, an unreadable file
    raise DataError(
      f"{path}: unreadable ({type(e).__name__}: {e}); the file is truncated or "
      "corrupt, fetch it again"
    ) from None
  if len(raw) < 4:
    raise DataError(f"{path}: not an IDX file (too short)")
  zero, dtype_code, ndim = _struct.unpack(">HBB", raw[:4])
  if zero != 0 or dtype_code != 0x08:
    raise DataError(f"{path}: not an unsigned-byte IDX file")
  dims = _struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(dims)):
    raise DataError(f"{path}: truncated ({data.size} values for shape {dims})")
  return data.reshape(dims)


def _find_idx(data_dir: str, stem: str) -> Optional[str]:
  for candidate in (stem, stem + ".gz"):
    path = os.path.join(data_dir, candidate)
    if os.path.exists(path):
      return path
  return None


def _load_idx(name: str, data_dir: str) -> Dataset:
  paths = {k: _find_idx(data_dir, stem) for k, stem in IDX_FILES.items()}
  missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
  if missing:
    hint = " (on Debian: apt-get install dataset-fashion-mnist)" if name == "fashion_mnist" else ""
    raise DataError(
      f"{name}: IDX files {missing} (optionally .gz) not found in "
      f"{data_dir!r}; put the four MNIST-format files there{hint}, or use "
      "--config.data_source=tfds"
    )
  arrays = {k: _read_idx(p) for k, p in paths.items() if p is not None}
  return finish(
    name,
    "idx",
    arrays["train_x"][..., None],
    arrays["train_y"],
    arrays["test_x"][..., None],
    arrays["test_y"],
    DATASETS[name][0],
  )


def resolve_source(name: str, source: str, data_dir: Optional[str]) -> str:
  """The source ``auto`` stands for, after checking ``name`` and ``source``
  go together; folder and .npz sources need ``data_dir``."""
  if name not in DATASETS and name != CUSTOM:
    raise DataError(f"dataset={name!r} is unknown; known: {tuple(DATASETS) + (CUSTOM,)}")
  if source not in SOURCES:
    raise DataError(f"data_source={source!r} is unknown; known: {SOURCES}")
  if name == CUSTOM:
    if source == "auto" and data_dir:
      source = "npz" if data_dir.endswith(".npz") or os.path.isfile(data_dir) else "folder"
    if source not in ("folder", "npz"):
      raise DataError(
        "dataset='custom' reads your data: data_source='folder' (an image folder) or "
        "'npz' (an .npz of arrays), with --config.data_dir=DIR_OR_FILE"
      )
  elif name == "mini_imagenet":
    if source not in ("auto", "folder"):
      raise DataError(
        "mini_imagenet is read from its image folder (DIR/{train,val,test}/<class>/"
        "<image>); use data_source='folder' or 'auto'"
      )
    source = "folder"
  elif source in ("folder", "npz"):
    raise DataError(
      f"data_source={source!r} reads dataset='custom' (classes from the data) or "
      f"'mini_imagenet'; {name} uses 'auto', 'idx' or 'tfds'"
    )
  if source in ("folder", "npz") and not data_dir:
    what = "an image folder" if source == "folder" else "an .npz file"
    raise DataError(f"data_source={source!r} needs --config.data_dir= {what}")
  return source


def _folder_split(name: str, folder_split: str) -> str:
  if folder_split not in FOLDER_SPLITS:
    raise DataError(f"folder_split={folder_split!r} is unknown; known: {FOLDER_SPLITS}")
  if name == "mini_imagenet" and folder_split == "given":
    raise DataError(
      "mini_imagenet's split folders hold different classes: it uses "
      "folder_split='per_class' (the paper's protocol) or 'auto'"
    )
  if folder_split == "auto":
    return "per_class" if name == "mini_imagenet" else "given"
  return folder_split


def describe(
  name: str,
  source: str = "auto",
  data_dir: Optional[str] = None,
  image_size: int = 0,
  folder_split: str = "auto",
) -> Tuple[int, Tuple[int, ...]]:
  """``(num_classes, image shape)`` of what `load` would return, from the
  catalogue or, for folders and .npz files, from their listing and headers
  (seconds, no decoding); raises a one-line DataError for unusable data."""
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
  source = resolve_source(name, source, data_dir)
  if source == "npz":
    assert data_dir
    return describe_npz(data_dir)
  if source == "folder":
    assert data_dir
    size = image_size or (DATASETS[name][1][0] if name in DATASETS else 0)
    listing = folder_lib.list_folder(data_dir, _folder_split(name, folder_split))
    _check_classes(name, data_dir, len(listing.classes))
    return len(listing.classes), folder_lib.image_shape(size)
  return DATASETS[name]


def _check_classes(name: str, data_dir: str, num_classes: int) -> None:
  if name in DATASETS and num_classes != DATASETS[name][0]:
    raise DataError(
      f"{data_dir}: {name} has {DATASETS[name][0]} classes, the folder holds {num_classes}"
    )


def load(
  name: str,
  source: str = "auto",
  data_dir: Optional[str] = None,
  *,
  image_size: int = 0,
  folder_split: str = "auto",
  train_fraction: float = 0.8,
  progress: bool = False,
  data_range=None,
) -> Dataset:
  """Loads ``name`` from ``source``. ``data_range``: the range float arrays
  (.npz) must lie in; None: [0, 1], or their own range if they leave it.

  ``auto``: digits -> embedded; fashion_mnist -> IDX files in ``data_dir`` (or
  Debian's ``/usr/share/datasets/fashion-mnist``) when present, TFDS otherwise;
  mnist -> IDX files when ``data_dir`` holds them, TFDS otherwise; CIFAR -> TFDS;
  mini_imagenet -> its image folder; custom -> an .npz file or an image folder
  (``data_dir``). Folders: images resized and centre-cropped to ``image_size``
  (0: the dataset's own), train/test as ``folder_split`` says (`rar_jax.data.folder`).
  """
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
  source = resolve_source(name, source, data_dir)
  if source == "npz":
    assert data_dir
    return load_npz(name, data_dir, data_range=data_range)
  if source == "folder":
    assert data_dir
    size = image_size or (DATASETS[name][1][0] if name in DATASETS else 0)
    split = _folder_split(name, folder_split)
    _check_classes(name, data_dir, len(folder_lib.list_folder(data_dir, split).classes))
    arrays = folder_lib.load_folder(data_dir, size, split, train_fraction, progress)
    return finish(name, "folder", *arrays)
  if name == "digits":
    if source not in ("auto", "embedded"):
      raise DataError("digits ships with scikit-learn; use data_source='embedded'")
    return _load_digits()
  if source == "embedded":
    raise DataError(f"only 'digits' is embedded; {name} needs data_source 'idx' or 'tfds'")
  idx_dir = data_dir or (DEBIAN_FASHION_MNIST if name == "fashion_mnist" else None)
  if source == "idx":
    if name.startswith("cifar"):
      raise DataError(f"{name} is not distributed as IDX files; use data_source='tfds'")
    if idx_dir is None:
      raise DataError(f"{name}: data_source='idx' needs --config.data_dir=DIR with the IDX files")
    return _load_idx(name, idx_dir)
  if (
    source == "auto"
    and idx_dir
    and not name.startswith("cifar")
    and _find_idx(idx_dir, IDX_FILES["train_x"])
  ):
    return _load_idx(name, idx_dir)
  return load_tfds(name, data_dir)
