"""Runs the step over a stream: `lax.scan` over minibatches, `vmap` over seeds.

Data stay on the device once; each seed's stream is an int index array into
them, so memory does not grow with the number of seeds.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rar_jax import buffer as buffer_lib
from rar_jax.method import Hyper, ReplayConfig
from rar_jax.step import TrainState, init_train_state, make_predict


def seed_keys(seeds: Sequence[int]) -> jax.Array:
  """One raw uint32 key per seed; seed k gives the same key alone or in a batch."""
  return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


def init_states(module: nn.Module, tx: optax.GradientTransformation, cfg: ReplayConfig,
                hyper: Hyper, keys: jax.Array, sample_x, *, learning_rates=None,
                sharding=None) -> TrainState:
  """A stack of independent initial states, one per key (leading axis).

  ``hyper`` is one `Hyper` for all runs, or a stack with the same leading
  axis as ``keys`` (a sweep). ``learning_rates`` optionally sets the injected
  SGD rate per run. ``sharding`` places the stack (e.g. over a device mesh).
  """
  one = jax.tree.map(lambda a: a[0] if a.ndim else a, hyper)
  # Python-side checks (feature layer, buffer) raise here; eval_shape runs no FLOPs.
  jax.eval_shape(lambda k: init_train_state(module, tx, cfg, one, k, sample_x), keys[0])
  hyper_axis = 0 if hyper.beta_coef.ndim else None

  def init(key, h, lr):
    state = init_train_state(module, tx, cfg, h, key, sample_x)
    if lr is not None:
      state = state.replace(opt_state=state.opt_state._replace(
          hyperparams={**state.opt_state.hyperparams, "learning_rate": lr}))
    return state

  lr_axis = None if learning_rates is None else 0
  fn = jax.vmap(init, in_axes=(0, hyper_axis, lr_axis))
  return jax.jit(fn, out_shardings=sharding)(keys, hyper, learning_rates)


BATCHINGS = ("vmap", "map")


def make_stream_runner(train_step: Callable, batching: str = "vmap") -> Callable:
  """``run(states, data_x, data_y, index[seeds, steps, batch]) -> (states, metrics)``.

  One compiled program runs every step of the chunk for every seed.
  ``batching="vmap"`` advances the runs together (one batched step);
  ``"map"`` runs them one after another inside the program (`lax.map`), which
  is faster on a single CPU device: there every run reads its own weights, so
  batching runs only adds memory traffic. ``map`` needs the runs axis on one
  device.
  """
  if batching not in BATCHINGS:
    raise ValueError(f"batching={batching!r} is invalid: one of {BATCHINGS}")

  def run_one(state, data_x, data_y, index):
    def body(s, idx):
      return train_step(s, data_x[idx], data_y[idx])
    return jax.lax.scan(body, state, index)

  if batching == "vmap":
    return jax.jit(jax.vmap(run_one, in_axes=(0, None, None, 0)))

  def run_all(states, data_x, data_y, index):
    return jax.lax.map(lambda a: run_one(a[0], data_x, data_y, a[1]), (states, index))

  return jax.jit(run_all)


def default_batching(num_devices: int) -> str:
  """``map`` on a single CPU device, ``vmap`` everywhere else."""
  return "map" if num_devices == 1 and jax.devices()[0].platform == "cpu" else "vmap"


def make_buffer_filler() -> Callable:
  """For ``buffer_update='per_experience'``: offers a whole task to each buffer."""

  def fill_one(state: TrainState, data_x, data_y, index):
    flat = index.reshape(-1)
    key, k_add = jax.random.split(state.key)
    buf = buffer_lib.add(state.buffer, data_x[flat], data_y[flat], k_add)
    return state.replace(buffer=buf, key=key)

  return jax.jit(jax.vmap(fill_one, in_axes=(0, None, None, 0)))


def make_evaluator(module: nn.Module, num_tasks: int, chunk: int = 1000) -> Callable:
  """``evaluate(states, x, y, task_of_class[seeds, C]) -> accuracy[seeds, num_tasks]``.

  The evaluation set is walked in chunks (`lax.map`) to bound memory for
  large models and many seeds. Tasks with no evaluation sample get NaN.
  """
  predict = make_predict(module)

  def evaluate_one(state: TrainState, x, y, task_of_class):
    n = x.shape[0]
    pad = (-n) % chunk
    xp = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    yp = jnp.pad(y, (0, pad))
    valid = jnp.arange(n + pad) < n

    def correct(batch):
      xb, yb = batch
      return jnp.argmax(predict(state.params, state.batch_stats, xb), -1) == yb

    hits = jax.lax.map(correct, (xp.reshape(-1, chunk, *x.shape[1:]), yp.reshape(-1, chunk)))
    hits = hits.reshape(-1) & valid
    task = task_of_class[yp]
    right = jax.ops.segment_sum(hits.astype(jnp.float32), task, num_tasks)
    total = jax.ops.segment_sum(valid.astype(jnp.float32), task, num_tasks)
    return jnp.where(total > 0, right / jnp.maximum(total, 1.0), jnp.nan)

  return jax.jit(jax.vmap(evaluate_one, in_axes=(0, None, None, 0)))


# ---------------------------------------------------------------- placement

RUNS_AXIS = "runs"


def runs_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process, along the runs axis."""
  # Auto axes: XLA propagates the runs sharding through the vmapped step.
  return jax.make_mesh((jax.device_count(),), (RUNS_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def runs_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(RUNS_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def put_global(array, sharding: jax.sharding.NamedSharding) -> jax.Array:
  """A global array from a host array every process holds in full; each
  process materialises only its own shards."""
  import numpy as np
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def padded_runs(num_runs: int, num_devices: int) -> int:
  """Runs rounded up to a multiple of the device count (padding is dropped)."""
  return -(-num_runs // num_devices) * num_devices
