"""ASER: KNN Shapley values against a hand-computed case and the brute-force
definition; the retrieval against a NumPy re-scoring of its candidates."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rar_jax
from rar_jax.core import aser, buffer


def knn_utility(subset, dist, cand_y, y_e, k):
  """Jia et al.'s KNN utility: (1/K) * #label matches among the K nearest of ``subset``."""
  nearest = sorted(subset, key=lambda i: (dist[i], i))[:k]
  return sum(cand_y[i] == y_e for i in nearest) / k


def brute_force_shapley(dist, cand_y, y_e, k):
  """The Shapley value from its definition: weighted marginal gains over all subsets."""
  n = len(dist)
  sv = np.zeros(n)
  for i in range(n):
    others = [j for j in range(n) if j != i]
    for size in range(n):
      w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
      for s in itertools.combinations(others, size):
        sv[i] += w * (
          knn_utility(s + (i,), dist, cand_y, y_e, k) - knn_utility(s, dist, cand_y, y_e, k)
        )
  return sv


def test_knn_shapley_hand_computed():
  # Candidates nearest first: a (label 0), b (label 1), c (label 0); K = 1, y_e = 0.
  # s(c) = 1/3; s(b) = 1/3 + (0 - 1) * 1/2 = -1/6; s(a) = -1/6 + (1 - 0) * 1 = 5/6.
  # Stored out of order (c, a, b) to check the values go back to their candidates.
  dist = jnp.array([[3.0, 1.0, 2.0]])
  sv = aser.knn_shapley(dist, jnp.array([0]), jnp.array([0, 0, 1]), 1)
  np.testing.assert_allclose(np.asarray(sv)[0], [1 / 3, 5 / 6, -1 / 6], atol=1e-7)


@pytest.mark.parametrize("seed", range(6))
def test_knn_shapley_equals_the_definition(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(2, 7))
  n_eval = 3
  k = int(rng.integers(1, n + 1))
  dist = rng.permutation(n_eval * n).reshape(n_eval, n).astype(np.float32)  # distinct
  cand_y = rng.integers(0, 3, n)
  eval_y = rng.integers(0, 3, n_eval)
  sv = np.asarray(aser.knn_shapley(jnp.asarray(dist), jnp.asarray(eval_y), jnp.asarray(cand_y), k))
  for e in range(n_eval):
    np.testing.assert_allclose(sv[e], brute_force_shapley(dist[e], cand_y, eval_y[e], k), atol=1e-6)
    # Efficiency: the values sum to the utility of the whole candidate set.
    assert abs(sv[e].sum() - knn_utility(range(n), dist[e], cand_y, eval_y[e], k)) < 1e-6


def test_masked_candidates_take_no_part():
  rng = np.random.default_rng(7)
  dist = rng.permutation(12).reshape(2, 6).astype(np.float32)
  cand_y, eval_y = rng.integers(0, 2, 6), np.array([0, 1])
  mask = np.array([True, False, True, True, False, True])
  sv = np.asarray(
    aser.knn_shapley(
      jnp.asarray(dist), jnp.asarray(eval_y), jnp.asarray(cand_y), 2, jnp.asarray(mask)
    )
  )
  keep = np.flatnonzero(mask)
  for e in range(2):
    np.testing.assert_allclose(
      sv[e, keep], brute_force_shapley(dist[e, keep], cand_y[keep], eval_y[e], 2), atol=1e-6
    )
    np.testing.assert_array_equal(sv[e, ~mask], 0.0)


def test_class_balanced_draw_weights_classes_equally():
  buf = buffer.init(10, (1,))
  buf = buffer.add(buf, jnp.zeros((10, 1)), jnp.array([0] * 8 + [1] * 2), jax.random.PRNGKey(0))
  pool = jnp.ones((10,), bool)
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  idx, _ = jax.vmap(lambda k: aser.class_balanced_indices(buf, k, 1, pool, 2))(keys)
  share_1 = float(np.mean(np.asarray(buf.y)[np.asarray(idx[:, 0])] == 1))
  assert abs(share_1 - 0.5) < 0.04, share_1  # 2 of 10 items, half of the draws


