"""The mechanics of one method's run: runs placed on devices, states
initialised or restored, programs compiled, tasks trained in chunks with hooks."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Dict, List, Optional, Set

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from rar_jax import models
from rar_jax.core.step import make_train_step
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import chunks as chunks_lib
from rar_jax.runner import cpu_conv, loop
from rar_jax.runner import curves as curves_lib
from rar_jax.runner import hooks as hooks_lib
from rar_jax.runner import sweep as sweep_lib
from rar_jax.runner.plan import RunPlan
from rar_jax.runner.prepare import PreparedData
from rar_jax.runner.writer import MetricWriter

_say = hooks_lib.say


def gather(x) -> np.ndarray:
  """A (possibly sharded, multi-process) array as a host NumPy array everywhere."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@functools.partial(jax.jit, static_argnums=1)
def chunk_summary(m, num_runs: int):
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
class Placed:
  """The plan's arrays on the devices: runs sharded, data replicated."""

  plan: RunPlan
  by_run: Any
  data_x: jax.Array
  data_y: jax.Array
  eval_x: jax.Array
  eval_y: jax.Array
  task_of_class: jax.Array
  # Continual evaluation's fixed subset of the evaluation split (None: off).
  curve_x: Optional[jax.Array] = None
  curve_y: Optional[jax.Array] = None

  def index(self, task: int, start: int, stop: int, shape: tuple = ()) -> jax.Array:
    """The runs' minibatch rows of ``task``'s steps ``start:stop``, the step
    axis as ``shape`` (a chunk's: ``(steps,)`` or ``(segments, segment)``)."""
    index = self.plan.index[:, task, start:stop]
    if shape:
      index = index.reshape(index.shape[0], *shape, index.shape[-1])
    return loop.put_global(index, self.by_run)


def place(plan: RunPlan, data: PreparedData, mesh) -> Placed:
  by_run, rep = loop.runs_sharding(mesh), loop.replicated(mesh)
  placed = Placed(
    plan,
    by_run,
    loop.put_global(data.train_x, rep),
    loop.put_global(data.train_y, rep),
    loop.put_global(data.eval_x, rep),
    loop.put_global(data.eval_y, rep),
    loop.put_global(plan.task_of_class, by_run),
  )
  if data.curve_x is None:
    return placed
  if data.curve_x is data.eval_x:  # the whole split: already on the devices
    return dataclasses.replace(placed, curve_x=placed.eval_x, curve_y=placed.eval_y)
  return dataclasses.replace(
    placed, curve_x=loop.put_global(data.curve_x, rep), curve_y=loop.put_global(data.curve_y, rep)
  )


def diverged_runs(states, num_runs: int) -> Set[int]:
  """Runs whose parameters hold a NaN/Inf (a resumed run's guard has not seen
  the chunks before the resume, the parameters have)."""
  finite = jax.jit(
    lambda p: jnp.all(
      jnp.stack([jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), 1) for a in jax.tree.leaves(p)]),
      0,
    )
  )(states.params)
  return {int(r) for r in np.flatnonzero(~gather(finite)[:num_runs])}


def live_runs(plan: RunPlan, run: "RunState") -> List[int]:
  """The real runs that have not diverged (the per-task means and the RAR
  preview use these)."""
  return [r for r in range(plan.num_runs) if r not in run.diverged]


@dataclasses.dataclass
class RunState:
  """What a checkpoint holds: the runs' states, the accuracies so far, where
  the stream stands and the training time spent."""

  states: Any
  acc: np.ndarray
  position: int = 0
  train_seconds: float = 0.0
  eval_seconds: float = 0.0
  # Runs whose loss went NaN/Inf (a sweep trains the other cells on). Not in the
  # checkpoint: a restore reads it back from the parameters (`diverged_runs`).
  diverged: Set[int] = dataclasses.field(default_factory=set)
  # Continual evaluation: accuracy[runs, points, tasks] so far (NaN where not yet
  # evaluated); None when off, and then not in the checkpoint either.
  curve: Optional[np.ndarray] = None
  class_curve: Optional[np.ndarray] = None  # the same per class: [runs, points, classes]

  def payload(self) -> dict:
    payload = {
      "states": self.states,
      "acc": self.acc,
      "position": np.asarray(self.position, np.int64),
      "train_seconds": np.asarray(self.train_seconds, np.float64),
      "eval_seconds": np.asarray(self.eval_seconds, np.float64),
    }
    if self.curve is not None:
      payload["curve"], payload["class_curve"] = self.curve, self.class_curve
    return payload

  def legacy_payload(self) -> dict:
    """The payload of checkpoints written before eval_seconds was saved."""
    return {k: v for k, v in self.payload().items() if k != "eval_seconds"}


