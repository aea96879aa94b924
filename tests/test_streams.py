"""Streams without sharp boundaries (blurry, Gaussian): their defining
properties, checked on the streams' indices; class-incremental streams
unchanged; the config keys and the runner."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from rar_jax import data as data_lib
from rar_jax.errors import ConfigError, DataError
from rar_jax.runner import experiment
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 10 classes of 600 samples, shuffled: room for 5 tasks of 1000 samples.
Y = np.random.default_rng(3).permutation(np.repeat(np.arange(10), 600))


def blurry(seeds=(0, 1, 2), n=0.5, m=0.1, spt=500, shuffle=True):
  return data_lib.make_streams(
    Y, 10, 5, spt, 10, list(seeds), shuffle, "blurry",
    disjoint_class_fraction=n, blurry_sample_fraction=m,
  )  # fmt: skip


def gaussian(seeds=(0, 1), width=0.25, spt=1000):
  return data_lib.make_streams(
    Y, 10, 5, spt, 10, list(seeds), False, "gaussian", boundary_width=width
  )


@pytest.mark.parametrize("make", [blurry, gaussian])
def test_every_sample_is_used_at_most_once_per_seed(make):
  streams = make()
  for s in range(streams.index.shape[0]):
    rows = streams.index[s].reshape(-1)
    assert len(np.unique(rows)) == len(rows)


def test_disjoint_classes_never_leave_their_home_segment():
  streams = blurry()
  for s in range(3):
    labels = Y[streams.index[s]].reshape(5, -1)
    home, disjoint = streams.task_of_class[s], streams.disjoint_classes[s]
    assert disjoint.sum() == 5  # half of each task's 2 classes
    for t in range(5):
      leaked = set(labels[t][home[labels[t]] != t].tolist())
      assert not leaked & set(np.flatnonzero(disjoint).tolist())
      assert leaked  # and blurry classes do leak


@pytest.mark.parametrize("m", [0.0, 0.1, 0.3])
def test_each_segment_holds_the_requested_share_of_other_tasks_blurry_samples(m):
  streams = blurry(m=m)
  batch = streams.index.shape[-1]
  for s in range(3):
    labels = Y[streams.index[s]].reshape(5, -1)
    home = streams.task_of_class[s]
    for t in range(5):
      foreign = int((home[labels[t]] != t).sum())
      assert abs(foreign - m * labels.shape[1]) <= batch, (s, t, foreign)


@pytest.mark.parametrize("width", [0.25, 0.5])
def test_the_gaussian_stream_spreads_each_class_as_requested(width):
  """A class's positions are N(home + 1/2, width) in task lengths, so the share
  of its samples outside its home segment is P(|z| > 1 / (2 width))."""
  from scipy.stats import norm

  streams = gaussian(seeds=[0, 1, 2], width=width)
  outside, total = 0, 0
  for s in range(3):
    labels = Y[streams.index[s]].reshape(5, -1)
    home = streams.task_of_class[s]
    for t in range(5):
      middle = (home[labels[t]] >= 1) & (home[labels[t]] <= 3)  # no stream end cuts them
      outside += int((middle & (home[labels[t]] != t)).sum())
    total += int(np.isin(labels, np.flatnonzero((home >= 1) & (home <= 3))).sum())
  want = 2 * norm.cdf(-1 / (2 * width))  # 0.046 at 0.25, 0.317 at 0.5
  assert abs(outside / total - want) < 0.12 * want, (outside / total, want)
  assert not np.array_equal(gaussian(width=0.25).index, gaussian(width=0.5).index)


@pytest.mark.parametrize("make", [blurry, gaussian])
def test_seeds_differ_and_a_seed_repeats(make):
  a, b = make(seeds=[0, 1]), make(seeds=[0, 1])
  assert np.array_equal(a.index, b.index)
  assert not np.array_equal(a.index[0], a.index[1])


def test_class_incremental_streams_are_those_of_before():
  """Digests of the streams the class-incremental code gave before blurry
  streams existed (same inputs)."""
  want = {
    (False, 0): "a2b3227608c2",
    (True, 300): "fca1976256d9",
  }
  got = {}
  for shuffle, spt in want:
    s = data_lib.make_streams(Y, 10, 5, spt, 10, [0, 1, 2], shuffle)
    got[(shuffle, spt)] = hashlib.sha256(s.index.tobytes() + s.task_of_class.tobytes()).hexdigest()[
      :12
    ]
    assert s.disjoint_classes is None
  assert got == want


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(disjoint_class_fraction=1.5), "disjoint_class_fraction=1.5 is invalid"),
    (dict(blurry_sample_fraction=1.0), "no samples of its own classes"),
    (dict(disjoint_class_fraction=1.0), "no blurry class"),
  ],
)
def test_bad_blurry_settings_raise_naming_them(kwargs, match):
  settings = {"disjoint_class_fraction": 0.5, "blurry_sample_fraction": 0.1, **kwargs}
  with pytest.raises(DataError, match=match):
    data_lib.make_streams(Y, 10, 5, 500, 10, [0], False, "blurry", **settings)


def test_class_incremental_refuses_settings_of_another_stream():
  x = np.zeros((len(Y), 2, 2, 1), np.float32)
  with pytest.raises(DataError, match="boundary_width.*not settings of stream='blurry'"):
    data_lib.class_incremental(x, Y, 5, stream="blurry", boundary_width=0.2)


# ---------------------------------------------------------------- config and runner


def digits_config(**overrides):
  config = load_file(os.path.join(ROOT, "configs", "default.py"))
  config.update(dict(methods="er_rar", num_seeds=2, progress=False, rar_samples=0), **overrides)
  return config


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(stream="fuzzy"), "config.stream='fuzzy' is invalid"),
    (dict(boundary_width=0.2), "config.boundary_width=0.2 is a setting of stream='gaussian'"),
    (dict(stream="gaussian", disjoint_class_fraction=0.2), "a setting of stream='blurry'"),
    (dict(stream="blurry", blurry_sample_fraction=-0.1), "blurry_sample_fraction=-0.1 is invalid"),
    (dict(stream="blurry", disjoint_class_fraction=1.0), "leaves no blurry class"),
    (dict(stream="gaussian", boundary_width=0.0), "config.boundary_width=0.0 is invalid"),
    (dict(stream="blurry", eval_protocol="task"), "eval_protocol='task' needs task identities"),
  ],
)
def test_bad_stream_keys_are_one_line_naming_the_key(tmp_path, overrides, match):
  with pytest.raises(ConfigError, match=match) as e:
    experiment.train_and_evaluate(digits_config(**overrides), str(tmp_path))
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "metrics.json")


def test_a_blurry_run_writes_its_stream_picture_and_the_accuracy_per_class_kind(tmp_path):
  config = digits_config(stream="blurry", methods="er")
  result = experiment.train_and_evaluate(config, str(tmp_path))["er"]
  assert result["stream"] == {
    "kind": "blurry", "disjoint_class_fraction": 0.5, "blurry_sample_fraction": 0.1
  }  # fmt: skip
  assert os.path.getsize(tmp_path / "stream.png") > 10_000
  both = [result[f"final_accuracy_{k}_classes"] for k in ("disjoint", "blurry")]
  # Half the classes are disjoint: the mean of the two kinds is the mean over classes,
  # and with equal test classes (digits: ~36 each) close to the accuracy over all tasks.
  mean = (both[0]["mean"] + both[1]["mean"]) / 2
  assert mean == pytest.approx(result["final_avg_accuracy"]["mean"], abs=0.03)
  with open(tmp_path / "metrics.json") as f:
    assert json.load(f)["stream"]["kind"] == "blurry"


def test_rar_jax_data_is_reachable_after_import_rar_jax_without_tensorflow():
  import subprocess
  import sys

  code = (
    "import sys, rar_jax; rar_jax.data.class_incremental; rar_jax.evaluation.continual; "
    "print('tensorflow' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "False"
