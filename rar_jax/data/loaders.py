"""Datasets as NumPy arrays, and class-incremental streams over them.

Images are ``[N, H, W, C]``: uint8 as the files store them (a quarter of the
memory), or float32 in [0, 1]; `to_unit_float` gives the float32 [0, 1] the
models and the attack use. Labels are int32. TensorFlow is imported only by
the TFDS source, and never sees an accelerator.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct as _struct
import zlib
from typing import Optional

import numpy as np

from rar_jax.errors import DataError

DATASETS = {  # name -> (num_classes, image shape)
  "digits": (10, (8, 8, 1)),
  "mnist": (10, (28, 28, 1)),
  "fashion_mnist": (10, (28, 28, 1)),
  "cifar10": (10, (32, 32, 3)),
  "cifar100": (100, (32, 32, 3)),
}
SOURCES = ("auto", "embedded", "idx", "tfds")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
  "train_x": "train-images-idx3-ubyte",
  "train_y": "train-labels-idx1-ubyte",
  "test_x": "t10k-images-idx3-ubyte",
  "test_y": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  source: str


def to_unit_float(x: np.ndarray) -> np.ndarray:
  """float32 images in [0, 1] (uint8 pixels are divided by 255)."""
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  return np.asarray(x, np.float32)


def validate_arrays(name: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
  """Rejects data the step cannot learn from sensibly, with the reason."""
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
  if lo < 0.0 or hi > 1.0:
    raise DataError(
      f"{name}: pixel values must lie in [0, 1] (the attack clips there), got [{lo}, {hi}]"
    )


def _finish(name, source, train_x, train_y, test_x, test_y) -> Dataset:
  num_classes = DATASETS[name][0]
  keep = lambda a: a if a.dtype == np.uint8 else np.asarray(a, np.float32)
  train_x, test_x = keep(np.asarray(train_x)), keep(np.asarray(test_x))
  train_y, test_y = (np.asarray(a, np.int32) for a in (train_y, test_y))
  validate_arrays(f"{name} train", train_x, train_y, num_classes)
  validate_arrays(f"{name} test", test_x, test_y, num_classes)
  return Dataset(name, train_x, train_y, test_x, test_y, num_classes, source)


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
  return _finish("digits", "embedded", x[~test], y[~test], x[test], y[test])


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
  return _finish(
    name,
    "idx",
    arrays["train_x"][..., None],
    arrays["train_y"],
    arrays["test_x"][..., None],
    arrays["test_y"],
  )


# TFDS fetches prepared data and the source files from Google Cloud Storage.
TFDS_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to ``host:port`` (or the HTTPS proxy, when one
  is set) opens within ``timeout`` seconds. A thread bounds the DNS lookup,
  which a socket timeout does not."""
  import socket
  import threading
  import urllib.parse
  import urllib.request

  proxy = urllib.request.getproxies().get("https")
  if proxy:
    parsed = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host, port = parsed.hostname or host, parsed.port or 80
  result = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      result.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(result)


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _tfds_arrays(tfds, name: str, data_dir: Optional[str], download: bool):
  splits = tfds.load(
    name, split=["train", "test"], as_supervised=True, data_dir=data_dir, download=download
  )
  # Batches of 4096, not batch_size=-1: TF 2.21 aborts on the latter when
  # the split's size is unknown (as under tfds.testing.mock_data).
  return [[np.concatenate(a) for a in zip(*tfds.as_numpy(s.batch(4096)))] for s in splits]


def _load_tfds(name: str, data_dir: Optional[str]) -> Dataset:
  # TF's start-up noise; a user's value wins. TF 2.21 prints its oneDNN notice on some CPUs
  # (AMD family 26) whatever the log level; TF only decodes and batches bytes here.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  try:
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging
  except ImportError as e:
    raise DataError(
      f"{name}: the TFDS source needs tensorflow and tensorflow-datasets "
      f"({e}); pip install 'rar_jax[tfds]'"
    ) from None
  # As in the Flax examples: keep TensorFlow off every accelerator.
  tf.config.set_visible_devices([], "GPU")
  try:
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass
  where = data_dir or tfds.core.constants.DATA_DIR
  # Prepared data first, without download. Absent data are downloaded only
  # when the server answers: offline, TFDS would retry for minutes (and
  # create `where`) before failing.
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # "Variant folder ... has no dataset_info.json"
  try:
    arrays = _tfds_arrays(tfds, name, data_dir, download=False)
  except AssertionError:  # TFDS's "could not find data in DIR"
    arrays = None
  except Exception as e:  # prepared, but damaged or unreadable
    raise DataError(
      f"{name}: the TFDS data in {where!r} are unreadable ({_first_line(e)}); "
      f"prepare them again with `tfds build {name} --data_dir=DIR`"
    ) from None
  finally:
    absl_logging.set_verbosity(verbosity)
  if arrays is None:
    if not _reachable(*TFDS_DOWNLOAD_HOST):
      raise DataError(
        f"{name}: no prepared TFDS data in {where!r}, and {TFDS_DOWNLOAD_HOST[0]} is "
        f"unreachable (offline?); on a machine with internet run `tfds build {name} "
        f"--data_dir=DIR`, copy DIR here and pass --config.data_dir=DIR"
      )
    try:
      arrays = _tfds_arrays(tfds, name, data_dir, download=True)
    except Exception as e:  # TFDS raises many types for "could not download/prepare"
      raise DataError(
        f"{name}: TFDS could not download the data into {where!r}: "
        f"{_first_line(e)}. Without internet, prepare it elsewhere with `tfds "
        f"build {name} --data_dir=DIR` and pass --config.data_dir=DIR"
      ) from None
  (tx, ty), (vx, vy) = arrays
  return _finish(name, "tfds", tx.astype(np.uint8), ty, vx.astype(np.uint8), vy)


