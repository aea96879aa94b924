"""Your own data: image folders, .npz arrays, the paper's mini-ImageNet protocol,
the decode cache, and the errors of unusable data (docs/data.md)."""

import os

import numpy as np
import pytest
from cli import train
from PIL import Image

from rar_jax import data
from rar_jax.data import cache as cache_lib
from rar_jax.data import folder as folder_lib
from rar_jax.runner import data_check, experiment
from rar_jax.runner.config import base_config


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(cache_lib.ENV, str(tmp_path / "cache"))


def write_folder(root, splits=("train", "test"), classes=("cat", "ant", "dog"), per_class=4):
  """Random RGB, grey and RGBA PNGs and JPEGs of mixed sizes; returns the paths."""
  rng = np.random.default_rng(len(str(root)))
  paths = []
  for s in splits:
    for c in classes:
      os.makedirs(root / s / c, exist_ok=True)
      for i in range(per_class):
        h, w = (int(v) for v in rng.integers(9, 40, 2))
        mode, ext = [("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("RGB", "jpeg")][i % 4]
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
        path = root / s / c / f"{s}_{c}_{i:02d}.{ext}"
        image.save(path)
        paths.append(path)
  return paths


def reference(path, size):
  """NumPy/Pillow: shorter side to ``size`` (bilinear), centre crop, RGB uint8."""
  image = Image.open(path).convert("RGB")
  w, h = image.size
  scale = size / min(w, h)
  new = (size, int(h * size / w)) if w <= h else (int(w * size / h), size)
  if new != (w, h):
    image = image.resize(new, Image.Resampling.BILINEAR)
  a = np.asarray(image)
  top, left = int(round((a.shape[0] - size) / 2)), int(round((a.shape[1] - size) / 2))
  assert scale > 0
  return a[top : top + size, left : left + size]


def folder_config(root, **overrides):
  config = base_config()
  config.update(
    dataset="custom", data_source="folder", data_dir=str(root), image_size=16, num_tasks=3
  )
  config.update(progress=False, num_seeds=1, batch_size=2, **overrides)
  return config


def test_folder_arrays_equal_a_pillow_reference(tmp_path):
  write_folder(tmp_path / "d")
  ds = data.load("custom", "folder", str(tmp_path / "d"), image_size=16)
  assert ds.train_x.dtype == np.uint8 and ds.train_x.shape == (12, 16, 16, 3)
  assert ds.num_classes == 3 and ds.source == "folder"
  # Classes in sorted folder order (ant, cat, dog), files in sorted name order.
  for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
    want = sorted((tmp_path / "d" / split).glob("*/*"))
    np.testing.assert_array_equal(y, np.repeat([0, 1, 2], 4))
    for got, path in zip(x, want):
      np.testing.assert_array_equal(got, reference(path, 16))
  assert data.describe("custom", "auto", str(tmp_path / "d"), 16) == (3, (16, 16, 3))


def test_per_class_split_is_the_papers_protocol(tmp_path):
  # Disjoint classes per split, as mini-ImageNet, plus one class in two splits.
  root = tmp_path / "mini"
  write_folder(root, ("train",), ("n02", "n01"), per_class=5)
  write_folder(root, ("val",), ("n05", "n01"), per_class=5)
  write_folder(root, ("test",), ("n03",), per_class=5)
  ds = data.load("custom", "folder", str(root), image_size=8, folder_split="per_class")
  listing = folder_lib.list_folder(str(root), "per_class")
  # First appearance: train's sorted classes, then val's new ones, then test's.
  assert listing.classes == ("n01", "n02", "n05", "n03")
  per_class = {
    "n01": sorted((root / "train" / "n01").iterdir()) + sorted((root / "val" / "n01").iterdir()),
    "n02": sorted((root / "train" / "n02").iterdir()),
    "n05": sorted((root / "val" / "n05").iterdir()),
    "n03": sorted((root / "test" / "n03").iterdir()),
  }
  train_paths, test_paths = [], []
  for name in listing.classes:  # each class in order: int(0.8 n) train, the rest test
    files = per_class[name]
    cut = int(0.8 * len(files))
    train_paths += files[:cut]
    test_paths += files[cut:]
  assert len(ds.train_x) == 8 + 4 + 4 + 4 and len(ds.test_x) == 2 + 1 + 1 + 1
  np.testing.assert_array_equal(ds.train_y, np.repeat([0, 1, 2, 3], [8, 4, 4, 4]))
  np.testing.assert_array_equal(ds.test_y, np.repeat([0, 1, 2, 3], [2, 1, 1, 1]))
  for x, paths in ((ds.train_x, train_paths), (ds.test_x, test_paths)):
    np.testing.assert_array_equal(x, np.stack([reference(p, 8) for p in paths]))


def test_mini_imagenet_config_is_20_tasks_of_5_classes_at_84(tmp_path):
  config = experiment.validate_config
  from rar_jax.runner.config import load_file

  c = load_file(os.path.join(os.path.dirname(__file__), "..", "configs", "split_mini_imagenet.py"))
  config(c)
  assert (c.dataset, c.num_tasks, c.image_size, c.model) == (
    "mini_imagenet",
    20,
    84,
    "resnet18_reduced",
  )
  assert (c.folder_split, c.train_fraction) == ("per_class", 0.8)
  # A folder with fewer than 100 classes is refused before any decoding.
  write_folder(tmp_path / "m", ("train",), ("a", "b"), per_class=1)
  c.data_dir = str(tmp_path / "m")
  with pytest.raises(data.DataError, match="mini_imagenet has 100 classes, the folder holds 2"):
    data_check.validate_data(c)


def test_cache_is_reused_and_notices_a_changed_file(tmp_path, monkeypatch):
  paths = write_folder(tmp_path / "d")
  first = data.load("custom", "folder", str(tmp_path / "d"), image_size=16)
  entries = os.listdir(tmp_path / "cache")
  assert len(entries) == 1 and entries[0].endswith(".npz")
  assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["test", "train"]  # untouched

  def no_decoding(*a, **k):
    raise AssertionError("decoded again")

  monkeypatch.setattr(folder_lib, "decode_all", no_decoding)
  again = data.load("custom", "folder", str(tmp_path / "d"), image_size=16)
  np.testing.assert_array_equal(again.train_x, first.train_x)
  monkeypatch.undo()
  monkeypatch.setenv(cache_lib.ENV, str(tmp_path / "cache"))
  # A changed image: a new size and modification time, so the entry is stale.
  changed = paths[0]  # train/cat/..._00.jpg is class 1's first training image
  Image.fromarray(np.full((30, 20, 3), 7, np.uint8)).save(changed, "JPEG")
  os.utime(changed, ns=(1, 1))
  third = data.load("custom", "folder", str(tmp_path / "d"), image_size=16)
  np.testing.assert_array_equal(third.train_x[4], reference(changed, 16))
  assert not np.array_equal(third.train_x[4], first.train_x[4])
  assert os.listdir(tmp_path / "cache") == entries  # replaced, not accumulated
  # Another image size is another entry.
  data.load("custom", "folder", str(tmp_path / "d"), image_size=8)
  assert len(os.listdir(tmp_path / "cache")) == 2


def test_npz_arrays_load_as_given(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (30, 6, 5, 1), dtype=np.uint8)
  y = np.repeat(np.arange(3), 10)
  np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:9] / 255.0, y_test=y[:9])
  ds = data.load("custom", "auto", str(tmp_path / "a.npz"))
  assert ds.source == "npz" and ds.num_classes == 3 and ds.train_x.dtype == np.uint8
  np.testing.assert_array_equal(ds.train_x, x)
  np.testing.assert_array_equal(ds.test_x, (x[:9] / 255.0).astype(np.float32))
  assert data.describe("custom", "npz", str(tmp_path / "a.npz")) == (3, (6, 5, 1))


