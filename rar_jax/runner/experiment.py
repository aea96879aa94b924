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

import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Set

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from rar_jax import data as data_lib
from rar_jax import models
from rar_jax.core.step import make_rar_preview, make_train_step
from rar_jax.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import checkpoint as checkpoint_lib
from rar_jax.runner import data_check, loop, report
from rar_jax.runner import hooks as hooks_lib
from rar_jax.runner import sweep as sweep_lib
from rar_jax.runner.config import (
  RUNTIME_KEYS,
  base_config,
  cell_config,
  is_swept,
  method_config,
  method_names,
  optimizer,
  replay_parts,
  validate_config,
)
from rar_jax.runner.plan import RunPlan, make_plan
from rar_jax.runner.results import CellResult, MethodResult, is_sweep
from rar_jax.runner.writer import MetricWriter

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


# ---------------------------------------------------------------- workdir


def _config_json(config: ConfigDict) -> dict:
  return json.loads(config.to_json())


def check_workdir(workdir: str) -> None:
  """Refuses a workdir the run could not write, before any data are loaded."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir!r} is a file, not a directory; pass another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):  # access() says yes to root on read-only mounts
      pass
  except OSError as e:
    raise ConfigError(
      f"--workdir {workdir!r} is not writable ({e.strerror or e}); pass another --workdir"
    ) from None


def _check_resumable(workdir: str, config, overwrite: bool) -> None:
  """Refuses to mix two configs' runs in one workdir; ``overwrite`` discards
  whatever run is there."""
  if overwrite:
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
      logging.warning("overwrite: discarding the checkpoints in %s", workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    for name in ("placement.json", "metrics.jsonl"):
      if os.path.exists(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))
    for name in os.listdir(workdir) if os.path.isdir(workdir) else []:
      if name.startswith("events.out.tfevents"):
        os.remove(os.path.join(workdir, name))
    return
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  # A key added after that run was written ran as its default (keys are added that way).
  old = {**_config_json(base_config()), **old}
  new = _config_json(config)
  differ = sorted(
    k for k in set(old) | set(new) if k not in RUNTIME_KEYS and old.get(k) != new.get(k)
  )
  if differ:
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ)
    raise ConfigError(
      f"{workdir} holds a run with another config ({details}); use another "
      "--workdir, or --config.overwrite=true to discard it"
    )


def _check_placement(
  workdir: str, config: ConfigDict, plan: RunPlan, devices: int, lead: bool
) -> RunPlan:
  """Checkpoints hold the runs padded to the device count: resuming them
  needs the same padding, which a different device count may change. They
  also resume with the convolutions they were written with (``conv_impl``
  ``auto`` depends on the method, platform and process count): the plan,
  pinned to that choice where ``auto`` would pick another."""
  path = os.path.join(workdir, "placement.json")
  if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
    with open(path) as f:
      old = json.load(f)
    if old["padded_runs"] != plan.padded:
      raise ConfigError(
        f"{workdir} holds checkpoints of {old['padded_runs']} runs padded for "
        f"{old['devices']} devices; this process sees {devices} devices ({plan.padded} padded "
        f"runs). Resume with {old['devices']} devices (e.g. "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={old['devices']} on the CPU), "
        "or start afresh with --config.overwrite=true"
      )
    was = old.get("conv_impl")  # absent in placement files of early versions
    if was and was != plan.execution["conv_impl"]:
      if config.conv_impl != "auto":
        raise ConfigError(
          f"{workdir} holds checkpoints trained with conv_impl={was!r}; resuming them with "
          f"conv_impl={config.conv_impl!r} would change the numbers. Pass "
          f"--config.conv_impl={was} (or auto), or start afresh with --config.overwrite=true"
        )
      plan = plan.with_execution(config, devices, conv_impl=was)
  if lead:
    report.atomic_write_json(
      path,
      {"padded_runs": plan.padded, "devices": devices, "conv_impl": plan.execution["conv_impl"]},
    )
  return plan


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """The dataset's training subset that some stream visits (float32 in
  [0, 1]), every seed's stream into it, and the evaluation split."""

  ds: data_lib.Dataset
  streams: data_lib.Streams
  train_x: np.ndarray
  train_y: np.ndarray
  eval_x: np.ndarray
  eval_y: np.ndarray


