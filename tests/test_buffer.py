import collections
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rar_jax.core import buffer


@functools.lru_cache(maxsize=None)
def stream_runner(capacity, policy, num_classes, chunk):
  """One compiled program per buffer shape, shared by the tests below."""

  def one(key, ys):
    n = ys.shape[0]
    xs = jnp.arange(n, dtype=jnp.float32)[:, None]
    state = buffer.init(capacity, (1,), policy=policy, num_classes=num_classes)

    def body(state, i):
      k = jax.random.fold_in(key, i)
      sl = lambda a: jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk)
      return buffer.add(state, sl(xs), sl(ys), k), None

    state, _ = jax.lax.scan(body, state, jnp.arange(n // chunk))
    return state

  return jax.jit(jax.vmap(one, in_axes=(0, None)))


def run_stream(keys, ys, capacity, policy="reservoir", num_classes=1, chunk=10):
  """Offers ys (item ids or labels) in chunks; x holds the item's position."""
  return stream_runner(capacity, policy, num_classes, chunk)(keys, jnp.asarray(ys, jnp.int32))


def inclusion_counts(states, n):
  held = np.asarray(states.x[..., 0]).astype(int)
  counts = np.zeros(n)
  for row in held:
    counts[row] += 1
  return counts


def chi2_uniform_p(counts):
  return stats.chisquare(counts).pvalue


def test_reservoir_inclusion_is_uniform():
  n, cap, runs = 1000, 50, 600
  states = run_stream(jax.random.split(jax.random.PRNGKey(0), runs), np.zeros(n), cap)
  assert np.all(np.asarray(states.size) == cap) and np.all(np.asarray(states.seen) == n)
  counts = inclusion_counts(states, n)
  assert counts.sum() == runs * cap
  # Each item is held with probability cap/n; a chi-square test over items,
  # and early vs late halves of the stream.
  assert chi2_uniform_p(counts) > 1e-3
  assert abs(counts[:500].sum() / counts.sum() - 0.5) < 0.02


def held_sets(capacity, labels, runs, seed, policy="reservoir", num_classes=1):
  """Offers items 0, 1, ... (labels ``labels``) to ``runs`` independent
  buffers in one `add` each; returns each run's held items as a sorted tuple."""
  n = len(labels)
  x = jnp.arange(n, dtype=jnp.float32)[:, None]
  y = jnp.asarray(labels, jnp.int32)

  def one(key):
    return buffer.add(
      buffer.init(capacity, (1,), policy=policy, num_classes=num_classes), x, y, key
    )

  states = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), runs))
  assert np.all(np.asarray(states.size) == capacity)
  return [tuple(sorted(row)) for row in np.asarray(states.x[..., 0]).astype(int).tolist()]


def assert_uniform_over(observed, outcomes, false_alarm=1e-4):
  """Chi-square goodness of fit of the observed outcomes to the uniform
  distribution over ``outcomes``; a correct buffer fails with probability
  ``false_alarm`` over the choice of seed."""
  counts = collections.Counter(observed)
  assert set(counts) <= set(outcomes), f"impossible outcomes {set(counts) - set(outcomes)}"
  p = stats.chisquare([counts[o] for o in outcomes]).pvalue
  assert p > false_alarm, (p, dict(counts))


@pytest.mark.parametrize("capacity,n", [(1, 2), (2, 4)])
def test_reservoir_holds_a_uniform_subset_in_exact_small_cases(capacity, n):
  # Algorithm R: after n offers the held set is a uniform capacity-subset of
  # the n items (capacity 1 after two items: each with probability 1/2). With
  # 3000 runs a slot drawn from [0, seen) instead of [0, seen] (always
  # replacing) fails with probability ~1.
  held = held_sets(capacity, np.zeros(n), 3000, seed=capacity * 10 + n)
  assert_uniform_over(held, list(itertools.combinations(range(n), capacity)))


def test_class_balanced_is_a_reservoir_within_each_class():
  # Capacity 4, items 0-3 of class 0, then 4-6 of class 1. Item 4 and 5 each
  # evict a uniformly random class-0 item (class 0 is the largest); item 6
  # arrives when both classes hold 2 and is kept with probability 2/3 in
  # place of a random class-1 item. Held: 2 of {0..3} (6 pairs) and 2 of
  # {4, 5, 6} (3 pairs), each uniform and independent: 18 outcomes.
  labels = [0, 0, 0, 0, 1, 1, 1]
  held = held_sets(4, labels, 3000, seed=5, policy="class_balanced", num_classes=2)
  outcomes = [
    a + b
    for a in itertools.combinations(range(4), 2)
    for b in itertools.combinations(range(4, 7), 2)
  ]
  assert_uniform_over(held, outcomes)


def test_every_slot_distinct_and_in_stream():
  states = run_stream(jax.random.split(jax.random.PRNGKey(1), 600), np.zeros(1000), 50)
  for row in np.asarray(states.x[..., 0]):
    assert len(set(row.tolist())) == 50


