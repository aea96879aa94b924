"""The small public training API: initialise states for seeds, run a stream,
evaluate one state or many. What `train.py` does, without its config, files
and device placement (those stay in `rar_jax.runner.experiment`)::

  cfg, chain = rar_jax.build_method("er_rar", num_classes=10, mem_size=200)
  tx = rar_jax.make_optimizer(0.1)
  states = rar_jax.init_states(module, tx, cfg, chain, seeds=[0, 1, 2], sample_x=x[:10])
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  states, metrics = rar_jax.run_stream(step, states, x, y, streams.index)
  accuracy = rar_jax.evaluate(module, states, x_test, y_test, streams.task_of_class)
  # or, evaluating during the stream (continual evaluation):
  states, metrics, curves = rar_jax.run_stream_with_curves(
      step, module, states, x, y, streams.index, x_test, y_test, streams.task_of_class,
      eval_every=10)

``streams`` comes from `rar_jax.data.class_incremental` (or any index array
``[runs, steps, batch]`` into ``x`` and ``task_of_class[runs, classes]``).
"""

from __future__ import annotations

import functools
import numbers
import warnings
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rar_jax import models
from rar_jax.core.method import ReplayConfig
from rar_jax.core.nnx_module import as_module, model_name
from rar_jax.core.step import TrainState, as_chain, make_predict
from rar_jax.errors import ArgumentError
from rar_jax.evaluation import continual
from rar_jax.evaluation.evaluator import make_evaluator, make_run_evaluator
from rar_jax.runner import chunks as chunks_lib
from rar_jax.runner import cpu_conv, inputs, loop, user_model


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
  sample_x = inputs.images("sample_x", sample_x)
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


# One evaluator, runner or choice per model and settings, hence one compilation
# for repeated calls (`_cached`).
_run_evaluator = functools.lru_cache(maxsize=32)(make_run_evaluator)
_stream_runner = functools.lru_cache(maxsize=32)(loop.make_stream_runner)


def _cached(fn, *args):
  """``fn(*args)`` through ``fn``'s cache; an unhashable argument (a module
  with a list field, say) skips it, and the function itself names a bad one."""
  try:
    hash(args)
  except TypeError:
    return fn.__wrapped__(*args)
  return fn(*args)


def run_stream(
  train_step: Callable,
  states: TrainState,
  x,
  y,
  index,
  *,
  batching: str = "vmap",
  stream_loop: str = "scan",
  cpu_conv_library: str = "default",
):
  """Trains every run of ``states`` on its stream: ``index[runs, steps, batch]``
  holds row numbers of ``x``/``y``. Returns ``(states, metrics[runs, steps])``.
  The program compiles once per ``train_step`` and shapes (`make_stream_runner`
  explains ``batching``, ``stream_loop`` and ``cpu_conv_library``; ``"auto"``
  for any of them picks what `train.py` picks for the step's model and
  platform: a conv net on one CPU device runs from a host loop, one run after
  another)."""
  runs = _runs(states)
  if runs is None:
    raise ArgumentError(
      "states is one state: run_stream takes the stack init_states returns "
      "(for one state: jax.tree.map(lambda a: a[None], state))"
    )
  x, y = _training_data(train_step, states, x, y)
  index = inputs.index("index", index, axes=("runs", "steps", "batch"), runs=runs, rows=len(x))
  batching, stream_loop, library = _execution(
    "run_stream", train_step, states, x, batching, stream_loop, cpu_conv_library
  )
  runner = _cached(_stream_runner, train_step, batching, stream_loop, None, library)
  return runner(states, jnp.asarray(x), jnp.asarray(y), index)


def _execution(caller, train_step, states, x, batching, stream_loop, cpu_conv_library) -> tuple:
  """``(batching, stream_loop, cpu_conv_library)`` with "auto" resolved for
  the model behind ``train_step`` (``train_step.module``, set by
  `make_train_step`; a step without one runs as a dense model does), and a
  warning where a conv net is given a scan on the CPU."""
  for name, value, valid in (
    ("batching", batching, loop.BATCHINGS),
    ("stream_loop", stream_loop, loop.STREAM_LOOPS),
    ("cpu_conv_library", cpu_conv_library, cpu_conv.CPU_CONV_LIBRARIES),
  ):
    if value not in valid + ("auto",):
      raise ArgumentError(f"{name}={value!r} is invalid: one of {valid + ('auto',)}")
  module = getattr(train_step, "module", None)
  settings = (batching, stream_loop, cpu_conv_library)
  given_scan = stream_loop == "scan" and jax.devices()[0].platform == "cpu"
  if "auto" not in settings and not (given_scan and module is not None):
    return settings
  # The states' devices, not all of them: the runs are not sharded here.
  sharding = getattr(states.key, "sharding", None)
  devices = len(sharding.device_set) if sharding is not None else 1
  key = (module, tuple(x.shape[1:]), _runs(states), devices, *settings)
  resolved, conv = _cached(_stream_execution, *key)
  if conv and given_scan and jax.process_count() == 1:
    warnings.warn(
      f"{caller}: {model_name(as_module(module))} is a conv net and runs in a lax.scan on "
      "the CPU, where XLA's convolutions run ~8x slower than called from a host loop; "
      "batching='auto', stream_loop='auto', cpu_conv_library='auto' pick what train.py "
      "picks (docs/own_model.md)",
      stacklevel=3,
    )
  return resolved


