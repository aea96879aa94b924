import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from rar_jax.core.mixup import mixup, valid_permutation

MIX = jax.jit(mixup)  # one compilation per shape for the loops below


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
    xm, ym = map(
      np.asarray,
      MIX(jax.random.PRNGKey(seed), jnp.asarray(x), jnp.asarray(y), jnp.ones(n, bool), 1.0),
    )
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


def test_mixup_with_a_partial_mask_pairs_valid_rows_only():
  # Padded rows are far away and carry their own classes: any mass of theirs
  # in a valid row's result would show.
  mask = np.array([True, False, True, True, False, True])
  n = len(mask)
  x = np.random.default_rng(1).normal(size=(n, 3)).astype(np.float32)
  x[~mask] = 100.0
  y = np.eye(n, dtype=np.float32)
  valid = np.flatnonzero(mask)
  swapped = 0
  for seed in range(20):
    xm, ym = map(
      np.asarray,
      MIX(jax.random.PRNGKey(seed), jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask), 1.0),
    )
    assert np.all(ym[valid][:, ~mask] == 0), f"seed {seed}: a valid row mixed with padding"
    partners = []
    for i in valid:
      others = [j for j in np.flatnonzero(ym[i] > 1e-7) if j != i]
      assert len(others) <= 1
      j = others[0] if others else i
      lam = ym[i, i]
      np.testing.assert_allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
      partners.append(j)
      swapped += j != i
    assert sorted(partners) == valid.tolist()  # a permutation of the valid rows
  assert swapped > 20  # valid rows do get mixed with each other


def test_one_valid_row_is_left_as_it_is():
  mask = jnp.array([False, False, False, True, False, False])  # shapes as above: one compile
  x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)), jnp.float32)
  y = jnp.eye(6)
  for seed in range(5):
    xm, ym = MIX(jax.random.PRNGKey(seed), x, y, mask, 1.0)
    np.testing.assert_allclose(xm[3], x[3], atol=1e-6)
    np.testing.assert_allclose(ym[3], y[3], atol=1e-6)
