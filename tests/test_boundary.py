"""The library's boundary: every public entry point refuses input it cannot use
with one line naming the argument (a `RarError`), and the inputs it accepts by
contract (uint8 images, a data range of one's own, a stage's own settings) give
the numbers of their documented equivalent."""

import ast
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rar_jax
from rar_jax import stages
from rar_jax.errors import ArgumentError, ModelError, RarError, StageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 4


@functools.lru_cache(maxsize=None)
def world():
  rng = np.random.default_rng(0)
  x = rng.random((80, 6, 6, 1), dtype=np.float32)
  y = np.arange(80, dtype=np.int32) % CLASSES
  bench = rar_jax.data.class_incremental(x, y, num_tasks=2, batch_size=5, seeds=[0, 1])
  module = rar_jax.MLP(CLASSES, hidden=(16,))
  cfg, chain = rar_jax.build_method("er_rar", CLASSES, mem_size=20, batch_size_mem=5, iter_fgsm=2)
  tx = rar_jax.make_optimizer(0.1)
  states = rar_jax.init_states(module, tx, cfg, chain, [0, 1], bench.train_x[:1])
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  index = bench.streams.index.reshape(2, -1, 5)
  return bench, module, cfg, chain, tx, states, step, index


def one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert isinstance(excinfo.value, RarError) and "\n" not in message and message, message
  return message


def test_labels_outside_the_classes_are_refused_by_run_stream_and_evaluate():
  bench, module, _, _, _, states, step, index = world()
  for bad in (CLASSES, -1):
    y = bench.train_y.copy()
    y[3] = bad
    with pytest.raises(ArgumentError) as e:
      rar_jax.run_stream(step, states, bench.train_x, y, index)
    assert "num_classes=4" in one_line(e) and str(bad) in one_line(e)
    with pytest.raises(ArgumentError) as e:
      rar_jax.evaluate(module, states, bench.train_x, y, bench.streams.task_of_class)
    assert "labels" in one_line(e)


def test_float_labels_and_mismatched_lengths_are_refused():
  bench, module, _, _, _, states, step, index = world()
  with pytest.raises(ArgumentError) as e:
    rar_jax.run_stream(step, states, bench.train_x, bench.train_y.astype(np.float32), index)
  assert "integer class labels" in one_line(e)
  with pytest.raises(ArgumentError) as e:
    rar_jax.evaluate(module, states, bench.train_x, bench.train_y[:-1], bench.streams.task_of_class)
  assert "one label per row" in one_line(e)


def test_an_index_past_the_end_of_x_is_refused_not_clamped():
  bench, _, _, _, _, states, step, index = world()
  bad = np.array(index)
  bad[1, 2, 3] = len(bench.train_x)
  with pytest.raises(ArgumentError) as e:
    rar_jax.run_stream(step, states, bench.train_x, bench.train_y, bad)
  assert f"x has {len(bench.train_x)} rows" in one_line(e)