def init_or_restore(
  plan: RunPlan, placed: Placed, module, tx, ckpt, sample_x, verb: str = "resumed"
) -> RunState:
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
  curve = class_curve = None
  if plan.curve_steps is not None:
    points = len(plan.curve_steps)
    curve = np.full((plan.padded, points, plan.num_tasks), np.nan, np.float32)
    class_curve = np.full((plan.padded, points, plan.task_of_class.shape[1]), np.nan, np.float32)
  run = RunState(
    states,
    np.full((plan.padded, plan.num_tasks, plan.num_tasks), np.nan, np.float32),
    curve=curve,
    class_curve=class_curve,
  )
  restored = ckpt.restore_latest(run.payload(), run.legacy_payload())
  if restored is not None:
    got = restored[1]
    run = RunState(
      got["states"],
      np.asarray(got["acc"]),
      int(got["position"]),
      float(got["train_seconds"]),
      float(got.get("eval_seconds", 0.0)),
      curve=None if curve is None else np.asarray(got["curve"]),
      class_curve=None if curve is None else np.asarray(got["class_curve"]),
    )
    run.diverged = diverged_runs(run.states, plan.num_runs)
    _say(
      f"[{plan.method}] {verb} from the checkpoint at step {run.position} of "
      f"{plan.num_tasks * plan.steps_per_task}"
    )
  return run


@dataclasses.dataclass
class Programs:
  """The compiled programs of a method: training chunks by index shape, the
  evaluation, the per-experience buffer filler (or None)."""

  # Compiled programs by index step axes: (states, data, index, ...) -> (states, metrics, ...)
  chunks: Dict[tuple, Any]
  evaluate: Any
  fill: Any
  compile_seconds: float
  eval_execution: Dict[str, str]  # eval_loop; for conv models eval_conv_impl, eval_cpu_conv_library
  task_chunks: List[chunks_lib.Chunk]  # how every task is cut into chunks
  compile_chunk: Any  # Chunk -> compiled program, for a shape not compiled ahead

  def chunk(self, chunk: chunks_lib.Chunk):
    """The compiled program of ``chunk``'s shape (a resumed run's partial chunk
    compiles here)."""
    if chunk.shape not in self.chunks:
      self.chunks[chunk.shape] = self.compile_chunk(chunk)
    return self.chunks[chunk.shape]


def compile_programs(plan: RunPlan, placed: Placed, run: RunState, module, tx, config) -> Programs:
  """Ahead of time, so compilation is timed apart from training."""
  t0 = time.perf_counter()
  evaluate_one = None
  if plan.curve_steps is not None:
    evaluate_one = curves_lib.continual_evaluator(plan, placed, module, config)
  runner: Any = loop.make_stream_runner(
    make_train_step(module, tx, plan.replay, plan.chain, unroll=plan.execution["unroll"]),
    plan.batching,
    plan.execution["stream_loop"],
    evaluate_one,
    plan.execution["cpu_conv_library"],
    donate_states=True,  # run.states is replaced by the result: no second copy of it
  )
  task_chunks = chunks_lib.task_chunks(
    plan.steps_per_task, config.log_every_steps, config.eval_every
  )

  def compile_chunk(chunk: chunks_lib.Chunk):
    index = placed.index(0, chunk.start, chunk.start + chunk.steps, chunk.shape)
    return runner.lower(
      run.states, placed.data_x, placed.data_y, index, *curves_lib.curve_args(placed)
    ).compile()

  programs: Dict[tuple, Any] = {}
  for c in task_chunks:  # at most three shapes (rar_jax.runner.chunks)
    if c.shape not in programs:
      programs[c.shape] = compile_chunk(c)
  evaluate, eval_execution = compile_evaluation(plan, placed, run, module, config)
  fill = loop.make_buffer_filler() if plan.replay.buffer_update == "per_experience" else None
  return Programs(
    programs, evaluate, fill, time.perf_counter() - t0, eval_execution, task_chunks, compile_chunk
  )


