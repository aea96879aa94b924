import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rar_jax

RNG = np.random.default_rng(0)
W = RNG.normal(size=(6, 4)).astype(np.float32)  # features = tanh(x @ W)


def features_np(x):
  return np.tanh(x @ W)


def numpy_mifgsm(x, target, eps, alpha, steps, decay, lo=0.0, hi=1.0):
  """Hand-written MI-FGSM on loss_i = mean_k (tanh(x_i W)_k - t_ik)^2."""
  x0, xa, m = x.copy(), x.copy(), np.zeros_like(x)
  for _ in range(steps):
    h = features_np(xa)
    dh = 2.0 * (h - target) / h.shape[1]
    g = (dh * (1 - h ** 2)) @ W.T
    g = g / np.maximum(np.abs(g).sum(axis=1, keepdims=True), 1e-12)
    m = decay * m + g
    xa = xa - alpha * np.sign(m)
    xa = np.clip(np.clip(xa, x0 - eps, x0 + eps), lo, hi)
  return xa


def jax_loss(target):
  return lambda z: jnp.mean((jnp.tanh(z @ W) - target) ** 2, axis=-1)


@pytest.mark.parametrize("eps,alpha,steps,decay", [(0.3, 0.075, 5, 1.0), (0.1, 0.05, 3, 0.5),
                                                   (0.0314, 0.0314, 2, 1.0)])
def test_matches_numpy_loop(eps, alpha, steps, decay):
  x = RNG.uniform(size=(5, 6)).astype(np.float32)
  target = features_np(RNG.uniform(size=(5, 6)).astype(np.float32))
  got = rar_jax.mifgsm(jax_loss(target), jnp.asarray(x), epsilon=eps, alpha=alpha, steps=steps,
                       decay=decay)
  np.testing.assert_allclose(got, numpy_mifgsm(x, target, eps, alpha, steps, decay), atol=1e-6)


def test_stays_in_ball_and_range_and_gets_closer():
  x = RNG.uniform(size=(32, 6)).astype(np.float32)
  target = features_np(RNG.uniform(size=(32, 6)).astype(np.float32))
  xa = np.asarray(rar_jax.mifgsm(jax_loss(target), jnp.asarray(x), epsilon=0.2, alpha=0.05,
                                 steps=10))
  assert np.all(np.abs(xa - x) <= 0.2 + 1e-6)
  assert xa.min() >= 0.0 and xa.max() <= 1.0
  before = ((features_np(x) - target) ** 2).sum(1)
  after = ((features_np(xa) - target) ** 2).sum(1)
  assert np.mean(after < before) > 0.9 and after.mean() < 0.7 * before.mean()


def test_zero_gradient_is_a_no_op_without_nan():
  x = jnp.full((3, 4), 0.5)
  xa = rar_jax.mifgsm(lambda z: jnp.zeros(z.shape[0]) * z.sum(), x, epsilon=1.0, alpha=0.5,
                      steps=3)
  np.testing.assert_array_equal(xa, x)


def test_negative_epsilon_is_rejected():
  with pytest.raises(ValueError, match="epsilon"):
    rar_jax.mifgsm(lambda z: z.sum(1), jnp.zeros((1, 2)), epsilon=-0.1, alpha=0.1, steps=1)


@settings(max_examples=20, deadline=None)
@given(eps=st.floats(0, 1e3), alpha=st.floats(0, 1e3), steps=st.integers(0, 4),
       seed=st.integers(0, 10**6))
def test_property_finite_and_projected(eps, alpha, steps, seed):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(4, 6)).astype(np.float32)
  target = rng.normal(size=(4, 4)).astype(np.float32) * 10
  xa = np.asarray(rar_jax.mifgsm(jax_loss(target), jnp.asarray(x), epsilon=eps, alpha=alpha,
                                 steps=steps))
  assert np.all(np.isfinite(xa))
  assert np.all(np.abs(xa - x) <= np.float32(eps) + 1e-6)
  assert xa.min() >= 0 and xa.max() <= 1