def test_uint8_images_train_as_their_pixels_divided_by_255():
  bench, _, _, _, _, states, step, index = world()
  pixels = np.random.default_rng(1).integers(0, 256, bench.train_x.shape, dtype=np.uint8)
  got, _ = rar_jax.run_stream(step, states, pixels, bench.train_y, index)
  want, _ = rar_jax.run_stream(
    step, states, pixels.astype(np.float32) / 255.0, bench.train_y, index
  )
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_inputs_outside_the_data_range_are_refused_and_a_range_of_ones_own_is_kept():
  bench, module, cfg, _, tx, _, _, _ = world()
  x = (bench.train_x - 0.5) / 0.29  # standardised: about [-1.7, 1.7]
  _, chain = rar_jax.build_method("er_rar", CLASSES, mem_size=20, batch_size_mem=5, iter_fgsm=2)
  states = rar_jax.init_states(module, tx, cfg, chain, [0, 1], x[:1])
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  index = bench.streams.index.reshape(2, -1, 5)
  with pytest.raises(ArgumentError) as e:
    rar_jax.run_stream(step, states, x, bench.train_y, index)
  assert "data_range=(0.0, 1.0)" in one_line(e)

  # With the data's own range the perturbed rows stay inside it, below 0 too.
  own = rar_jax.data.class_incremental(x, bench.train_y, 2, batch_size=5, seeds=[0, 1])
  low, high = own.data_range
  assert low < -1.5 and high > 1.5
  _, chain = rar_jax.build_method(
    "er_rar", CLASSES, mem_size=20, batch_size_mem=5, iter_fgsm=2, epsilon_fgsm=3.0,
    data_range=own.data_range,
  )  # fmt: skip
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  states, _ = rar_jax.run_stream(step, states, own.train_x, own.train_y, index)
  preview = rar_jax.make_rar_preview(module, tx, cfg, chain)
  one = jax.tree.map(lambda a: a[0], states)
  rows = np.flatnonzero(own.train_y == 0)[:5]  # one class: replay draws the others
  out = preview(
    one, jnp.asarray(own.train_x[rows]), jnp.asarray(own.train_y[rows]), jax.random.key(0)
  )
  adv = np.asarray(out["x_adv"])[np.asarray(out["mask"])]
  assert adv.min() >= low and adv.max() <= high and adv.min() < -0.1


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_pixels_are_refused(value):
  bench, module, _, _, _, states, step, index = world()
  x = bench.train_x.copy()
  x[5, 1, 1, 0] = value
  with pytest.raises(ArgumentError) as e:
    rar_jax.run_stream(step, states, x, bench.train_y, index)
  assert "NaN or Inf" in one_line(e)
  with pytest.raises(ArgumentError):
    rar_jax.evaluate(module, states, x, bench.train_y, bench.streams.task_of_class)


def test_a_sample_without_batch_axis_and_images_of_another_size_are_named():
  bench, module, cfg, chain, tx, _, step, index = world()
  states = rar_jax.init_states(module, tx, cfg, chain, [0, 1], bench.train_x[0])
  with pytest.raises(ArgumentError) as e:
    rar_jax.run_stream(step, states, bench.train_x, bench.train_y, index)
  assert "x[:1], not x[0]" in one_line(e)
  _, _, _, _, _, states, _, _ = world()
  big = np.zeros((len(bench.train_x), 8, 8, 1), np.float32)
  with pytest.raises(ArgumentError) as e:
    rar_jax.run_stream(step, states, big, bench.train_y, index)
  assert "(8, 8, 1)" in one_line(e) and "(6, 6, 1)" in one_line(e)


def test_the_step_itself_checks_what_it_is_traced_with():
  bench, _, _, _, _, states, step, _ = world()
  one = jax.tree.map(lambda a: a[0], states)
  with pytest.raises(ArgumentError) as e:
    step(one, jnp.zeros((5, 7, 7, 1)), jnp.zeros(5, jnp.int32))
  assert "(6, 6, 1)" in one_line(e)
  with pytest.raises(ArgumentError) as e:
    step(one, jnp.asarray(bench.train_x[:5]), jnp.zeros(5, jnp.float32))
  assert "integer label" in one_line(e)
  with pytest.raises(ArgumentError) as e:
    step(states, jnp.asarray(bench.train_x[:5]), jnp.zeros(5, jnp.int32))
  assert "one state" in one_line(e)


def test_a_model_whose_output_width_is_not_the_classes_is_named():
  bench, _, cfg, chain, tx, states, _, _ = world()
  wide = rar_jax.MLP(CLASSES + 3, hidden=(16,))
  with pytest.raises(ModelError) as e:
    rar_jax.init_states(wide, tx, cfg, chain, [0], bench.train_x[:1])
  assert "num_classes=4" in one_line(e)
  with pytest.raises(ArgumentError) as e:  # evaluate with a model the states do not fit
    rar_jax.evaluate(wide, states, bench.train_x, bench.train_y, bench.streams.task_of_class)
  assert "cannot apply" in one_line(e)


