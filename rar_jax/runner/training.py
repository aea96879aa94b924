"""The small public training API: initialise states for seeds, run a stream,
evaluate one state or many. What `train.py` does, without its config, files
and device placement (those stay in `rar_jax.runner.experiment`)::

  cfg, chain = rar_jax.build_method("er_rar", num_classes=10, mem_size=200)
  tx = rar_jax.make_optimizer(0.1)
  states = rar_jax.init_states(module, tx, cfg, chain, seeds=[0, 1, 2], sample_x=x[:10])
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  states, metrics = rar_jax.run_stream(step, states, x, y, streams.index)
  accuracy = rar_jax.evaluate(module, states, x_test, y_test, streams.task_of_class)

``streams`` comes from `rar_jax.data.class_incremental` (or any index array
``[runs, steps, batch]`` into ``x`` and ``task_of_class[runs, classes]``).
"""

from __future__ import annotations

import functools
import numbers
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rar_jax.core.method import ReplayConfig
from rar_jax.core.step import TrainState, as_chain
from rar_jax.errors import ArgumentError
from rar_jax.evaluation.evaluator import make_evaluator
from rar_jax.runner import loop


def _runs(states: TrainState) -> Optional[int]:
  """How many runs a state stack holds; None for one state (no runs axis)."""
  key = states.key
  raw_single = key.dtype == jnp.uint32 and key.ndim == 1
  typed_single = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0
  return None if raw_single or typed_single else int(key.shape[0])


def init_states(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  chain,
  seeds: Sequence[int],
  sample_x,
  *,
  opt_lr: Optional[float] = None,
) -> TrainState:
  """One initial state per seed, stacked along a leading runs axis. Seed k gives
  the same state alone or among others. ``chain``: a `Chain` or a method name;
  its stages' settings start the traced hyper-parameters; ``opt_lr`` (RAR's and
  MIR's look-ahead step) defaults to the optimiser's injected learning rate."""
  if isinstance(seeds, numbers.Integral) or not all(
    isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds
  ):
    raise ArgumentError(f"seeds={seeds!r} is invalid: a list of ints, e.g. [0, 1, 2]")
  if not len(seeds):
    raise ArgumentError("seeds=[] is invalid: at least one seed")
  chain = as_chain(chain)
  if opt_lr is None:
    injected = getattr(tx.init({}), "hyperparams", {})
    if "learning_rate" not in injected:
      raise ArgumentError(
        "opt_lr=None needs an optimiser with an injected learning_rate "
        "(rar_jax.make_optimizer); give opt_lr="
      )
    opt_lr = float(injected["learning_rate"])
  return loop.init_states(
    module, tx, cfg, chain.hyper(opt_lr), loop.seed_keys(seeds), jnp.asarray(sample_x)
  )


@functools.lru_cache(maxsize=32)
def _runner(train_step: Callable, batching: str, stream_loop: str):
  return loop.make_stream_runner(train_step, batching, stream_loop)


def run_stream(
  train_step: Callable,
  states: TrainState,
  x,
  y,
  index,
  *,
  batching: str = "vmap",
  stream_loop: str = "scan",
):
  """Trains every run of ``states`` on its stream: ``index[runs, steps, batch]``
  holds row numbers of ``x``/``y``. Returns ``(states, metrics[runs, steps])``.
  The program compiles once per ``train_step`` and shapes (`make_stream_runner`
  explains ``batching`` and ``stream_loop``)."""
  runs = _runs(states)
  index = jnp.asarray(index)
  if runs is None:
    raise ArgumentError(
      "states is one state: run_stream takes the stack init_states returns "
      "(for one state: jax.tree.map(lambda a: a[None], state))"
    )
  if index.ndim != 3 or index.shape[0] != runs or not jnp.issubdtype(index.dtype, jnp.integer):
    raise ArgumentError(
      f"index of shape {tuple(index.shape)} ({index.dtype}) is invalid: ints "
      f"[runs={runs}, steps, batch] into x"
    )
  if len(x) != len(y):
    raise ArgumentError(f"x has {len(x)} rows and y {len(y)}: one label per row")
  return _runner(train_step, batching, stream_loop)(states, jnp.asarray(x), jnp.asarray(y), index)


def evaluate(
  module: nn.Module,
  states: TrainState,
  x,
  y,
  task_of_class,
  *,
  eval_protocol: str = "class",
  eval_classifier: str = "head",
  chunk: int = 1000,
):
  """Accuracy per task, ``[runs, tasks]`` for a stack of states or ``[tasks]``
  for one state (``task_of_class`` then ``[classes]``). Uses the averaged
  weights where the optimiser keeps them (`rar_jax.evaluation_params`)."""
  runs = _runs(states)
  task_of_class = jnp.asarray(task_of_class)
  single = runs is None
  if single:
    states = jax.tree.map(lambda a: a[None], states)
    if task_of_class.ndim != 1:
      raise ArgumentError(
        f"task_of_class of shape {tuple(task_of_class.shape)} is invalid for one state: [classes]"
      )
    task_of_class = task_of_class[None]
  elif task_of_class.ndim != 2 or task_of_class.shape[0] != runs:
    raise ArgumentError(
      f"task_of_class of shape {tuple(task_of_class.shape)} is invalid: [runs={runs}, classes]"
    )
  num_tasks = int(jnp.max(task_of_class)) + 1
  fn = make_evaluator(
    module,
    num_tasks,
    chunk=min(chunk, len(x)),
    eval_protocol=eval_protocol,
    eval_classifier=eval_classifier,
  )
  accuracy = fn(states, jnp.asarray(x), jnp.asarray(y), task_of_class)
  return accuracy[0] if single else accuracy


__all__ = ["init_states", "run_stream", "evaluate"]
