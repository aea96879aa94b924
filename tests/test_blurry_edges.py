"""Blurry and Gaussian streams at their edges, against counts worked out by
hand: the cases mutation testing found unguarded (docs/testing.md)."""

import hashlib

import numpy as np
import pytest

from rar_jax.data import blurry
from rar_jax.errors import DataError

Y = np.repeat(np.arange(6), 100)  # 6 classes x 100 samples


@pytest.mark.parametrize(
  "stream,settings,message",
  [
    ("nope", {}, "stream='nope' is invalid: one of ('class_incremental', 'blurry', 'gaussian')"),
    (
      "blurry",
      {"foo": 1},
      "foo=1 is no stream's setting; ['foo'] are not settings of stream='blurry' (its "
      "settings: ['blurry_sample_fraction', 'disjoint_class_fraction'])",
    ),
    (
      "class_incremental",
      {"boundary_width": 0.3},
      "boundary_width=0.3 is a setting of stream='gaussian'; ['boundary_width'] are not "
      "settings of stream='class_incremental' (its settings: none)",
    ),
    ("gaussian", {"boundary_width": "a"}, "boundary_width='a' is invalid: a number"),
    ("gaussian", {"boundary_width": float("nan")}, "boundary_width=nan is invalid: a number"),
    ("gaussian", {"boundary_width": True}, "boundary_width=True is invalid: a number"),
    (
      "blurry",
      {"blurry_sample_fraction": 1.0},
      "blurry_sample_fraction=1.0 leaves every task with no samples of its own classes: a "
      "number in [0, 1)",
    ),
    (
      "blurry",
      {"disjoint_class_fraction": 1.0},
      "disjoint_class_fraction=1.0 leaves no blurry class to leak into other tasks "
      "(blurry_sample_fraction=0.1): lower it",
    ),
  ],
)
def test_bad_stream_settings_get_their_whole_message(stream, settings, message):
  with pytest.raises(DataError) as e:
    blurry.check_settings(stream, settings)
  assert str(e.value) == message


def segments(seed=0, samples_per_task=0, order=None, **settings):
  order = np.arange(6) if order is None else order
  rng = np.random.default_rng(seed)
  return blurry.blurry_segments(Y, 6, 3, samples_per_task, order, rng, **settings)


def test_each_task_marks_exactly_its_share_of_disjoint_classes():
  y8 = np.repeat(np.arange(8), 20)
  for seed in range(20):  # 4 classes per task, half of them disjoint: 2 distinct ones
    rng = np.random.default_rng(seed)
    _, disjoint = blurry.blurry_segments(y8, 8, 2, 0, np.arange(8), rng, 0.5, 0.1)
    assert disjoint[:4].sum() == 2 and disjoint[4:].sum() == 2, seed


def test_segment_length_without_samples_per_task_is_the_smallest_task_less_the_foreign_share():
  segs, _ = segments(disjoint_class_fraction=0.5, blurry_sample_fraction=0.1)
  # Each task's own classes hold 200 samples; 10% of each segment comes from other tasks.
  assert [len(s) for s in segs] == [180, 180, 180]
  assert all(len(np.unique(s)) == len(s) for s in segs)
  assert len(np.unique(np.concatenate(segs))) == 540  # no sample twice


def test_all_disjoint_classes_are_fine_without_blurry_samples_and_refused_with_them():
  segs, disjoint = segments(disjoint_class_fraction=1.0, blurry_sample_fraction=0.0)
  assert disjoint.all() and [len(s) for s in segs] == [200, 200, 200]
  with pytest.raises(DataError) as e:  # rounds to all disjoint: 0.9 of 2 classes is 2
    segments(disjoint_class_fraction=0.9, blurry_sample_fraction=0.1)
  assert str(e.value) == (
    "disjoint_class_fraction=0.9 leaves no blurry class to leak into other tasks "
    "(blurry_sample_fraction=0.1): lower it"
  )


def gaussian(samples_per_task=0, order=None, seed=0, width=0.25):
  order = np.arange(6) if order is None else order
  rng = np.random.default_rng(seed)
  return blurry.gaussian_segments(Y, 6, 3, samples_per_task, order, rng, width)


def test_gaussian_segments_split_the_chosen_samples_into_equal_disjoint_parts():
  for samples_per_task, per_segment in ((60, 60), (0, 200)):  # 60: 30 per class
    segs = gaussian(samples_per_task)
    assert [len(s) for s in segs] == [per_segment] * 3
    rows = np.concatenate(segs)
    assert len(np.unique(rows)) == len(rows) == 3 * per_segment
    if samples_per_task:
      assert np.bincount(Y[rows], minlength=6).tolist() == [30] * 6


def test_gaussian_segments_follow_the_class_order_and_a_pinned_draw():
  order = np.array([4, 1, 5, 0, 3, 2])
  segs = gaussian(order=order, width=0.05)  # narrow: each segment is its home classes
  for t, seg in enumerate(segs):
    assert set(Y[seg]) == set(order[2 * t : 2 * t + 2]), t
  # The draw itself (which sample goes where) is part of a seed's stream.
  digest = hashlib.sha256(np.concatenate(gaussian(seed=3)).astype(np.int64).tobytes())
  assert digest.hexdigest()[:16] == "2dec0e1026714e85"


# ---------------------------------------------------------------- table metrics


def test_two_standard_errors_per_axis_in_float64_and_nan_below_two_values():
  from rar_jax.evaluation import metrics

  v = np.array([[0.1, 0.7, 0.3], [0.2, 0.4, 0.9]], np.float32)  # inexact in float32
  got = metrics.two_se(v, axis=0)
  cols = [[float(a) for a in v[:, j]] for j in range(3)]
  want = [2 * np.std(c, ddof=1) / np.sqrt(2) for c in cols]
  assert got.shape == (3,) and got.dtype == np.float64
  np.testing.assert_allclose(got, want, rtol=1e-15)
  one = metrics.two_se(np.ones((1, 4)), axis=0)
  assert one.shape == (4,) and np.isnan(one).all()
  s = metrics.summarize(v[0])
  assert s["mean"] == pytest.approx(sum(float(a) for a in v[0]) / 3, rel=1e-15)
  assert s["per_seed"] == [float(a) for a in v[0]]
