"""A whole class-incremental benchmark: config in, result files out."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rar_jax import checkpoint as checkpoint_lib
from rar_jax import data as data_lib
from rar_jax import loop
from rar_jax import metrics as metrics_lib
from rar_jax import models
from rar_jax import report
from rar_jax import sweep as sweep_lib
from rar_jax.config_base import RUNTIME_KEYS, base_config
from rar_jax.method import ASER_TYPES, ATTACK_PARAMS, Hyper, ReplayConfig, parse_method

# jax.default_matmul_precision's names for float32 dots and convolutions.
MATMUL_PRECISIONS = ("default", "float32", "tensorfloat32", "bfloat16", "highest", "high")
from rar_jax.step import make_optimizer, make_train_step


class ConfigError(ValueError):
  """A config key holds a value the run cannot use; the message names it."""


class TrainingDiverged(RuntimeError):
  """The loss became NaN/Inf; the message says which checkpoint, if any, is kept."""


def method_names(config) -> List[str]:
  """The methods of a run: ``config.methods``, comma-separated. One key, so an
  override on the command line can never be outvoted by another key."""
  return [m.strip() for m in config.methods.split(",") if m.strip()]


def method_config(config, method: str) -> ml_collections.ConfigDict:
  """``config`` as one method's run sees it: its folder's config.json names
  that method alone."""
  return cell_config(config, {"methods": method})


def replay_parts(config, method: str, num_classes: int):
  """The static `ReplayConfig` and numeric `Hyper` of ``method`` under ``config``."""
  cfg = ReplayConfig.from_method(
      method, num_classes=num_classes, mem_size=config.mem_size,
      batch_size_mem=config.batch_size_mem, mir_candidates=config.mir_candidates,
      exclude_current_labels=config.exclude_current_labels, attack_target=config.attack_target,
      feature_layer=config.feature_layer, storage_policy=config.storage_policy,
      buffer_update=config.buffer_update, replay_iters=config.replay_iters,
      aser_k=config.aser_k, aser_candidates=config.aser_candidates,
      aser_coop_size=config.aser_coop_size, aser_type=config.aser_type,
      attack_params=config.attack_params)
  hyper = Hyper.create(
      opt_lr=config.learning_rate if config.opt_lr is None else config.opt_lr,
      beta_coef=config.beta_coef, epsilon_fgsm=config.epsilon_fgsm, alpha_fgsm=config.alpha_fgsm,
      iter_fgsm=config.iter_fgsm, decay_factor_fgsm=config.decay_factor_fgsm,
      mixup_alpha=config.mixup_alpha)
  return cfg, hyper


def cell_config(config, overrides) -> ml_collections.ConfigDict:
  """``config`` with one sweep cell's overrides applied."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.update(overrides)
  return c


def _one_of(config, key, allowed):
  if config[key] not in allowed:
    raise ConfigError(f"config.{key}={config[key]!r} is invalid: one of {tuple(allowed)}")


