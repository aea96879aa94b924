"""A whole class-incremental benchmark: config in, result files out.

`train_and_evaluate` runs these phases::

  validate the config -> prepare the streams -> for each method:
    plan the runs (cells x seeds) -> init or restore -> compile ->
    for each task: train in chunks, evaluate, call the hooks ->
    summarise -> write results (metrics.json, CSV, plots, rar_samples.png)
  -> compare the methods

The hooks (`rar_jax.runner.hooks`) guard against NaN, show progress, write
TensorBoard/JSON-lines metrics and save checkpoints.
"""

from __future__ import annotations

import json
import os
from typing import Dict

import jax
import numpy as np
from ml_collections import ConfigDict

from rar_jax.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from rar_jax.runner import checkpoint as checkpoint_lib
from rar_jax.runner import data_check, loop, plots, report, user_model
from rar_jax.runner import hooks as hooks_lib
from rar_jax.runner.config import (
  base_config,
  cell_config,
  method_config,
  method_names,
  optimizer,
  replay_parts,
  stream_settings,
)
from rar_jax.runner.engine import (
  compile_evaluation,
  compile_programs,
  diverged_runs,
  gather,
  init_or_restore,
  make_hooks,
  place,
  train_tasks,
)
from rar_jax.runner.outputs import (
  class_kind_accuracy,
  evaluation_words,
  rar_preview,
  summarise,
  write_results,
)
from rar_jax.runner.plan import make_plan
from rar_jax.runner.prepare import PreparedData, prepare_data
from rar_jax.runner.results import is_sweep
from rar_jax.runner.validate import validate_config
from rar_jax.runner.workdir import (
  check_placement,
  check_resumable,
  check_workdir,
  config_json,
)

# Re-exported: the names scripts of the first release used.
__all__ = [
  "train_and_evaluate",
  "run_method",
  "prepare_data",
  "validate_config",
  "ConfigError",
  "TrainingDiverged",
  "method_names",
  "method_config",
  "cell_config",
  "replay_parts",
]

_say = hooks_lib.say
# comparison.json's continual-evaluation entries (each method's metrics.json has the curves).
CONTINUAL_SUMMARIES = ("aaa", "min_acc", "wc_acc", "stability_gap")
# comparison.json: how each method's numbers were evaluated (they compare only under one).
EVALUATION_KEYS = ("eval_split", "eval_classifier", "eval_protocol", "ema_decay", "num_seeds")


def _plan(config: ConfigDict, method: str, data: PreparedData, devices: int):
  """``method``'s `RunPlan` for the prepared data."""
  ds, shape = data.ds, data.train_x.shape[1:]
  conv_model = user_model.model_is_conv(config, ds.num_classes, shape)
  return make_plan(
    config, method, data.streams, ds.num_classes, devices, ds.data_range, shape, conv_model
  )


def run_method(config: ConfigDict, method: str, data: PreparedData, workdir: str) -> dict:
  """Trains ``method`` on every (sweep cell, seed) run in one program; writes
  and returns its metrics (`rar_jax.runner.results.MethodResult.to_dict`)."""
  lead = jax.process_index() == 0  # only process 0 writes files
  config = method_config(config, method)  # what this folder's config.json records
  os.makedirs(workdir, exist_ok=True)
  check_resumable(workdir, config, bool(config.overwrite))
  if lead:
    report.atomic_write_json(os.path.join(workdir, "config.json"), config_json(config))
  mesh = loop.runs_mesh()
  plan = _plan(config, method, data, mesh.size)
  plan = check_placement(workdir, config, plan, mesh.size, lead)  # before checkpoints open
  module = user_model.create(config, data.ds.num_classes, plan.execution["conv_impl"])
  tx = optimizer(config)
  placed = place(plan, data, mesh)
  ckpt = (
    checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    if config.keep_checkpoints
    else checkpoint_lib.NoCheckpoints()
  )
  run = init_or_restore(plan, placed, module, tx, ckpt, data.train_x[:1])
  programs = compile_programs(plan, placed, run, module, tx, config)
  if lead:  # in a log, this explains the silence before the first task's line
    _say(
      f"[{method}] compiled in {programs.compile_seconds:.1f} s; training {plan.num_runs} "
      f"runs x {plan.num_tasks * plan.steps_per_task} steps"
    )
  hooks = make_hooks(config, plan, workdir, ckpt, run, lead)
  try:
    train_tasks(plan, placed, run, programs, hooks)
  finally:
    hooks_lib.close_all(hooks)
  run.diverged |= diverged_runs(run.states, plan.num_runs)
  kinds = None
  if plan.disjoint_classes is not None:
    kinds = class_kind_accuracy(config, plan, placed, run, module)
  result = summarise(config, plan, data, run, programs, mesh.size, kinds)
  preview = None
  if plan.chain.perturb is not None and config.rar_samples:
    preview = rar_preview(config, plan, data, run, module, tx)
  if lead:
    write_results(config, plan, data, result, workdir, preview)
  return result.to_dict()