def test_a_task_map_shorter_than_the_classes_is_refused():
  bench, module, _, _, _, states, _, _ = world()
  with pytest.raises(ArgumentError) as e:
    rar_jax.evaluate(
      module, states, bench.train_x, bench.train_y, bench.streams.task_of_class[:, :3]
    )
  assert "one task per class" in one_line(e)
  with pytest.raises(ArgumentError) as e:
    rar_jax.evaluate(
      module, states, bench.train_x, bench.train_y, np.array([[0, 0, 2, 2]] * 2, np.int32)
    )
  assert "tasks numbered 0, 1" in one_line(e)


@pytest.mark.parametrize(
  "call,fragment",
  [
    (lambda: rar_jax.make_optimizer(-0.1), "learning_rate=-0.1"),
    (lambda: rar_jax.make_optimizer(0.1, ema_decay=1.5), "ema_decay=1.5"),
    (lambda: rar_jax.make_optimizer(float("nan")), "learning_rate=nan"),
    (lambda: rar_jax.create_model("foo", 10), "'foo'"),
    (lambda: rar_jax.buffer.init(-3, (2,)), "capacity"),
    (lambda: rar_jax.build_method("er_rar", 10, data_range=(1.0, 0.0)), "data_range"),
    (
      lambda: rar_jax.data.class_incremental(np.zeros((8, 2, 2, 1)), np.arange(8) % 2, 2, seeds=3),
      "seeds=3",
    ),
    (
      lambda: rar_jax.data.class_incremental(
        np.zeros((8, 2, 2, 1)), np.arange(8) % 2, 2, batch_size=0
      ),
      "batch_size=0",
    ),
  ],
)
def test_bad_arguments_of_the_builders_are_one_line(call, fragment):
  with pytest.raises(RarError) as e:
    call()
  assert fragment in one_line(e)


def test_an_unknown_batching_is_named():
  bench, _, _, _, _, states, step, index = world()
  with pytest.raises(ArgumentError) as e:
    rar_jax.run_stream(step, states, bench.train_x, bench.train_y, index, batching="nope")
  assert "batching='nope'" in one_line(e)


def test_undeclared_lookahead_reads_name_the_field():
  bench, module, cfg, _, tx, _, _, index = world()

  def peek(ctx, key, batch):
    jax.tree.leaves(ctx.lookahead_params)  # needs θ' but does not declare it
    return [(batch.x, batch.targets, 1.0)], {}

  chain = stages.chain(stages.random_replay(), stages.perturb(peek, "peek"))
  states = rar_jax.init_states(module, tx, cfg, chain, [0, 1], bench.train_x[:1])
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  with pytest.raises(StageError) as e:
    rar_jax.run_stream(step, states, bench.train_x, bench.train_y, index)
  assert "'peek' read ctx.lookahead_params" in one_line(e)


def test_a_stages_own_setting_is_traced_and_swept_in_one_program():
  """A temperature on the replay loss, swept from Python by stacking states:
  each value equals its own run, and the stream compiles once."""
  bench, module, cfg, _, tx, _, _, index = world()

  def tempered(ctx, key, batch):
    return [(batch.x, batch.targets, ctx.hyper.extra["temperature"])], {}

  def chain_with(t):
    return stages.chain(stages.random_replay(), stages.perturb(tempered, hyper={"temperature": t}))

  step = rar_jax.make_train_step(module, tx, cfg, chain_with(0.5))
  values = [0.0, 0.5, 2.0]
  parts = [
    rar_jax.init_states(module, tx, cfg, chain_with(t), [0], bench.train_x[:1]) for t in values
  ]
  stacked = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
  assert np.allclose(stacked.hyper.extra["temperature"], values)
  idx = np.repeat(index[:1], len(values), axis=0)
  swept, _ = rar_jax.run_stream(step, stacked, bench.train_x, bench.train_y, idx)
  for i, part in enumerate(parts):
    alone, _ = rar_jax.run_stream(step, part, bench.train_x, bench.train_y, idx[:1])
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(swept.params)):
      np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[i], rtol=1e-5, atol=1e-6)
  zero, half = (np.asarray(jax.tree.leaves(swept.params)[0][i]) for i in (0, 1))
  assert not np.allclose(zero, half)  # the setting acts