def prepare_data(config: ConfigDict) -> PreparedData:
  """Loads the dataset and builds every seed's stream.

  Only the training samples some stream visits are kept, and the streams index
  into that subset: with 1000 samples per task the device holds 5000 images
  per seed, not the whole training set.
  """
  ds = data_lib.load(
    config.dataset,
    config.data_source,
    config.data_dir,
    image_size=config.image_size,
    folder_split=config.folder_split,
    train_fraction=config.train_fraction,
    progress=config.progress and jax.process_index() == 0,
  )
  bench = data_lib.class_incremental(
    ds.train_x,
    ds.train_y,
    config.num_tasks,
    config.batch_size,
    [config.seed + i for i in range(config.num_seeds)],
    config.samples_per_task,
    config.shuffle_classes,
    config.validation_fraction,
    holdout_seed=config.seed,
    num_classes=ds.num_classes,
  )
  streams = bench.streams
  if config.eval_split == "validation":
    eval_x, eval_y = bench.val_x, bench.val_y
  else:
    eval_x, eval_y = ds.test_x, ds.test_y
  per_task = streams.index.shape[2] * config.batch_size
  if per_task < config.samples_per_task // config.batch_size * config.batch_size:
    _say(
      f"warning: samples_per_task={config.samples_per_task} is more than the smallest task "
      f"holds; every task uses {per_task} samples ({streams.index.shape[2]} minibatches of "
      f"{config.batch_size})"
    )
  if streams.dropped_samples:
    _say(
      f"{streams.dropped_samples} training samples per seed dropped so every task has "
      f"{streams.index.shape[2]} full minibatches"
    )
  return PreparedData(
    ds,
    streams,
    data_lib.to_unit_float(bench.train_x),
    bench.train_y,
    data_lib.to_unit_float(eval_x),
    eval_y,
  )


# ---------------------------------------------------------------- one method


def _gather(x) -> np.ndarray:
  """A (possibly sharded, multi-process) array as a host NumPy array everywhere."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@functools.partial(jax.jit, static_argnums=1)
def _chunk_summary(m, num_runs: int):
  """Per-run finite flags and chunk means over steps and the finite real runs
  (the max for ``perturbation_max``), reduced on device: one small transfer."""
  m = {k: v[:num_runs].astype(jnp.float32) for k, v in m.items()}
  # Per run, so a sweep can say which cells diverged.
  finite = jnp.all(jnp.isfinite(m["loss_current"]), axis=1) & jnp.all(
    jnp.isfinite(m["loss_replay"]), axis=1
  )
  # Means over the runs still training: a sweep carries diverged cells on.
  ok = finite[:, None]
  count = jnp.maximum(jnp.sum(finite) * next(iter(m.values())).shape[1], 1)
  out = {
    k: jnp.max(jnp.where(ok, v, -jnp.inf))
    if k == "perturbation_max"
    else jnp.sum(jnp.where(ok, v, 0.0)) / count
    for k, v in m.items()
  }
  return finite, out


@dataclasses.dataclass
class _Placed:
  """The plan's arrays on the devices: runs sharded, data replicated."""

  plan: RunPlan
  by_run: Any
  data_x: jax.Array
  data_y: jax.Array
  eval_x: jax.Array
  eval_y: jax.Array
  task_of_class: jax.Array

  def index(self, task: int, start: int, stop: int) -> jax.Array:
    return loop.put_global(self.plan.index[:, task, start:stop], self.by_run)


