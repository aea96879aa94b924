"""Runs the step over a stream: `lax.scan` over minibatches, `vmap` over seeds.

Data stay on the device once; each seed's stream is an int index array into
them, so memory does not grow with the number of seeds.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rar_jax.core import buffer as buffer_lib
from rar_jax.core.method import Hyper, ReplayConfig
from rar_jax.core.step import TrainState, init_train_state
from rar_jax.errors import ArgumentError
from rar_jax.runner.cpu_conv import compiler_options, default_cpu_conv_library
from rar_jax.runner.host_loop import HostLoopRunner


def seed_keys(seeds: Sequence[int]) -> jax.Array:
  """One raw uint32 key per seed; seed k gives the same key alone or in a batch."""
  return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


def init_states(
  module: nn.Module,
  tx: optax.GradientTransformation,
  cfg: ReplayConfig,
  hyper: Hyper,
  keys: jax.Array,
  sample_x,
  *,
  opt_hyperparams=None,
  sharding=None,
) -> TrainState:
  """A stack of independent initial states, one per key (leading axis).

  ``hyper`` is one `Hyper` for all runs, or a stack with the same leading
  axis as ``keys`` (a sweep). ``opt_hyperparams`` optionally sets the
  optimiser's injected hyper-parameters per run (``{"learning_rate": [runs]}``,
  ``"ema_decay"``). ``sharding`` places the stack (e.g. over a device mesh).
  """
  one = jax.tree.map(lambda a: a[0] if a.ndim else a, hyper)
  # Python-side checks (feature layer, buffer) raise here; eval_shape runs no FLOPs.
  jax.eval_shape(lambda k: init_train_state(module, tx, cfg, one, k, sample_x), keys[0])
  hyper_axis = 0 if hyper.beta_coef.ndim else None

  def init(key, h, opt_h):
    state = init_train_state(module, tx, cfg, h, key, sample_x)
    if opt_h:
      unknown = set(opt_h) - set(state.opt_state.hyperparams)
      if unknown:
        raise ArgumentError(f"the optimiser injects no {sorted(unknown)}")
      state = state.replace(
        opt_state=state.opt_state._replace(hyperparams={**state.opt_state.hyperparams, **opt_h})
      )
    return state

  fn = jax.vmap(init, in_axes=(0, hyper_axis, 0))
  return jax.jit(fn, out_shardings=sharding)(keys, hyper, opt_hyperparams or {})


BATCHINGS = ("vmap", "map")
STREAM_LOOPS = ("scan", "host")


def make_stream_runner(
  train_step: Callable,
  batching: str = "vmap",
  stream_loop: str = "scan",
  evaluate: Optional[Callable] = None,
  cpu_conv_library: str = "default",
  donate_states: bool = False,
) -> Callable:
  """``run(states, data_x, data_y, index[runs, steps, batch]) -> (states, metrics)``.

  ``batching`` is how runs share the device: ``"vmap"`` advances them together
  (one batched step); ``"map"`` runs them one after another (`lax.map`), which
  is faster on a single CPU device, where every run reads its own weights so
  batching runs only adds memory traffic. ``map`` needs the runs axis on one
  device.

  ``stream_loop`` is how the steps of a chunk run: ``"scan"`` compiles the
  whole chunk into one program (`lax.scan`); ``"host"`` calls one compiled step
  from Python per minibatch, state donated. ``host`` exists because XLA's CPU
  backend runs convolutions inside loop bodies ~10x slower than outside
  (jax-ml/jax#12868). Both execute the same step program; for the numbers they
  give see docs/execution.md.

  With ``evaluate`` (one run's pure evaluation, `make_run_evaluator`), the
  runner evaluates during the stream (continual evaluation), inside the same
  program: the steps come in segments, each followed by an evaluation::

    run(states, data_x, data_y, index[runs, segments, steps, batch], eval_x,
        eval_y, task_of_class[runs, C]) -> (states, metrics[runs, segments * steps],
                                            accuracy[runs, segments, tasks])

  (a scan over segments around the scan over their steps: no branch in the
  step's loop, whose operands XLA would copy every step).

  ``cpu_conv_library`` picks the library behind XLA's CPU convolutions in the
  training program (`compiler_options`): ``"eigen"`` is faster at
  mini-ImageNet's 84x84 (docs/execution.md); continual evaluation follows it.

  ``donate_states``: the caller gives up ``states`` (its arrays are deleted),
  so the runner needs no second copy of them; else they survive the call.

  The result is jitted (``scan``) or behaves like a jitted function
  (``host``): call it, or ``.lower(...).compile()`` it ahead of time.
  """
  options = compiler_options(cpu_conv_library)
  if batching not in BATCHINGS:
    raise ArgumentError(f"batching={batching!r} is invalid: one of {BATCHINGS}")
  if stream_loop not in STREAM_LOOPS:
    raise ArgumentError(f"stream_loop={stream_loop!r} is invalid: one of {STREAM_LOOPS}")
  if not isinstance(donate_states, bool):
    raise ArgumentError(f"donate_states={donate_states!r} is invalid: True or False")
  if stream_loop == "host":
    forward = compiler_options(cpu_conv_library, forward_only=True)  # its evaluation's
    return HostLoopRunner(train_step, batching, evaluate, options, donate_states, forward)
  if evaluate is not None:
    return _scan_with_evaluation(train_step, batching, evaluate, options, donate_states)

  def run_one(state, data_x, data_y, index):
    def body(s, idx):
      return train_step(s, data_x[idx], data_y[idx])

    return jax.lax.scan(body, state, index)

  donate = (0,) if donate_states else ()
  if batching == "vmap":
    vmapped = jax.vmap(run_one, in_axes=(0, None, None, 0))
    return jax.jit(vmapped, compiler_options=options, donate_argnums=donate)

  def run_all(states, data_x, data_y, index):
    return jax.lax.map(lambda a: run_one(a[0], data_x, data_y, a[1]), (states, index))

  return jax.jit(run_all, compiler_options=options, donate_argnums=donate)


def _scan_with_evaluation(
  train_step: Callable, batching: str, evaluate: Callable, options: Optional[dict], donate: bool
) -> Callable:
  """The ``scan`` runner with an evaluation after each segment of steps."""

  def run_one(state, data_x, data_y, index, eval_x, eval_y, task_of_class):
    def step(s, idx):
      return train_step(s, data_x[idx], data_y[idx])

    def segment(s, idx):
      s, metrics = jax.lax.scan(step, s, idx)
      return s, (metrics, evaluate(s, eval_x, eval_y, task_of_class))

    state, (metrics, accuracy) = jax.lax.scan(segment, state, index)
    return state, jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), metrics), accuracy

  jit = functools.partial(jax.jit, compiler_options=options, donate_argnums=(0,) if donate else ())
  if batching == "vmap":
    return jit(jax.vmap(run_one, in_axes=(0, None, None, 0, None, None, 0)))

  def run_all(states, data_x, data_y, index, eval_x, eval_y, task_of_class):
    return jax.lax.map(
      lambda a: run_one(a[0], data_x, data_y, a[1], eval_x, eval_y, a[2]),
      (states, index, task_of_class),
    )

  return jit(run_all)


def default_batching(num_devices: int) -> str:
  """``map`` on a single CPU device, ``vmap`` everywhere else."""
  return "map" if num_devices == 1 and jax.devices()[0].platform == "cpu" else "vmap"


def default_conv_impl(
  platform: str,
  num_runs: int,
  processes: int = 1,
  batching: str = "map",
) -> str:
  """How convolutions run, per platform (measured: bench/step_time.py,
  bench/paper_code_step_time.py, docs/results.md).

  CPU: XLA's convolutions when each device runs its runs one at a time
  (``map``, or one run per device) in one process, called from a host loop with
  the step's inner loops unrolled (`default_unroll`), since XLA's CPU
  convolutions inside loop bodies run ~10x slower than outside
  (jax-ml/jax#12868); im2col's matmuls otherwise: several processes cannot use
  the host loop, and vmapped runs would make XLA emit grouped convolutions.
  GPU: XLA's cuDNN convolutions for one run; im2col's batched matmuls for
  several vmapped runs. TPU: XLA's.
  """
  if platform == "cpu":
    one_at_a_time = num_runs == 1 or batching == "map"
    return "xla" if processes == 1 and one_at_a_time else "im2col"
  if platform in ("gpu", "cuda", "rocm"):
    return "im2col" if num_runs > 1 else "xla"
  return "xla"


# A model by import path runs as a conv net (host loop, unrolled inner loops, Eigen at 64x64
# and up, evaluated from the host) from this many multiply-adds of XLA convolutions per input
# row. Measured, a small CNN on 8x8 digits, 3 seeds, ms per step as a conv net / as a dense
# model: 18k MACs (width 32) ER 4.0 / 2.8, ER-RAR 4.4 / 6.6; 37k (width 64) ER 6.1 / 6.3,
# ER-RAR 7.3 / 11.5 (`python bench/model_path_time.py`, docs/own_model.md).
CONV_MODEL_MIN_MACS = 32_768


def default_stream_loop(platform: str, conv_model: bool, conv_impl: str, processes: int = 1) -> str:
  """``scan`` everywhere, except XLA convolutions on the CPU in one process
  (jax-ml/jax#12868; the host loop needs every run's data in this process)."""
  host = platform == "cpu" and conv_model and conv_impl == "xla" and processes == 1
  return "host" if host else "scan"


def default_unroll(platform: str, conv_model: bool, conv_impl: str) -> bool:
  """Whether the step's inner loops (RAR's attack steps, `replay_iters`)
  compile unrolled: where XLA's convolutions run on the CPU, for the reason
  the host loop exists (jax-ml/jax#12868). Elsewhere loops compile faster."""
  return platform == "cpu" and conv_model and conv_impl == "xla"


def resolve_execution(
  conv_impl: str,
  stream_loop: str,
  conv_model: bool,
  runs_per_device: int,
  batching: str = "map",
  inner_iters: int = 0,
  cpu_conv_library: str = "default",
  input_shape: Optional[Sequence[int]] = None,
) -> dict:
  """``conv_impl``, ``stream_loop`` and ``cpu_conv_library`` with "auto"
  resolved for this platform (the last for images of ``input_shape``), and
  ``unroll`` (`make_train_step`'s): ``inner_iters``, the longest inner loop of
  the step (`inner_loop_iters`), where `default_unroll` says so, else 0."""
  platform = jax.devices()[0].platform
  processes = jax.process_count()
  if conv_impl == "auto":
    conv_impl = (
      default_conv_impl(platform, runs_per_device, processes, batching) if conv_model else "xla"
    )
  if stream_loop == "auto":
    stream_loop = default_stream_loop(platform, conv_model, conv_impl, processes)
  if cpu_conv_library == "auto":
    cpu_conv_library = default_cpu_conv_library(platform, conv_model, conv_impl, input_shape)
  unroll = inner_iters if default_unroll(platform, conv_model, conv_impl) else 0
  return dict(
    conv_impl=conv_impl, stream_loop=stream_loop, unroll=unroll, cpu_conv_library=cpu_conv_library
  )


def inner_loop_iters(replay: ReplayConfig, chain, iter_fgsm) -> int:
  """The longest inner loop of a step of ``replay`` (a `ReplayConfig`) and
  ``chain`` over runs whose attack steps are ``iter_fgsm`` (an array, one per run)."""
  attack = int(np.max(iter_fgsm)) if chain.perturb is not None else 0
  return max(attack, replay.replay_iters if replay.replay_iters > 1 else 0)


def eval_execution(
  platform: str,
  conv_impl: str,
  devices: int = 1,
  input_shape: Optional[Sequence[int]] = None,
  own_convolutions: bool = False,
) -> dict:
  """How a conv model is evaluated: ``conv_impl``, ``eval_loop``, ``cpu_conv_library``.

  On one CPU device: XLA's convolutions called from a host loop over runs and
  test-set chunks (2.3x faster than im2col with the runs vmapped, docs/results.md:
  inside `lax.map` XLA's CPU convolutions are ~10x slower, vmapped they are
  grouped), Eigen's for large images as in training (`default_cpu_conv_library`).
  Runs over several devices or processes: one program, im2col on the CPU, the
  training choice elsewhere. Training's ``cpu_conv_library`` never changes it.
  ``own_convolutions``: the model convolves its own way (a model by import
  path), with XLA's convolutions; where im2col would be picked it keeps them.
  """
  if platform != "cpu":
    conv, eval_loop = conv_impl, "map"
  elif devices == 1:
    conv, eval_loop = "xla", "host"
  else:
    conv, eval_loop = ("xla" if own_convolutions else "im2col"), "map"
  library = default_cpu_conv_library(platform, True, conv, input_shape)
  return {"conv_impl": conv, "eval_loop": eval_loop, "cpu_conv_library": library}


def make_buffer_filler() -> Callable:
  """For ``buffer_update='per_experience'``: offers a whole task to each buffer."""

  def fill_one(state: TrainState, data_x, data_y, index):
    flat = index.reshape(-1)
    key, k_add = jax.random.split(state.key)
    buf = buffer_lib.add(state.buffer, data_x[flat], data_y[flat], k_add)
    return state.replace(buffer=buf, key=key)

  return jax.jit(jax.vmap(fill_one, in_axes=(0, None, None, 0)))


# ---------------------------------------------------------------- placement

RUNS_AXIS = "runs"


def runs_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process, along the runs axis."""
  # Auto axes: XLA propagates the runs sharding through the vmapped step.
  return jax.make_mesh(
    (jax.device_count(),), (RUNS_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def runs_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(RUNS_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def put_global(array, sharding: jax.sharding.NamedSharding) -> jax.Array:
  """A global array from a host array every process holds in full; each
  process materialises only its own shards."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def padded_runs(num_runs: int, num_devices: int) -> int:
  """Runs rounded up to a multiple of the device count (padding is dropped)."""
  return -(-num_runs // num_devices) * num_devices
