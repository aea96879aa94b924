"""The public training API (`rar_jax.init_states`, `run_stream`, `evaluate`)
against the step run by hand, and its one-line errors at the boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import rar_jax
from rar_jax.data import class_incremental

C = 4


def _data(n=200, seed=0):
  rng = np.random.default_rng(seed)
  centers = np.random.default_rng(99).uniform(0.2, 0.8, size=(C, 16))
  y = np.repeat(np.arange(C), n // C)
  x = np.clip(centers[y] + 0.05 * rng.normal(size=(len(y), 16)), 0, 1).reshape(-1, 4, 4, 1)
  return x.astype(np.float32), y.astype(np.int32)


@pytest.fixture(scope="module")
def trained():
  x, y = _data()
  bench = class_incremental(x, y, num_tasks=2, batch_size=10, seeds=[0, 1])
  module = rar_jax.MLP(C, hidden=(16,))
  cfg, chain = rar_jax.build_method("er_rar", num_classes=C, mem_size=20, batch_size_mem=5)
  tx = rar_jax.make_optimizer(0.1)
  tx_x = jnp.asarray(bench.train_x, jnp.float32)
  states = rar_jax.init_states(module, tx, cfg, chain, [0, 1], tx_x[:10])
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  trained, metrics = rar_jax.run_stream(
    step, states, tx_x, bench.train_y, bench.streams.index.reshape(2, -1, 10)
  )
  return module, tx, cfg, chain, bench, states, step, trained, metrics


def test_run_stream_is_the_step_applied_minibatch_by_minibatch(trained):
  module, tx, cfg, chain, bench, states, step, out, metrics = trained
  x = jnp.asarray(bench.train_x, jnp.float32)
  index = bench.streams.index.reshape(2, -1, 10)
  assert metrics["loss_current"].shape == (2, index.shape[1])
  one = jax.tree.map(lambda a: a[1], states)  # seed 1, alone, step by step
  jitted = jax.jit(step)
  for rows in index[1]:
    one, _ = jitted(one, x[rows], jnp.asarray(bench.train_y)[rows])
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(out.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b)[1], atol=1e-5)


def test_evaluate_one_state_or_many_against_a_numpy_count(trained):
  module, *_, out, _ = trained
  bench = trained[4]
  xt, yt = _data(80, seed=5)
  toc = bench.streams.task_of_class
  many = np.asarray(rar_jax.evaluate(module, out, xt, yt, toc))
  assert many.shape == (2, 2)
  for r in range(2):
    params = jax.tree.map(lambda a: a[r], out.params)
    pred = np.asarray(module.apply({"params": params}, xt)).argmax(-1)
    task = np.asarray(toc[r])[yt]
    want = [(pred == yt)[task == t].mean() for t in range(2)]
    one = rar_jax.evaluate(module, jax.tree.map(lambda a: a[r], out), xt, yt, toc[r])
    np.testing.assert_allclose(many[r], want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(one), want, atol=1e-6)


def test_seeds_keys_and_index_are_checked_at_the_boundary(trained):
  module, tx, cfg, chain, bench, states, step, _, _ = trained
  x = jnp.asarray(bench.train_x, jnp.float32)
  with pytest.raises(rar_jax.errors.ArgumentError, match="seeds=3 is invalid"):
    rar_jax.init_states(module, tx, cfg, chain, 3, x[:10])
  with pytest.raises(rar_jax.errors.ArgumentError, match="key=0 is invalid: a PRNG key"):
    rar_jax.init_train_state(module, tx, cfg, chain.hyper(0.1), 0, x[:10])
  with pytest.raises(rar_jax.errors.ArgumentError, match=r"index of shape \(5, 10\)"):
    rar_jax.run_stream(step, states, x, bench.train_y, np.zeros((5, 10), np.int32))
  with pytest.raises(rar_jax.errors.ArgumentError, match="states is one state"):
    one = jax.tree.map(lambda a: a[0], states)
    rar_jax.run_stream(step, one, x, bench.train_y, np.zeros((1, 5, 10), np.int32))
  with pytest.raises(rar_jax.errors.ArgumentError, match="stack of states"):
    rar_jax.evaluation.evaluator.make_evaluator(module, 2)(
      jax.tree.map(lambda a: a[0], states), x, bench.train_y, bench.streams.task_of_class[0]
    )


class _SmallCNN(nn.Module):
  """conv 3x3 - flatten - head: a model of the user's that convolves."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Conv(4, (3, 3))(x)).reshape(x.shape[0], -1)
    self.sow("features", "penultimate", h)
    return nn.Dense(C)(h)


