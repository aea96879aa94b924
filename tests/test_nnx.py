"""NNX models (factories ``make(rngs) -> nnx.Module``) through the library,
against the built-in Linen models with the same weights: one ER-RAR step, a
short stream, seeds vmapped and mapped, checkpoint and resume, and the
one-line errors of a model the step cannot use."""

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rar_jax
from rar_jax import nnx_models
from rar_jax.core.nnx_module import NNXModule, as_module
from rar_jax.data import class_incremental
from rar_jax.errors import ModelError
from rar_jax.runner.checkpoint import Checkpointer

C = 4
WIDTH = 16


class NNXMLP(nnx.Module):
  """`rar_jax.MLP(C, hidden=(WIDTH,))` in NNX: the same parameter names."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.dense0 = nnx.Linear(16, WIDTH, rngs=rngs)
    self.head = nnx.Linear(WIDTH, num_classes, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.dense0(x.reshape(x.shape[0], -1)))
    self.sow(nnx.Intermediate, "penultimate", h)
    return self.head(h)


class LinenBN(nn.Module):
  """A Linen net with masked batch norm, the reference for `NNXBN`."""

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    h = nn.Dense(WIDTH, name="dense0")(x.reshape(x.shape[0], -1))
    bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")
    h = nn.relu(bn(h, mask=None if mask is None else mask[:, None]))
    self.sow("features", "penultimate", h)
    return nn.Dense(C, name="head")(h)


class NNXBN(nnx.Module):
  def __init__(self, *, rngs: nnx.Rngs):
    self.dense0 = nnx.Linear(16, WIDTH, rngs=rngs)
    self.bn = nnx.BatchNorm(WIDTH, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.head = nnx.Linear(WIDTH, C, rngs=rngs)

  def __call__(self, x, mask=None):
    h = self.dense0(x.reshape(x.shape[0], -1))
    h = nnx.relu(self.bn(h, mask=None if mask is None else mask[:, None]))
    self.sow(nnx.Intermediate, "penultimate", h)
    return self.head(h)


def _data(n=200, seed=0):
  rng = np.random.default_rng(seed)
  centers = np.random.default_rng(99).uniform(0.2, 0.8, size=(C, 16))
  y = np.repeat(np.arange(C), n // C)
  x = np.clip(centers[y] + 0.05 * rng.normal(size=(len(y), 16)), 0, 1).reshape(-1, 4, 4, 1)
  return x.astype(np.float32), y.astype(np.int32)


def _method():
  cfg, chain = rar_jax.build_method(
    "er_rar", num_classes=C, mem_size=20, batch_size_mem=5, epsilon_fgsm=0.1
  )
  return cfg, chain, rar_jax.make_optimizer(0.1)


def _close(a, b, atol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol, rtol=1e-5)


@pytest.fixture(scope="module")
def stream():
  x, y = _data()
  return class_incremental(x, y, num_tasks=2, batch_size=10, seeds=[0, 1, 2])


@pytest.mark.parametrize(
  "linen, make",
  [
    (rar_jax.MLP(C, hidden=(WIDTH,)), functools.partial(NNXMLP, C)),
    (rar_jax.MLP(C, hidden=(WIDTH, WIDTH)), functools.partial(nnx_models.MLP, C, 16, (WIDTH,) * 2)),
    (LinenBN(), NNXBN),
  ],
)
def test_one_er_rar_step_equals_linen_with_the_same_weights(linen, make):
  cfg, chain, tx = _method()
  x, y = _data()
  x, y = jnp.asarray(x), jnp.asarray(y)
  key = jax.random.PRNGKey(3)
  state_l = rar_jax.init_train_state(linen, tx, cfg, chain.hyper(0.1), key, x[:10])
  state_n = rar_jax.init_train_state(make, tx, cfg, chain.hyper(0.1), key, x[:10])
  # Same names and shapes, so the Linen state is an NNX state with the same weights.
  assert jax.tree.structure(state_l) == jax.tree.structure(state_n)
  step_l = jax.jit(rar_jax.make_train_step(linen, tx, cfg, chain))
  step_n = jax.jit(rar_jax.make_train_step(make, tx, cfg, chain))
  # Fill the buffer so the second step replays (and RAR perturbs) real rows.
  state_l, _ = step_l(state_l, x[:10], y[:10])
  after_l, m_l = step_l(state_l, x[100:110], y[100:110])
  after_n, m_n = step_n(state_l, x[100:110], y[100:110])
  assert int(m_n["replay_count"]) == 5 and float(m_n["perturbation_max"]) > 0
  _close(after_l.params, after_n.params)
  _close(after_l.batch_stats, after_n.batch_stats)
  _close(m_l, m_n)
  # And the update moved the weights: the equality is not of two no-ops.
  assert not np.allclose(after_n.params["head"]["kernel"], state_l.params["head"]["kernel"])


def test_short_stream_accuracy_equals_linen_vmapped_and_mapped(stream):
  cfg, chain, tx = _method()
  linen, make = rar_jax.MLP(C, hidden=(WIDTH,)), functools.partial(NNXMLP, C)
  x = jnp.asarray(stream.train_x)
  index = stream.streams.index.reshape(3, -1, 10)
  states_l = rar_jax.init_states(linen, tx, cfg, chain, [0, 1, 2], x[:10])
  states_n = rar_jax.init_states(make, tx, cfg, chain, [0, 1, 2], x[:10])
  # One model per seed: the seeds' weights differ, and seed 1 alone is seed 1 among three.
  k = states_n.params["head"]["kernel"]
  assert not np.allclose(k[0], k[1])
  _close(
    rar_jax.init_states(make, tx, cfg, chain, [1], x[:10]).params,
    jax.tree.map(lambda a: a[1:2], states_n.params),
  )
  step_l = rar_jax.make_train_step(linen, tx, cfg, chain)
  step_n = rar_jax.make_train_step(make, tx, cfg, chain)
  ref, _ = rar_jax.run_stream(step_l, states_l, x, stream.train_y, index)
  xt, yt = _data(80, seed=5)
  toc = stream.streams.task_of_class
  acc_l = np.asarray(rar_jax.evaluate(linen, ref, xt, yt, toc))
  for batching in ("vmap", "map"):
    out, _ = rar_jax.run_stream(step_n, states_l, x, stream.train_y, index, batching=batching)
    _close(out.params, ref.params, atol=1e-4)
    acc_n = np.asarray(rar_jax.evaluate(make, out, xt, yt, toc))
    np.testing.assert_allclose(acc_n, acc_l, atol=1.5 / 40)  # at most one test row apart
  assert acc_l.mean() > 0.5  # it learned: the comparison is of trained models


def test_checkpoint_and_resume_give_identical_states(stream, tmp_path):
  cfg, chain, tx = _method()
  x = jnp.asarray(stream.train_x)
  index = stream.streams.index.reshape(3, -1, 10)
  states = rar_jax.init_states(NNXBN, tx, cfg, chain, [0, 1, 2], x[:10])
  step = rar_jax.make_train_step(NNXBN, tx, cfg, chain)
  whole, _ = rar_jax.run_stream(step, states, x, stream.train_y, index)
  half = index.shape[1] // 2
  first, _ = rar_jax.run_stream(step, states, x, stream.train_y, index[:, :half])
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=1)
  ckpt.save(half, {"states": first})
  ckpt.close()
  restored = Checkpointer(str(tmp_path / "checkpoints"), keep=1).restore_latest({"states": states})
  assert restored is not None and restored[0] == half
  resumed, _ = rar_jax.run_stream(step, restored[1]["states"], x, stream.train_y, index[:, half:])
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dropout_follows_nnx_modes_and_its_rng_state_moves():
  class Drop(nnx.Module):
    def __init__(self, *, rngs):
      self.dense0 = nnx.Linear(16, WIDTH, rngs=rngs)
      self.drop = nnx.Dropout(0.5, rngs=rngs)
      self.head = nnx.Linear(WIDTH, C, rngs=rngs)

    def __call__(self, x):
      h = self.drop(nnx.relu(self.dense0(x.reshape(x.shape[0], -1))))
      self.sow(nnx.Intermediate, "penultimate", h)
      return self.head(h)

  module = as_module(Drop)
  variables = module.init(jax.random.PRNGKey(0), None)
  x = jnp.asarray(_data()[0][:8])
  eval_a, eval_b = module.apply(variables, x), module.apply(variables, x)
  np.testing.assert_array_equal(eval_a, eval_b)  # eval(): dropout off
  train, upd = module.apply(variables, x, train=True, mutable=["batch_stats"])
  assert not np.allclose(train, eval_a)  # train(): dropout on
  assert int(upd["batch_stats"]["drop"]["rngs"]["count"]) == 1  # next step, next mask


def test_sow_is_read_through_capture_without_deprecation_warnings(stream):
  cfg, chain, tx = _method()
  x = jnp.asarray(stream.train_x)
  with warnings.catch_warnings():
    warnings.simplefilter("error", DeprecationWarning)
    state = rar_jax.init_train_state(NNXBN, tx, cfg, chain.hyper(0.1), jax.random.PRNGKey(0), x)
    jax.jit(rar_jax.make_train_step(NNXBN, tx, cfg, chain))(state, x[:10], stream.train_y[:10])


def test_bad_nnx_models_get_one_line_each():
  cfg, chain, tx = _method()
  x = jnp.asarray(_data()[0][:10])

  def init(model):
    return rar_jax.init_train_state(model, tx, cfg, chain.hyper(0.1), jax.random.PRNGKey(0), x)

  class NoSow(nnx.Module):
    def __init__(self, *, rngs):
      self.head = nnx.Linear(16, C, rngs=rngs)

    def __call__(self, x):
      h = x.reshape(x.shape[0], -1)
      self.sow(nnx.Intermediate, "flat", h)
      return self.head(h)

  class BNWithoutMask(nnx.Module):
    def __init__(self, *, rngs):
      self.bn = nnx.BatchNorm(16, rngs=rngs)
      self.head = nnx.Linear(16, C, rngs=rngs)

    def __call__(self, x):
      return self.head(self.bn(x.reshape(x.shape[0], -1)))

  cases = [
    (NoSow, r"feature_layer='penultimate' is not sown by .*NoSow; it sows \('flat',\)"),
    (BNWithoutMask, "BNWithoutMask.__call__ lacks keyword argument 'mask'"),
    (NNXMLP, r"model NNXMLP cannot be built as make\(rngs=nnx.Rngs\(key\)\)"),  # num_classes
    (lambda rngs: 3, "returned int, not an nnx.Module"),
    (NNXMLP(C, rngs=nnx.Rngs(0)), "is an nnx.Module instance: give its class"),
    (LinenBN, "model=LinenBN is a flax.linen Module class: give an instance"),
  ]
  for model, message in cases:
    with pytest.raises(ModelError, match=message) as e:
      init(model)
    assert "\n" not in str(e.value)


def test_one_factory_is_one_adapter():
  make = functools.partial(NNXMLP, C)
  assert as_module(make) is as_module(make)
  assert isinstance(as_module(make), NNXModule)
  linen = rar_jax.MLP(C)
  assert as_module(linen) is linen


def test_the_nnx_resnet_equals_the_linen_resnet_on_a_step_and_its_predictions():
  # nf=4: the reduced ResNet-18's layers, blocks and masked batch norm, small enough to be quick.
  cfg, chain, tx = _method()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(20, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(np.repeat(np.arange(C), 5), jnp.int32)
  linen = rar_jax.ReducedResNet18(C, nf=4)
  make = functools.partial(nnx_models.ReducedResNet18, C, in_channels=1, nf=4)
  key = jax.random.PRNGKey(0)
  state = rar_jax.init_train_state(linen, tx, cfg, chain.hyper(0.1), key, x)
  own = rar_jax.init_train_state(make, tx, cfg, chain.hyper(0.1), key, x)
  assert jax.tree.structure(own) == jax.tree.structure(state)
  assert jax.tree.map(jnp.shape, own.params) == jax.tree.map(jnp.shape, state.params)
  step_l = jax.jit(rar_jax.make_train_step(linen, tx, cfg, chain))
  step_n = jax.jit(rar_jax.make_train_step(make, tx, cfg, chain))
  state, _ = step_l(state, x[:10], y[:10])  # a buffer to replay from
  after_l, m_l = step_l(state, x[10:], y[10:])
  after_n, m_n = step_n(state, x[10:], y[10:])
  assert int(m_n["replay_count"]) == 5
  _close(after_n.params, after_l.params, atol=1e-4)
  _close(after_n.batch_stats, after_l.batch_stats, atol=1e-4)
  _close(m_n, m_l, atol=1e-4)
  # Evaluation mode: the running averages, in both.
  logits_l = rar_jax.make_predict(linen)(after_l.params, after_l.batch_stats, x)
  logits_n = rar_jax.make_predict(make)(after_l.params, after_l.batch_stats, x)
  np.testing.assert_allclose(logits_n, logits_l, atol=1e-4)


def test_continual_curves_and_the_ncm_classifier_equal_linen(stream):
  cfg, chain, tx = _method()
  linen, make = rar_jax.MLP(C, hidden=(WIDTH,)), functools.partial(NNXMLP, C)
  x = jnp.asarray(stream.train_x)
  states = rar_jax.init_states(linen, tx, cfg, chain, [0, 1, 2], x[:10])
  xt, yt = _data(80, seed=5)
  toc = stream.streams.task_of_class
  args = (states, x, stream.train_y, stream.streams.index, xt, yt, toc)
  out = {}
  for name, model in (("linen", linen), ("nnx", make)):
    step = rar_jax.make_train_step(model, tx, cfg, chain)
    trained, _, curves = rar_jax.run_stream_with_curves(step, model, *args, eval_every=5)
    ncm = rar_jax.evaluate(model, trained, xt, yt, toc, eval_classifier="ncm")
    out[name] = (curves.accuracy, np.asarray(ncm))
  assert out["linen"][0].shape[1] > 2  # several evaluation points per task
  for a, b in zip(out["nnx"], out["linen"]):
    np.testing.assert_allclose(a, b, atol=1.5 / 40)  # at most one test row apart