def _at_least(config, key, low, kind=int):
  v = config[key]
  if not isinstance(v, kind) or isinstance(v, bool) or v < low:
    raise ConfigError(f"config.{key}={v!r} is invalid: {kind.__name__} >= {low}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Every check that needs no data, before any work; raises `ConfigError`."""
  base = base_config()
  unknown = sorted(set(config.keys()) - set(base.keys()))
  if "method" in unknown:  # the key before `methods` was the only one
    raise ConfigError(f"config.method={config.method!r}: the key is now config.methods "
                      f"(comma-separated; one method: methods={config.method!r})")
  if unknown:
    raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(base.keys())}")
  for key in base.keys():
    if key not in config:
      raise ConfigError(f"config is missing key {key!r}; start configs from base_config()")
    want, got = base[key], config[key]
    if want is not None and got is not None and not isinstance(got, type(want)) and not (
        isinstance(want, float) and isinstance(got, int) and not isinstance(got, bool)):
      raise ConfigError(f"config.{key}={got!r} has type {type(got).__name__}, "
                        f"expected {type(want).__name__}")
  _one_of(config, "dataset", data_lib.DATASETS)
  _one_of(config, "data_source", data_lib.SOURCES)
  _one_of(config, "model", models.MODELS)
  _one_of(config, "eval_split", ("test", "validation"))
  _one_of(config, "run_batching", ("auto",) + loop.BATCHINGS)
  _one_of(config, "conv_impl", ("auto",) + models.CONV_IMPLS)
  _one_of(config, "stream_loop", ("auto",) + loop.STREAM_LOOPS)
  if config.stream_loop == "host" and jax.process_count() > 1:
    raise ConfigError("config.stream_loop='host' runs in one process; use 'scan' or 'auto' "
                      "with several processes")
  if config.run_batching == "map" and jax.device_count() > 1:
    raise ConfigError(f"config.run_batching='map' needs one device, this process sees "
                      f"{jax.device_count()}; use 'vmap' or 'auto'")
  _one_of(config, "eval_protocol", ("class", "task"))
  _one_of(config, "matmul_precision", MATMUL_PRECISIONS)
  _one_of(config, "aser_type", ASER_TYPES)
  _one_of(config, "attack_params", ATTACK_PARAMS)
  _at_least(config, "replay_iters", 1)
  names = method_names(config)
  if not names or len(set(names)) != len(names):
    raise ConfigError(f"config.methods={config.methods!r} is invalid: one or more different "
                      "methods, comma-separated (e.g. 'er_rar' or 'er,er_rar')")
  for m in names:
    try:
      parse_method(m)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  for key, low in (("num_seeds", 1), ("seed", 0), ("num_tasks", 1), ("samples_per_task", 0),
                   ("batch_size", 1), ("log_every_steps", 1), ("checkpoint_every_steps", 0),
                   ("keep_checkpoints", 0)):
    _at_least(config, key, low)
  num_classes, image_shape = data_lib.DATASETS[config.dataset]
  if config.num_tasks > num_classes or num_classes % config.num_tasks:
    raise ConfigError(f"config.num_tasks={config.num_tasks} is invalid for {config.dataset}: "
                      f"it must divide its {num_classes} classes")
  if not 0.0 <= config.validation_fraction < 1.0:
    raise ConfigError(f"config.validation_fraction={config.validation_fraction} is invalid: "
                      "a number in [0, 1)")
  if config.eval_split == "validation" and config.validation_fraction == 0:
    raise ConfigError("config.eval_split='validation' needs config.validation_fraction > 0")
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ConfigError(f"config.checkpoint_every_steps={config.checkpoint_every_steps} must be a "
                      f"multiple of config.log_every_steps={config.log_every_steps}")
  if config.model == "mlp" and config.dataset.startswith("cifar"):
    logging.warning("an MLP on %s: the paper uses resnet18_reduced there", config.dataset)
  try:
    cells = sweep_lib.parse_sweep(config.sweep)
  except sweep_lib.SweepError as e:
    raise ConfigError(f"config.sweep={config.sweep!r}: {e}") from None
  for overrides in cells[1:] if len(cells) > 1 else []:
    try:
      replay_parts(cell_config(config, overrides), method_names(config)[0], num_classes)
    except ValueError as e:
      raise ConfigError(f"config.sweep cell {sweep_lib.cell_name(overrides)}: {e}") from None
  module = models.create_model(config.model, num_classes)
  try:
    models.check_input_shape(config.model, module, image_shape)
  except ValueError as e:
    raise ConfigError(f"config.model={config.model!r} on {config.dataset}: {e}") from None
  for m in method_names(config):
    try:
      cfg, hyper = replay_parts(config, m, num_classes)
      from rar_jax.step import init_train_state  # eval_shape: validates feature_layer, no FLOPs
      jax.eval_shape(lambda: init_train_state(module, make_optimizer(config.learning_rate), cfg,
                                              hyper, jax.random.PRNGKey(0),
                                              jnp.zeros((1, *image_shape))))
    except ValueError as e:
      raise ConfigError(f"config (method {m}): {e}") from None


# ---------------------------------------------------------------- one method


def _config_json(config) -> dict:
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
    raise ConfigError(f"--workdir {workdir!r} is not writable ({e.strerror or e}); pass "
                      "another --workdir") from None


def _check_resumable(workdir: str, config, overwrite: bool) -> None:
  """Refuses to mix two configs' runs in one workdir; ``overwrite`` discards
  whatever run is there."""
  if overwrite:
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
      logging.warning("overwrite: discarding the checkpoints in %s", workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    if os.path.exists(os.path.join(workdir, "placement.json")):
      os.remove(os.path.join(workdir, "placement.json"))
    return
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  new = _config_json(config)
  differ = sorted(k for k in set(old) | set(new)
                  if k not in RUNTIME_KEYS and old.get(k) != new.get(k))
  if differ:
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ)
    raise ConfigError(f"{workdir} holds a run with another config ({details}); use another "
                      "--workdir, or --config.overwrite=true to discard it")


