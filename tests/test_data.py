import gzip
import os
import struct

import numpy as np
import pytest

from rar_jax import data

FASHION = data.DEBIAN_FASHION_MNIST


def write_idx(path, array, compress):
  header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
  opener = gzip.open if compress else open
  with opener(path + (".gz" if compress else ""), "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {
    "train_x": rng.integers(0, 256, (40, 28, 28)),
    "train_y": np.arange(40) % 10,
    "test_x": rng.integers(0, 256, (20, 28, 28)),
    "test_y": np.arange(20) % 10,
  }
  for i, (key, stem) in enumerate(data.IDX_FILES.items()):
    write_idx(str(tmp_path / stem), arrays[key], compress=i % 2 == 0)
  return tmp_path, arrays


def test_idx_files_are_read_exactly(idx_dir):
  path, arrays = idx_dir
  ds = data.load("mnist", "idx", str(path))
  assert ds.train_x.shape == (40, 28, 28, 1) and ds.test_x.shape == (20, 28, 28, 1)
  np.testing.assert_array_equal(ds.train_x[..., 0], arrays["train_x"])
  np.testing.assert_allclose(
    data.to_unit_float(ds.train_x)[..., 0] * 255, arrays["train_x"], atol=1e-4
  )
  np.testing.assert_array_equal(ds.test_y, arrays["test_y"])
  assert ds.source == "idx"


def test_missing_idx_files_say_what_and_where(tmp_path):
  with pytest.raises(data.DataError) as e:
    data.load("fashion_mnist", "idx", str(tmp_path))
  msg = str(e.value)
  assert "train-images-idx3-ubyte" in msg and str(tmp_path) in msg
  assert "dataset-fashion-mnist" in msg


def test_truncated_idx_file_is_reported(idx_dir, tmp_path):
  path, _ = idx_dir
  stem = os.path.join(path, data.IDX_FILES["train_y"])
  with open(stem, "rb") as f:
    raw = f.read()
  with open(stem, "wb") as f:
    f.write(raw[:-5])
  with pytest.raises(data.DataError, match="truncated"):
    data.load("mnist", "idx", str(path))


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist missing")
def test_fashion_mnist_from_debian_package_by_default():
  ds = data.load("fashion_mnist")
  assert ds.source == "idx"
  assert ds.train_x.shape == (60000, 28, 28, 1) and ds.test_x.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(ds.train_y), np.full(10, 6000))
  assert ds.train_x.dtype == np.uint8 and ds.train_x.max() > 200


def test_digits_are_embedded_and_stratified():
  ds = data.load("digits")
  assert ds.train_x.shape[1:] == (8, 8, 1) and len(ds.train_x) + len(ds.test_x) == 1797
  assert set(np.unique(ds.test_y)) == set(range(10))


@pytest.mark.slow  # imports TensorFlow (~10 s)
def test_tfds_path_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=30):
    ds = data.load("cifar10", "tfds")
  assert ds.train_x.shape == (30, 32, 32, 3) and ds.source == "tfds"
  x = data.to_unit_float(ds.train_x)
  assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize(
  "bad,match",
  [
    (dict(x=np.full((4, 2, 2, 1), np.nan)), "NaN"),
    (dict(x=np.full((4, 2, 2, 1), 255.0)), r"data_range=\(0.0, 1.0\)"),
    (dict(y=np.array([0, 1, 2, 10])), "labels"),
    (dict(x=np.zeros((4, 4))), r"\[N, H, W, C\]"),
    (dict(x=np.zeros((0, 2, 2, 1)), y=np.zeros(0, int)), "non-zero"),
  ],
)
def test_bad_arrays_are_rejected(bad, match):
  x = bad.get("x", np.zeros((4, 2, 2, 1)))
  y = bad.get("y", np.array([0, 1, 2, 3]))
  with pytest.raises(data.DataError, match=match):
    data.validate_arrays("test", x, y, 10)


def test_streams_are_class_incremental_and_per_seed():
  y = np.repeat(np.arange(6), 50)
  s = data.make_streams(y, 6, 3, 40, 10, seeds=[0, 1], shuffle_classes=True)
  assert s.index.shape == (2, 3, 4, 10)
  for seed in range(2):
    seen = set()
    for t in range(3):
      labels = y[s.index[seed, t].reshape(-1)]
      classes = set(np.unique(labels).tolist())
      assert len(classes) == 2 and not classes & seen
      assert np.all(s.task_of_class[seed, labels] == t)
      seen |= classes
    assert len(np.unique(s.index[seed])) == 120  # no sample twice
  assert not np.array_equal(s.task_of_class[0], s.task_of_class[1])  # orders differ


def test_stream_errors():
  y = np.repeat(np.arange(10), 5)
  with pytest.raises(data.DataError, match="num_tasks"):
    data.make_streams(y, 10, 20, 0, 10, [0], False)
  with pytest.raises(data.DataError, match="fewer samples than one minibatch"):
    data.make_streams(y, 10, 5, 0, 20, [0], False)


def test_holdout_is_stratified_and_disjoint():
  y = np.repeat(np.arange(4), 100)
  tr, va = data.holdout_split(y, 0.05, seed=0)
  assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 400
  np.testing.assert_array_equal(np.bincount(y[va]), [5, 5, 5, 5])


def test_importing_the_library_does_not_import_tensorflow():
  import subprocess
  import sys

  code = (
    "import sys, rar_jax, rar_jax.data, rar_jax.runner.experiment; "
    "print('tensorflow' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "False"