@functools.lru_cache(maxsize=32)
def _stream_execution(module, row_shape, runs, devices, batching, stream_loop, cpu_conv_library):
  """`_execution`'s choice, and whether the model convolves as a conv net
  (`rar_jax.runner.user_model.is_conv_model`) with XLA's convolutions."""
  try:
    conv = module is not None and user_model.is_conv_model(module, row_shape)
  except Exception:  # noqa: BLE001  (a model the trace cannot read runs as a dense one)
    conv = False
  if batching == "auto":
    batching = loop.default_batching(devices)
  # The built-in ResNet's own convolutions; any other model keeps XLA's.
  conv_impl = module.conv_impl if isinstance(module, models.ReducedResNet18) else "xla"
  runs_per_device = -(-runs // devices)
  ex = loop.resolve_execution(
    conv_impl, stream_loop, conv, runs_per_device, batching, 0, cpu_conv_library, row_shape
  )
  return (batching, ex["stream_loop"], ex["cpu_conv_library"]), conv and conv_impl == "xla"


def _training_data(train_step, states, x, y, prefix: str = ""):
  """``(x, y)`` checked against what ``states`` were built for and the range
  the step clips to (``train_step.data_range``, set by `make_train_step`)."""
  x = inputs.images(
    prefix + "x",
    x,
    row_shape=inputs.row_shape_of(states, stacked=True),
    data_range=getattr(train_step, "data_range", None),
  )
  y = inputs.labels(prefix + "y", y, rows=len(x), num_classes=inputs.num_classes_of(states))
  return x, y


def run_stream_with_curves(
  train_step: Callable,
  module: nn.Module,
  states: TrainState,
  x,
  y,
  index,
  eval_x,
  eval_y,
  task_of_class,
  *,
  eval_every: int,
  eval_protocol: str = "class",
  eval_classifier: str = "head",
  chunk: int = 1000,
  batching: str = "vmap",
  stream_loop: str = "scan",
  cpu_conv_library: str = "default",
):
  """`run_stream` with continual evaluation: ``index[runs, tasks, steps, batch]``
  (``streams.index`` as `rar_jax.data.class_incremental` builds it) is trained
  task after task, and every run is evaluated on ``eval_x``/``eval_y`` (per
  task through ``task_of_class[runs, classes]``) after every ``eval_every``-th
  step of each task and its last step, inside the compiled program (one call
  per task, or two where ``eval_every`` does not divide the task). Returns
  ``(states, metrics[runs, steps], curves)``, ``curves`` a
  `rar_jax.evaluation.continual.Curves` (``steps``, ``accuracy[runs, points,
  tasks]``, ``task_ends``) that `rar_jax.evaluation.continual`'s functions
  summarise (AAA, min-ACC, WC-ACC, stability gap). ``batching``,
  ``stream_loop``, ``cpu_conv_library``: as `run_stream`'s, "auto" included."""
  runs = _runs(states)
  if runs is None:
    raise ArgumentError("states is one state: run_stream_with_curves takes a stack (init_states)")
  x, y = _training_data(train_step, states, x, y)
  eval_x, eval_y = _training_data(train_step, states, eval_x, eval_y, prefix="eval_")
  index = inputs.index(
    "index", index, axes=("runs", "tasks", "steps", "batch"), runs=runs, rows=len(x)
  )
  task_of_class = inputs.task_of_class(
    "task_of_class", task_of_class, runs=runs, num_classes=inputs.num_classes_of(states)
  )
  _check_outputs(module, states, eval_x, inputs.num_classes_of(states), single=False)
  _, num_tasks, steps_per_task, batch = index.shape
  steps = continual.evaluation_steps(num_tasks, steps_per_task, eval_every)  # checks it
  evaluator = (module, num_tasks, min(chunk, len(eval_x)), eval_protocol, eval_classifier)
  evaluate_one = _cached(_run_evaluator, *evaluator)
  batching, stream_loop, library = _execution(
    "run_stream_with_curves", train_step, states, x, batching, stream_loop, cpu_conv_library
  )
  runner = _cached(_stream_runner, train_step, batching, stream_loop, evaluate_one, library)
  data = (jnp.asarray(x), jnp.asarray(y))
  evaluation = (jnp.asarray(eval_x), jnp.asarray(eval_y), task_of_class)
  pieces = chunks_lib.task_chunks(steps_per_task, steps_per_task, eval_every)
  metrics, accuracy = [], []
  for task in range(num_tasks):  # each task: its full segments, then its short last one
    for piece in pieces:
      rows = index[:, task, piece.start : piece.start + piece.steps]
      rows = rows.reshape(runs, *piece.shape, batch)
      states, m, acc = runner(states, *data, rows, *evaluation)
      metrics.append(m)
      accuracy.append(acc)
  curves = continual.Curves(
    steps,
    np.concatenate([np.asarray(a) for a in accuracy], axis=1),
    steps_per_task * np.arange(1, num_tasks + 1),
  )
  return states, jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *metrics), curves


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
  eval_loop: Optional[str] = None,
):
  """Accuracy per task, ``[runs, tasks]`` for a stack of states or ``[tasks]``
  for one state (``task_of_class`` then ``[classes]``). Uses the averaged
  weights where the optimiser keeps them (`rar_jax.evaluation_params`).
  ``eval_loop``: `rar_jax.evaluation.make_evaluator`'s; None picks ``"host"``
  for a conv net (`rar_jax.runner.user_model.is_conv_model`) on one CPU device
  (XLA's CPU convolutions run ~10x slower inside the program's loop over
  chunks), there with Eigen's convolutions for images of side 64 or more, as
  `train.py` evaluates; ``"map"`` elsewhere."""
  runs = _runs(states)
  single = runs is None
  classes = inputs.num_classes_of(states)
  task_of_class = inputs.task_of_class(
    "task_of_class", task_of_class, runs=runs, num_classes=classes
  )
  x = inputs.images("x", x, row_shape=inputs.row_shape_of(states, stacked=not single))
  y = inputs.labels("y", y, rows=len(x), num_classes=classes)
  _check_outputs(module, states, x, classes, single)
  if single:
    states = jax.tree.map(lambda a: a[None], states)
    task_of_class = task_of_class[None]
  num_tasks = int(jnp.max(task_of_class)) + 1
  library = "default"
  if eval_loop is None:
    eval_loop, library = _cached(_eval_loop, module, tuple(x.shape[1:]))
  settings = (num_tasks, min(chunk, len(x)), eval_protocol, eval_loop, eval_classifier, library)
  fn = _cached(_evaluator, module, *settings)
  accuracy = fn(states, jnp.asarray(x), jnp.asarray(y), task_of_class)
  return accuracy[0] if single else accuracy


