"""Continual evaluation in the engine: one run's evaluation inside the
stream's program, its arguments, and where a chunk's points go."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

import numpy as np

from rar_jax import models
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
  chunk = min(rows, 250 if config.model in models.CONV_MODELS else 1000)
  return evaluator_lib.make_run_evaluator(
    module,
    plan.num_tasks,
    chunk=chunk,
    eval_protocol=config.eval_protocol,
    eval_classifier=config.eval_classifier,
    unroll=plan.execution["stream_loop"] == "host",
  )


def curve_args(placed: "Placed") -> tuple:
  """The continual evaluation's arguments of a chunk program (none when off)."""
  if placed.curve_x is None:
    return ()
  return (placed.curve_x, placed.curve_y, placed.task_of_class)


def record_points(plan: "RunPlan", run: "RunState", accuracy, steps: List[int]) -> tuple:
  """Stores a chunk's evaluation points (``accuracy[runs, points, tasks]`` at
  stream ``steps``) in ``run.curve``; returns each point's ``(step, seed-mean
  accuracy per task)`` over the live runs, for the hooks."""
  assert run.curve is not None and plan.curve_steps is not None
  cols = np.searchsorted(plan.curve_steps, steps)
  from rar_jax.runner.engine import gather, live_runs  # the engine imports this module

  run.curve[:, cols] = gather(accuracy)
  live = live_runs(plan, run) or list(range(plan.num_runs))
  return tuple((int(plan.curve_steps[c]), run.curve[live, c].mean(0)) for c in cols)
