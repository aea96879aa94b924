import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rar_jax
from rar_jax.core import buffer
from rar_jax.runner import loop

NUM_CLASSES = 4
HYPER = dict(opt_lr=0.1, beta_coef=0.3, epsilon_fgsm=0.3, alpha_fgsm=0.075, iter_fgsm=5)


def blobs(n, classes, seed=0, dim=16):
  """Linearly separable Gaussian blobs in [0, 1]^dim, each batch of 10 holding
  every class of ``classes``."""
  rng = np.random.default_rng(seed)
  centers = np.random.default_rng(99).uniform(0.2, 0.8, size=(NUM_CLASSES, dim))
  y = np.resize(np.asarray(classes), n)
  y = np.concatenate([rng.permutation(y[i : i + 10]) for i in range(0, n, 10)])
  x = np.clip(centers[y] + 0.05 * rng.normal(size=(n, dim)), 0, 1)
  return jnp.asarray(x.reshape(n, 4, 4, 1), jnp.float32), jnp.asarray(y, jnp.int32)


_STEPS = {}  # (method, settings) -> jitted step of the default MLP: one compile each


def setup(method, module=None, mem_size=20, seed=0, **overrides):
  cached = module is None
  module = module or rar_jax.MLP(NUM_CLASSES, hidden=(32, 32))
  cfg, chain = rar_jax.build_method(
    method,
    num_classes=NUM_CLASSES,
    mem_size=mem_size,
    batch_size_mem=5,
    mir_candidates=10,
    aser_candidates=10,
    aser_coop_size=10,
    aser_k=3,
    **overrides,
  )
  hyper = rar_jax.Hyper.create(**HYPER)
  tx = rar_jax.make_optimizer(0.1)
  x, _ = blobs(10, [0, 1])
  state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(seed), x)
  if not cached:
    return state, jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
  key = (method, mem_size, tuple(sorted(overrides.items())))
  if key not in _STEPS:
    _STEPS[key] = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
  return state, _STEPS[key]


# The whole method grid runs in the slow suite; the fast one keeps a few whose
# compiled steps the tests below share (tests/test_reference_step.py checks the
# stages exactly).
FAST_METHODS = ("er", "er_rar")


def methods(names):
  return [m if m in FAST_METHODS else pytest.param(m, marks=pytest.mark.slow) for m in names]


def run(step, state, x, y):
  losses = []
  for i in range(0, len(y), 10):
    state, m = step(state, x[i : i + 10], y[i : i + 10])
    losses.append(float(m["loss_current"]))
  return state, np.array(losses)


def assert_trees_equal(a, b, atol=0.0):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if atol:
      np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol, rtol=0)
    else:
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# ACE replays from the whole buffer and masks the incoming logits: never finetune
# (tests/test_ace.py checks it).
@pytest.mark.parametrize("method", methods(sorted(m for m in rar_jax.METHODS if "ace" not in m)))
def test_first_task_equals_finetune(method):
  # Every batch holds both labels of the task, so every buffered sample is
  # excluded and the step must reduce to plain fine-tuning. (Not bit for bit:
  # where incoming and replay rows share one pass, the matmuls have more rows
  # and XLA may sum in another order, ~1e-9 here.)
  x, y = blobs(80, [0, 1])
  ref, step_ft = setup("finetune")
  ref, _ = run(step_ft, ref, x, y)
  state, step = setup(method)
  state, _ = run(step, state, x, y)
  assert_trees_equal(state.params, ref.params, atol=1e-6)
  assert int(state.buffer.size) == 20


@pytest.mark.parametrize("method", methods(["er_rar", "mir_mix_rar", "er_mix"]))
def test_first_step_with_exclusion_off_equals_finetune(method):
  x, y = blobs(10, [0, 1])
  ref, step_ft = setup("finetune")
  ref, _ = run(step_ft, ref, x, y)
  state, step = setup(method, exclude_current_labels=False)
  state, m = step(state, x, y)
  assert int(m["replay_count"]) == 0
  assert_trees_equal(state.params, ref.params, atol=1e-6)


