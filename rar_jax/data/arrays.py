"""Datasets as arrays: the `Dataset` every source returns, its checks, and
the ``.npz`` source (``x_train, y_train, x_test, y_test`` from any pipeline).

Images are ``[N, H, W, C]``: uint8 as files store them (a quarter of the
memory), or float32 (in [0, 1], or in the dataset's own ``data_range``);
`to_unit_float` gives the float32 the models and the attack use (uint8 pixels
divided by 255). Labels are int32.
"""

from __future__ import annotations

import dataclasses
import zipfile
from typing import Dict, Tuple

import numpy as np

from rar_jax.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  source: str
  # The range of the images as the step sees them (uint8 divided by 255): what
  # RAR clips perturbed rows to unless config.data_range says otherwise.
  data_range: Tuple[float, float] = (0.0, 1.0)


UNIT_RANGE = (0.0, 1.0)


def data_range_of(*xs: np.ndarray) -> Tuple[float, float]:
  """The range images lie in as the step sees them: [0, 1] for uint8 pixels
  (scaled) and for floats inside it; otherwise the floats' own [min, max]
  (standardised inputs, say), over all of ``xs``."""
  floats = [x for x in xs if x.dtype != np.uint8 and x.size]
  if not floats:
    return UNIT_RANGE
  low = min(float(np.min(x)) for x in floats)
  high = max(float(np.max(x)) for x in floats)
  if not (np.isfinite(low) and np.isfinite(high)):
    return UNIT_RANGE  # validate_arrays names the NaN/Inf
  return UNIT_RANGE if low >= 0.0 and high <= 1.0 else (low, high)


def to_unit_float(x: np.ndarray) -> np.ndarray:
  """float32 images in [0, 1] (uint8 pixels are divided by 255), 64-byte
  aligned: XLA's CPU client then uses them in place (``jax.device_put``
  without a copy), so a dataset is in memory once, not twice. Treat the
  result as read-only once it is on a device."""
  x = np.asarray(x)
  if x.dtype == np.float32 and x.ctypes.data % _ALIGN == 0:
    return x
  out = _aligned_empty(x.shape, np.float32)
  out[...] = x
  if x.dtype == np.uint8:
    out /= np.float32(255.0)  # in place: the same float32 division as x / 255.0
  return out


_ALIGN = 64  # XLA:CPU's minimum alignment for using a host buffer in place


def _aligned_empty(shape, dtype) -> np.ndarray:
  size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
  raw = np.empty(size + _ALIGN, np.uint8)
  start = -raw.ctypes.data % _ALIGN
  return raw[start : start + size].view(dtype).reshape(shape)


