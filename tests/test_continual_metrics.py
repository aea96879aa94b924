"""The continual-evaluation metrics at their edges, against loops written out
by hand: the cases mutation testing found unguarded (docs/testing.md)."""

import hashlib
import warnings

import numpy as np
import pytest

from rar_jax.errors import ArgumentError
from rar_jax.evaluation import continual


def brute_steps(num_tasks, steps_per_task, every):
  points = []
  for t in range(num_tasks):
    for s in range(1, steps_per_task + 1):
      if s % every == 0 or s == steps_per_task:
        points.append(t * steps_per_task + s)
  return points


@pytest.mark.parametrize("steps_per_task", [1, 2, 9, 10, 11, 12, 23])
@pytest.mark.parametrize("every", [1, 2, 5, 10, 30])
def test_evaluation_steps_are_every_nth_step_of_each_task_and_its_last(steps_per_task, every):
  got = continual.evaluation_steps(3, steps_per_task, every)
  assert got.tolist() == brute_steps(3, steps_per_task, every)
  assert got.dtype.kind == "i"  # written to metrics.json as whole steps


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "10"])
def test_evaluation_steps_refuse_what_is_not_a_positive_int(bad):
  with pytest.raises(ArgumentError, match="an int >= 1"):
    continual.evaluation_steps(2, 10, bad)


def test_the_evaluation_subset_draws_distinct_rows_the_same_for_everyone():
  y = np.repeat(np.arange(4), 6)
  rows = continual.evaluation_subset(y, classes_per_task=2, samples_per_task=12)
  assert len(np.unique(rows)) == len(rows) == 24  # every row of every class, none twice
  rows = continual.evaluation_subset(y, classes_per_task=2, samples_per_task=6)
  assert len(np.unique(rows)) == len(rows) == 12
  assert np.bincount(y[rows]).tolist() == [3, 3, 3, 3]
  # The default draw is part of what makes curves comparable across runs and releases.
  digest = hashlib.sha256(rows.astype(np.int64).tobytes()).hexdigest()[:16]
  assert digest == "ea36f66536db299d", digest


def curve(seeds, points_per_task, tasks, rng):
  steps = np.arange(1, points_per_task * tasks + 1)
  task_ends = points_per_task * np.arange(1, tasks + 1)
  return rng.random((seeds, len(steps), tasks)), steps, task_ends


def test_bad_curves_are_refused_with_what_is_wrong():
  rng = np.random.default_rng(0)
  acc, steps, ends = curve(2, 3, 2, rng)
  with pytest.raises(ArgumentError, match=r"accuracy of shape \(6, 2\) is invalid"):
    continual.average_anytime_accuracy(acc[0], steps, ends)
  with pytest.raises(ArgumentError, match="^steps and task_ends must be increasing$"):
    continual.stability_gap(acc, steps[::-1], ends)
  repeated = steps.copy()
  repeated[2] = repeated[1]
  with pytest.raises(ArgumentError, match="increasing"):
    continual.stability_gap(acc, repeated, ends)
  with pytest.raises(ArgumentError, match="increasing"):
    continual.stability_gap(acc, steps, ends[::-1])
  with pytest.raises(ArgumentError, match="increasing"):
    continual.stability_gap(acc, steps, np.array([ends[0], ends[0]]))
  with pytest.raises(ArgumentError, match=r"accuracy of shape \(2, 5, 2\) is invalid"):
    continual.stability_gap(acc[:, :5], steps, ends)  # one point short
  # One step per task is a valid stream.
  acc1, steps1, ends1 = curve(2, 1, 3, rng)
  assert continual.stability_gap(acc1, steps1, ends1).per_switch.shape == (2, 2)


def test_the_stability_gap_of_each_switch_against_a_loop():
  rng = np.random.default_rng(1)
  acc, steps, ends = curve(3, 4, 4, rng)
  gap = continual.stability_gap(acc, steps, ends)
  for s in range(3):
    for k in range(1, 4):
      prev = acc[s, :, :k].mean(-1)
      before = prev[list(steps).index(ends[k - 1])]
      inside = [i for i, st in enumerate(steps) if ends[k - 1] < st <= ends[k]]
      low = min(inside, key=lambda i: prev[i])
      assert gap.per_switch[s, k - 1] == pytest.approx(before - prev[low])
      assert gap.step_of_min[s, k - 1] == steps[low]
  assert gap.step_of_min.dtype.kind == "i"


def test_one_task_has_no_switch_and_no_warning():
  rng = np.random.default_rng(2)
  acc, steps, ends = curve(3, 5, 1, rng)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    gap = continual.stability_gap(acc, steps, ends)
    low = continual.min_accuracy(acc, steps, ends)
  assert gap.per_switch.shape == (3, 0) and gap.step_of_min.shape == (3, 0)
  assert np.isnan(gap.mean).all() and gap.mean.shape == (3,)
  assert np.isnan(low).all() and low.shape == (3,)
  summary = continual.summaries(acc, steps, ends)
  assert summary["stability_gap"] is None and summary["min_acc"] is None


def test_summaries_name_their_keys_and_compute_in_float64():
  rng = np.random.default_rng(3)
  acc, steps, ends = curve(2, 3, 3, rng)
  acc32 = acc.astype(np.float32)
  summary = continual.summaries(acc32, steps, ends)
  assert set(summary) == {
    "aaa",
    "min_acc",
    "wc_acc",
    "stability_gap",
    "stability_gap_per_switch",
    "stability_gap_step_of_min",
  }
  gap = continual.stability_gap(acc32, steps, ends)
  assert summary["stability_gap_per_switch"] == gap.per_switch.mean(0).tolist()
  assert summary["stability_gap_step_of_min"] == gap.step_of_min.tolist()
  # float32 curves are summed in float64, as a loop over Python floats does.
  aaa = continual.average_anytime_accuracy(acc32, steps, ends)
  assert aaa.dtype == np.float64
  seen_means = [
    [np.mean([float(acc32[s, p, k]) for k in range(3) if ends[k] - 3 < steps[p]]) for p in range(9)]
    for s in range(2)
  ]
  np.testing.assert_allclose(aaa, np.mean(seen_means, axis=1), rtol=1e-12)


def test_first_seen_steps_and_seen_class_accuracy_are_whole_steps_and_float64():
  labels = np.array([[0, 0], [1, 0], [0, 2]])
  first = continual.first_seen_steps(labels, 4)
  assert first.tolist() == [1, 2, 3, 4] and first.dtype.kind == "i"
  class_acc = np.array([[[0.1, 0.7, 0.3, 1.0]] * 3], np.float32)  # inexact in float32
  got = continual.average_seen_class_accuracy(class_acc, np.array([1, 2, 3]), first[None])
  assert got.dtype == np.float64
  a = [float(v) for v in class_acc[0, 0]]  # the float32 values, summed as Python floats
  np.testing.assert_allclose(got[0], [a[0], (a[0] + a[1]) / 2, sum(a[:3]) / 3], rtol=1e-15)
