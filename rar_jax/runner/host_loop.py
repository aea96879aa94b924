"""The ``host`` stream loop: a Python loop over one compiled step (see
`rar_jax.runner.loop.make_stream_runner`), for XLA's CPU convolutions, which run
~10x slower inside loop bodies (jax-ml/jax#12868)."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np


def _put(stack, one, r):
  return jax.tree.map(lambda s, o: jax.lax.dynamic_update_index_in_dim(s, o, r, 0), stack, one)


# In place: the stack is donated, so a run's final state overwrites its slot.
_put_in_place = jax.jit(_put, donate_argnums=0)


class HostLoopRunner:
  """``run(states, data_x, data_y, index, *evaluation)`` as
  `rar_jax.runner.loop.make_stream_runner` documents it, one step per call."""

  def __init__(
    self,
    train_step: Callable,
    batching: str,
    evaluate: Optional[Callable] = None,
    options: Optional[dict] = None,
    donate_states: bool = False,
    eval_options: Optional[dict] = None,
  ):
    self.batching, self.donate_states = batching, donate_states

    def one(state, data_x, data_y, idx):
      return train_step(state, data_x[idx], data_y[idx])

    # The state is donated: XLA updates it in place instead of copying the
    # buffer and weights every minibatch.
    if batching == "vmap":
      self._jitted = jax.jit(
        jax.vmap(one, in_axes=(0, None, None, 0)), donate_argnums=0, compiler_options=options
      )
      evaluate = evaluate and jax.vmap(evaluate, in_axes=(0, None, None, 0))
    else:
      self._jitted = jax.jit(one, donate_argnums=0, compiler_options=options)
    self._step = self._jitted
    self._evaluate = evaluate and jax.jit(evaluate, compiler_options=eval_options)
    self._evaluate_jitted = self._evaluate

  def lower(self, states, data_x, data_y, index, *evaluation):
    """Ahead-of-time compilation, as ``jax.jit(...).lower(...)`` offers."""
    runner = self
    one = jax.tree.map(lambda a: a[0], states)
    first = (slice(None),) + (0,) * (index.ndim - 2)  # one step's rows of every run
    if self.batching == "vmap":
      args = (states, data_x, data_y, index[first])
    else:
      args = (one, data_x, data_y, index[first][0])

    class Lowered:
      def compile(self):
        if runner._step is runner._jitted:  # one step program serves every chunk length
          runner._step = runner._jitted.lower(*args).compile()
        if evaluation and runner._evaluate is runner._evaluate_jitted:
          ex, ey, toc = evaluation
          vmapped = runner.batching == "vmap"
          eval_args = (states, ex, ey, toc) if vmapped else (one, ex, ey, toc[0])
          runner._evaluate = runner._evaluate_jitted.lower(*eval_args).compile()
        return runner

    return Lowered()

  def __call__(self, states, data_x, data_y, index, *evaluation):
    index = np.asarray(index)
    if evaluation:  # [runs, segments, steps, batch]: an evaluation after each segment
      ex, ey, toc = evaluation
      segment = index.shape[2]
      index = index.reshape(index.shape[0], -1, index.shape[-1])
    if not self.donate_states:
      # A private copy, so the caller's arrays survive the donations below.
      states = jax.tree.map(jnp.copy, states)
    if self.batching == "vmap":
      out, accs = [], []
      for t in range(index.shape[1]):
        states, m = self._step(states, data_x, data_y, index[:, t])
        out.append(m)
        if evaluation and (t + 1) % segment == 0:  # dispatched, not waited for
          accs.append(self._evaluate(states, ex, ey, toc))
      result = (states, _stack(out, axis=1))
      return result + (jnp.stack(accs, axis=1),) if evaluation else result
    # One run at a time, its final state written back into its slot of the stack:
    # the stack and one run's state in memory, not the stack and every final state.
    per_run, curves = [], []
    for r in range(index.shape[0]):
      state = jax.tree.map(lambda a: a[r], states)
      out, accs = [], []
      for t in range(index.shape[1]):
        state, m = self._step(state, data_x, data_y, index[r, t])
        out.append(m)
        if evaluation and (t + 1) % segment == 0:
          accs.append(self._evaluate(state, ex, ey, toc[r]))
      states = _put_in_place(states, state, np.int32(r))
      per_run.append(_stack(out, axis=0))
      if evaluation:
        curves.append(jnp.stack(accs))
    result = (states, _stack(per_run, axis=0))
    return result + (jnp.stack(curves),) if evaluation else result


def _stack(trees, axis):
  return jax.tree.map(lambda *a: jnp.stack(a, axis=axis), *trees)