# The hand-composed reference steps (MLP and a partly padded ResNet batch) are in
# tests/test_reference_step.py.


def test_mir_picks_the_most_interfered_candidates():
  state = buffer.init(12, (1,))
  vals = jnp.asarray(np.random.default_rng(0).permutation(12), jnp.float32)[:, None]
  state = buffer.add(state, vals, jnp.arange(12) % 3, jax.random.PRNGKey(0))
  x, y, mask = rar_jax.mir_retrieve(
    state,
    jax.random.PRNGKey(1),
    3,
    12,
    loss_now=lambda x, y, m: jnp.zeros(x.shape[0]),
    loss_lookahead=lambda x, y, m: x[:, 0],
    exclude_labels=jnp.array([0]),
  )
  held = np.asarray(state.x[:, 0])
  eligible = held[np.asarray(state.y) != 0]
  assert sorted(np.asarray(x[:, 0]).tolist()) == sorted(np.sort(eligible)[-3:].tolist())
  assert bool(mask.all())


def two_task_stream():
  xa, ya = blobs(100, [0, 1], seed=3)
  xb, yb = blobs(100, [2, 3], seed=4)
  return jnp.concatenate([xa, xb]), jnp.concatenate([ya, yb])


def small_parts(method, hidden=(32, 32)):
  """A small MLP, its ReplayConfig, optimiser and Hyper for stream-level tests."""
  module = rar_jax.MLP(NUM_CLASSES, hidden=hidden)
  cfg, chain = rar_jax.build_method(method, num_classes=NUM_CLASSES, mem_size=20, batch_size_mem=5)
  return module, cfg, chain, rar_jax.make_optimizer(0.1), rar_jax.Hyper.create(**HYPER)


def two_task_index(rng, num_seeds):
  """Per seed, a shuffled pass over each task of `two_task_stream`: [seeds, 20, 10]."""
  return jnp.asarray(
    np.stack(
      [np.concatenate([rng.permutation(100), 100 + rng.permutation(100)]) for _ in range(num_seeds)]
    ).reshape(num_seeds, 20, 10)
  )


@pytest.mark.parametrize("method", methods(["er_rar", "mir_mix_rar"]))
def test_scan_equals_steps_one_by_one(method):
  x, y = two_task_stream()
  state, step = setup(method)
  one_by_one, _ = run(step, state, x, y)
  module = rar_jax.MLP(NUM_CLASSES, hidden=(32, 32))
  cfg, chain = rar_jax.build_method(
    method, num_classes=NUM_CLASSES, mem_size=20, batch_size_mem=5, mir_candidates=10
  )
  runner = loop.make_stream_runner(
    rar_jax.make_train_step(module, rar_jax.make_optimizer(0.1), cfg, chain)
  )
  stacked = jax.tree.map(lambda a: a[None], state)
  index = jnp.arange(200).reshape(1, 20, 10)
  scanned, metrics = runner(stacked, x, y, index)
  assert metrics["loss_current"].shape == (1, 20)
  assert_trees_equal(jax.tree.map(lambda a: a[0], scanned.params), one_by_one.params, atol=1e-5)
  np.testing.assert_array_equal(scanned.buffer.y[0], one_by_one.buffer.y)


@pytest.mark.slow
def test_vmap_over_seeds_equals_separate_runs_and_seeds_differ():
  x, y = two_task_stream()
  module, cfg, chain, tx, hyper = small_parts("er_rar")
  runner = loop.make_stream_runner(rar_jax.make_train_step(module, tx, cfg, chain))
  index = two_task_index(np.random.default_rng(0), 3)
  states = loop.init_states(module, tx, cfg, hyper, loop.seed_keys([5, 6, 7]), x[:10])
  together, _ = runner(states, x, y, index)
  for s, seed in enumerate([5, 6, 7]):
    alone = loop.init_states(module, tx, cfg, hyper, loop.seed_keys([seed]), x[:10])
    alone, _ = runner(alone, x, y, index[s : s + 1])
    assert_trees_equal(
      jax.tree.map(lambda a: a[s], together.params),
      jax.tree.map(lambda a: a[0], alone.params),
      atol=1e-5,
    )
    np.testing.assert_array_equal(together.buffer.y[s], alone.buffer.y[0])
  # Each run follows its own seed: same stream, different seeds, different runs.
  finals = [
    np.concatenate([np.ravel(l[s]) for l in jax.tree.leaves(together.params)]) for s in range(3)
  ]
  for a in range(3):
    for b in range(a):
      assert np.abs(finals[a] - finals[b]).max() > 1e-3
    assert not np.array_equal(together.buffer.x[a], together.buffer.x[(a + 1) % 3])


