"""Continual evaluation in the engine: one run's evaluation inside the
stream's program, its arguments, and where a chunk's points go."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

import numpy as np

from rar_jax.evaluation import evaluator as evaluator_lib

if TYPE_CHECKING:  # the engine imports this module
  from rar_jax.runner.engine import Placed, RunState
  from rar_jax.runner.plan import RunPlan


def continual_evaluator(plan: "RunPlan", placed: "Placed", module, config):
  """One run's evaluation on the continual subset, to run inside the stream's
  program: unrolled over its chunks where the stream loop runs on the host
  (XLA's CPU convolutions are ~10x slower inside loop bodies, jax-ml/jax#12868)."""
  assert placed.curve_x is not None
  rows = placed.curve_x.shape[0]
  chunk = min(rows, 250 if plan.conv_model else 1000)
  return evaluator_lib.make_run_evaluator(
    module,
    plan.num_tasks,
    chunk=chunk,
    eval_protocol=config.eval_protocol,
    eval_classifier=config.eval_classifier,
    unroll=plan.execution["stream_loop"] == "host",
    per_class=True,
  )


def curve_args(placed: "Placed") -> tuple:
  """The continual evaluation's arguments of a chunk program (none when off)."""
  if placed.curve_x is None:
    return ()
  return (placed.curve_x, placed.curve_y, placed.task_of_class)


def per_task_accuracy(counts: np.ndarray, task_of_class: np.ndarray, num_tasks: int):
  """``counts[runs, points, 2, C]`` (right, rows per class) as accuracy per task
  ``[runs, points, tasks]`` and per class ``[runs, points, C]`` (float32, NaN where
  no row): the sums are whole numbers, so a task's accuracy is exactly what the
  end-of-task evaluator computes."""
  onehot = (task_of_class[:, :, None] == np.arange(num_tasks)).astype(np.float32)  # [runs, C, T]
  right = np.einsum("rpc,rct->rpt", counts[:, :, 0], onehot).astype(np.float32)
  total = np.einsum("rpc,rct->rpt", counts[:, :, 1], onehot).astype(np.float32)
  with np.errstate(invalid="ignore", divide="ignore"):
    by_task = np.where(total > 0, right / np.maximum(total, np.float32(1)), np.nan)
    by_class = np.where(
      counts[:, :, 1] > 0, counts[:, :, 0] / np.maximum(counts[:, :, 1], np.float32(1)), np.nan
    )
  return by_task.astype(np.float32), by_class.astype(np.float32)


def record_points(plan: "RunPlan", run: "RunState", counts, steps: List[int]) -> tuple:
  """Stores a chunk's evaluation points (``counts[runs, points, 2, C]`` at
  stream ``steps``) in ``run.curve`` (per task) and ``run.class_curve`` (per
  class); returns each point's ``(step, seed-mean accuracy per task)`` over the
  live runs, for the hooks."""
  assert run.curve is not None and run.class_curve is not None and plan.curve_steps is not None
  cols = np.searchsorted(plan.curve_steps, steps)
  from rar_jax.runner.engine import gather, live_runs  # the engine imports this module

  by_task, by_class = per_task_accuracy(
    np.asarray(gather(counts), np.float32), plan.task_of_class, plan.num_tasks
  )
  run.curve[:, cols], run.class_curve[:, cols] = by_task, by_class
  live = live_runs(plan, run) or list(range(plan.num_runs))
  return tuple((int(plan.curve_steps[c]), run.curve[live, c].mean(0)) for c in cols)
