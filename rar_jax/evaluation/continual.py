"""Continual evaluation: accuracy *during* the stream and its summaries.

A curve is ``accuracy[seeds, points, tasks]``: the accuracy on every task at
evaluation points ``steps[points]`` (minibatch steps trained so far, from 1),
with ``task_ends[tasks]`` the step at which each task's training ends (task k
trains on steps ``task_ends[k-1] < s <= task_ends[k]``). The summaries work on
any such curve, from rar_jax or elsewhere:

- `average_anytime_accuracy` (AAA; Caccia et al., ICLR 2022; Koh et al.'s
  A_AUC with evenly spaced points): the mean over points of the average
  accuracy over the tasks seen so far (a task is seen from its first step on);
- `min_accuracy` (min-ACC; De Lange, van de Ven & Tuytelaars, ICLR 2023): for
  each task but the last, its lowest accuracy at any point after its training
  ended, averaged over those tasks;
- `worst_case_accuracy` (WC-ACC, same paper): ``(1/T) * final accuracy on the
  last task + (1 - 1/T) * min-ACC``;
- `stability_gap`: per task switch k >= 2 (from 1), the average accuracy over
  tasks 1..k-1 at the last point of task k-1, minus its minimum over the points
  inside task k; and the step where that minimum is.

Every function returns one value per seed (NaN where a curve has no such
quantity, e.g. min-ACC with one task).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from rar_jax.errors import ArgumentError
from rar_jax.evaluation.metrics import summarize


@dataclasses.dataclass(frozen=True)
class Curves:
  """Accuracy during the stream: ``accuracy[runs, points, tasks]`` at
  ``steps[points]``; ``task_ends[tasks]``: the step each task's training ends."""

  steps: np.ndarray
  accuracy: np.ndarray
  task_ends: np.ndarray


def evaluation_steps(num_tasks: int, steps_per_task: int, eval_every: int) -> np.ndarray:
  """The evaluation points of a stream, as stream steps (from 1): every
  ``eval_every``-th step of each task (counted from the task's start, as
  Avalanche's ``eval_every`` counts a task's iterations) and every task's
  last step, sorted."""
  if (
    isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1
  ):
    raise ArgumentError(f"eval_every={eval_every!r} is invalid: an int >= 1")
  inside = np.union1d(np.arange(eval_every, steps_per_task + 1, eval_every), [steps_per_task])
  starts = steps_per_task * np.arange(num_tasks)
  return (starts[:, None] + inside[None, :]).reshape(-1).astype(np.int64)