@pytest.mark.parametrize("method", methods(sorted(m for m in rar_jax.METHODS if "ace" not in m)))
def test_each_method_learns(method):  # ACE's two-class incoming loss: tests/test_ace.py
  x, y = two_task_stream()
  state, step = setup(method)
  _, losses = run(step, state, x, y)
  assert np.all(np.isfinite(losses))
  assert losses[7:10].mean() < 0.75 * losses[:3].mean()  # within task 1
  assert losses[17:20].mean() < 0.75 * losses[10:13].mean()  # within task 2


def test_replay_reduces_forgetting_on_blobs():
  x, y = two_task_stream()
  xt, yt = blobs(200, [0, 1], seed=8)
  accs = {}
  for method in ("finetune", "er"):
    state, step = setup(method, mem_size=40)
    state, _ = run(step, state, x, y)
    pred = rar_jax.MLP(NUM_CLASSES, hidden=(32, 32)).apply({"params": state.params}, xt)
    accs[method] = float((pred.argmax(-1) == yt).mean())
  assert accs["er"] > accs["finetune"] + 0.2, accs


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(method="er", mem_size=0), "mem_size"),
    (dict(method="er", mem_size=5, batch_size_mem=10), "batch_size_mem"),
    (dict(method="sgd"), "method"),
    (dict(method="mir", mem_size=20, mir_candidates=30), "mir_candidates"),
    (dict(method="er_rar", attack_target="logits"), "attack_target"),
  ],
)
def test_replay_config_errors_name_the_argument(kwargs, match):
  method = kwargs.pop("method")
  with pytest.raises(ValueError, match=match):
    rar_jax.build_method(method, num_classes=NUM_CLASSES, **kwargs)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(epsilon_fgsm=-0.1), "epsilon_fgsm"),
    (dict(beta_coef=1.5), "beta_coef"),
    (dict(iter_fgsm=0), "iter_fgsm"),
    (dict(epsilon_fgsm=float("nan")), "epsilon_fgsm"),
  ],
)
def test_hyper_errors_name_the_argument(kwargs, match):
  with pytest.raises(ValueError, match=match):
    rar_jax.Hyper.create(opt_lr=0.1, **kwargs)


def test_unknown_feature_layer_is_rejected_with_the_known_ones():
  with pytest.raises(rar_jax.errors.ModelError, match="hidden0"):
    setup("er_rar", feature_layer="conv5")


def test_per_experience_buffer_fills_only_at_the_task_boundary():
  x, y = two_task_stream()
  module = rar_jax.MLP(NUM_CLASSES, hidden=(32, 32))
  cfg, chain = rar_jax.build_method(
    "er", num_classes=NUM_CLASSES, mem_size=20, batch_size_mem=5, buffer_update="per_experience"
  )
  tx = rar_jax.make_optimizer(0.1)
  states = loop.init_states(
    module, tx, cfg, rar_jax.Hyper.create(**HYPER), loop.seed_keys([0]), x[:10]
  )
  runner = loop.make_stream_runner(rar_jax.make_train_step(module, tx, cfg, chain))
  index = jnp.arange(100).reshape(1, 10, 10)  # task 1
  states, m = runner(states, x, y, index)
  assert int(states.buffer.size[0]) == 0 and int(m["replay_count"].sum()) == 0
  states = loop.make_buffer_filler()(states, x, y, index)
  assert int(states.buffer.size[0]) == 20 and int(states.buffer.seen[0]) == 100
  assert set(np.asarray(states.buffer.y[0]).tolist()) <= {0, 1}


