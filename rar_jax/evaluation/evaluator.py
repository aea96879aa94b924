"""Accuracy per task of a stack of runs on an evaluation set, in chunks: the
model's output layer or the nearest class mean of each run's buffer."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from rar_jax.core.optim import evaluation_params
from rar_jax.core.step import TrainState, make_predict
from rar_jax.errors import ArgumentError
from rar_jax.evaluation import ncm as ncm_lib

EVAL_LOOPS = ("map", "host")
EVAL_CLASSIFIERS = ("head", "ncm")  # the output layer | the buffer's nearest class mean


def _parts(module: nn.Module, chunk: int, eval_protocol: str, eval_classifier: str):
  """``prepare(state, task_of_class) -> shared`` (the class means NCM needs,
  once per evaluation) and ``correct(state, shared, xb, yb, task_of_class) ->
  hits[rows]`` of one run."""
  predict = make_predict(module)
  features = ncm_lib.make_features(module)

  def prepare(state: TrainState, task_of_class):
    if eval_classifier == "head":
      return ()
    params, num_classes = evaluation_params(state), task_of_class.shape[0]
    return ncm_lib.buffer_class_means(
      features, params, state.batch_stats, state.buffer, num_classes, chunk
    )

  def correct(state: TrainState, shared, xb, yb, task_of_class):
    if eval_classifier == "head":
      logits = predict(evaluation_params(state), state.batch_stats, xb)
    else:
      feats = features(evaluation_params(state), state.batch_stats, xb)
      logits = ncm_lib.ncm_scores(feats, *shared)
    if eval_protocol == "task":  # the task is known at test time
      logits = jnp.where(task_of_class[None, :] == task_of_class[yb][:, None], logits, -jnp.inf)
    # A row with no finite score has no prediction (NCM with none of its candidate classes
    # in the buffer): argmax would say class 0 and count class-0 samples right.
    return (jnp.argmax(logits, -1) == yb) & jnp.isfinite(jnp.max(logits, -1))

  return prepare, correct


def _check_choices(eval_protocol: str, eval_loop: str, eval_classifier: str) -> None:
  for name, value, allowed in (
    ("eval_protocol", eval_protocol, ("class", "task")),
    ("eval_loop", eval_loop, EVAL_LOOPS),
    ("eval_classifier", eval_classifier, EVAL_CLASSIFIERS),
  ):
    if value not in allowed:
      raise ArgumentError(f"{name}={value!r} is invalid: one of {allowed}")


def make_run_evaluator(
  module: nn.Module,
  num_tasks: int,
  chunk: int = 1000,
  eval_protocol: str = "class",
  eval_classifier: str = "head",
  unroll: bool = False,
  per_class: bool = False,
) -> Callable:
  """The pure evaluation of one run: ``evaluate(state, x, y, task_of_class[C])
  -> accuracy[num_tasks]``, to call inside other programs (the stream's
  continual evaluation). The chunks of ``x`` run in `lax.map`, or one after
  another in the program with ``unroll`` (XLA's CPU convolutions run ~10x
  slower inside loop bodies, jax-ml/jax#12868). With ``per_class`` it returns
  ``counts[2, C]`` instead: the right predictions and the rows of each class
  (``num_tasks`` unused), from which accuracy per task or per class follows."""
  _check_choices(eval_protocol, "map", eval_classifier)
  prepare, correct = _parts(module, chunk, eval_protocol, eval_classifier)
  per_task: Callable = functools.partial(_per_task, num_tasks=num_tasks)
  if per_class:
    per_task = _per_class_counts

  def evaluate_one(state: TrainState, x, y, task_of_class):
    xp, yp, valid = _padded(x, y, chunk)
    shared = prepare(state, task_of_class)
    batches = (xp.reshape(-1, chunk, *x.shape[1:]), yp.reshape(-1, chunk))
    if unroll:
      hits = jnp.stack([correct(state, shared, xb, yb, task_of_class) for xb, yb in zip(*batches)])
    else:
      hits = jax.lax.map(lambda b: correct(state, shared, b[0], b[1], task_of_class), batches)
    return per_task(hits, yp, valid, task_of_class)

  return evaluate_one


def make_evaluator(
  module: nn.Module,
  num_tasks: int,
  chunk: int = 1000,
  eval_protocol: str = "class",
  eval_loop: str = "map",
  eval_classifier: str = "head",
  compiler_options: Optional[dict] = None,
) -> Callable:
  """``evaluate(states, x, y, task_of_class[seeds, C]) -> accuracy[seeds, num_tasks]``.

  The evaluation set is walked in chunks to bound memory for large models and
  many seeds: inside the program (`lax.map`, runs vmapped) with
  ``eval_loop="map"``; from Python, one run and one chunk at a time, with
  ``"host"`` (see `eval_execution`). Tasks with no evaluation sample get NaN.
  ``eval_protocol="class"``: argmax over every class (class-incremental);
  ``"task"``: over the classes of the sample's task only (task-incremental).
  ``eval_classifier="head"``: the model's output layer; ``"ncm"``: the nearest
  class mean of the run's buffer in the penultimate features (`rar_jax.evaluation.ncm`),
  the means computed once per evaluation.
  ``compiler_options``: XLA's, for the programs that apply the model (e.g.
  `rar_jax.runner.cpu_conv.compiler_options`).
  The result is jitted or behaves like a jitted function (``.lower(...).compile()``).
  """
  _check_choices(eval_protocol, eval_loop, eval_classifier)
  if compiler_options is not None and not isinstance(compiler_options, dict):
    raise ArgumentError(
      f"compiler_options={compiler_options!r} is invalid: a dict of XLA options, or None"
    )
  if eval_loop == "host":
    prepare, correct = _parts(module, chunk, eval_protocol, eval_classifier)
    pad = functools.partial(_padded, chunk=chunk)
    per_task = functools.partial(_per_task, num_tasks=num_tasks)
    return _HostEvaluator(prepare, correct, pad, per_task, chunk, compiler_options)

  evaluate_one = make_run_evaluator(module, num_tasks, chunk, eval_protocol, eval_classifier)
  jitted = jax.jit(
    jax.vmap(evaluate_one, in_axes=(0, None, None, 0)), compiler_options=compiler_options
  )

  def evaluate(states, x, y, task_of_class):
    _check_stack(states, task_of_class)
    return jitted(states, x, y, task_of_class)

  evaluate.lower = jitted.lower  # type: ignore[attr-defined]
  return evaluate


def _per_class_counts(hits, yp, valid, task_of_class):
  """``[2, classes]``: right predictions and rows per class (float32, exact counts)."""
  hits = hits.reshape(-1) & valid
  num_classes = task_of_class.shape[0]
  right = jax.ops.segment_sum(hits.astype(jnp.float32), yp, num_classes)
  total = jax.ops.segment_sum(valid.astype(jnp.float32), yp, num_classes)
  return jnp.stack([right, total])


def _per_task(hits, yp, valid, task_of_class, num_tasks: int):
  """Accuracy per task from per-row hits; NaN for a task with no row."""
  hits = hits.reshape(-1) & valid
  task = task_of_class[yp]
  right = jax.ops.segment_sum(hits.astype(jnp.float32), task, num_tasks)
  total = jax.ops.segment_sum(valid.astype(jnp.float32), task, num_tasks)
  return jnp.where(total > 0, right / jnp.maximum(total, 1.0), jnp.nan)


def _padded(x, y, chunk: int):
  """``x``, ``y`` padded to whole chunks, and which rows are real."""
  rows = (-x.shape[0]) % chunk
  return (jnp.pad(x, [(0, rows)] + [(0, 0)] * (x.ndim - 1)),) + _padded_labels(y, chunk)


def _padded_labels(y, chunk: int):
  """``y`` padded to whole chunks, and which rows are real."""
  n = y.shape[0]
  rows = (-n) % chunk
  return jnp.pad(y, (0, rows)), jnp.arange(n + rows) < n


def _check_stack(states, task_of_class) -> None:
  """A stack of runs (leading axis) with ``task_of_class[runs, classes]``."""
  # Every leaf of a stack carries the runs axis first; a single state has scalar
  # leaves (its step count) or leading sizes that differ.
  leading = {jnp.shape(leaf)[:1] for leaf in jax.tree.leaves(states)}
  if jnp.ndim(task_of_class) != 2 or leading - {jnp.shape(task_of_class)[:1]}:
    raise ArgumentError(
      f"the evaluator takes a stack of states and task_of_class[runs, classes], got "
      f"task_of_class of shape {jnp.shape(task_of_class)}; for one state use "
      "rar_jax.evaluate, or stack it: jax.tree.map(lambda a: a[None], state)"
    )


class _HostEvaluator:
  """A Python loop over runs and test-set chunks around one compiled chunk
  program (see `make_evaluator`)."""

  def __init__(
    self,
    prepare: Callable,
    correct: Callable,
    pad: Callable,
    per_task: Callable,
    chunk: int,
    compiler_options: Optional[dict] = None,
  ):
    self.chunk = chunk

    def chunk_hits(state, shared, xb, yb, task_of_class):
      return correct(state, shared, xb, yb, task_of_class)

    # The two programs that run the model; padding and counting have no convolutions.
    self._prepare = jax.jit(prepare, compiler_options=compiler_options)
    self._jitted = jax.jit(chunk_hits, compiler_options=compiler_options)
    self._hits = self._jitted
    self._pad = jax.jit(pad)
    self._per_task = jax.jit(jax.vmap(per_task, in_axes=(0, None, None, 0)))

  def lower(self, states, x, y, task_of_class):
    """Ahead-of-time compilation, as ``jax.jit(...).lower(...)`` offers."""
    evaluator = self
    xb = jax.ShapeDtypeStruct((self.chunk, *x.shape[1:]), x.dtype)
    yb = jax.ShapeDtypeStruct((self.chunk,), y.dtype)
    one = jax.tree.map(lambda a: a[0], states)

    class Lowered:
      def compile(self):
        if evaluator._hits is evaluator._jitted:  # one chunk program serves every call
          shared = jax.eval_shape(evaluator._prepare, one, task_of_class[0])
          # Compiled here, not on first use: its time belongs to compile_seconds.
          evaluator._prepare = evaluator._prepare.lower(one, task_of_class[0]).compile()
          evaluator._hits = evaluator._jitted.lower(one, shared, xb, yb, task_of_class[0]).compile()
        return evaluator

    return Lowered()

  def __call__(self, states, x, y, task_of_class):
    _check_stack(states, task_of_class)
    # Chunks are cut as they are evaluated, the last one padded: no padded copy of
    # the whole evaluation set (a gigabyte at mini-ImageNet's size).
    yp, valid = _padded_labels(y, self.chunk)
    runs = task_of_class.shape[0]
    hits = []
    for r in range(runs):
      state = jax.tree.map(lambda a: a[r], states)
      shared = self._prepare(state, task_of_class[r])
      row = [
        self._hits(state, shared, *self._chunk(x, y, start), task_of_class[r])
        for start in range(0, x.shape[0], self.chunk)
      ]
      hits.append(jnp.concatenate(row))
    return self._per_task(jnp.stack(hits), yp, valid, task_of_class)

  def _chunk(self, x, y, start: int):
    xb, yb = x[start : start + self.chunk], y[start : start + self.chunk]
    if xb.shape[0] < self.chunk:
      xb, yb, _ = self._pad(xb, yb)
    return xb, yb
