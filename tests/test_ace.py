"""ER-ACE: the asymmetric cross-entropy and its replay rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rar_jax
from rar_jax.core import buffer, stages

C = 4


def test_masked_cross_entropy_is_cross_entropy_over_the_kept_logits():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, C)).astype(np.float32)
  y = np.array([0, 2, 2, 0, 2])
  allowed = np.array([True, False, True, False])
  got = stages.masked_cross_entropy(jnp.asarray(logits), jax.nn.one_hot(y, C), jnp.asarray(allowed))
  kept = logits[:, allowed]  # classes 0 and 2 -> columns 0 and 1
  logp = kept - np.log(np.exp(kept).sum(1, keepdims=True))
  np.testing.assert_allclose(np.asarray(got), -logp[np.arange(5), y // 2], rtol=1e-6)
  # The dropped logits get no gradient.
  g = jax.grad(
    lambda l: stages.masked_cross_entropy(l, jax.nn.one_hot(y, C), jnp.asarray(allowed)).sum()
  )(jnp.asarray(logits))
  assert np.all(np.asarray(g)[:, ~allowed] == 0) and np.all(np.isfinite(np.asarray(g)))


def _parts(method, **kw):
  module = rar_jax.MLP(C, hidden=(16,))
  cfg, chain = rar_jax.build_method(method, num_classes=C, mem_size=20, batch_size_mem=5, **kw)
  tx = rar_jax.make_optimizer(0.1)
  hyper = rar_jax.Hyper.create(opt_lr=0.1, beta_coef=0.3, epsilon_fgsm=0.3, iter_fgsm=3)
  return module, cfg, chain, tx, hyper


def _blobs(labels, seed):
  rng = np.random.default_rng(seed)
  centers = np.random.default_rng(99).uniform(0.2, 0.8, size=(C, 16))
  labels = np.asarray(labels)
  x = np.clip(centers[labels] + 0.05 * rng.normal(size=(len(labels), 16)), 0, 1)
  return jnp.asarray(x.reshape(-1, 4, 4, 1), jnp.float32), jnp.asarray(labels, jnp.int32)


@pytest.mark.parametrize("incoming", [2, 3])  # a class seen before, a new one
def test_er_ace_step_equals_the_hand_composed_one(incoming):
  module, cfg, chain, tx, hyper = _parts("er_ace")
  x0, y0 = _blobs(np.resize([0, 1, 2], 20), 1)
  state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x0[:10])
  step = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
  for i in range(0, 20, 10):
    state, _ = step(state, x0[i : i + 10], y0[i : i + 10])
  x, y = _blobs([incoming] * 10, 2)  # one class only
  new_state, m = step(state, x, y)

  _, k_ret, _, _ = jax.random.split(state.key, 4)
  xm, ym, mm = buffer.sample(state.buffer, k_ret, 5)  # the whole buffer: nothing excluded
  assert bool(mm.all()) and bool((ym == 2).any())  # a row exclusion would have skipped
  apply = lambda p, z: module.apply({"params": p}, z)
  seen = 4 if incoming == 3 else 3  # the incoming class counts as seen in its own step

  def loss(p):
    # Incoming rows over their own class only: its CE is exactly 0 (nothing to
    # push down); replay rows over the classes seen so far, the incoming one included.
    cur = apply(p, x)[:, incoming] - jax.nn.logsumexp(
      apply(p, x)[:, incoming : incoming + 1], axis=1
    )
    rep = jax.nn.log_softmax(apply(p, xm)[:, :seen])[jnp.arange(5), ym]
    return -cur.mean() - rep.mean()

  g = jax.grad(loss)(state.params)
  expected = jax.tree.map(lambda p, gg: p - 0.1 * gg, state.params, g)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert float(m["loss_current"]) == 0.0 and int(m["replay_count"]) == 5
  np.testing.assert_array_equal(np.asarray(new_state.seen_classes), np.arange(C) < seen)


def test_ace_replays_from_the_whole_buffer_unless_told_otherwise():
  cfg, chain = rar_jax.build_method("er_ace", num_classes=C)
  assert not chain.excludes_current(cfg)
  assert chain.excludes_current(rar_jax.ReplayConfig(num_classes=C, exclude_current_labels=True))
  er, chain = rar_jax.build_method("er", num_classes=C)
  assert chain.excludes_current(er)


def test_er_ace_reduces_forgetting_against_finetune():
  xa, ya = _blobs(np.tile([0, 1], 50), 3)
  xb, yb = _blobs(np.tile([2, 3], 50), 4)
  x, y = jnp.concatenate([xa, xb]), jnp.concatenate([ya, yb])
  xt, yt = _blobs(np.tile([0, 1], 100), 8)
  acc = {}
  for method in ("finetune", "er_ace", "er_ace_rar"):
    module, cfg, chain, tx, hyper = _parts(method)
    state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x[:10])
    step = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
    for i in range(0, 200, 10):
      state, m = step(state, x[i : i + 10], y[i : i + 10])
      assert np.isfinite(float(m["loss_current"])) and np.isfinite(float(m["loss_replay"]))
    pred = module.apply({"params": state.params}, xt)
    acc[method] = float((pred.argmax(-1) == yt).mean())
  assert acc["er_ace"] > acc["finetune"] + 0.2, acc
  assert acc["er_ace_rar"] > acc["finetune"] + 0.2, acc


def test_ace_loss_stage_is_optax_cross_entropy_on_allowed_classes_only():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, C)), jnp.float32)
  t = jax.nn.one_hot(jnp.array([0, 1, 1]), C)
  everything = jnp.ones((C,), bool)
  np.testing.assert_allclose(
    stages.masked_cross_entropy(logits, t, everything),
    optax.softmax_cross_entropy(logits, t),
    rtol=1e-6,
  )