def test_class_incremental_is_what_train_py_trains_on(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (200, 4, 4, 1), dtype=np.uint8)
  y = np.repeat(np.arange(4), 50)
  np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x, y_test=y)
  config = base_config()
  config.update(
    dataset="custom",
    data_source="npz",
    data_dir=str(tmp_path / "a.npz"),
    num_tasks=2,
    num_seeds=2,
    samples_per_task=60,
    validation_fraction=0.1,
    shuffle_classes=True,
    progress=False,
  )
  prepared = experiment.prepare_data(config)
  bench = data.class_incremental(
    x, y, 2, 10, [0, 1], 60, True, validation_fraction=0.1, holdout_seed=0
  )
  np.testing.assert_array_equal(bench.streams.index, prepared.streams.index)
  np.testing.assert_array_equal(data.to_unit_float(bench.train_x), prepared.train_x)
  assert bench.train_x.dtype == np.uint8 and len(bench.val_y) == 20
  assert bench.task_classes(0).shape == (2, 2)
  xb, yb = next(bench.batches(1, 1))
  assert xb.dtype == np.float32 and xb.shape == (10, 4, 4, 1)
  assert set(yb) <= set(bench.task_classes(1)[1])


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def bad_inputs(tmp_path):
  """(config overrides, what the one-line error must say) per unusable input."""
  ok = write_folder(tmp_path / "ok")
  truncated = tmp_path / "trunc"
  write_folder(truncated)
  victim = sorted((truncated / "train" / "dog").glob("*.png"))[0]
  victim.write_bytes(victim.read_bytes()[:60])
  (tmp_path / "nosplit" / "train").mkdir(parents=True)
  (tmp_path / "nosplit" / "test").mkdir(parents=True)
  write_folder(tmp_path / "noimg")
  for f in (tmp_path / "noimg" / "test" / "ant").iterdir():
    f.unlink()
  (tmp_path / "noimg" / "test" / "ant" / "notes.txt").write_text("no images")
  x, y = np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 1, 0, 1])
  assert ok
  return [
    (dict(data_dir=str(tmp_path / "missing")), ["missing: no such folder"]),
    (dict(data_dir=str(tmp_path / "nosplit")), ["nosplit/train: no class folders"]),
    (dict(data_dir=str(tmp_path / "noimg")), ["noimg/test/ant: no images"]),
    (dict(data_dir=str(truncated)), [str(victim), "unreadable image"]),
    (dict(data_dir=str(tmp_path / "ok"), num_tasks=6), ["num_tasks=6", "3 classes"]),
    (dict(data_dir=str(tmp_path / "ok"), num_tasks=2), ["num_tasks=2", "divide its 3 classes"]),
    (
      dict(data_source="npz", image_size=0, data_dir=_npz(tmp_path / "k.npz", x_train=x)),
      ["k.npz: missing arrays", "y_train"],
    ),
    (
      dict(
        data_source="npz",
        image_size=0,
        data_dir=_npz(tmp_path / "n.npz", x_train=x, y_train=y[:3], x_test=x, y_test=y),
      ),
      ["n.npz: x_train has 4 images and y_train 3 labels"],
    ),
    (
      dict(
        data_source="npz",
        image_size=0,
        data_dir=_npz(tmp_path / "r.npz", x_train=x, y_train=y, x_test=x, y_test=y + 5),
      ),
      ["r.npz: y_test labels must lie in [0, 2)", "[5, 6]"],
    ),
  ]


