"""The TFDS source: prepared TFDS data, or a download when the server answers.
TensorFlow is imported only here, when this source is used, and never sees an
accelerator."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from rar_jax.data.arrays import Dataset, finish
from rar_jax.data.catalog import DATASETS
from rar_jax.errors import DataError

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


def load_tfds(name: str, data_dir: Optional[str]) -> Dataset:
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
  return finish(name, "tfds", tx.astype(np.uint8), ty, vx.astype(np.uint8), vy, DATASETS[name][0])
