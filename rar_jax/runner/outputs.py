"""What a finished method run leaves: its summary (`MethodResult`), the RAR
preview picture, and the result files."""

from __future__ import annotations

import os

import jax
import numpy as np
from ml_collections import ConfigDict

from rar_jax.core.step import make_rar_preview
from rar_jax.evaluation import continual
from rar_jax.runner import hooks as hooks_lib
from rar_jax.runner import loop, plots, report
from rar_jax.runner import sweep as sweep_lib
from rar_jax.runner.config import cell_config, is_swept, stream_settings
from rar_jax.runner.engine import (
  Placed,
  Programs,
  RunState,
  compile_evaluation,
  gather,
  live_runs,
)
from rar_jax.runner.plan import RunPlan
from rar_jax.runner.prepare import PreparedData
from rar_jax.runner.results import CellResult, MethodResult

_say = hooks_lib.say


def summarise(
  config: ConfigDict,
  plan: RunPlan,
  data: PreparedData,
  run: RunState,
  programs: Programs,
  num_devices: int,
  class_kinds=None,
) -> MethodResult:
  """The method's result; ``class_kinds[runs, 2]``: a blurry stream's final
  accuracy on its disjoint and blurry classes (`class_kind_accuracy`)."""
  steps = plan.num_tasks * plan.steps_per_task
  timing = {
    "train_seconds": run.train_seconds,
    "compile_seconds": programs.compile_seconds,
    "steps_per_second": steps / run.train_seconds if run.train_seconds > 0 else 0.0,
    "num_runs": plan.num_runs,
    "run_batching": plan.batching,
    **plan.execution,
    **programs.eval_execution,
    "eval_seconds": run.eval_seconds,
    "devices": num_devices,
    "processes": jax.process_count(),
    "device": jax.devices()[0].platform,
    "matmul_precision": config.matmul_precision,
    # XLA's CPU matmuls split over these cores: another count sums in another order.
    "host_cpus": len(os.sched_getaffinity(0))
    if hasattr(os, "sched_getaffinity")
    else os.cpu_count(),
  }
  info = {
    "dataset": data.ds.name,
    "data_source": data.ds.source,
    "eval_split": config.eval_split,
    "eval_classifier": config.eval_classifier,
    "eval_protocol": config.eval_protocol,
    "steps_per_task": plan.steps_per_task,
    "dropped_samples_per_seed": data.streams.dropped_samples,
  }
  if config.stream != "class_incremental":  # class-incremental runs' files as before
    info["stream"] = {"kind": config.stream, **stream_settings(config)}
  cells = []
  for i, overrides in enumerate(plan.cells):
    runs = range(plan.num_runs)[plan.cell_runs(i)]
    bad = [seed for r, seed in zip(runs, plan.seeds) if r in run.diverged]
    # The weights evaluated: a cell may set its own ema_decay.
    cell_info = dict(info, ema_decay=cell_config(config, overrides).ema_decay)
    curve = class_curve = first_seen = None
    if run.curve is not None and run.class_curve is not None:
      curve, class_curve = run.curve[plan.cell_runs(i)], run.class_curve[plan.cell_runs(i)]
      first_seen = np.stack(
        [
          continual.first_seen_steps(
            data.train_y[plan.index[r]].reshape(-1, plan.index.shape[-1]),
            plan.task_of_class.shape[1],
          )
          for r in range(plan.num_runs)[plan.cell_runs(i)]
        ]
      )
      cell_info.update(
        eval_every=config.eval_every,
        eval_samples_per_task=config.eval_samples_per_task,
        curve_steps=plan.curve_steps,
      )
    kinds = None if class_kinds is None else class_kinds[plan.cell_runs(i)]
    cells.append(
      CellResult(
        plan.method,
        overrides,
        plan.seeds,
        run.acc[plan.cell_runs(i)],
        cell_info,
        bad,
        curve,
        kinds,
        class_curve,
        first_seen,
      )  # fmt: skip
    )
  return MethodResult(plan.method, config.sweep, cells, timing)