def test_unusable_data_is_one_line_before_any_work(tmp_path):
  for overrides, needles in bad_inputs(tmp_path):
    config = folder_config(tmp_path, num_tasks=overrides.pop("num_tasks", 3), **overrides)
    workdir = tmp_path / "runs" / "w"
    with pytest.raises((data.DataError, experiment.ConfigError)) as e:
      experiment.train_and_evaluate(config, str(workdir))
    message = str(e.value)
    assert "\n" not in message and all(n in message for n in needles), (needles, message)
    assert not workdir.exists(), message  # nothing written
    assert not os.listdir(tmp_path / "cache") if (tmp_path / "cache").exists() else True


@pytest.mark.slow
def test_train_py_on_a_generated_image_folder(tmp_path):
  write_folder(tmp_path / "d", per_class=12)
  out = train(
    "--config",
    "configs/image_folder.py",
    f"--config.data_dir={tmp_path / 'd'}",
    "--config.image_size=8",
    "--config.num_tasks=3",
    "--config.model=mlp",
    "--config.methods=er_rar",
    "--config.num_seeds=1",
    "--config.plot=false",
    "--config.progress=false",
    "--workdir",
    str(tmp_path / "run"),
    "--compilation_cache=",
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "run" / "metrics.json").exists()
  bad = train(
    "--config",
    "configs/arrays.py",
    f"--config.data_dir={tmp_path / 'none.npz'}",
    "--workdir",
    str(tmp_path / "run2"),
  )
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
    f"error: {tmp_path / 'none.npz'}: no such file (data_source='npz' needs an .npz file)"
  ]
  assert not (tmp_path / "run2").exists()


def test_an_image_edited_in_place_with_the_same_byte_size_is_decoded_again(tmp_path):
  """Uncompressed PNGs of one shape have one byte size whatever their pixels: the
  cache must notice the edit by the modification time, not the size alone."""
  for s in ("train", "test"):
    for c in ("a", "b"):
      os.makedirs(tmp_path / "d" / s / c)
      Image.fromarray(np.full((8, 8, 3), 10, np.uint8)).save(
        tmp_path / "d" / s / c / "x.png", compress_level=0
      )
  first = data.load("custom", "folder", str(tmp_path / "d"), image_size=8)
  edited = tmp_path / "d" / "train" / "a" / "x.png"
  size = os.path.getsize(edited)
  Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(edited, compress_level=0)
  assert os.path.getsize(edited) == size
  os.utime(edited, ns=(10**18, 10**18))  # another modification time, as an edit leaves
  again = data.load("custom", "folder", str(tmp_path / "d"), image_size=8)
  assert int(first.train_x[0].max()) == 10 and int(again.train_x[0].min()) == 200