def evaluate_checkpoint(workdir: str, eval_classifier: str = "head") -> dict:
  """Evaluates the latest checkpoint of one method's folder (as train.py wrote
  it: ``config.json``, ``placement.json``, ``checkpoints/``) with another
  ``eval_classifier``, on the split the run was evaluated on; training is not
  touched. E.g. the nearest-class-mean accuracies of runs trained and evaluated
  with the output layer. Returns ``{"step", "steps", "seeds", "overrides",
  "accuracy"}``, ``accuracy[run][task]`` after the checkpoint's step (the
  final row of ``acc_matrix`` when the run had finished), runs as metrics.json
  orders them (sweep cells x seeds); a run whose parameters hold a NaN/Inf
  (diverged) has NaN accuracies, where metrics.json recorded what its NaN
  weights scored (0 for such runs, listed in ``diverged_seeds``). Reads the
  folder only: an unreadable latest checkpoint raises `ConfigError` instead of
  being set aside."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    inner = sorted(
      d
      for d in (os.listdir(workdir) if os.path.isdir(workdir) else [])
      if os.path.isfile(os.path.join(workdir, d, "config.json"))
    )
    hint = f"; its method folders: {', '.join(inner)}" if inner else ""
    raise ConfigError(
      f"{workdir} holds no config.json: not a method's folder written by train.py{hint}"
    )
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConfigError(f"{workdir} holds no checkpoints/ (was keep_checkpoints 0?)")
  config = base_config()  # keys added after the run was written run as their defaults
  with open(path) as f:
    config.update(json.load(f))
  config.eval_classifier = eval_classifier
  validate_config(config)
  method = method_names(config)[0]
  data = prepare_data(config)
  mesh = loop.runs_mesh()
  plan = _plan(config, method, data, mesh.size)
  plan = check_placement(workdir, config, plan, mesh.size, lead=False)
  module = user_model.create(config, data.ds.num_classes, plan.execution["conv_impl"])
  placed = place(plan, data, mesh)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1, read_only=True)
  try:
    tx = optimizer(config)
    run = init_or_restore(
      plan, placed, module, tx, ckpt, data.train_x[:1], f"evaluating ({eval_classifier})"
    )
  except CheckpointError as e:
    raise ConfigError(f"{e}; nothing was changed in {workdir}") from None
  finally:
    ckpt.close()
  if run.position == 0:
    raise ConfigError(f"{workdir}: no checkpoint could be restored")
  with jax.default_matmul_precision(config.matmul_precision):
    evaluate, _ = compile_evaluation(plan, placed, run, module, config)
    acc = gather(evaluate(run.states, placed.eval_x, placed.eval_y, placed.task_of_class))
  acc = np.array(acc[: plan.num_runs], np.float64)
  acc[sorted(run.diverged)] = np.nan
  return {
    "step": run.position,
    "steps": plan.num_tasks * plan.steps_per_task,
    "seeds": list(plan.seeds),
    "overrides": [dict(o) for o in plan.cells],
    "accuracy": acc.tolist(),
  }


# ---------------------------------------------------------------- the benchmark


def _compare(
  config: ConfigDict, data: PreparedData, results: Dict[str, dict], workdir: str
) -> None:
  """The comparison table on stdout; with several methods also as files."""
  if any(is_sweep(r) for r in results.values()):
    for r in results.values():
      print("\n" + report.sweep_table(r), flush=True)
    return
  table = report.comparison_table(list(results.values()))
  title = (
    f"{data.ds.name}, {config.num_tasks} tasks, memory {config.mem_size}, "
    f"{config.num_seeds} seeds, " + evaluation_words(config)
  )
  print(f"\n{title}:\n{table}", flush=True)
  if len(results) > 1:
    report.atomic_write_text(os.path.join(workdir, "comparison.md"), f"{title}\n\n{table}\n")
    report.atomic_write_json(
      os.path.join(workdir, "comparison.json"),
      {
        n: {
          **{k: r[k] for k in ("final_avg_accuracy", "final_forgetting", "steps_per_second")},
          **{k: r["continual"][k] for k in CONTINUAL_SUMMARIES if "continual" in r},
          **{k: r[k] for k in EVALUATION_KEYS if k in r},
        }
        for n, r in results.items()
      },
    )
    if config.plot:
      report.plot_comparison(
        os.path.join(workdir, "comparison.png"),
        {n: np.asarray(r["acc_matrix"]) for n, r in results.items()},
        title,
      )
      if config.eval_every:
        plots.plot_continual(os.path.join(workdir, "continual.png"), results, title)


def write_stream_picture(config: ConfigDict, data: PreparedData, workdir: str) -> None:
  """``stream.png``: the class of each step of seed 0's stream."""
  streams = data.streams
  labels = data.train_y[streams.index[0]].reshape(streams.index.shape[1], -1)
  settings = ", ".join(f"{k} {v:g}" for k, v in stream_settings(config).items())
  os.makedirs(workdir, exist_ok=True)
  plots.plot_stream(
    os.path.join(workdir, "stream.png"),
    labels,
    streams.task_of_class[0],
    config.batch_size,
    f"{data.ds.name}: the {config.stream} stream of seed {config.seed} ({settings})",
  )