@pytest.mark.slow  # three stream compilations (about a minute on 2 shared cores)
def test_map_batching_runs_each_seed_exactly_as_alone():
  """`lax.map` over runs executes the unbatched program per run, so a seed in
  a batch equals the seed alone bit for bit (vmap's batched kernels need not)."""
  x, y = two_task_stream()
  module, cfg, chain, tx, hyper = small_parts("er_mix_rar", hidden=(64, 64))
  index = two_task_index(np.random.default_rng(1), 3)
  step = rar_jax.make_train_step(module, tx, cfg, chain)
  mapped = loop.make_stream_runner(step, "map")
  vmapped = loop.make_stream_runner(step, "vmap")
  states = loop.init_states(module, tx, cfg, hyper, loop.seed_keys([3, 4, 5]), x[:10])
  together, _ = mapped(states, x, y, index)
  by_vmap, _ = vmapped(states, x, y, index)
  for s, seed in enumerate([3, 4, 5]):
    alone = loop.init_states(module, tx, cfg, hyper, loop.seed_keys([seed]), x[:10])
    alone, _ = mapped(alone, x, y, index[s : s + 1])
    assert_trees_equal(
      jax.tree.map(lambda a: a[s], together.params), jax.tree.map(lambda a: a[0], alone.params)
    )
  assert_trees_equal(by_vmap.params, together.params, atol=1e-4)


def test_unknown_batching_is_rejected():
  with pytest.raises(ValueError, match="batching"):
    loop.make_stream_runner(lambda s, x, y: (s, {}), "pmap")


def test_the_weight_average_follows_its_recursion_and_leaves_sgd_unchanged():
  """`make_optimizer(lr, ema_decay)`: the same SGD updates as without it, and
  the average e_k = d e_(k-1) + (1 - d) w_k from e_0 = w_0, against NumPy."""
  rng = np.random.default_rng(0)
  w0 = {"a": rng.normal(size=(3, 2)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
  grads = [
    jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), w0) for _ in range(4)
  ]
  lr, decay = 0.1, 0.8
  plain, averaging = rar_jax.make_optimizer(lr), rar_jax.make_optimizer(lr, decay)
  w_plain = w = jax.tree.map(jnp.asarray, w0)
  s_plain, s = plain.init(w_plain), averaging.init(w)
  ref_w = {k: v.astype(np.float64) for k, v in w0.items()}
  ref_e = dict(ref_w)
  for g in grads:
    u_plain, s_plain = plain.update(g, s_plain, w_plain)
    w_plain = optax.apply_updates(w_plain, u_plain)
    u, s = averaging.update(g, s, w)
    w = optax.apply_updates(w, u)
    ref_w = {k: ref_w[k] - lr * g[k] for k in ref_w}
    ref_e = {k: decay * ref_e[k] + (1 - decay) * ref_w[k] for k in ref_w}
  jax.tree.map(np.testing.assert_array_equal, w, w_plain)
  state = types.SimpleNamespace(params=w, opt_state=s)
  got = rar_jax.evaluation_params(state)
  for k in ref_e:
    np.testing.assert_allclose(np.asarray(got[k]), ref_e[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(ref_e[k], ref_w[k], atol=1e-3)  # the average is not the weights
  plain_state = types.SimpleNamespace(params=w_plain, opt_state=s_plain)
  assert rar_jax.evaluation_params(plain_state) is w_plain


def test_without_an_average_the_optimiser_state_is_plain_injected_sgd():
  """Checkpoints written before `ema_decay` existed hold this structure: a run
  without an average must restore them (same tree, same hyper-parameters)."""
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  state = rar_jax.make_optimizer(0.1).init(params)
  plain = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1).init(params)
  assert jax.tree.structure(state) == jax.tree.structure(plain)
  assert set(state.hyperparams) == {"learning_rate"}
  averaging = rar_jax.make_optimizer(0.1, 0.9).init(params)
  assert set(averaging.hyperparams) == {"learning_rate", "ema_decay"}