@pytest.mark.parametrize("eval_loop", [None, "map", "host"])
def test_evaluate_of_a_conv_net_counts_right_in_every_eval_loop(eval_loop):
  module = _SmallCNN()
  cfg, chain = rar_jax.build_method("er", num_classes=C, mem_size=20, batch_size_mem=5)
  xt, yt = _data(80, seed=5)
  states = rar_jax.init_states(module, rar_jax.make_optimizer(0.1), cfg, chain, [0, 1], xt[:10])
  toc = np.stack([np.arange(C) // 2, np.arange(C) % 2])  # each run its own tasks
  got = np.asarray(rar_jax.evaluate(module, states, xt, yt, toc, chunk=30, eval_loop=eval_loop))
  for r in range(2):
    params = jax.tree.map(lambda a: a[r], states.params)
    pred = np.asarray(module.apply({"params": params}, xt)).argmax(-1)
    task = toc[r][yt]
    np.testing.assert_allclose(got[r], [(pred == yt)[task == t].mean() for t in range(2)])


def test_evaluate_loops_on_the_host_for_a_conv_net_on_one_cpu():
  """XLA's CPU convolutions are ~10x slower inside the map loop's program; a few
  multiply-adds are not worth a call per chunk (`user_model.is_conv_model`)."""
  from rar_jax.runner import training

  if jax.device_count() != 1 or jax.devices()[0].platform != "cpu":
    pytest.skip("the host loop is for one CPU device")
  assert 4 * 4 * 4 * 9 < 32_768 <= 32 * 32 * 4 * 9  # _SmallCNN's multiply-adds per row
  assert training._eval_loop(_SmallCNN(), (4, 4, 1)) == ("map", "default")
  assert training._eval_loop(_SmallCNN(), (32, 32, 1)) == ("host", "default")
  assert training._eval_loop(_SmallCNN(), (64, 64, 1)) == ("host", "eigen")
  assert training._eval_loop(rar_jax.MLP(C, hidden=(16,)), (64, 64, 1)) == ("map", "default")


def test_evaluate_hands_its_pick_to_the_evaluator_once_per_setting(monkeypatch):
  from rar_jax.runner import cpu_conv, training

  if jax.device_count() != 1 or jax.devices()[0].platform != "cpu":
    pytest.skip("the host loop is for one CPU device")
  seen = []
  real = training.make_evaluator

  def spy(*args, **kwargs):
    seen.append((kwargs["eval_loop"], kwargs["compiler_options"]))
    return real(*args, **kwargs)

  monkeypatch.setattr(training, "make_evaluator", spy)
  training._evaluator.cache_clear()
  cfg, chain = rar_jax.build_method("er", num_classes=C, mem_size=20, batch_size_mem=5)
  x = np.zeros((4, 64, 64, 1), np.float32)
  states = rar_jax.init_states(_SmallCNN(), rar_jax.make_optimizer(0.1), cfg, chain, [0], x)
  toc = (np.arange(C) // 2)[None]
  for _ in range(2):  # after each task, say: the second call reuses the first's programs
    rar_jax.evaluate(_SmallCNN(), states, x, np.zeros(4, np.int32), toc)
  rar_jax.evaluate(_SmallCNN(), states, x, np.zeros(4, np.int32), toc, eval_loop="map")
  eigen = cpu_conv.compiler_options("eigen", forward_only=True)
  assert seen == [("host", eigen), ("map", None)]


def _small_cnn_stream(side, seeds=(0, 1), steps=3):
  cfg, chain = rar_jax.build_method("er_rar", num_classes=C, mem_size=20, batch_size_mem=5)
  tx = rar_jax.make_optimizer(0.1)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(10 * steps, side, side, 1)).astype(np.float32)
  y = np.tile(np.arange(C, dtype=np.int32), 10 * steps)[: 10 * steps]
  index = np.stack([rng.permutation(10 * steps).reshape(steps, 10) for _ in seeds])
  states = rar_jax.init_states(_SmallCNN(), tx, cfg, chain, list(seeds), x[:10])
  return rar_jax.make_train_step(_SmallCNN(), tx, cfg, chain), states, x, y, index


def _one_cpu():
  if jax.device_count() != 1 or jax.devices()[0].platform != "cpu":
    pytest.skip("the host loop is for one CPU device")


def test_auto_runs_the_stream_as_train_py_picks_for_the_model(monkeypatch):
  """A conv net (`user_model.is_conv_model`) from a host loop, one run after
  another, Eigen from 64x64; a model of few multiply-adds in one scan; in
  `run_stream` and in `run_stream_with_curves` (whose runner also evaluates)."""
  import functools

  from rar_jax.runner import loop, training

  _one_cpu()
  auto = ("auto", "auto", "auto")
  for side, want in ((4, ("map", "scan", "default")), (32, ("map", "host", "default"))):
    step, states, x, *_ = _small_cnn_stream(side)
    assert training._execution("run_stream", step, states, x, *auto) == want
  step, states, x, *_ = _small_cnn_stream(64)
  got = training._execution("run_stream", step, states, x, "vmap", "auto", "auto")
  assert got == ("vmap", "host", "eigen")

  picked = []

  def spy(train_step, batching, stream_loop, evaluate, library):
    picked.append((batching, stream_loop, library, evaluate is not None))
    return loop.make_stream_runner(train_step, batching, stream_loop, evaluate, library)

  monkeypatch.setattr(training, "_stream_runner", functools.lru_cache()(spy))
  step, states, x, y, index = _small_cnn_stream(32)
  kw = dict(batching="auto", stream_loop="auto", cpu_conv_library="auto")
  rar_jax.run_stream(step, states, x, y, index, **kw)
  toc = np.stack([np.arange(C) // 2] * 2)
  _, _, curves = rar_jax.run_stream_with_curves(
    step, _SmallCNN(), states, x, y, index[:, None], x, y, toc, eval_every=2, **kw
  )
  assert picked == [("map", "host", "default", False), ("map", "host", "default", True)]
  assert curves.accuracy.shape == (2, 2, 1)  # runs, points (steps 2 and 3), the one task


def test_a_conv_net_in_a_scan_on_the_cpu_warns_and_names_auto():
  import warnings

  _one_cpu()
  step, states, x, y, index = _small_cnn_stream(32)
  with pytest.warns(
    UserWarning, match=r"^run_stream: _SmallCNN is a conv net .* stream_loop='auto'"
  ):
    rar_jax.run_stream(step, states, x, y, index)
  toc = np.stack([np.arange(C) // 2] * 2)
  with pytest.warns(UserWarning, match=r"^run_stream_with_curves: _SmallCNN is a conv net"):
    rar_jax.run_stream_with_curves(
      step, _SmallCNN(), states, x, y, index[:, None], x, y, toc, eval_every=3
    )
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    rar_jax.run_stream(*_small_cnn_stream(4))  # 576 multiply-adds a row: no conv net
    rar_jax.run_stream(*_small_cnn_stream(32), stream_loop="host", batching="map")
    rar_jax.run_stream(*_small_cnn_stream(32), stream_loop="auto")
  assert not [w for w in caught if "conv net" in str(w.message)]


def test_a_bad_stream_setting_is_one_line_naming_auto():
  step, states, x, y, index = _small_cnn_stream(4, seeds=(0,), steps=1)
  with pytest.raises(
    rar_jax.errors.RarError,
    match=r"^stream_loop='loop' is invalid: one of \('scan', 'host', 'auto'\)$",
  ):
    rar_jax.run_stream(step, states, x, y, index, stream_loop="loop")
