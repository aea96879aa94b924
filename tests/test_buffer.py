import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from rar_jax import buffer


def run_stream(keys, ys, capacity, policy="reservoir", num_classes=1, chunk=10):
  """Offers ys (item ids or labels) in chunks; x holds the item's position."""
  n = len(ys)
  xs = jnp.arange(n, dtype=jnp.float32)[:, None]
  ys = jnp.asarray(ys, jnp.int32)

  def one(key):
    state = buffer.init(capacity, (1,), policy=policy, num_classes=num_classes)

    def body(state, i):
      k = jax.random.fold_in(key, i)
      sl = lambda a: jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk)
      return buffer.add(state, sl(xs), sl(ys), k), None

    state, _ = jax.lax.scan(body, state, jnp.arange(n // chunk))
    return state

  return jax.jit(jax.vmap(one))(keys)


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


def test_the_uniformity_test_rejects_a_biased_buffer():
  # Keeping the most recent items (a FIFO) is a biased buffer: the test must fail.
  n, cap, runs = 1000, 50, 600
  counts = np.zeros(n)
  counts[-cap:] = runs
  assert chi2_uniform_p(counts) < 1e-6


def test_every_slot_distinct_and_in_stream():
  states = run_stream(jax.random.split(jax.random.PRNGKey(1), 4), np.zeros(300), 40)
  for row in np.asarray(states.x[..., 0]):
    assert len(set(row.tolist())) == 40


def test_class_balanced_keeps_classes_balanced():
  rng = np.random.default_rng(0)
  labels = np.concatenate([np.zeros(800), np.ones(100), np.full(100, 2)]).astype(int)
  labels = rng.permutation(labels)
  states = run_stream(jax.random.split(jax.random.PRNGKey(2), 8), labels, 60,
                      policy="class_balanced", num_classes=3)
  for s in range(8):
    counts = np.bincount(np.asarray(states.y[s]), minlength=3)
    assert counts.max() - counts.min() <= 1, counts
  # A task-ordered stream: classes arrive one after another.
  ordered = np.repeat(np.arange(3), 200)
  states = run_stream(jax.random.split(jax.random.PRNGKey(3), 4), ordered, 60,
                      policy="class_balanced", num_classes=3)
  for s in range(4):
    np.testing.assert_array_equal(np.bincount(np.asarray(states.y[s]), minlength=3), [20, 20, 20])


def test_reservoir_on_task_ordered_stream_is_not_balanced():
  # Contrast with class_balanced: reservoir follows the stream's proportions.
  labels = np.concatenate([np.zeros(900), np.ones(100)]).astype(int)
  states = run_stream(jax.random.split(jax.random.PRNGKey(4), 50), labels, 100)
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


@pytest.mark.parametrize("kwargs,match", [
    (dict(capacity=0, x_shape=(2,)), "mem_size"),
    (dict(capacity=5, x_shape=(2,), policy="fifo"), "storage_policy"),
])
def test_init_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    buffer.init(**kwargs)


def test_add_and_sample_reject_bad_arguments():
  state = buffer.init(5, (2,))
  with pytest.raises(ValueError, match="shape"):
    buffer.add(state, jnp.zeros((3, 4)), jnp.zeros(3, jnp.int32), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="batch_size_mem"):
    buffer.sample(state, jax.random.PRNGKey(0), 6)


@settings(max_examples=25, deadline=None)
@given(cap=st.integers(1, 30), n=st.integers(0, 80), k=st.integers(1, 30),
       seed=st.integers(0, 1000), policy=st.sampled_from(buffer.POLICIES))
def test_property_size_seen_and_sample(cap, n, k, seed, policy):
  k = min(k, cap)
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, n)
  state = buffer.init(cap, (1,), policy=policy, num_classes=4)
  if n:
    state = buffer.add(state, jnp.arange(n, dtype=jnp.float32)[:, None], jnp.asarray(labels),
                       jax.random.PRNGKey(seed))
  assert int(state.size) == min(n, cap) and int(state.seen) == n
  x, y, mask = map(np.asarray, buffer.sample(state, jax.random.PRNGKey(seed + 1), k,
                                             jnp.array([1, -1])))
  held_labels = labels[np.asarray(state.x[: int(state.size), 0]).astype(int)]
  assert mask.sum() == min(k, int(np.sum(held_labels != 1)))
  assert np.all(y[mask] != 1)
  np.testing.assert_array_equal(labels[x[mask, 0].astype(int)], y[mask])