def _place(plan: RunPlan, data: PreparedData, mesh) -> _Placed:
  by_run, rep = loop.runs_sharding(mesh), loop.replicated(mesh)
  return _Placed(
    plan,
    by_run,
    loop.put_global(data.train_x, rep),
    loop.put_global(data.train_y, rep),
    loop.put_global(data.eval_x, rep),
    loop.put_global(data.eval_y, rep),
    loop.put_global(plan.task_of_class, by_run),
  )


def _diverged_runs(states, num_runs: int) -> Set[int]:
  """Runs whose parameters hold a NaN/Inf (a resumed run's guard has not seen
  the chunks before the resume, the parameters have)."""
  finite = jax.jit(
    lambda p: jnp.all(
      jnp.stack([jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), 1) for a in jax.tree.leaves(p)]),
      0,
    )
  )(states.params)
  return {int(r) for r in np.flatnonzero(~_gather(finite)[:num_runs])}


def _live_runs(plan: RunPlan, run: "_RunState") -> List[int]:
  """The real runs that have not diverged (the per-task means and the RAR
  preview use these)."""
  return [r for r in range(plan.num_runs) if r not in run.diverged]


@dataclasses.dataclass
class _RunState:
  """What a checkpoint holds: the runs' states, the accuracies so far, where
  the stream stands and the training time spent."""

  states: Any
  acc: np.ndarray
  position: int = 0
  train_seconds: float = 0.0
  eval_seconds: float = 0.0
  # Runs whose loss went NaN/Inf (a sweep trains the other cells on). Not in the
  # checkpoint: a restore reads it back from the parameters (`_diverged_runs`).
  diverged: Set[int] = dataclasses.field(default_factory=set)

  def payload(self) -> dict:
    return {
      "states": self.states,
      "acc": self.acc,
      "position": np.asarray(self.position, np.int64),
      "train_seconds": np.asarray(self.train_seconds, np.float64),
      "eval_seconds": np.asarray(self.eval_seconds, np.float64),
    }

  def legacy_payload(self) -> dict:
    """The payload of checkpoints written before eval_seconds was saved."""
    return {k: v for k, v in self.payload().items() if k != "eval_seconds"}


def _init_or_restore(
  plan: RunPlan, placed: _Placed, module, tx, ckpt, sample_x, verb: str = "resumed"
) -> _RunState:
  by_run = placed.by_run
  states = loop.init_states(
    module,
    tx,
    plan.replay,
    jax.tree.map(lambda a: loop.put_global(a, by_run), plan.hypers),
    loop.put_global(plan.keys, by_run),
    sample_x,
    opt_hyperparams={k: loop.put_global(v, by_run) for k, v in plan.opt_hyperparams.items()},
    sharding=by_run,
  )
  run = _RunState(
    states, np.full((plan.padded, plan.num_tasks, plan.num_tasks), np.nan, np.float32)
  )
  restored = ckpt.restore_latest(run.payload(), run.legacy_payload())
  if restored is not None:
    got = restored[1]
    run = _RunState(
      got["states"],
      np.asarray(got["acc"]),
      int(got["position"]),
      float(got["train_seconds"]),
      float(got.get("eval_seconds", 0.0)),
    )
    run.diverged = _diverged_runs(run.states, plan.num_runs)
    _say(
      f"[{plan.method}] {verb} from the checkpoint at step {run.position} of "
      f"{plan.num_tasks * plan.steps_per_task}"
    )
  return run


@dataclasses.dataclass
class _Programs:
  """The compiled programs of a method: training chunks by length, the
  evaluation, the per-experience buffer filler (or None)."""

  chunks: Dict[int, Any]  # compiled: (states, data_x, data_y, index) -> (states, metrics)
  evaluate: Any
  fill: Any
  compile_seconds: float
  eval_execution: Dict[str, str]  # eval_loop, and eval_conv_impl for conv models