def test_class_balanced_weights_count_the_pool_only():
  # 8 items of class 0, 2 of class 1 and 2 empty slots; the pool holds two of each
  # class: within the pool the classes are equal, so each takes half of the draws.
  buf = buffer.init(12, (1,))
  buf = buffer.add(buf, jnp.zeros((10, 1)), jnp.array([0] * 8 + [1] * 2), jax.random.PRNGKey(0))
  pool = jnp.zeros((12,), bool).at[jnp.array([0, 1, 8, 9])].set(True)
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  idx, ok = jax.vmap(lambda k: aser.class_balanced_indices(buf, k, 1, pool, 2))(keys)
  assert bool(ok.all()) and set(np.asarray(idx[:, 0]).tolist()) == {0, 1, 8, 9}
  share_1 = float(np.mean(np.asarray(buf.y)[np.asarray(idx[:, 0])] == 1))
  assert abs(share_1 - 0.5) < 0.04, share_1


@pytest.mark.parametrize("aser_type", ["asvm", "asv"])
@pytest.mark.parametrize(
  "filled, exclude",
  # fewer items than candidates asked (no cooperative row left), fewer items than
  # candidates + cooperative rows, fewer eligible items than candidates
  [(6, False), (12, False), (11, True)],
)
def test_scores_use_the_valid_candidates_and_cooperative_rows_only(filled, exclude, aser_type):
  rng = np.random.default_rng(11)
  bx = rng.normal(size=(filled, 2)).astype(np.float32)
  by = rng.permutation(np.arange(filled) % 4)
  buf = buffer.add(
    buffer.init(16, (2,), num_classes=4), jnp.asarray(bx), jnp.asarray(by), jax.random.PRNGKey(0)
  )
  x = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
  y = np.array([0, 1, 0, 1])
  n_cand, coop_size, k = 8, 8, 2
  s = aser.score_candidates(
    buf,
    jax.random.PRNGKey(4),
    lambda xs, masks: xs,
    x,
    jnp.asarray(y),
    num_candidates=n_cand,
    coop_size=coop_size,
    k=k,
    num_classes=4,
    aser_type=aser_type,
    exclude_labels=jnp.asarray(y) if exclude else None,
  )
  cand = np.asarray(s.candidates)[np.asarray(s.candidate_mask)]
  coop = np.asarray(s.coop)[np.asarray(s.coop_mask)]
  # The draws: distinct filled slots; candidates eligible; the cooperative set
  # the rest of the buffer, as much of it as coop_size allows.
  eligible = [i for i in range(filled) if not (exclude and by[i] in y)]
  assert len(set(cand)) == len(cand) == min(n_cand, len(eligible))
  assert set(cand) <= set(eligible)
  rest = set(range(filled)) - set(cand)
  assert len(set(coop)) == len(coop) == min(coop_size, len(rest)) and set(coop) <= rest
  assert len(coop) < coop_size and (len(cand) < n_cand or len(coop) > 0)  # masks matter
  # The scores, by the definition over the valid rows only.
  d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)
  adv = np.stack(
    [brute_force_shapley(r, by[cand], ye, k) for r, ye in zip(d(np.asarray(x), bx[cand]), y)]
  )
  cop = np.array(
    [brute_force_shapley(r, by[cand], ye, k) for r, ye in zip(d(bx[coop], bx[cand]), by[coop])]
  ).reshape(len(coop), len(cand))
  if not len(coop):  # no cooperative row: that term is 0
    cop = np.zeros((1, len(cand)))
  want = cop.mean(0) - adv.mean(0) if aser_type == "asvm" else cop.max(0) - adv.min(0)
  got = np.asarray(s.score)[np.asarray(s.candidate_mask)]
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("aser_type", ["asvm", "asv", "neg_sv"])
def test_aser_retrieve_keeps_the_best_scored_candidates(aser_type, exclude):
  rng = np.random.default_rng(3)
  # 16 buffered points in 2-D, labels 0..3; the incoming batch has labels 0, 1.
  bx = rng.normal(size=(16, 2)).astype(np.float32)
  by = np.arange(16) % 4
  buf = buffer.add(
    buffer.init(16, (2,), num_classes=4), jnp.asarray(bx), jnp.asarray(by), jax.random.PRNGKey(0)
  )
  x = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
  y = jnp.array([0, 1, 0, 1])
  key, n_cand = jax.random.PRNGKey(5), 6
  excl = y if exclude else None
  xm, ym, mm = aser.aser_retrieve(
    buf,
    key,
    3,
    lambda xs, masks: xs,
    x,
    y,
    num_candidates=n_cand,
    coop_size=16 - n_cand,
    k=2,
    num_classes=4,
    aser_type=aser_type,
    exclude_labels=excl,
  )
  assert bool(mm.all())
  # Re-score the same candidates (the draw is the step's) with the definition;
  # the cooperative set is the whole rest of the buffer, so its draw fixes nothing.
  ic, _ = aser.sample_indices(buf, jax.random.split(key)[0], n_cand, excl)
  hx, hy = np.asarray(buf.x), np.asarray(buf.y)
  cand = np.asarray(ic)
  coop = np.setdiff1d(np.arange(16), cand)
  if exclude:
    assert set(hy[cand].tolist()) <= {2, 3}
  d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)
  adv = np.stack(
    [
      brute_force_shapley(row, hy[cand], ye, 2)
      for row, ye in zip(d(np.asarray(x), hx[cand]), np.asarray(y))
    ]
  )
  cop = np.stack(
    [brute_force_shapley(row, hy[cand], ye, 2) for row, ye in zip(d(hx[coop], hx[cand]), hy[coop])]
  )
  if exclude:  # no candidate shares an incoming label: the adversarial values vanish
    np.testing.assert_array_equal(adv, 0.0)
  score = {
    "asvm": cop.mean(0) - adv.mean(0),
    "asv": cop.max(0) - adv.min(0),
    "neg_sv": -adv.sum(0),
  }[aser_type]
  # The kept rows are candidates whose scores are the three highest (ties allowed).
  row_of = {tuple(hx[c]): j for j, c in enumerate(cand)}
  kept = [row_of[tuple(r)] for r in np.asarray(xm)]
  assert len(set(kept)) == 3
  np.testing.assert_allclose(np.sort(score[kept]), np.sort(score)[-3:], atol=1e-6)


