"""`evaluator_lib.make_evaluator`: per-task accuracy against a NumPy count."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rar_jax
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import loop

C = 6  # classes


class Oracle(nn.Module):
  """Predicts the class written in the first input feature."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    scale = self.param("scale", nn.initializers.ones, ())
    h = x.reshape((x.shape[0], -1))
    self.sow("features", "penultimate", h)
    return scale * jax.nn.one_hot(jnp.round(h[:, 0]).astype(jnp.int32), self.num_classes)


def init_runs(module, cfg, seeds, sample_x, ema_decay=None):
  """One training state per seed (SGD at 0.1), as the loop holds them."""
  return loop.init_states(
    module,
    rar_jax.make_optimizer(0.1, ema_decay),
    cfg,
    rar_jax.Hyper.create(opt_lr=0.1),
    loop.seed_keys(seeds),
    jnp.asarray(sample_x),
  )


def numpy_accuracy(pred, y, task_of_class, num_tasks):
  acc = np.full(num_tasks, np.nan)
  task = task_of_class[y]
  for t in range(num_tasks):
    if np.any(task == t):
      acc[t] = np.mean(pred[task == t] == y[task == t])
  return acc


@pytest.mark.parametrize("eval_loop", evaluator_lib.EVAL_LOOPS)
def test_per_task_accuracy_with_a_partial_last_chunk_and_an_empty_task(eval_loop):
  rng = np.random.default_rng(0)
  n, num_tasks = 23, 4  # chunks of 10: the last one holds 3 samples and 7 padding rows
  y = rng.integers(0, 5, n)  # class 5 never occurs
  pred = np.where(rng.uniform(size=n) < 0.6, y, rng.integers(0, C, n))
  # Padding rows (label 0, input 0) would be counted right for class 0: make
  # class 0's real samples all wrong so counting them shows.
  pred[y == 0] = 1
  x = np.zeros((n, 3), np.float32)
  x[:, 0] = pred
  # Per seed its own class order: seed 0 leaves task 3 without classes, seed
  # 1 gives it only class 5, which has no samples: NaN both times.
  task_of_class = np.array([[0, 0, 1, 1, 2, 2], [2, 1, 0, 1, 2, 3]])
  module = Oracle(C)
  cfg = rar_jax.ReplayConfig(num_classes=C)
  states = init_runs(module, cfg, [0, 1], x[:2])
  evaluate = evaluator_lib.make_evaluator(module, num_tasks, chunk=10, eval_loop=eval_loop)
  if eval_loop == "host":  # compiled ahead of time, as train.py does
    evaluate = evaluate.lower(
      states, jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(task_of_class, jnp.int32)
    ).compile()
  got = np.asarray(
    evaluate(
      states, jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(task_of_class, jnp.int32)
    )
  )
  assert got.shape == (2, num_tasks)
  for s in range(2):
    expected = numpy_accuracy(pred, y, task_of_class[s], num_tasks)
    np.testing.assert_allclose(got[s], expected, atol=1e-6, equal_nan=True)
    assert np.isnan(got[s, 3]) and not np.isnan(got[s, :3]).any()
  assert not np.allclose(got[0, :3], got[1, :3])  # the mapping is per seed


@pytest.mark.parametrize("eval_loop", evaluator_lib.EVAL_LOOPS)
def test_chunk_size_does_not_change_the_numbers(eval_loop):
  rng = np.random.default_rng(1)
  n = 37
  y = rng.integers(0, C, n)
  x = np.zeros((n, 1), np.float32)
  x[:, 0] = np.where(rng.uniform(size=n) < 0.5, y, (y + 1) % C)
  task_of_class = np.array([[0, 0, 1, 1, 2, 2]])
  module = Oracle(C)
  cfg = rar_jax.ReplayConfig(num_classes=C)
  states = init_runs(module, cfg, [0], x[:2])
  expected = numpy_accuracy(x[:, 0].astype(int), y, task_of_class[0], 3)
  for chunk in (8, 100):  # a partial last chunk; one chunk mostly padding
    got = evaluator_lib.make_evaluator(module, 3, chunk=chunk, eval_loop=eval_loop)(
      states, jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(task_of_class, jnp.int32)
    )
    np.testing.assert_allclose(np.asarray(got)[0], expected, atol=1e-6)


