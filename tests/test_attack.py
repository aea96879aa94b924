import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    g = (dh * (1 - h**2)) @ W.T
    g = g / np.maximum(np.abs(g).sum(axis=1, keepdims=True), 1e-12)
    m = decay * m + g
    xa = xa - alpha * np.sign(m)
    xa = np.clip(np.clip(xa, x0 - eps, x0 + eps), lo, hi)
  return xa


def jax_loss(target):
  return lambda z: jnp.mean((jnp.tanh(z @ W) - target) ** 2, axis=-1)


@pytest.mark.parametrize(
  "eps,alpha,steps,decay", [(0.3, 0.075, 5, 1.0), (0.1, 0.05, 3, 0.5), (0.0314, 0.0314, 2, 1.0)]
)
def test_matches_numpy_loop(eps, alpha, steps, decay):
  x = RNG.uniform(size=(5, 6)).astype(np.float32)
  target = features_np(RNG.uniform(size=(5, 6)).astype(np.float32))
  got = rar_jax.mifgsm(
    jax_loss(target), jnp.asarray(x), epsilon=eps, alpha=alpha, steps=steps, decay=decay
  )
  np.testing.assert_allclose(got, numpy_mifgsm(x, target, eps, alpha, steps, decay), atol=1e-6)


@pytest.mark.parametrize("steps,unroll", [(3, 3), (3, 5), (3, 1), (4, 2)])
def test_unrolled_steps_match_numpy_with_traced_steps(steps, unroll):
  # The first `unroll` steps compile without a loop (skipped past `steps`),
  # the rest in one; the step count stays a traced value, as under a sweep.
  x = RNG.uniform(size=(5, 6)).astype(np.float32)
  target = features_np(RNG.uniform(size=(5, 6)).astype(np.float32))
  run = jax.jit(
    lambda n: rar_jax.mifgsm(
      jax_loss(target), jnp.asarray(x), epsilon=0.3, alpha=0.07, steps=n, decay=0.8, unroll=unroll
    )
  )
  got = run(jnp.asarray(steps, jnp.int32))
  np.testing.assert_allclose(got, numpy_mifgsm(x, target, 0.3, 0.07, steps, 0.8), atol=1e-6)


def test_stays_in_ball_and_range_and_gets_closer():
  x = RNG.uniform(size=(32, 6)).astype(np.float32)
  target = features_np(RNG.uniform(size=(32, 6)).astype(np.float32))
  xa = np.asarray(
    rar_jax.mifgsm(jax_loss(target), jnp.asarray(x), epsilon=0.2, alpha=0.05, steps=10)
  )
  assert np.all(np.abs(xa - x) <= 0.2 + 1e-6)
  assert xa.min() >= 0.0 and xa.max() <= 1.0
  before = ((features_np(x) - target) ** 2).sum(1)
  after = ((features_np(xa) - target) ** 2).sum(1)
  assert np.mean(after < before) > 0.9 and after.mean() < 0.7 * before.mean()


def test_zero_gradient_is_a_no_op_without_nan():
  x = jnp.full((3, 4), 0.5)
  xa = rar_jax.mifgsm(lambda z: jnp.zeros(z.shape[0]) * z.sum(), x, epsilon=1.0, alpha=0.5, steps=3)
  np.testing.assert_array_equal(xa, x)


def test_negative_epsilon_is_rejected():
  with pytest.raises(ValueError, match="epsilon"):
    rar_jax.mifgsm(lambda z: z.sum(1), jnp.zeros((1, 2)), epsilon=-0.1, alpha=0.1, steps=1)


# One compiled attack for every example: epsilon, alpha and steps traced.
_ATTACK = jax.jit(
  lambda x, t, eps, alpha, steps: rar_jax.mifgsm(
    jax_loss(t), x, epsilon=eps, alpha=alpha, steps=steps
  )
)
_GRAD = jax.jit(jax.grad(lambda x, t: jax_loss(t)(x).sum()))