@pytest.mark.slow
def test_aser_with_fewer_eligible_items_than_asked_pads_with_masked_rows():
  buf = buffer.init(8, (2,), num_classes=4)
  buf = buffer.add(buf, jnp.ones((4, 2)), jnp.array([0, 0, 0, 2]), jax.random.PRNGKey(0))
  xm, ym, mm = aser.aser_retrieve(
    buf,
    jax.random.PRNGKey(1),
    3,
    lambda xs, ms: xs,
    jnp.zeros((2, 2)),
    jnp.array([0, 1]),
    num_candidates=5,
    coop_size=4,
    k=3,
    num_classes=4,
    exclude_labels=jnp.array([0, 1]),
  )
  assert int(mm.sum()) == 1 and int(ym[np.argmax(np.asarray(mm))]) == 2


def _run_two_tasks(method, **kw):
  module = rar_jax.MLP(4, hidden=(16,))
  cfg, chain = rar_jax.build_method(
    method,
    num_classes=4,
    mem_size=20,
    batch_size_mem=5,
    aser_candidates=10,
    aser_coop_size=10,
    aser_k=3,
    **kw,
  )
  tx = rar_jax.make_optimizer(0.1)
  hyper = rar_jax.Hyper.create(opt_lr=0.1, beta_coef=0.3, epsilon_fgsm=0.3, iter_fgsm=3)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(40, 4, 4, 1)), jnp.float32)
  y = jnp.asarray(np.r_[np.tile([0, 1], 10), np.tile([2, 3], 10)], jnp.int32)
  state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x[:10])
  step = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
  for i in range(0, 40, 10):
    state, m = step(state, x[i : i + 10], y[i : i + 10])
  return state, m


@pytest.mark.slow
def test_aser_rar_attacks_through_the_chosen_parameters():
  look, m_look = _run_two_tasks("aser_rar")
  cur, m_cur = _run_two_tasks("aser_rar", attack_params="current")
  for m in (m_look, m_cur):
    assert int(m["replay_count"]) == 5
    assert 0 < float(m["perturbation_max"]) <= 0.3 + 1e-6
  # Same draws, different attack model: the replayed rows, hence the updates, differ.
  assert not np.allclose(
    np.asarray(look.params["head"]["kernel"]), np.asarray(cur.params["head"]["kernel"])
  )