@pytest.mark.parametrize("eval_loop", evaluator_lib.EVAL_LOOPS)
def test_ncm_classifies_by_the_nearest_buffer_class_mean(eval_loop):
  """``eval_classifier="ncm"`` ignores the logits: each sample goes to the class
  whose buffered features (per run: its own buffer) have the nearest unit mean."""
  from test_ncm import numpy_class_means, numpy_ncm_predict

  rng = np.random.default_rng(2)
  n, dim, num_tasks, cap = 29, 4, 3, 12
  centers = rng.normal(size=(C, dim)) * 3
  y = rng.integers(0, C, n)
  x = (centers[y] + rng.normal(size=(n, dim))).astype(np.float32)
  x[:, 0] = 0.0  # the Oracle's logits all say class 0: the head gets only class 0 right
  task_of_class = np.array([[0, 0, 1, 1, 2, 2], [2, 2, 1, 1, 0, 0]])
  module = Oracle(C)
  cfg, chain = rar_jax.build_method("er", num_classes=C, mem_size=cap)
  states = init_runs(module, cfg, [0, 1], x[:2])
  bx = np.zeros((2, cap, dim), np.float32)
  by = np.zeros((2, cap), np.int32)
  sizes = [cap, 7]  # run 1's buffer is partly empty, and lacks some classes
  for r, size in enumerate(sizes):
    by[r, :size] = rng.integers(0, C if r == 0 else 3, size)
    bx[r, :size] = centers[by[r, :size]] + rng.normal(size=(size, dim))
    bx[r, size:] = centers[5] * 10  # empty slots must not count (label 0 there)
  bx[:, :, 0] = 0.0
  states = states.replace(
    buffer=states.buffer.replace(
      x=jnp.asarray(bx), y=jnp.asarray(by), size=jnp.asarray(sizes, jnp.int32)
    )
  )
  args = (states, jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.asarray(task_of_class, jnp.int32))
  evaluate = evaluator_lib.make_evaluator(
    module, num_tasks, chunk=10, eval_loop=eval_loop, eval_classifier="ncm"
  )
  if eval_loop == "host":
    evaluate = evaluate.lower(*args).compile()
  got = np.asarray(evaluate(*args))
  for r, size in enumerate(sizes):
    valid = np.arange(cap) < size
    means, present = numpy_class_means(bx[r].astype(np.float64), by[r], valid, C)
    pred = numpy_ncm_predict(x.astype(np.float64), means, present)
    np.testing.assert_allclose(
      got[r], numpy_accuracy(pred, y, task_of_class[r], num_tasks), atol=1e-6
    )
  head = np.asarray(
    evaluator_lib.make_evaluator(module, num_tasks, chunk=10, eval_loop=eval_loop)(*args)
  )
  np.testing.assert_allclose(
    head[0], numpy_accuracy(np.zeros(n, int), y, task_of_class[0], num_tasks), atol=1e-6
  )
  assert got[0].mean() > head[0].mean() + 0.2  # the classifiers differ, and NCM sees the classes


def test_an_unknown_classifier_is_named():
  with pytest.raises(ValueError, match="eval_classifier='knn' is invalid"):
    evaluator_lib.make_evaluator(Oracle(C), 3, eval_classifier="knn")


@pytest.mark.parametrize("eval_loop", evaluator_lib.EVAL_LOOPS)
def test_ncm_never_credits_a_task_whose_classes_the_buffer_lacks(eval_loop):
  """Task protocol + NCM, classes 0 and 1 (task 0) absent from the buffer: no
  class of task 0 has a mean, so its samples have no prediction and are wrong
  (argmax over all ``-inf`` would have said class 0, right for class-0 samples)."""
  y = np.array([0, 0, 1, 2, 3], np.int32)
  x = np.zeros((5, 3), np.float32)  # features (0, 1, +-1); the Oracle's logits say class 0
  x[:, 1] = 1
  x[:, 2] = [1, 1, 1, 1, -1]
  module = Oracle(C)
  cfg, chain = rar_jax.build_method("er", num_classes=C, mem_size=4, batch_size_mem=2)
  states = init_runs(module, cfg, [0], x[:2])
  bx = np.array([[[0, 1, 1], [0, 1, -1], [0, 0, 0], [0, 0, 0]]], np.float32)  # classes 2, 3
  states = states.replace(
    buffer=states.buffer.replace(
      x=jnp.asarray(bx), y=jnp.asarray([[2, 3, 0, 0]], jnp.int32), size=jnp.asarray([2])
    )
  )
  task_of_class = jnp.asarray([[0, 0, 1, 1, 2, 2]], jnp.int32)
  args = (states, jnp.asarray(x), jnp.asarray(y), task_of_class)
  for protocol in ("task", "class"):
    evaluate = evaluator_lib.make_evaluator(
      module, 3, chunk=4, eval_protocol=protocol, eval_loop=eval_loop, eval_classifier="ncm"
    )
    got = np.asarray(evaluate(*args))[0]
    np.testing.assert_allclose(got, [0.0, 1.0, np.nan], equal_nan=True)