@settings(max_examples=30, deadline=None)
@given(
  eps=st.floats(0, 0.375, width=32),
  alpha=st.floats(0, 0.375, width=32),
  steps=st.integers(0, 6),
  seed=st.integers(0, 10**6),
)
def test_property_finite_and_projected(eps, alpha, steps, seed):
  # eps below alpha * steps for most draws: the ball's projection binds.
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(4, 6)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(4, 4)) * 10, jnp.float32)
  eps, alpha = np.float32(eps), np.float32(alpha)
  xa = np.asarray(_ATTACK(x, target, eps, alpha, steps))
  x = np.asarray(x)
  assert np.all(np.isfinite(xa))
  assert np.all(np.abs(xa - x) <= eps + 1e-6)
  assert xa.min() >= 0 and xa.max() <= 1
  # One step moves every coordinate by min(alpha, eps) against its gradient's
  # sign, or to the edge of [0, 1] when that is nearer.
  first = np.asarray(_ATTACK(x, target, eps, alpha, 1))
  grad = np.asarray(_GRAD(x, target))
  room = np.where(grad > 0, x, 1 - x)  # distance to the edge it moves towards
  np.testing.assert_allclose(np.abs(first - x), np.minimum(min(alpha, eps), room), atol=1e-6)


# A loss whose gradient changes sign: each coordinate is pulled towards a
# point close to where it starts, so steps of alpha overshoot it and the
# per-coordinate gradient flips. The momentum's decay then decides the path.
QRNG = np.random.default_rng(3)
QX = QRNG.uniform(0.3, 0.7, (6, 5)).astype(np.float32)
QC = (QX + QRNG.uniform(-0.08, 0.08, (6, 5))).astype(np.float32)
QW = QRNG.uniform(0.5, 2.0, (5,)).astype(np.float32)


def numpy_mifgsm_quadratic(eps, alpha, steps, decay, momentum=True):
  """Hand-written MI-FGSM on loss_i = sum_k w_k (x_ik - c_ik)^2; also counts
  gradient sign flips. ``momentum=False``: m = m + g whatever the decay."""
  x0, xa, m, prev, flips = QX.copy(), QX.copy(), np.zeros_like(QX), None, 0
  for _ in range(steps):
    g = 2 * QW * (xa - QC)
    if prev is not None:
      flips += int(np.sum(np.sign(g) != np.sign(prev)))
    prev = g
    g = g / np.maximum(np.abs(g).sum(axis=1, keepdims=True), 1e-12)
    m = decay * m + g if momentum else m + g
    xa = xa - alpha * np.sign(m)
    xa = np.clip(np.clip(xa, x0 - eps, x0 + eps), 0.0, 1.0)
  return xa, flips


@pytest.mark.parametrize("decay", [0.0, 0.3, 0.8, 1.0])
def test_momentum_decay_on_a_loss_whose_gradient_changes_sign(decay):
  eps, alpha, steps = 0.25, 0.05, 8
  expected, flips = numpy_mifgsm_quadratic(eps, alpha, steps, decay)
  assert flips > 50  # the gradient's sign does change between steps
  if decay != 1.0:  # and the decay changes the result
    undecayed, _ = numpy_mifgsm_quadratic(eps, alpha, steps, decay, momentum=False)
    assert np.abs(undecayed - expected).max() > 0.05
  loss = lambda z: jnp.sum(QW * (z - QC) ** 2, axis=-1)
  got = rar_jax.mifgsm(loss, jnp.asarray(QX), epsilon=eps, alpha=alpha, steps=steps, decay=decay)
  np.testing.assert_allclose(got, expected, atol=1e-6)
  # Traced (swept) decay, as the step passes it, gives the same.
  traced = jax.jit(
    lambda dcy: rar_jax.mifgsm(
      loss, jnp.asarray(QX), epsilon=eps, alpha=alpha, steps=steps, decay=dcy
    )
  )(jnp.float32(decay))
  np.testing.assert_allclose(traced, expected, atol=1e-6)