def class_kind_accuracy(
  config: ConfigDict, plan: RunPlan, placed: Placed, run: RunState, module
) -> np.ndarray:
  """``[runs, 2]``: each run's final accuracy on a blurry stream's disjoint
  classes (0) and blurry classes (1), NaN where a kind has no class."""
  evaluate, _ = compile_evaluation(plan, placed, run, module, config, num_tasks=2)
  assert plan.disjoint_classes is not None
  kinds = loop.put_global((~plan.disjoint_classes).astype(np.int32), placed.by_run)
  return gather(evaluate(run.states, placed.eval_x, placed.eval_y, kinds))[: plan.num_runs]


def rar_preview(
  config: ConfigDict, plan: RunPlan, data: PreparedData, run: RunState, module, tx
) -> dict:
  """What RAR does in the first run that did not diverge, at its end: one
  replay draw for the last task's first minibatch, as host arrays
  (`rar_jax.core.step.make_rar_preview`)."""
  r = live_runs(plan, run)[0]
  state = jax.tree.map(lambda a: gather(a)[r], run.states)
  rows = plan.index[r, -1, 0]
  x, y = data.train_x[rows], data.train_y[rows]
  preview = jax.jit(
    make_rar_preview(module, tx, plan.replay, plan.chain, unroll=plan.execution["unroll"])
  )
  out = jax.device_get(preview(state, x, y, jax.random.PRNGKey(config.seed)))
  return dict(out, x=x, y=y, run=r)


def evaluation_words(config: ConfigDict) -> str:
  decay = "per cell" if is_swept(config, "ema_decay") else config.ema_decay
  return report.evaluation_words(
    config.eval_split, config.eval_classifier, config.eval_protocol, decay
  )


def write_results(
  config: ConfigDict, plan: RunPlan, data: PreparedData, result: MethodResult, workdir: str, preview
) -> None:
  summary = result.to_dict()
  report.atomic_write_json(os.path.join(workdir, "metrics.json"), summary)
  sweep = len(result.cells) > 1
  for cell in result.cells:
    suffix = "_" + sweep_lib.cell_name(cell.overrides) if sweep else ""
    report.write_acc_csv(os.path.join(workdir, f"acc_matrix{suffix}.csv"), cell.acc)
  if config.plot and not sweep:
    report.plot_accuracy(
      os.path.join(workdir, "accuracy.png"),
      result.cells[0].acc,
      f"{plan.method} on {data.ds.name} ({len(plan.seeds)} seeds, "
      + evaluation_words(config)
      + ")",
    )
  if config.plot and "continual" in summary:
    plots.plot_continual(
      os.path.join(workdir, "continual.png"),
      {plan.method: summary},
      f"{plan.method} on {data.ds.name} ({len(plan.seeds)} seeds"
      + (", the best sweep cell" if sweep else "")
      + ", "
      + evaluation_words(config)
      + ")",
    )
  if sweep:
    report.atomic_write_text(os.path.join(workdir, "sweep.md"), report.sweep_table(summary) + "\n")
    if config.plot and report.sensitivity_grid(summary) is not None:
      report.plot_sensitivity(
        os.path.join(workdir, "sensitivity.png"),
        summary,
        f"{plan.method} on {data.ds.name}, {len(plan.seeds)} seeds, " + evaluation_words(config),
      )
  if preview is not None:
    r = preview["run"]
    report.plot_rar_samples(
      os.path.join(workdir, "rar_samples.png"),
      preview,
      config.rar_samples,
      f"{plan.method}: replay samples and what RAR made of them (seed "
      f"{plan.seeds[r % len(plan.seeds)]}, end of task {plan.num_tasks}, epsilon "
      f"{float(plan.hypers.epsilon_fgsm[r]):g})",
    )