def _compile(plan: RunPlan, placed: _Placed, run: _RunState, module, tx, config) -> _Programs:
  """Ahead of time, so compilation is timed apart from training."""
  t0 = time.perf_counter()
  runner: Any = loop.make_stream_runner(
    make_train_step(module, tx, plan.replay, plan.chain, unroll=plan.execution["unroll"]),
    plan.batching,
    plan.execution["stream_loop"],
  )
  steps = plan.steps_per_task
  chunk = min(config.log_every_steps, steps)
  chunks = {
    n: runner.lower(run.states, placed.data_x, placed.data_y, placed.index(0, 0, n)).compile()
    for n in sorted({chunk, steps % chunk} - {0})
  }
  evaluate, eval_execution = _compile_evaluation(plan, placed, run, module, config)
  fill = loop.make_buffer_filler() if plan.replay.buffer_update == "per_experience" else None
  return _Programs(chunks, evaluate, fill, time.perf_counter() - t0, eval_execution)


def _compile_evaluation(plan: RunPlan, placed: _Placed, run: _RunState, module, config):
  """The compiled evaluation of every run and how it runs (recorded in metrics.json)."""
  eval_execution = {"eval_loop": "map"}
  if hasattr(module, "conv_impl"):  # any conv model with a choice of convolutions
    ev = loop.eval_execution(jax.devices()[0].platform, module.conv_impl, jax.device_count())
    module = module.clone(conv_impl=ev["conv_impl"])
    eval_execution = {"eval_conv_impl": ev["conv_impl"], "eval_loop": ev["eval_loop"]}
  # Conv nets: one run's chunk of 250 in the host loop (100-250 ran alike; fewer calls); in one
  # program every run's im2col patches grow with the chunk, so 100 there.
  eval_chunk = 1000
  if config.model in models.CONV_MODELS:
    eval_chunk = 250 if eval_execution["eval_loop"] == "host" else 100
  evaluator: Any = evaluator_lib.make_evaluator(
    module,
    plan.num_tasks,
    chunk=eval_chunk,
    eval_protocol=config.eval_protocol,
    eval_loop=eval_execution["eval_loop"],
    eval_classifier=config.eval_classifier,
  )
  evaluate = evaluator.lower(
    run.states, placed.eval_x, placed.eval_y, placed.task_of_class
  ).compile()
  return evaluate, eval_execution