def train_and_evaluate(config: ConfigDict, workdir: str) -> Dict[str, dict]:
  """Runs every method of ``config``; returns ``{method: metrics}``.

  One method: its files go to ``workdir``. Several (``config.methods``): to
  ``workdir/<method>/``, plus ``comparison.md`` / ``.json`` / ``.png``.
  """
  validate_config(config)
  data_check.validate_data(config)  # a folder's listing, an .npz's headers: before any work
  names = method_names(config)
  method_dirs = {n: workdir if len(names) == 1 else os.path.join(workdir, n) for n in names}
  created = not os.path.exists(workdir)
  check_workdir(workdir)  # whatever the workdir refuses, before minutes of data loading
  if not config.overwrite:
    for name, method_dir in method_dirs.items():
      check_resumable(method_dir, method_config(config, name), overwrite=False)
  try:
    data = prepare_data(config)
  except DataError:  # e.g. a truncated image, found when decoding: leave nothing behind
    if created and os.path.isdir(workdir) and not os.listdir(workdir):
      os.rmdir(workdir)
    raise
  if config.stream != "class_incremental" and config.plot and jax.process_index() == 0:
    write_stream_picture(config, data, workdir)
  results = {}
  for name, method_dir in method_dirs.items():
    # Every program is traced and compiled inside run_method, so this pins its precision.
    with jax.default_matmul_precision(config.matmul_precision):
      results[name] = run_method(config, name, data, method_dir)
  if jax.process_index() == 0:
    _compare(config, data, results, workdir)
  return results