def _check_placement(workdir: str, padded: int, devices: int, lead: bool) -> None:
  """Checkpoints hold the runs padded to the device count: resuming them
  needs the same padding, which a different device count may change."""
  path = os.path.join(workdir, "placement.json")
  if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
    with open(path) as f:
      old = json.load(f)
    if old["padded_runs"] != padded:
      raise ConfigError(
          f"{workdir} holds checkpoints of {old['padded_runs']} runs padded for "
          f"{old['devices']} devices; this process sees {devices} devices ({padded} padded runs). "
          f"Resume with {old['devices']} devices (e.g. "
          f"XLA_FLAGS=--xla_force_host_platform_device_count={old['devices']} on the CPU), "
          "or start afresh with --config.overwrite=true")
  if lead:
    report.atomic_write_json(path, {"padded_runs": padded, "devices": devices})


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


LOG_LINE_SECONDS = 30.0  # progress in a log: one plain line per this many seconds


class _Progress:
  """Training progress on stderr: a tqdm bar on a terminal; plain lines every
  `LOG_LINE_SECONDS` elsewhere (a bar's carriage-return redraws make a log
  file unreadable). Its speed is the one metrics.json and the comparison
  table report: steps per second of training time, all seeds together."""

  def __init__(self, method: str, total: int, initial: int, enabled: bool):
    self.method, self.total, self.position, self.enabled = method, total, initial, enabled
    self._last_line = time.monotonic()
    self._bar = None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, desc=method, unit="step",
                       dynamic_ncols=True, mininterval=0.5, file=sys.stderr,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                  "[{elapsed}<{remaining}{postfix}]")

  def update(self, n: int, task: str, loss: float, replay: float, steps_per_second: float):
    self.position += n
    if self._bar is not None:
      self._bar.update(n)
      self._bar.set_postfix_str(f"task {task}, loss {loss:.3f}, replay {replay:.3f}, "
                                f"{steps_per_second:.0f} steps/s")
    elif self.enabled and time.monotonic() - self._last_line >= LOG_LINE_SECONDS:
      self._last_line = time.monotonic()
      _say(f"[{self.method}] step {self.position}/{self.total} "
           f"({100 * self.position // self.total}%), task {task}, loss {loss:.3f}, "
           f"replay {replay:.3f}, {steps_per_second:.0f} steps/s")

  def write(self, line: str) -> None:
    if self._bar is not None:
      self._bar.write(line, file=sys.stderr)  # above the bar
    else:
      _say(line)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _progress(total: int, initial: int, desc: str, enabled: bool) -> _Progress:
  return _Progress(desc, total, initial, enabled)


def _diverged_message(config, method, ckpt, task, num_tasks, pos, n) -> str:
  """Where the loss went NaN/Inf (tasks from 1, as the console counts), and
  the checkpoint that is really there, if any."""
  if not isinstance(ckpt, checkpoint_lib.Checkpointer):
    where = "checkpointing is off (keep_checkpoints=0)"
  elif ckpt.steps():
    where = (f"the last good checkpoint (step {ckpt.steps()[-1]}) is kept in {ckpt.directory}, "
             "but resuming it repeats the same steps")
  else:
    where = "no checkpoint was written before it"
  return (f"{method}: loss became NaN/Inf in task {task + 1}/{num_tasks}, steps "
          f"{pos + 1}-{pos + n} of the task (learning_rate={config.learning_rate}); {where}. "
          "Try a smaller learning_rate, with --config.overwrite=true or another --workdir")