def compile_evaluation(
  plan: RunPlan, placed: Placed, run: RunState, module, config, num_tasks: Optional[int] = None
):
  """The compiled evaluation of every run and how it runs (recorded in metrics.json);
  ``num_tasks`` groups of classes in place of the plan's tasks (e.g. a blurry
  stream's disjoint and blurry classes), called with that grouping in place of
  ``task_of_class``."""
  eval_execution = {"eval_loop": "map"}
  options = None
  if plan.conv_model:
    built_in = config.model in models.MODELS  # the built-in conv net has a choice of convolutions
    ev = loop.eval_execution(
      jax.devices()[0].platform,
      module.conv_impl if built_in else "xla",
      jax.device_count(),
      plan.input_shape,
      own_convolutions=not built_in,
    )
    if built_in:
      module = module.clone(conv_impl=ev["conv_impl"])
      eval_execution = {"eval_conv_impl": ev["conv_impl"]}
    eval_execution["eval_loop"] = ev["eval_loop"]
    eval_execution["eval_cpu_conv_library"] = ev["cpu_conv_library"]
    options = cpu_conv.compiler_options(ev["cpu_conv_library"], forward_only=True)
  # Conv nets: one run's chunk of 250 in the host loop (100-250 ran alike; fewer calls); in one
  # program every run's im2col patches grow with the chunk, so 100 there for the built-in.
  eval_chunk = 1000
  if eval_execution["eval_loop"] == "host":
    eval_chunk = 250
  elif plan.conv_model and config.model in models.MODELS:
    eval_chunk = 100
  evaluator: Any = evaluator_lib.make_evaluator(
    module,
    num_tasks or plan.num_tasks,
    chunk=eval_chunk,
    eval_protocol=config.eval_protocol,
    eval_loop=eval_execution["eval_loop"],
    eval_classifier=config.eval_classifier,
    compiler_options=options,
  )
  evaluate = evaluator.lower(
    run.states, placed.eval_x, placed.eval_y, placed.task_of_class
  ).compile()
  return evaluate, eval_execution


def train_tasks(
  plan: RunPlan,
  placed: Placed,
  run: RunState,
  programs: Programs,
  hooks: List[hooks_lib.Hook],
) -> None:
  """Every remaining chunk of every remaining task; evaluation after each task."""
  steps = plan.steps_per_task
  start_position, start_seconds = run.position, run.train_seconds  # this session's speed
  for t in range(run.position // steps, plan.num_tasks):
    for chunk in chunks_lib.remaining(programs.task_chunks, run.position - t * steps):
      pos, n = chunk.start, chunk.steps
      t1 = time.perf_counter()
      out = programs.chunk(chunk)(
        run.states,
        placed.data_x,
        placed.data_y,
        placed.index(t, pos, pos + n, chunk.shape),
        *curves_lib.curve_args(placed),
      )
      run.states, m = out[:2]
      points = (
        curves_lib.record_points(plan, run, out[2], chunk.points(t * steps)) if len(out) > 2 else ()
      )
      finite, scalars = chunk_summary(m, plan.num_runs)
      finite, scalars = gather(finite), jax.device_get(scalars)  # per-run flags may be sharded
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
          points,
        ),
      )
    if programs.fill is not None:
      run.states = programs.fill(
        run.states, placed.data_x, placed.data_y, placed.index(t, 0, steps)
      )
    t1 = time.perf_counter()
    run.acc[:, t, :] = gather(
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
        run.acc[live_runs(plan, run), t].mean(0),
        run.payload,
        seconds,
      ),
    )


def make_hooks(
  config: ConfigDict, plan: RunPlan, workdir: str, ckpt, run: "RunState", lead: bool
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
