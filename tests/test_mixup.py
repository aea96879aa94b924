import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from rar_jax.mixup import mixup, valid_permutation


def test_permutation_maps_valid_rows_to_valid_rows():
  mask = jnp.array([True, False, True, True, False, True])
  for i in range(30):
    perm = np.asarray(valid_permutation(jax.random.PRNGKey(i), mask))
    assert sorted(perm.tolist()) == list(range(6))
    assert np.all(np.asarray(mask)[perm[np.asarray(mask)]])


def test_mixup_is_one_convex_pairwise_combination_per_batch():
  n = 6
  x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
  y = np.eye(n, dtype=np.float32)  # one class per row reveals the pairing
  for seed in range(10):
    xm, ym = map(np.asarray, mixup(jax.random.PRNGKey(seed), jnp.asarray(x), jnp.asarray(y),
                                   jnp.ones(n, bool), 1.0))
    np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
    lams = []
    partners = []
    for i in range(n):
      others = [j for j in np.flatnonzero(ym[i] > 1e-7) if j != i]
      assert len(others) <= 1
      j = others[0] if others else i
      lam = ym[i, i]
      np.testing.assert_allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
      if others:
        lams.append(lam)
      partners.append(j)
    assert sorted(partners) == list(range(n))  # a permutation
    if lams:
      np.testing.assert_allclose(lams, lams[0], atol=1e-6)  # one lambda per batch


def test_lambda_follows_beta_distribution():
  # Two rows: when they swap, the weight on row 0's own class is lambda.
  x, y = jnp.zeros((2, 1)), jnp.eye(2)
  mix = jax.jit(jax.vmap(lambda k: mixup(k, x, y, jnp.ones(2, bool), 0.5)[1][0, 0]))
  w = np.asarray(mix(jax.random.split(jax.random.PRNGKey(0), 4000)))
  lam = w[w < 1 - 1e-6]
  assert len(lam) > 1000
  assert stats.kstest(lam, stats.beta(0.5, 0.5).cdf).pvalue > 1e-3
  assert stats.kstest(lam, stats.beta(2.0, 2.0).cdf).pvalue < 1e-6  # the test has power
