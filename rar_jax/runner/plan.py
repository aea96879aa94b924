"""The run plan of one method: which (sweep cell, seed) runs train together,
with what hyper-parameters, keys and streams. A pure function of the config
and the streams: no device, no file."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
from ml_collections import ConfigDict

from rar_jax import data as data_lib
from rar_jax import models
from rar_jax.core import stages
from rar_jax.core.defaults import DEFAULTS
from rar_jax.core.method import Hyper, ReplayConfig
from rar_jax.evaluation import continual
from rar_jax.runner import config as config_lib
from rar_jax.runner import loop
from rar_jax.runner import sweep as sweep_lib


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """Runs are cell-major, seed-minor, padded to a multiple of the device count
  by repeating the last run (padding is dropped from every result)."""

  method: str
  cells: List[Dict[str, float]]  # one sweep cell's overrides each; [{}] without a sweep
  seeds: List[int]
  num_runs: int  # cells x seeds
  padded: int  # num_runs rounded up to the device count
  replay: ReplayConfig  # static structure, shared by every run
  # The method's stages (static settings; numeric ones start from `hypers`).
  chain: stages.Chain
  hypers: Hyper  # numeric hyper-parameters, one row per padded run
  # The optimiser's injected hyper-parameters, [padded] float32 each: learning_rate, and
  # ema_decay when the run averages its weights.
  opt_hyperparams: Dict[str, np.ndarray]
  keys: np.ndarray  # [padded, ...] PRNG keys
  index: np.ndarray  # [padded, tasks, steps, batch] int32 into the training subset
  task_of_class: np.ndarray  # [padded, num_classes]
  # conv_impl, stream_loop, cpu_conv_library ("auto" resolved) and unroll
  execution: Dict[str, Any]
  batching: str  # vmap | map
  # Continual evaluation's points (steps trained so far, from 1), None when off.
  curve_steps: Optional[np.ndarray] = None
  # Blurry streams: [padded, num_classes], the classes seen only in their home task; else None.
  disjoint_classes: Optional[np.ndarray] = None
  input_shape: Optional[Tuple[int, ...]] = None  # one image's; cpu_conv_library's "auto" needs it
  # Whether the model runs as a conv net (`user_model.model_is_conv`): "auto" reads it.
  conv_model: bool = False

  def with_execution(self, config: ConfigDict, num_devices: int, **pinned: str) -> "RunPlan":
    """This plan with its execution resolved (`loop.resolve_execution`) from
    ``config``'s keys, ``pinned`` ones (``conv_impl``, ``cpu_conv_library``)
    in place of the config's."""
    keys = {k: pinned.get(k, config[k]) for k in ("conv_impl", "cpu_conv_library")}
    if keys["conv_impl"] == "auto" and config.model not in models.MODELS:
      keys["conv_impl"] = "xla"  # a model by import path convolves its own way: XLA's
    execution = loop.resolve_execution(
      keys["conv_impl"],
      config.stream_loop,
      self.conv_model,
      self.padded // num_devices,
      self.batching,
      loop.inner_loop_iters(self.replay, self.chain, self.hypers.iter_fgsm),
      keys["cpu_conv_library"],
      self.input_shape,
    )
    return dataclasses.replace(self, execution=execution)

  @property
  def num_tasks(self) -> int:
    return self.index.shape[1]

  @property
  def steps_per_task(self) -> int:
    return self.index.shape[2]

  def cell_runs(self, i: int) -> slice:
    """The runs of cell ``i`` (its seeds)."""
    return slice(i * len(self.seeds), (i + 1) * len(self.seeds))


def make_plan(
  config: ConfigDict,
  method: str,
  streams: data_lib.Streams,
  num_classes: int,
  num_devices: int,
  data_range=DEFAULTS["data_range"],
  input_shape: Optional[Tuple[int, ...]] = None,
  conv_model: Optional[bool] = None,
) -> RunPlan:
  """The `RunPlan` of ``method`` under ``config`` (one method's config);
  ``data_range``: the dataset's (`rar_jax.data.Dataset.data_range`);
  ``input_shape``: one image's (for ``cpu_conv_library="auto"``);
  ``conv_model``: whether the model runs as a conv net (None: the built-in
  models' names say, `rar_jax.models.CONV_MODELS`)."""
  seeds = [config.seed + i for i in range(config.num_seeds)]
  cells = sweep_lib.parse_sweep(config.sweep)
  parts = [
    config_lib.replay_parts(config_lib.cell_config(config, o), method, num_classes, data_range)[2]
    for o in cells
  ]
  opt_keys = ["learning_rate"] + (["ema_decay"] if config_lib.averages_weights(config) else [])
  opt_values = {k: [config_lib.cell_config(config, o)[k] for o in cells] for k in opt_keys}
  num_runs = len(cells) * len(seeds)
  padded = loop.padded_runs(num_runs, num_devices)
  run = np.minimum(np.arange(padded), num_runs - 1)
  run_cell, run_seed = run // len(seeds), run % len(seeds)
  batching = (
    loop.default_batching(num_devices) if config.run_batching == "auto" else config.run_batching
  )
  replay, chain, _ = config_lib.replay_parts(config, method, num_classes, data_range)
  plan = RunPlan(
    method=method,
    cells=cells,
    seeds=seeds,
    num_runs=num_runs,
    padded=padded,
    replay=replay,
    chain=chain,
    hypers=jax.tree.map(lambda *a: np.stack(a)[run_cell], *parts),
    opt_hyperparams={k: np.asarray(v, np.float32)[run_cell] for k, v in opt_values.items()},
    keys=np.asarray(loop.seed_keys([seeds[i] for i in run_seed])),
    index=np.asarray(streams.index)[run_seed],
    task_of_class=np.asarray(streams.task_of_class)[run_seed],
    execution={},
    batching=batching,
    disjoint_classes=(
      None if streams.disjoint_classes is None else np.asarray(streams.disjoint_classes)[run_seed]
    ),
    curve_steps=(
      continual.evaluation_steps(config.num_tasks, streams.index.shape[2], config.eval_every)
      if config.eval_every
      else None
    ),
    input_shape=None if input_shape is None else tuple(int(d) for d in input_shape),
    conv_model=config.model in models.CONV_MODELS if conv_model is None else bool(conv_model),
  )
  return plan.with_execution(config, num_devices)