def test_class_balanced_keeps_classes_balanced():
  rng = np.random.default_rng(0)
  labels = np.concatenate([np.zeros(800), np.ones(100), np.full(100, 2)]).astype(int)
  labels = rng.permutation(labels)
  states = run_stream(
    jax.random.split(jax.random.PRNGKey(2), 8), labels, 60, policy="class_balanced", num_classes=3
  )
  for s in range(8):
    counts = np.bincount(np.asarray(states.y[s]), minlength=3)
    assert counts.max() - counts.min() <= 1, counts
  # A task-ordered stream: classes arrive one after another.
  ordered = np.repeat(np.arange(3), [334, 333, 333])  # 1000 items: the same program
  states = run_stream(
    jax.random.split(jax.random.PRNGKey(3), 8), ordered, 60, policy="class_balanced", num_classes=3
  )
  for s in range(8):
    np.testing.assert_array_equal(np.bincount(np.asarray(states.y[s]), minlength=3), [20, 20, 20])


def test_reservoir_on_task_ordered_stream_is_not_balanced():
  # Contrast with class_balanced: reservoir follows the stream's proportions.
  labels = np.concatenate([np.zeros(900), np.ones(100)]).astype(int)
  states = run_stream(jax.random.split(jax.random.PRNGKey(4), 600), labels, 50)
  frac = (np.asarray(states.y) == 1).mean()
  assert 0.07 < frac < 0.13


def filled(n_items, capacity, labels):
  state = buffer.init(capacity, (2,))
  x = jnp.stack([jnp.arange(n_items), jnp.arange(n_items)], 1).astype(jnp.float32)
  return buffer.add(state, x, jnp.asarray(labels, jnp.int32), jax.random.PRNGKey(0))


def test_sample_never_returns_excluded_or_empty():
  state = filled(12, 20, np.arange(12) % 4)  # 8 empty slots
  for i in range(50):
    x, y, mask = buffer.sample(state, jax.random.PRNGKey(i), 10, exclude_labels=jnp.array([1, 2]))
    x, y, mask = map(np.asarray, (x, y, mask))
    assert mask.sum() == 6  # labels 0 and 3: 6 items
    assert set(y[mask].tolist()) <= {0, 3}
    assert len(set(x[mask, 0].tolist())) == 6  # distinct items, all held ones
    assert np.all(x[mask, 0] < 12)


def test_sample_is_uniform_over_eligible():
  state = filled(30, 30, np.arange(30) % 3)
  counts = np.zeros(30)
  keys = jax.random.split(jax.random.PRNGKey(5), 3000)
  xs, ys, ms = jax.vmap(lambda k: buffer.sample(state, k, 5, jnp.array([0])))(keys)
  for row, m in zip(np.asarray(xs[..., 0]).astype(int), np.asarray(ms)):
    counts[row[m]] += 1
  eligible = np.arange(30) % 3 != 0
  assert np.all(counts[~eligible] == 0)
  assert chi2_uniform_p(counts[eligible]) > 1e-3


def test_empty_and_fully_excluded_buffers_give_all_false_masks():
  empty = buffer.init(10, (2,))
  _, _, mask = buffer.sample(empty, jax.random.PRNGKey(0), 5)
  assert not np.asarray(mask).any()
  state = filled(5, 10, np.zeros(5))
  _, _, mask = buffer.sample(state, jax.random.PRNGKey(0), 5, jnp.array([0]))
  assert not np.asarray(mask).any()


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(capacity=0, x_shape=(2,)), "mem_size"),
    (dict(capacity=5, x_shape=(2,), policy="fifo"), "storage_policy"),
  ],
)
def test_init_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    buffer.init(**kwargs)


def test_add_and_sample_reject_bad_arguments():
  state = buffer.init(5, (2,))
  with pytest.raises(ValueError, match="shape"):
    buffer.add(state, jnp.zeros((3, 4)), jnp.zeros(3, jnp.int32), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="batch_size_mem"):
    buffer.sample(state, jax.random.PRNGKey(0), 6)


ADD = jax.jit(buffer.add)
SAMPLE = jax.jit(buffer.sample, static_argnums=2)


# Sizes from small sets, so the examples share compiled programs: below,
# at and above capacity, samples smaller than, equal to and above what is held.
@settings(max_examples=12, deadline=None)
@given(
  cap=st.sampled_from([1, 4, 30]),
  n=st.sampled_from([0, 3, 40]),
  k=st.sampled_from([1, 3, 30]),
  seed=st.integers(0, 1000),
  policy=st.sampled_from(buffer.POLICIES),
)
def test_property_size_seen_and_sample(cap, n, k, seed, policy):
  k = min(k, cap)
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, n)
  state = buffer.init(cap, (1,), policy=policy, num_classes=4)
  if n:
    state = ADD(
      state,
      jnp.arange(n, dtype=jnp.float32)[:, None],
      jnp.asarray(labels),
      jax.random.PRNGKey(seed),
    )
  assert int(state.size) == min(n, cap) and int(state.seen) == n
  x, y, mask = map(np.asarray, SAMPLE(state, jax.random.PRNGKey(seed + 1), k, jnp.array([1, -1])))
  held_labels = labels[np.asarray(state.x[: int(state.size), 0]).astype(int)]
  assert mask.sum() == min(k, int(np.sum(held_labels != 1)))
  assert np.all(y[mask] != 1)
  np.testing.assert_array_equal(labels[x[mask, 0].astype(int)], y[mask])
