import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rar_jax


def brute_force(q, r, ql=None, rl=None):
  q = q.reshape(len(q), -1).astype(np.float64)
  r = r.reshape(len(r), -1).astype(np.float64)
  out = []
  for i in range(len(q)):
    best, best_d = 0, np.inf
    for j in range(len(r)):
      if ql is not None and ql[i] == rl[j]:
        continue
      d = np.sum((q[i] - r[j]) ** 2)
      if d < best_d:
        best, best_d = j, d
    out.append(best)
  return np.array(out)


def test_matches_numpy_brute_force():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(10, 3, 4)).astype(np.float32)
  r = rng.normal(size=(17, 3, 4)).astype(np.float32)
  np.testing.assert_array_equal(rar_jax.nearest_neighbors(q, r), brute_force(q, r))


def test_label_constraint_matches_brute_force():
  rng = np.random.default_rng(1)
  q, r = rng.normal(size=(12, 8)), rng.normal(size=(9, 8))
  ql, rl = rng.integers(0, 3, 12), rng.integers(0, 3, 9)
  got = rar_jax.nearest_neighbors(q.astype(np.float32), r.astype(np.float32), ql, rl)
  np.testing.assert_array_equal(got, brute_force(q, r, ql, rl))
  assert np.all(rl[np.asarray(got)] != ql)


def test_hand_computed_case():
  q = np.array([[0.0, 0.0], [5.0, 5.0]], np.float32)
  r = np.array([[4.0, 4.0], [1.0, 0.0], [0.0, 2.0]], np.float32)
  np.testing.assert_array_equal(rar_jax.nearest_neighbors(q, r), [1, 0])
  # Excluding label 0 for the first query leaves r[2] (label 1) as nearest.
  np.testing.assert_array_equal(rar_jax.nearest_neighbors(q, r, [0, 0], [0, 0, 1]), [2, 2])


def test_one_label_array_is_an_error():
  with pytest.raises(ValueError, match="both"):
    rar_jax.nearest_neighbors(np.zeros((2, 2)), np.zeros((2, 2)), query_labels=np.zeros(2))


@settings(max_examples=30, deadline=None)
@given(
  nq=st.integers(1, 12), nr=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 10**6)
)
def test_property_matches_brute_force(nq, nr, d, seed):
  rng = np.random.default_rng(seed)
  # Integer-valued features keep float32 distances exact, so ties are real ties.
  q = rng.integers(-3, 4, size=(nq, d)).astype(np.float32)
  r = rng.integers(-3, 4, size=(nr, d)).astype(np.float32)
  np.testing.assert_array_equal(rar_jax.nearest_neighbors(q, r), brute_force(q, r))