def test_a_stage_setting_with_a_library_name_or_a_bad_value_is_refused():
  fn = lambda ctx, key, batch: ([(batch.x, batch.targets, 1.0)], {})
  with pytest.raises(ArgumentError) as e:
    stages.perturb(fn, hyper={"beta_coef": 0.5})
  assert "beta_coef" in one_line(e)
  with pytest.raises(ArgumentError) as e:
    stages.perturb(fn, hyper={"temperature": float("nan")})
  assert "temperature=nan" in one_line(e)


def test_rar_jax_data_after_import_rar_jax_without_tensorflow():
  code = (
    "import sys, rar_jax; rar_jax.data.class_incremental; rar_jax.evaluation.continual; "
    "assert 'tensorflow' not in sys.modules; print('ok')"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert out.stdout.strip() == "ok", out.stderr


def test_no_bare_value_or_type_error_is_raised_on_purpose():
  """Every deliberate raise is a `RarError` (`rar_jax/errors.py`)."""
  builtin = {"ValueError", "TypeError", "RuntimeError", "KeyError", "NotImplementedError"}
  found = []
  for folder, _, files in os.walk(os.path.join(ROOT, "rar_jax")):
    for name in files:
      path = os.path.join(folder, name)
      if not name.endswith(".py") or path.endswith(os.path.join("rar_jax", "errors.py")):
        continue
      for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
          func = node.exc.func
          if isinstance(func, ast.Name) and func.id in builtin:
            found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {func.id}")
  assert not found, found


# ---------------------------------------------------------------- properties

_SPOILS = ("none", "label_high", "label_low", "label_float", "index_high", "index_low",
           "nan", "range", "short_y", "uint8", "float64", "int_images", "rank")  # fmt: skip


def _spoil(kind, x, y, index, at):
  x, y, index = x.copy(), y.copy(), np.array(index)
  i = at % len(y)
  if kind == "label_high":
    y[i] = CLASSES + at % 5
  elif kind == "label_low":
    y[i] = -1 - at % 5
  elif kind == "label_float":
    y = y.astype(np.float32)
  elif kind == "index_high":
    index.reshape(-1)[at % index.size] = len(y) + at % 3
  elif kind == "index_low":
    index.reshape(-1)[at % index.size] = -1
  elif kind == "nan":
    x.reshape(-1)[at % x.size] = np.nan
  elif kind == "range":
    x.reshape(-1)[at % x.size] = 1.0 + 0.5 * (1 + at % 3)
  elif kind == "short_y":
    y = y[:-1]
  elif kind == "uint8":
    x = (x * 255).astype(np.uint8)
  elif kind == "float64":
    x = x.astype(np.float64)
  elif kind == "int_images":
    x = (x * 255).astype(np.int32)
  elif kind == "rank":
    x = x.reshape(len(x), -1)
  return x, y, index


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
  kind=st.sampled_from(_SPOILS), at=st.integers(0, 10_000), target=st.sampled_from(["run", "eval"])
)
def test_any_spoiled_call_is_one_line_or_a_finite_correct_result(kind, at, target):
  bench, module, _, _, _, states, step, index = world()
  x, y, idx = _spoil(kind, bench.train_x, bench.train_y, index, at)
  # Evaluation has no attack, hence no data range; it reads no index.
  valid = {"none", "uint8", "float64"} | (
    {"range", "index_high", "index_low"} if target == "eval" else set()
  )
  try:
    if target == "run":
      out, metrics = rar_jax.run_stream(step, states, x, y, idx)
      leaves = jax.tree.leaves((out.params, metrics))
      assert all(np.all(np.isfinite(np.asarray(a))) for a in leaves)
    else:
      acc = np.asarray(rar_jax.evaluate(module, states, x, y, bench.streams.task_of_class))
      assert acc.shape == (2, 2) and np.all((acc >= 0) & (acc <= 1))
  except RarError as e:
    assert str(e) and "\n" not in str(e), str(e)
    assert kind not in valid, f"{kind}: refused valid input: {e}"
    return
  assert kind in valid, f"{kind}: accepted without a word"