def validate_arrays(
  name: str,
  x: np.ndarray,
  y: np.ndarray,
  num_classes: int,
  data_range: Tuple[float, float] = UNIT_RANGE,
) -> None:
  """Rejects data the step cannot learn from sensibly, with the reason: float
  images must be finite and inside ``data_range``."""
  if x.ndim != 4:
    raise DataError(f"{name}: images must be [N, H, W, C], got shape {x.shape}")
  if len(x) != len(y) or len(x) == 0:
    raise DataError(f"{name}: {len(x)} images and {len(y)} labels (need equal, non-zero)")
  if len(y) and (y.min() < 0 or y.max() >= num_classes):
    raise DataError(f"{name}: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
  if x.dtype == np.uint8:
    return  # 0..255 pixels: finite and in range by construction
  if not np.all(np.isfinite(x)):
    raise DataError(f"{name}: images contain NaN or Inf")
  lo, hi = float(x.min()), float(x.max())
  if lo < data_range[0] or hi > data_range[1]:
    raise DataError(
      f"{name}: pixel values must lie in data_range={tuple(data_range)} (the attack clips "
      f"there), got [{lo}, {hi}]"
    )


def finish(
  name, source, train_x, train_y, test_x, test_y, num_classes: int, data_range=None
) -> Dataset:
  """A checked `Dataset`: uint8 images stay uint8, others become float32.
  ``data_range`` None: the data's own (`data_range_of`)."""
  keep = lambda a: a if a.dtype == np.uint8 else np.asarray(a, np.float32)
  train_x, test_x = keep(np.asarray(train_x)), keep(np.asarray(test_x))
  train_y, test_y = (np.asarray(a, np.int32) for a in (train_y, test_y))
  if data_range is None:
    data_range = data_range_of(train_x, test_x)
  data_range = (float(data_range[0]), float(data_range[1]))
  validate_arrays(f"{name} train", train_x, train_y, num_classes, data_range)
  validate_arrays(f"{name} test", test_x, test_y, num_classes, data_range)
  return Dataset(name, train_x, train_y, test_x, test_y, num_classes, source, data_range)


# ---------------------------------------------------------------- .npz


def _npz_members(path: str) -> Dict[str, str]:
  """``{key: member name}`` of the four arrays, or a one-line DataError."""
  try:
    with zipfile.ZipFile(path) as z:
      names = {n[: -len(".npy")]: n for n in z.namelist() if n.endswith(".npy")}
  except FileNotFoundError:
    raise DataError(f"{path}: no such file (data_source='npz' needs an .npz file)") from None
  except (OSError, zipfile.BadZipFile) as e:
    raise DataError(f"{path}: not a readable .npz file ({e})") from None
  missing = [k for k in NPZ_KEYS if k not in names]
  if missing:
    raise DataError(
      f"{path}: missing arrays {missing}; an .npz for rar_jax holds {list(NPZ_KEYS)} "
      f"(found {sorted(names)})"
    )
  return names


def _npz_header(path: str, member: str) -> Tuple[Tuple[int, ...], np.dtype]:
  with zipfile.ZipFile(path) as z, z.open(member) as f:
    try:
      version = np.lib.format.read_magic(f)
      shape, _, dtype = (
        np.lib.format.read_array_header_1_0(f)
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0(f)
      )
    except ValueError as e:
      raise DataError(f"{path}: {member} is not a NumPy array ({e})") from None
  return shape, dtype


def _npz_labels(path: str, key: str) -> np.ndarray:
  try:
    with np.load(path, allow_pickle=False) as f:
      y = f[key]
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f"{path}: {key} is unreadable ({e})") from None
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise DataError(f"{path}: {key} must be 1-D integer labels, got {y.dtype} {y.shape}")
  return y


def describe_npz(path: str, num_classes: int = 0) -> Tuple[int, Tuple[int, ...]]:
  """``(num_classes, image shape)`` of an .npz, reading only the labels and the
  image headers; every inconsistency is a one-line DataError naming ``path``.
  ``num_classes`` 0: the distinct training labels, which must be 0..C-1."""
  members = _npz_members(path)
  shapes = {}
  for split in ("train", "test"):
    shape, dtype = _npz_header(path, members[f"x_{split}"])
    if len(shape) not in (3, 4):
      raise DataError(f"{path}: x_{split} must be [N, H, W, C] (or [N, H, W]), got {shape}")
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
      raise DataError(f"{path}: x_{split} must be uint8 or float in [0, 1], got {dtype}")
    y = _npz_labels(path, f"y_{split}")
    if len(y) != shape[0] or not len(y):
      raise DataError(
        f"{path}: x_{split} has {shape[0]} images and y_{split} {len(y)} labels "
        "(need equal, non-zero)"
      )
    shapes[split] = tuple(shape[1:]) + ((1,) if len(shape) == 3 else ())
    if split == "train" and not num_classes:
      num_classes = len(np.unique(y))
    if y.min() < 0 or y.max() >= num_classes:
      raise DataError(
        f"{path}: y_{split} labels must lie in [0, {num_classes}) (the training set's "
        f"{num_classes} classes, numbered from 0), got [{y.min()}, {y.max()}]"
      )
  if shapes["train"] != shapes["test"]:
    raise DataError(f"{path}: train images {shapes['train']} and test {shapes['test']} differ")
  return num_classes, shapes["train"]


def load_npz(name: str, path: str, num_classes: int = 0, data_range=None) -> Dataset:
  """The arrays of ``path`` as a `Dataset` (uint8 kept; floats must lie in
  ``data_range``, None: their own range, `data_range_of`)."""
  num_classes, _ = describe_npz(path, num_classes)
  with np.load(path, allow_pickle=False) as f:
    a = {k: f[k] for k in NPZ_KEYS}
  for split in ("train", "test"):
    if a[f"x_{split}"].ndim == 3:
      a[f"x_{split}"] = a[f"x_{split}"][..., None]
  try:
    return finish(
      name, "npz", a["x_train"], a["y_train"], a["x_test"], a["y_test"], num_classes, data_range
    )
  except DataError as e:
    raise DataError(f"{path}: {e}") from None