@functools.lru_cache(maxsize=32)  # repeated evaluate calls (after each task) compile once
def _evaluator(module, num_tasks, chunk, eval_protocol, eval_loop, eval_classifier, library):
  return make_evaluator(
    module,
    num_tasks,
    chunk=chunk,
    eval_protocol=eval_protocol,
    eval_loop=eval_loop,
    eval_classifier=eval_classifier,
    compiler_options=cpu_conv.compiler_options(library, forward_only=True),
  )


@functools.lru_cache(maxsize=32)
def _eval_loop(module, row_shape) -> tuple:
  """`evaluate`'s ``eval_loop`` and CPU convolution library: the runner's
  choice (`rar_jax.runner.loop.eval_execution`) for a conv net."""
  platform = jax.devices()[0].platform
  if not user_model.is_conv_model(module, tuple(row_shape)):
    return "map", "default"
  ev = loop.eval_execution(platform, "xla", jax.device_count(), row_shape, own_convolutions=True)
  return ev["eval_loop"], ev["cpu_conv_library"]


def _check_outputs(module, states, x, classes: int, single: bool) -> None:
  """``module`` applies to the states' parameters and returns one logit per class."""
  one = states if single else jax.tree.map(lambda a: a[0], states)
  try:
    logits = jax.eval_shape(lambda: make_predict(module)(one.params, one.batch_stats, x[:1]))
  except Exception as e:  # Flax names the mismatch; keep its first line
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ArgumentError(
      f"module {model_name(as_module(module))} cannot apply the states' parameters (not the "
      f"model they were built with?): {first}"
    ) from None
  if tuple(logits.shape) != (1, classes):
    raise ArgumentError(
      f"module {model_name(as_module(module))} returns logits of shape {tuple(logits.shape)} "
      f"for one row: the states were built for num_classes={classes}, logits [rows, {classes}]"
    )


__all__ = ["init_states", "run_stream", "run_stream_with_curves", "evaluate"]