def load(name: str, source: str = "auto", data_dir: Optional[str] = None) -> Dataset:
  """Loads ``name`` from ``source``.

  ``auto``: digits -> embedded; fashion_mnist -> IDX files in ``data_dir`` (or
  Debian's ``/usr/share/datasets/fashion-mnist``) when present, TFDS otherwise;
  mnist -> IDX files when ``data_dir`` holds them, TFDS otherwise; CIFAR -> TFDS.
  """
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
  if name not in DATASETS:
    raise DataError(f"dataset={name!r} is unknown; known: {tuple(DATASETS)}")
  if source not in SOURCES:
    raise DataError(f"data_source={source!r} is unknown; known: {SOURCES}")
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
  return _load_tfds(name, data_dir)


# ---------------------------------------------------------------- streams


def class_order(num_classes: int, shuffle: bool, rng: np.random.Generator) -> np.ndarray:
  order = np.arange(num_classes)
  return rng.permutation(order) if shuffle else order


def holdout_split(y: np.ndarray, fraction: float, seed: int):
  """Stratified ``(train_idx, val_idx)``: ``fraction`` of each class held out."""
  if not 0.0 <= fraction < 1.0:
    raise DataError(f"validation_fraction={fraction!r} must be in [0, 1)")
  rng = np.random.default_rng(seed)
  train, val = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    k = int(round(fraction * len(idx)))
    val.append(idx[:k])
    train.append(idx[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclasses.dataclass(frozen=True)
class Streams:
  """Minibatch index streams for several seeds over one training array."""

  index: np.ndarray  # [seeds, tasks, steps, batch] into the training array
  task_of_class: np.ndarray  # [seeds, num_classes]
  dropped_samples: int  # per seed, to make every task the same number of full batches


def make_streams(
  y: np.ndarray,
  num_classes: int,
  num_tasks: int,
  samples_per_task: int,
  batch_size: int,
  seeds,
  shuffle_classes: bool,
) -> Streams:
  """Class-incremental streams: task t holds classes ``order[t*k:(t+1)*k]``.

  Each seed draws its own class order (when shuffled), its own subsample of
  ``samples_per_task`` (0 = all) and its own order within a task. Every task
  gets the same number of full minibatches (that of the smallest task), so one
  compiled scan serves all tasks and seeds.
  """
  if num_tasks < 1 or num_tasks > num_classes or num_classes % num_tasks:
    raise DataError(
      f"num_tasks={num_tasks} must divide num_classes={num_classes} "
      "(each task holds the same number of classes)"
    )
  per_task = num_classes // num_tasks
  per_seed = []
  for seed in seeds:
    rng = np.random.default_rng(seed)
    order = class_order(num_classes, shuffle_classes, rng)
    tasks = []
    for t in range(num_tasks):
      idx = np.flatnonzero(np.isin(y, order[t * per_task : (t + 1) * per_task]))
      if len(idx) == 0:
        raise DataError(f"task {t} (classes {order[t * per_task : (t + 1) * per_task]}) is empty")
      idx = rng.permutation(idx)
      if samples_per_task:
        idx = idx[:samples_per_task]
      tasks.append(idx)
    per_seed.append((order, tasks))
  steps = min(len(ix) for _, tasks in per_seed for ix in tasks) // batch_size
  if steps == 0:
    raise DataError(f"a task holds fewer samples than one minibatch ({batch_size})")
  index = np.stack(
    [
      np.stack([ix[: steps * batch_size].reshape(steps, batch_size) for ix in tasks])
      for _, tasks in per_seed
    ]
  ).astype(np.int32)
  task_of_class = np.zeros((len(per_seed), num_classes), np.int32)
  for s, (order, _) in enumerate(per_seed):
    task_of_class[s, order] = np.arange(num_classes) // per_task
  dropped = (
    max(sum(len(ix) for ix in tasks) for _, tasks in per_seed) - num_tasks * steps * batch_size
  )
  return Streams(index, task_of_class, int(dropped))