def _gather(x) -> np.ndarray:
  """A (possibly sharded, multi-process) array as a host NumPy array everywhere."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@jax.jit
def _loss_summary(m):
  """Finite flag and last-step means, reduced on device (one small transfer)."""
  finite = jnp.all(jnp.isfinite(m["loss_current"])) & jnp.all(jnp.isfinite(m["loss_replay"]))
  return finite, m["loss_current"][:, -1].mean(), m["loss_replay"][:, -1].mean()


def _cell_result(config, method, ds, streams, seeds, acc, overrides) -> dict:
  num_tasks, steps = streams.index.shape[1], streams.index.shape[2]
  return {
      "method": method,
      "dataset": ds.name,
      "data_source": ds.source,
      "eval_split": config.eval_split,
      "overrides": overrides,
      "num_seeds": len(seeds),
      "seeds": seeds,
      "num_tasks": num_tasks,
      "steps": num_tasks * steps,
      "steps_per_task": steps,
      "dropped_samples_per_seed": streams.dropped_samples,
      "acc_matrix": acc.tolist(),
      "final_avg_accuracy": metrics_lib.summarize(metrics_lib.final_average_accuracy(acc)),
      "final_forgetting": metrics_lib.summarize(metrics_lib.final_forgetting(acc)),
      "avg_accuracy_curve": metrics_lib.average_accuracy_curve(acc).mean(0).tolist(),
  }


def run_method(config, method: str, ds: data_lib.Dataset, streams: data_lib.Streams,
               eval_x: np.ndarray, eval_y: np.ndarray, workdir: str,
               train_x: np.ndarray, train_y: np.ndarray) -> dict:
  """Trains ``method`` on every (sweep cell, seed) run in one program; writes
  and returns its metrics (with ``cells`` when ``config.sweep`` has several)."""
  lead = jax.process_index() == 0  # only process 0 writes files
  config = method_config(config, method)  # what this folder's config.json records
  os.makedirs(workdir, exist_ok=True)
  _check_resumable(workdir, config, bool(config.overwrite))
  if lead:
    report.atomic_write_json(os.path.join(workdir, "config.json"), _config_json(config))

  seeds = [config.seed + i for i in range(config.num_seeds)]
  num_classes = ds.num_classes
  cells = sweep_lib.parse_sweep(config.sweep)
  cell_configs = [cell_config(config, o) for o in cells]
  cell_parts = [(replay_parts(c, method, num_classes)[1], c.learning_rate) for c in cell_configs]
  cfg, _ = replay_parts(config, method, num_classes)
  tx = make_optimizer(config.learning_rate)
  num_seeds, num_tasks, steps, _ = streams.index.shape

  # Runs: cell-major, seed-minor; padded to the device count (padding dropped).
  num_runs = len(cells) * num_seeds
  mesh = loop.runs_mesh()
  padded = loop.padded_runs(num_runs, mesh.size)
  execution = loop.resolve_execution(config.conv_impl, config.stream_loop,
                                     config.model in models.CONV_MODELS, padded // mesh.size)
  module = models.create_model(config.model, num_classes, execution["conv_impl"])
  run_cell = np.minimum(np.arange(padded), num_runs - 1) // num_seeds
  run_seed = np.minimum(np.arange(padded), num_runs - 1) % num_seeds
  hypers = jax.tree.map(lambda *a: np.stack(a)[run_cell], *[h for h, _ in cell_parts])
  lrs = np.asarray([lr for _, lr in cell_parts], np.float32)[run_cell]
  by_run, rep = loop.runs_sharding(mesh), loop.replicated(mesh)
  keys = np.asarray(loop.seed_keys([seeds[i] for i in run_seed]))
  index = np.asarray(streams.index)[run_seed]  # [runs, tasks, steps, batch]
  data_x, data_y = loop.put_global(train_x, rep), loop.put_global(train_y, rep)
  ex, ey = loop.put_global(eval_x, rep), loop.put_global(eval_y, rep)
  task_of_class = loop.put_global(np.asarray(streams.task_of_class)[run_seed], by_run)

  states = loop.init_states(module, tx, cfg,
                            jax.tree.map(lambda a: loop.put_global(a, by_run), hypers),
                            loop.put_global(keys, by_run), train_x[:1],
                            learning_rates=loop.put_global(lrs, by_run), sharding=by_run)
  _check_placement(workdir, padded, mesh.size, lead)
  acc = np.full((padded, num_tasks, num_tasks), np.nan, np.float32)
  position, train_seconds = 0, 0.0
  ckpt = (checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                      config.keep_checkpoints)
          if config.keep_checkpoints else checkpoint_lib.NoCheckpoints())
  payload = lambda: {"states": states, "acc": acc, "position": np.asarray(position, np.int64),
                     "train_seconds": np.asarray(train_seconds, np.float64)}
  restored = ckpt.restore_latest(payload())
  if restored is not None:
    _, got = restored
    states, acc = got["states"], np.asarray(got["acc"])
    position, train_seconds = int(got["position"]), float(got["train_seconds"])
    _say(f"[{method}] resumed from the checkpoint at step {position} of {num_tasks * steps}")

  # Compile ahead of time so compilation is timed apart from training.
  batching = (loop.default_batching(mesh.size) if config.run_batching == "auto"
              else config.run_batching)
  runner = loop.make_stream_runner(make_train_step(module, tx, cfg), batching,
                                   execution["stream_loop"])
  filler = loop.make_buffer_filler() if cfg.buffer_update == "per_experience" else None
  # im2col's patches grow with the chunk: smaller evaluation chunks for conv nets.
  evaluator = loop.make_evaluator(module, num_tasks,
                                  chunk=100 if config.model in models.CONV_MODELS else 1000,
                                  eval_protocol=config.eval_protocol)
  chunk = min(config.log_every_steps, steps)
  index_at = lambda t, a, b: loop.put_global(index[:, t, a:b], by_run)
  t0 = time.perf_counter()
  compiled: Dict[int, object] = {}

  def compiled_runner(n):
    if n not in compiled:
      compiled[n] = runner.lower(states, data_x, data_y, index_at(0, 0, n)).compile()
    return compiled[n]

  compiled_runner(chunk)
  if steps % chunk:
    compiled_runner(steps % chunk)
  compiled_eval = evaluator.lower(states, ex, ey, task_of_class).compile()
  compile_seconds = time.perf_counter() - t0

  if lead:  # in a log, this explains the silence before the first task's line
    _say(f"[{method}] compiled in {compile_seconds:.1f} s; training {num_runs} runs x "
         f"{num_tasks * steps} steps")
  bar = _progress(num_tasks * steps, position, method, config.progress and lead)
  start_position, start_seconds = position, train_seconds  # this session's speed
  try:
    for t in range(position // steps, num_tasks):
      pos = position - t * steps
      while pos < steps:
        n = min(chunk - pos % chunk, steps - pos)  # keep chunks aligned after a resume
        t1 = time.perf_counter()
        states, m = compiled_runner(n)(states, data_x, data_y, index_at(t, pos, pos + n))
        finite, loss, replay = (np.asarray(v) for v in _loss_summary(m))
        train_seconds += time.perf_counter() - t1
        if not finite:
          raise TrainingDiverged(_diverged_message(config, method, ckpt, t, num_tasks, pos, n))
        pos += n
        position += n
        bar.update(n, f"{t + 1}/{num_tasks}", loss, replay,
                   (position - start_position) / max(train_seconds - start_seconds, 1e-9))
        if (config.checkpoint_every_steps and pos < steps
            and pos % config.checkpoint_every_steps == 0):  # within the task, chunk-aligned
          ckpt.save(position, payload())
      if filler is not None:
        states = filler(states, data_x, data_y, index_at(t, 0, steps))
      acc[:, t, :] = _gather(compiled_eval(states, ex, ey, task_of_class))
      mean_row = acc[:num_runs, t].mean(0)
      row = " ".join(f"{a:.3f}" if j <= t else "  -  " for j, a in enumerate(mean_row))
      if lead:
        bar.write(f"[{method}] after task {t + 1}/{num_tasks}: accuracy per task [{row}], "
                  f"average {acc[:num_runs, t, :t + 1].mean():.3f}")
      ckpt.save(position, payload())
  finally:
    bar.close()
    ckpt.close()

  timing = {
      "train_seconds": train_seconds,
      "compile_seconds": compile_seconds,
      "steps_per_second": num_tasks * steps / train_seconds if train_seconds > 0 else 0.0,
      "num_runs": num_runs,
      "run_batching": batching,
      **execution,
      "devices": mesh.size,
      "processes": jax.process_count(),
      "device": jax.devices()[0].platform,
      "matmul_precision": config.matmul_precision,
  }
  results = [dict(_cell_result(config, method, ds, streams, seeds,
                               acc[i * num_seeds:(i + 1) * num_seeds], overrides), **timing)
             for i, overrides in enumerate(cells)]
  if len(cells) == 1:
    result = results[0]
  else:
    best = max(range(len(cells)), key=lambda i: results[i]["final_avg_accuracy"]["mean"])
    result = {"method": method, "sweep": config.sweep, "num_seeds": num_seeds,
              "eval_split": config.eval_split, "best_cell": results[best]["overrides"],
              "cells": results, **timing}
  if lead:
    report.atomic_write_json(os.path.join(workdir, "metrics.json"), result)
    for i, r in enumerate(results):
      cell_acc = acc[i * num_seeds:(i + 1) * num_seeds]
      suffix = "" if len(cells) == 1 else "_" + sweep_lib.cell_name(r["overrides"])
      report.write_acc_csv(os.path.join(workdir, f"acc_matrix{suffix}.csv"), cell_acc)
      if config.plot and len(cells) == 1:
        report.plot_accuracy(os.path.join(workdir, "accuracy.png"), cell_acc,
                             f"{method} on {ds.name} ({num_seeds} seeds)")
    if len(cells) > 1:
      report.atomic_write_text(os.path.join(workdir, "sweep.md"),
                               report.sweep_table(result) + "\n")
  return result


# ---------------------------------------------------------------- the benchmark


def prepare_data(config):
  """Loads the dataset and builds every seed's stream; returns the pieces.

  Only the training samples some stream visits are kept (as float32 in
  [0, 1]), and the streams index into that subset: with 1000 samples per task
  the device holds 5000 images per seed, not the whole training set.
  """
  ds = data_lib.load(config.dataset, config.data_source, config.data_dir)
  train_idx, val_idx = data_lib.holdout_split(ds.train_y, config.validation_fraction, config.seed)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  streams = data_lib.make_streams(ds.train_y[train_idx], ds.num_classes, config.num_tasks,
                                  config.samples_per_task, config.batch_size, seeds,
                                  config.shuffle_classes)
  used = np.unique(streams.index)
  rows = train_idx[used]
  streams = dataclasses.replace(streams,
                                index=np.searchsorted(used, streams.index).astype(np.int32))
  train_x, train_y = data_lib.to_unit_float(ds.train_x[rows]), ds.train_y[rows]
  if config.eval_split == "validation":
    eval_x, eval_y = ds.train_x[val_idx], ds.train_y[val_idx]
  else:
    eval_x, eval_y = ds.test_x, ds.test_y
  per_task = streams.index.shape[2] * config.batch_size
  if per_task < config.samples_per_task // config.batch_size * config.batch_size:
    _say(f"warning: samples_per_task={config.samples_per_task} is more than the smallest task "
         f"holds; every task uses {per_task} samples ({streams.index.shape[2]} minibatches of "
         f"{config.batch_size})")
  if streams.dropped_samples:
    _say(f"{streams.dropped_samples} training samples per seed dropped so every task has "
         f"{streams.index.shape[2]} full minibatches")
  return ds, streams, train_x, train_y, data_lib.to_unit_float(eval_x), eval_y


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, dict]:
  """Runs every method of ``config``; returns ``{method: metrics}``.

  One method: its files go to ``workdir``. Several (``config.methods``): to
  ``workdir/<method>/``, plus ``comparison.md`` / ``comparison.json``.
  """
  validate_config(config)
  names = method_names(config)
  method_dirs = {n: workdir if len(names) == 1 else os.path.join(workdir, n) for n in names}
  # Whatever the workdir refuses, before minutes of data loading.
  check_workdir(workdir)
  if not config.overwrite:
    for name, method_dir in method_dirs.items():
      _check_resumable(method_dir, method_config(config, name), overwrite=False)
  ds, streams, train_x, train_y, eval_x, eval_y = prepare_data(config)
  results = {}
  for name, method_dir in method_dirs.items():
    # Every program is traced and compiled inside run_method, so this pins its precision.
    with jax.default_matmul_precision(config.matmul_precision):
      results[name] = run_method(config, name, ds, streams, eval_x, eval_y, method_dir,
                                 train_x, train_y)
  if jax.process_index() != 0:
    return results
  if "cells" in next(iter(results.values())):
    for r in results.values():
      print("\n" + report.sweep_table(r), flush=True)
    return results
  table = report.comparison_table(list(results.values()))
  title = (f"{ds.name}, {config.num_tasks} tasks, memory {config.mem_size}, "
           f"{config.num_seeds} seeds, {config.eval_split} split")
  print(f"\n{title}:\n{table}", flush=True)
  if len(names) > 1:
    report.atomic_write_text(os.path.join(workdir, "comparison.md"), table + "\n")
    report.atomic_write_json(os.path.join(workdir, "comparison.json"), {
        n: {k: r[k] for k in ("final_avg_accuracy", "final_forgetting", "steps_per_second")}
        for n, r in results.items()})
    if config.plot:
      report.plot_comparison(os.path.join(workdir, "comparison.png"),
                             {n: np.asarray(r["acc_matrix"]) for n, r in results.items()}, title)
  return results