def _train(
  plan: RunPlan,
  placed: _Placed,
  run: _RunState,
  programs: _Programs,
  chunk: int,
  hooks: List[hooks_lib.Hook],
) -> None:
  """Every remaining chunk of every remaining task; evaluation after each task."""
  steps = plan.steps_per_task
  start_position, start_seconds = run.position, run.train_seconds  # this session's speed
  for t in range(run.position // steps, plan.num_tasks):
    pos = run.position - t * steps
    while pos < steps:
      n = min(chunk - pos % chunk, steps - pos)  # keep chunks aligned after a resume
      t1 = time.perf_counter()
      run.states, m = programs.chunks[n](
        run.states, placed.data_x, placed.data_y, placed.index(t, pos, pos + n)
      )
      finite, scalars = _chunk_summary(m, plan.num_runs)
      finite, scalars = _gather(finite), jax.device_get(scalars)  # per-run flags may be sharded
      newly = {int(r) for r in np.flatnonzero(~finite)} - run.diverged
      run.diverged |= newly
      run.train_seconds += time.perf_counter() - t1
      pos += n
      run.position += n
      speed = (run.position - start_position) / max(run.train_seconds - start_seconds, 1e-9)
      hooks_lib.call(
        hooks,
        hooks_lib.ChunkEnd(
          run.position,
          t,
          plan.num_tasks,
          pos,
          steps,
          n,
          {k: float(v) for k, v in scalars.items()},
          bool(np.all(finite)),
          tuple(sorted(newly)),
          speed,
          run.payload,
        ),
      )
    if programs.fill is not None:
      run.states = programs.fill(
        run.states, placed.data_x, placed.data_y, placed.index(t, 0, steps)
      )
    t1 = time.perf_counter()
    run.acc[:, t, :] = _gather(
      programs.evaluate(run.states, placed.eval_x, placed.eval_y, placed.task_of_class)
    )
    seconds = time.perf_counter() - t1
    run.eval_seconds += seconds
    hooks_lib.call(
      hooks,
      hooks_lib.TaskEnd(
        run.position,
        t,
        plan.num_tasks,
        run.acc[_live_runs(plan, run), t].mean(0),
        run.payload,
        seconds,
      ),
    )


def _make_hooks(
  config: ConfigDict, plan: RunPlan, workdir: str, ckpt, run: "_RunState", lead: bool
) -> List[hooks_lib.Hook]:
  total = plan.num_tasks * plan.steps_per_task
  return [
    hooks_lib.NanGuard(
      plan.method,
      config.learning_rate,
      ckpt,
      [sweep_lib.cell_name(plan.cells[r // len(plan.seeds)]) for r in range(plan.num_runs)],
      diverged=run.diverged,
      lead=lead,
    ),  # first: a single run's NaN is never saved
    hooks_lib.Progress(plan.method, total, run.position, config.progress and lead, lead),
    hooks_lib.MetricWriting(MetricWriter(workdir, enabled=lead)),
    hooks_lib.Checkpointing(ckpt, config.checkpoint_every_steps),
  ]


def _summarise(
  config: ConfigDict,
  plan: RunPlan,
  data: PreparedData,
  run: _RunState,
  programs: _Programs,
  num_devices: int,
) -> MethodResult:
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
  cells = []
  for i, overrides in enumerate(plan.cells):
    runs = range(plan.num_runs)[plan.cell_runs(i)]
    bad = [seed for r, seed in zip(runs, plan.seeds) if r in run.diverged]
    # The weights evaluated: a cell may set its own ema_decay.
    cell_info = dict(info, ema_decay=cell_config(config, overrides).ema_decay)
    cells.append(
      CellResult(plan.method, overrides, plan.seeds, run.acc[plan.cell_runs(i)], cell_info, bad)
    )
  return MethodResult(plan.method, config.sweep, cells, timing)


def _rar_preview(
  config: ConfigDict, plan: RunPlan, data: PreparedData, run: _RunState, module, tx
) -> dict:
  """What RAR does in the first run that did not diverge, at its end: one
  replay draw for the last task's first minibatch, as host arrays
  (`rar_jax.core.step.make_rar_preview`)."""
  r = _live_runs(plan, run)[0]
  state = jax.tree.map(lambda a: _gather(a)[r], run.states)
  rows = plan.index[r, -1, 0]
  x, y = data.train_x[rows], data.train_y[rows]
  preview = jax.jit(
    make_rar_preview(module, tx, plan.replay, plan.chain, unroll=plan.execution["unroll"])
  )
  out = jax.device_get(preview(state, x, y, jax.random.PRNGKey(config.seed)))
  return dict(out, x=x, y=y, run=r)


def _evaluation_words(config: ConfigDict) -> str:
  decay = "per cell" if is_swept(config, "ema_decay") else config.ema_decay
  return report.evaluation_words(
    config.eval_split, config.eval_classifier, config.eval_protocol, decay
  )


def _write_results(
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
      + _evaluation_words(config)
      + ")",
    )
  if sweep:
    report.atomic_write_text(os.path.join(workdir, "sweep.md"), report.sweep_table(summary) + "\n")
    if config.plot and report.sensitivity_grid(summary) is not None:
      report.plot_sensitivity(
        os.path.join(workdir, "sensitivity.png"),
        summary,
        f"{plan.method} on {data.ds.name}, {len(plan.seeds)} seeds, " + _evaluation_words(config),
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


def run_method(config: ConfigDict, method: str, data: PreparedData, workdir: str) -> dict:
  """Trains ``method`` on every (sweep cell, seed) run in one program; writes
  and returns its metrics (`rar_jax.runner.results.MethodResult.to_dict`)."""
  lead = jax.process_index() == 0  # only process 0 writes files
  config = method_config(config, method)  # what this folder's config.json records
  os.makedirs(workdir, exist_ok=True)
  _check_resumable(workdir, config, bool(config.overwrite))
  if lead:
    report.atomic_write_json(os.path.join(workdir, "config.json"), _config_json(config))
  mesh = loop.runs_mesh()
  plan = make_plan(config, method, data.streams, data.ds.num_classes, mesh.size)
  plan = _check_placement(workdir, config, plan, mesh.size, lead)  # before checkpoints open
  module = models.create_model(config.model, data.ds.num_classes, plan.execution["conv_impl"])
  tx = optimizer(config)
  placed = _place(plan, data, mesh)
  ckpt = (
    checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    if config.keep_checkpoints
    else checkpoint_lib.NoCheckpoints()
  )
  run = _init_or_restore(plan, placed, module, tx, ckpt, data.train_x[:1])
  programs = _compile(plan, placed, run, module, tx, config)
  if lead:  # in a log, this explains the silence before the first task's line
    _say(
      f"[{method}] compiled in {programs.compile_seconds:.1f} s; training {plan.num_runs} "
      f"runs x {plan.num_tasks * plan.steps_per_task} steps"
    )
  hooks = _make_hooks(config, plan, workdir, ckpt, run, lead)
  try:
    _train(plan, placed, run, programs, min(config.log_every_steps, plan.steps_per_task), hooks)
  finally:
    hooks_lib.close_all(hooks)
  run.diverged |= _diverged_runs(run.states, plan.num_runs)
  result = _summarise(config, plan, data, run, programs, mesh.size)
  preview = None
  if plan.chain.perturb is not None and config.rar_samples:
    preview = _rar_preview(config, plan, data, run, module, tx)
  if lead:
    _write_results(config, plan, data, result, workdir, preview)
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
  plan = make_plan(config, method, data.streams, data.ds.num_classes, mesh.size)
  plan = _check_placement(workdir, config, plan, mesh.size, lead=False)
  module = models.create_model(config.model, data.ds.num_classes, plan.execution["conv_impl"])
  placed = _place(plan, data, mesh)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1, read_only=True)
  try:
    tx = optimizer(config)
    run = _init_or_restore(
      plan, placed, module, tx, ckpt, data.train_x[:1], f"evaluating ({eval_classifier})"
    )
  except CheckpointError as e:
    raise ConfigError(f"{e}; nothing was changed in {workdir}") from None
  finally:
    ckpt.close()
  if run.position == 0:
    raise ConfigError(f"{workdir}: no checkpoint could be restored")
  with jax.default_matmul_precision(config.matmul_precision):
    evaluate, _ = _compile_evaluation(plan, placed, run, module, config)
    acc = _gather(evaluate(run.states, placed.eval_x, placed.eval_y, placed.task_of_class))
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
    f"{config.num_seeds} seeds, " + _evaluation_words(config)
  )
  print(f"\n{title}:\n{table}", flush=True)
  if len(results) > 1:
    report.atomic_write_text(os.path.join(workdir, "comparison.md"), table + "\n")
    report.atomic_write_json(
      os.path.join(workdir, "comparison.json"),
      {
        n: {k: r[k] for k in ("final_avg_accuracy", "final_forgetting", "steps_per_second")}
        for n, r in results.items()
      },
    )
    if config.plot:
      report.plot_comparison(
        os.path.join(workdir, "comparison.png"),
        {n: np.asarray(r["acc_matrix"]) for n, r in results.items()},
        title,
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
      _check_resumable(method_dir, method_config(config, name), overwrite=False)
  try:
    data = prepare_data(config)
  except DataError:  # e.g. a truncated image, found when decoding: leave nothing behind
    if created and os.path.isdir(workdir) and not os.listdir(workdir):
      os.rmdir(workdir)
    raise
  results = {}
  for name, method_dir in method_dirs.items():
    # Every program is traced and compiled inside run_method, so this pins its precision.
    with jax.default_matmul_precision(config.matmul_precision):
      results[name] = run_method(config, name, data, method_dir)
  if jax.process_index() == 0:
    _compare(config, data, results, workdir)
  return results