class BatchNormNet(nn.Module):
  """Batch norm, then the penultimate features, then a dense head."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.BatchNorm(use_running_average=not train, epsilon=1e-5)(x.reshape((x.shape[0], -1)))
    self.sow("features", "penultimate", h)
    return nn.Dense(self.num_classes)(h)


@pytest.mark.parametrize("eval_loop", evaluator_lib.EVAL_LOOPS)
def test_ncm_of_a_batch_norm_model_uses_its_running_statistics(eval_loop):
  """NCM features come from the model in evaluation mode: batch norm normalises
  with the run's running mean and variance (a buffer larger than ``chunk`` goes
  through in pieces), against a NumPy computation of those features."""
  from test_ncm import numpy_class_means, numpy_ncm_predict

  rng = np.random.default_rng(5)
  n, dim, num_tasks, cap, chunk = 23, 3, 3, 12, 5
  module = BatchNormNet(C)
  cfg, chain = rar_jax.build_method("er", num_classes=C, mem_size=cap)
  states = init_runs(module, cfg, [0, 1], np.zeros((2, dim), np.float32))
  # Running statistics far from a batch's own: per-feature shift and scale.
  mean = rng.normal(size=(2, dim)) * 2
  var = rng.uniform(0.2, 3.0, size=(2, dim))
  scale = rng.uniform(0.5, 2.0, size=(2, dim))
  bias = rng.normal(size=(2, dim))
  stats = {
    "BatchNorm_0": {"mean": jnp.asarray(mean, jnp.float32), "var": jnp.asarray(var, jnp.float32)}
  }
  params = dict(states.params)
  params["BatchNorm_0"] = {
    "scale": jnp.asarray(scale, jnp.float32),
    "bias": jnp.asarray(bias, jnp.float32),
  }
  centers = rng.normal(size=(C, dim)) * 3
  by = rng.integers(0, C, (2, cap)).astype(np.int32)
  bx = (centers[by] + rng.normal(size=(2, cap, dim))).astype(np.float32)
  sizes = [cap, 9]
  y = rng.integers(0, C, n).astype(np.int32)
  x = (centers[y] + rng.normal(size=(n, dim))).astype(np.float32)
  states = states.replace(
    params=params,
    batch_stats=stats,
    buffer=states.buffer.replace(
      x=jnp.asarray(bx), y=jnp.asarray(by), size=jnp.asarray(sizes, jnp.int32)
    ),
  )
  task_of_class = np.array([[0, 0, 1, 1, 2, 2], [2, 2, 1, 1, 0, 0]])
  args = (states, jnp.asarray(x), jnp.asarray(y), jnp.asarray(task_of_class, jnp.int32))
  evaluate = evaluator_lib.make_evaluator(
    module, num_tasks, chunk=chunk, eval_loop=eval_loop, eval_classifier="ncm"
  )
  if eval_loop == "host":
    evaluate = evaluate.lower(*args).compile()
  got = np.asarray(evaluate(*args))
  for r, size in enumerate(sizes):

    def feats(v, r=r):
      return (v - mean[r]) / np.sqrt(var[r] + 1e-5) * scale[r] + bias[r]

    means, present = numpy_class_means(
      feats(bx[r].astype(np.float64)), by[r], np.arange(cap) < size, C
    )
    pred = numpy_ncm_predict(feats(x.astype(np.float64)), means, present)
    np.testing.assert_allclose(
      got[r], numpy_accuracy(pred, y, task_of_class[r], num_tasks), atol=1e-6
    )


@pytest.mark.parametrize("eval_loop", evaluator_lib.EVAL_LOOPS)
@pytest.mark.parametrize("classifier", evaluator_lib.EVAL_CLASSIFIERS)
def test_a_run_that_averages_its_weights_is_evaluated_with_the_average(classifier, eval_loop):
  """With ``ema_decay`` the optimiser holds a moving average of the weights:
  both classifiers (the head's logits, NCM's features and buffer means) use it,
  not the current weights: a run whose average is W scores as a run whose
  weights are W, whatever its current weights."""
  rng = np.random.default_rng(6)
  n, dim, num_tasks, cap = 31, 3, 3, 12
  module = BatchNormNet(C)
  cfg, chain = rar_jax.build_method("er", num_classes=C, mem_size=cap)
  sample = np.zeros((2, dim), np.float32)
  plain = init_runs(module, cfg, [0, 1], sample)
  averaging = init_runs(module, cfg, [0, 1], sample, ema_decay=0.9)
  centers = rng.normal(size=(C, dim)) * 3
  by = rng.integers(0, C, (2, cap)).astype(np.int32)
  bx = (centers[by] + rng.normal(size=(2, cap, dim))).astype(np.float32)
  buffer = plain.buffer.replace(
    x=jnp.asarray(bx), y=jnp.asarray(by), size=jnp.asarray([cap, cap], jnp.int32)
  )
  good = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), plain.params)
  bad = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), plain.params)
  y = rng.integers(0, C, n).astype(np.int32)
  x = (centers[y] + rng.normal(size=(n, dim))).astype(np.float32)
  task_of_class = jnp.asarray([[0, 0, 1, 1, 2, 2], [2, 2, 1, 1, 0, 0]], jnp.int32)

  def averaged(current, average):
    inner = averaging.opt_state.inner_state
    inner = (inner[0], inner[1]._replace(params_ema=average))
    return averaging.replace(
      params=current, buffer=buffer, opt_state=averaging.opt_state._replace(inner_state=inner)
    )

  def accuracy(states):
    evaluate = evaluator_lib.make_evaluator(
      module, num_tasks, chunk=10, eval_loop=eval_loop, eval_classifier=classifier
    )
    return np.asarray(evaluate(states, jnp.asarray(x), jnp.asarray(y), task_of_class))

  expected = accuracy(plain.replace(params=good, buffer=buffer))
  np.testing.assert_array_equal(accuracy(averaged(bad, good)), expected)
  assert not np.array_equal(accuracy(averaged(good, bad)), expected)  # the weights matter