def evaluation_subset(y, classes_per_task: int, samples_per_task: int, seed: int = 0):
  """Row numbers of a fixed subset of an evaluation split with labels ``y``:
  ``ceil(samples_per_task / classes_per_task)`` rows of every class, drawn with
  ``seed``, sorted. It depends on the labels alone, so every method, seed and
  sweep cell is evaluated on the same rows and their curves pair up."""
  y = np.asarray(y)
  per_class = -(-samples_per_task // classes_per_task)
  rng = np.random.default_rng(seed)
  rows = []
  for c in np.unique(y):
    idx = np.flatnonzero(y == c)
    if per_class > len(idx):
      raise ArgumentError(
        f"eval_samples_per_task={samples_per_task} is larger than a task's evaluation "
        f"split: it takes {per_class} rows of each of a task's {classes_per_task} classes, "
        f"and class {int(c)} has {len(idx)}"
      )
    rows.append(rng.choice(idx, per_class, replace=False))
  return np.sort(np.concatenate(rows))


def _check(accuracy, steps, task_ends):
  accuracy = np.asarray(accuracy, np.float64)
  steps, task_ends = np.asarray(steps), np.asarray(task_ends)
  if accuracy.ndim != 3 or accuracy.shape[1:] != (len(steps), len(task_ends)):
    raise ArgumentError(
      f"accuracy of shape {accuracy.shape} is invalid: [seeds, points={len(steps)}, "
      f"tasks={len(task_ends)}]"
    )
  if np.any(np.diff(steps) <= 0) or np.any(np.diff(task_ends) <= 0):
    raise ArgumentError("steps and task_ends must be increasing")
  missing = sorted(set(task_ends.tolist()) - set(steps.tolist()))
  if missing:
    raise ArgumentError(f"every task's last step must be an evaluation point; missing {missing}")
  return accuracy, steps, task_ends


def seen(steps, task_ends) -> np.ndarray:
  """``[points, tasks]``: whether a task had started training at each point."""
  starts = np.concatenate([[0], np.asarray(task_ends)[:-1]])
  return np.asarray(steps)[:, None] > starts[None, :]


def average_seen_accuracy(accuracy, steps, task_ends) -> np.ndarray:
  """``[seeds, points]``: the average accuracy over the tasks seen at each point."""
  accuracy, steps, task_ends = _check(accuracy, steps, task_ends)
  mask = seen(steps, task_ends)
  return (accuracy * mask).sum(-1) / mask.sum(-1)


def average_anytime_accuracy(accuracy, steps, task_ends) -> np.ndarray:
  """AAA per seed: the mean over points of the average accuracy on seen tasks."""
  return average_seen_accuracy(accuracy, steps, task_ends).mean(-1)


def min_accuracy(accuracy, steps, task_ends) -> np.ndarray:
  """min-ACC per seed: over each task but the last, its lowest accuracy at any
  point after its last step, averaged (NaN with one task)."""
  accuracy, steps, task_ends = _check(accuracy, steps, task_ends)
  if len(task_ends) < 2:
    return np.full(accuracy.shape[0], np.nan)
  lows = [accuracy[:, steps > end, k].min(-1) for k, end in enumerate(task_ends[:-1])]
  return np.mean(lows, axis=0)


def worst_case_accuracy(accuracy, steps, task_ends) -> np.ndarray:
  """WC-ACC per seed: ``(1/T) * final accuracy on the last task + (1 - 1/T) * min-ACC``."""
  accuracy, steps, task_ends = _check(accuracy, steps, task_ends)
  t = len(task_ends)
  last = accuracy[:, -1, -1]
  if t < 2:
    return last
  return last / t + (1 - 1 / t) * min_accuracy(accuracy, steps, task_ends)


@dataclasses.dataclass(frozen=True)
class StabilityGap:
  """``mean[seeds]`` over the switches; ``per_switch[seeds, switches]`` and
  ``step_of_min[seeds, switches]`` for switches k = 2..T (from 1)."""

  mean: np.ndarray
  per_switch: np.ndarray
  step_of_min: np.ndarray


def stability_gap(accuracy, steps, task_ends) -> StabilityGap:
  """Per switch to task k >= 2: the average accuracy over tasks 1..k-1 at task
  k-1's last step, minus its minimum over the points inside task k."""
  accuracy, steps, task_ends = _check(accuracy, steps, task_ends)
  seeds, t = accuracy.shape[0], len(task_ends)
  gaps = np.full((seeds, max(t - 1, 0)), np.nan)
  where = np.zeros((seeds, max(t - 1, 0)), np.int64)
  for k in range(1, t):
    prev = accuracy[:, :, :k].mean(-1)  # [seeds, points]: average over tasks 1..k-1
    before = prev[:, int(np.flatnonzero(steps == task_ends[k - 1])[0])]
    inside = np.flatnonzero((steps > task_ends[k - 1]) & (steps <= task_ends[k]))
    lowest = prev[:, inside].argmin(-1)
    gaps[:, k - 1] = before - prev[np.arange(seeds), inside[lowest]]
    where[:, k - 1] = steps[inside[lowest]]
  mean = gaps.mean(-1) if t > 1 else np.full(seeds, np.nan)
  return StabilityGap(mean, gaps, where)


def first_seen_steps(labels, num_classes: int) -> np.ndarray:
  """``[classes]``: the stream step (from 1) of each class's first sample in one
  run's ``labels[steps, batch]``; a class the stream never shows gets a step
  past its end."""
  labels = np.asarray(labels)
  first = np.full(num_classes, labels.shape[0] + 1, np.int64)
  for step in range(labels.shape[0] - 1, -1, -1):
    first[labels[step]] = step + 1
  return first


def average_seen_class_accuracy(class_accuracy, steps, first_seen) -> np.ndarray:
  """``[seeds, points]``: the mean accuracy over the classes seen at each point
  (``first_seen[seeds, classes]``, `first_seen_steps`); a class with no
  evaluation row is left out. On blurry streams a class is seen before its
  home task starts; the i-Blurry papers' anytime accuracy averages this."""
  acc = np.asarray(class_accuracy, np.float64)
  mask = np.asarray(first_seen)[:, None, :] <= np.asarray(steps)[None, :, None]
  mask &= ~np.isnan(acc)
  return np.where(mask, np.nan_to_num(acc), 0.0).sum(-1) / np.maximum(mask.sum(-1), 1)


def _summary(per_seed: np.ndarray) -> Optional[dict]:
  """`summarize`, or None where the quantity does not exist (NaN)."""
  return None if np.all(np.isnan(per_seed)) else summarize(per_seed)


def summaries(accuracy, steps, task_ends) -> dict:
  """AAA, min-ACC, WC-ACC and the stability gap of a curve, each as
  ``{mean, se2, per_seed}`` (None where undefined, e.g. one task); the gap
  also per switch (seed means) with the steps of its minima per seed."""
  gap = stability_gap(accuracy, steps, task_ends)
  return {
    "aaa": _summary(average_anytime_accuracy(accuracy, steps, task_ends)),
    "min_acc": _summary(min_accuracy(accuracy, steps, task_ends)),
    "wc_acc": _summary(worst_case_accuracy(accuracy, steps, task_ends)),
    "stability_gap": _summary(gap.mean),
    "stability_gap_per_switch": gap.per_switch.mean(0).tolist(),
    "stability_gap_step_of_min": gap.step_of_min.tolist(),
  }


__all__ = [
  "Curves",
  "evaluation_steps",
  "evaluation_subset",
  "seen",
  "first_seen_steps",
  "average_seen_class_accuracy",
  "average_seen_accuracy",
  "average_anytime_accuracy",
  "min_accuracy",
  "worst_case_accuracy",
  "StabilityGap",
  "stability_gap",
  "summaries",
]
