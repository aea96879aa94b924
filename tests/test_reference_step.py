"""One `make_train_step` update against an update composed by hand.

The reference is written from the method's description (docs/methods.md,
"The algorithm") with plain `jax.grad` on plain losses, the
model's `apply`, and the separately tested pieces (`buffer.sample`,
`mifgsm`, `mixup`). It knows nothing of how step.py is organised.

The buffer is filled by hand so that the replay batch is determined by its
contents: when as many items are eligible as are drawn, the draw is every
eligible item (in a random order, which no loss here depends on). Only the
MixUp case needs the step's random keys (`step_keys`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rar_jax
from rar_jax.core import buffer

C = 4  # classes
LR = 0.1
HYPER = dict(opt_lr=LR, beta_coef=0.3, epsilon_fgsm=0.3, alpha_fgsm=0.075, iter_fgsm=5)
CENTERS = np.random.default_rng(99).uniform(0.2, 0.8, size=(C, 16))


def blobs(labels, seed):
  """Gaussian blobs in [0, 1]^16 (as 4x4x1 images), one row per label."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  x = np.clip(CENTERS[labels] + 0.1 * rng.normal(size=(len(labels), 16)), 0, 1)
  return jnp.asarray(x.reshape(-1, 4, 4, 1), jnp.float32), jnp.asarray(labels, jnp.int32)


def step_keys(state):
  """The step's keys: (next state key, retrieval, MixUp, buffer insertion).
  The one place these tests depend on how the step splits its key."""
  return jax.random.split(state.key, 4)


_STEPS = {}  # (module, method, settings) -> jitted step, so tests share compilations


def setup(method, module, replay_labels, n_mem, seed=0, hyper=None, **overrides):
  """A fresh state whose buffer holds exactly one item per replay label, in
  slots 0, 1, ... (a buffer with room stores every item, in order)."""
  cfg, chain = rar_jax.build_method(
    method, num_classes=C, mem_size=20, batch_size_mem=n_mem, **overrides
  )
  tx = rar_jax.make_optimizer(LR)
  hyper = rar_jax.Hyper.create(**(hyper or HYPER))
  xb, yb = blobs(replay_labels, seed + 100)
  state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(seed), xb)
  state = state.replace(buffer=buffer.add(state.buffer, xb, yb, jax.random.PRNGKey(7)))
  assert int(state.buffer.size) == len(replay_labels)
  np.testing.assert_array_equal(state.buffer.y[: len(replay_labels)], yb)
  key = (id(module), method, n_mem, tuple(sorted(overrides.items())))
  if key not in _STEPS:
    _STEPS[key] = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
  return state, _STEPS[key], (xb, yb)


class Mlp:
  """The model's forward pass, features and per-row losses, from `apply`."""

  def __init__(self, module, layer="penultimate"):
    # Jitted: run eagerly, every primitive of the forward pass would compile on its own.
    self.logits = jax.jit(lambda p, z: module.apply({"params": p}, z))
    self.features = jax.jit(
      lambda p, z: module.apply({"params": p}, z, mutable=["features"])[1]["features"][layer][0]
    )

  def ce(self, p, z, t):
    return optax.softmax_cross_entropy(self.logits(p, z), t)


def reference_update(
  net,
  params,
  x,
  y,
  xm,
  tm,
  *,
  exclude=True,
  target="features",
  beta=0.3,
  eps=0.3,
  alpha=0.075,
  steps=5,
  decay=1.0,
  perturb=True,
  attack_params="lookahead",
):
  """SGD on CE(current) + (1-beta) CE(replay) + beta CE(perturbed replay).

  ``xm, tm``: the valid replay rows and their soft targets. The perturbation
  is MI-FGSM through the look-ahead parameters towards the nearest current
  row with another label (features or its label); a replay row with no such
  current row is not perturbed. Returns (new params, perturbed rows, which rows
  had a neighbour).
  """
  onehot = jax.nn.one_hot(y, C)
  g_cur = jax.grad(lambda p: net.ce(p, x, onehot).mean())(params)
  look = jax.tree.map(lambda p, g: p - LR * g, params, g_cur)
  if attack_params == "current":  # the paper's code after ASER: θ, not θ'
    look = params
  ym = np.asarray(jnp.argmax(tm, -1))
  fm, fc = np.asarray(net.features(look, xm)), np.asarray(net.features(look, x))
  d = ((fm[:, None, :] - fc[None, :, :]) ** 2).sum(-1)
  if not exclude:
    d = np.where(ym[:, None] != np.asarray(y)[None, :], d, np.inf)
  found = np.isfinite(d.min(1))
  nearest = d.argmin(1)
  xa = np.asarray(xm).copy()
  if perturb and found.any():
    rows = jnp.asarray(np.flatnonzero(found))
    if target == "features":
      t = jnp.asarray(fc[nearest[found]])
      loss = lambda z: jnp.mean((net.features(look, z) - t) ** 2, -1)
    else:
      t = jnp.asarray(np.asarray(y)[nearest[found]])
      loss = lambda z: optax.softmax_cross_entropy_with_integer_labels(net.logits(look, z), t)
    xa[np.asarray(rows)] = np.asarray(
      rar_jax.mifgsm(loss, xm[rows], epsilon=eps, alpha=alpha, steps=steps, decay=decay)
    )
  xa = jnp.asarray(xa)
  if perturb:
    rep = lambda p: (1 - beta) * net.ce(p, xm, tm).mean() + beta * net.ce(p, xa, tm).mean()
  else:
    rep = lambda p: net.ce(p, xm, tm).mean()
  g_rep = jax.grad(rep)(params)
  new = jax.tree.map(lambda p, a, b: p - LR * (a + b), params, g_cur, g_rep)
  return new, xa, found


def assert_close(a, b, atol=1e-6):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol, rtol=0)


def assert_differ(a, b, atol=1e-4):
  assert any(
    np.max(np.abs(np.asarray(u) - np.asarray(v))) > atol
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  ), "the trees are equal"


MLP = rar_jax.MLP(C, hidden=(32, 32))
NET = Mlp(MLP)


def test_rar_step_equals_the_hand_composed_one():
  # Current labels {2, 3}; the buffer holds 5 items of labels {0, 1}: all drawn.
  state, step, (xb, yb) = setup("er_rar", MLP, [0, 1, 0, 1, 1], 5)
  x, y = blobs([2, 3] * 5, 1)
  new_state, m = step(state, x, y)
  expected, xa, _ = reference_update(NET, state.params, x, y, xb, jax.nn.one_hot(yb, C))
  assert_close(new_state.params, expected)
  np.testing.assert_allclose(float(m["perturbation_max"]), np.abs(xa - xb).max(), atol=1e-6)
  per_row = np.abs(np.asarray(xa) - np.asarray(xb)).reshape(len(xb), -1).max(axis=1)
  np.testing.assert_allclose(float(m["perturbation_mean"]), per_row.mean(), atol=1e-6)
  assert float(m["perturbation_max"]) > 0.2  # the attack moved the rows


def test_feature_layer_sets_the_space_of_the_neighbour_search():
  # hidden=(32, 32): "hidden1" is the penultimate layer, so the other space is "hidden0".
  state, step, (xb, yb) = setup("er_rar", MLP, [0, 1, 0, 1, 1], 5, feature_layer="hidden0")
  x, y = blobs([2, 3] * 5, 1)
  new_state, _ = step(state, x, y)
  tm = jax.nn.one_hot(yb, C)
  expected, _, _ = reference_update(Mlp(MLP, "hidden0"), state.params, x, y, xb, tm)
  assert_close(new_state.params, expected)
  assert_differ(expected, reference_update(NET, state.params, x, y, xb, tm)[0])


# The label target (Avalanche's variant: cross-entropy towards the nearest
# current row's label) runs here with another momentum decay.
EXCLUSION_OFF = [("features", 1.0), ("label", 0.7)]


@pytest.mark.parametrize("target,decay", EXCLUSION_OFF)
def test_exclusion_off_leaves_rows_without_another_label_unperturbed(target, decay):
  # Every current row has label 2. Replay rows of label 2 have no current row
  # with another label: they must stay exactly as drawn; rows of labels 0 and
  # 1 move towards their nearest current row (its features, or its label).
  labels = [2, 0, 2, 1, 2]
  state, step, (xb, yb) = setup(
    "er_rar",
    MLP,
    labels,
    5,
    exclude_current_labels=False,
    attack_target=target,
    hyper=dict(HYPER, decay_factor_fgsm=decay),
  )
  x, y = blobs([2] * 10, 1)
  new_state, m = step(state, x, y)
  assert int(m["replay_count"]) == 5
  expected, xa, found = reference_update(
    NET, state.params, x, y, xb, jax.nn.one_hot(yb, C), exclude=False, target=target, decay=decay
  )
  np.testing.assert_array_equal(found, np.asarray(labels) != 2)
  np.testing.assert_array_equal(xa[~found], xb[~found])
  assert float(jnp.abs(xa - xb).max()) > 0.2
  assert_close(new_state.params, expected)


def test_exclusion_off_with_no_row_of_another_label_is_plain_replay():
  # No replay row has a differently labelled current row: zero perturbation,
  # so (1 - beta) CE(clean) + beta CE(perturbed) is CE(clean).
  state, step, (xb, yb) = setup("er_rar", MLP, [2, 2, 2, 2, 2], 5, exclude_current_labels=False)
  x, y = blobs([2] * 10, 1)
  new_state, m = step(state, x, y)
  assert float(m["perturbation_max"]) == 0.0
  expected, _, _ = reference_update(
    NET, state.params, x, y, xb, jax.nn.one_hot(yb, C), perturb=False
  )
  assert_close(new_state.params, expected)


def test_mir_rar_replays_the_most_interfered_candidates():
  # 10 eligible items, all of them candidates; MIR keeps the 4 whose loss
  # rises most from the current to the look-ahead parameters.
  labels = [0, 1] * 5
  state, step, (xb, yb) = setup("mir_rar", MLP, labels, 4, mir_candidates=10)
  x, y = blobs([2, 3] * 5, 1)
  new_state, _ = step(state, x, y)
  onehot = jax.nn.one_hot(y, C)
  g = jax.grad(lambda p: NET.ce(p, x, onehot).mean())(state.params)
  look = jax.tree.map(lambda p, gg: p - LR * gg, state.params, g)
  tb = jax.nn.one_hot(yb, C)
  rise = np.asarray(NET.ce(look, xb, tb) - NET.ce(state.params, xb, tb))
  order = np.argsort(-rise)
  assert rise[order[3]] - rise[order[4]] > 1e-5  # the top 4 are well defined
  top = jnp.asarray(order[:4])
  expected, _, _ = reference_update(NET, state.params, x, y, xb[top], tb[top])
  assert_close(new_state.params, expected)
  least, _, _ = reference_update(NET, state.params, x, y, xb[order[-4:]], tb[order[-4:]])
  assert_differ(expected, least)


def test_partly_padded_replay_batch_counts_only_its_valid_rows():
  # 3 eligible items for a replay batch of 5: 2 padded rows, masked out.
  state, step, (xb, yb) = setup("er_rar", MLP, [0, 1, 1, 2, 3], 5)
  x, y = blobs([2, 3] * 5, 1)
  new_state, m = step(state, x, y)
  assert int(m["replay_count"]) == 3
  expected, _, _ = reference_update(NET, state.params, x, y, xb[:3], jax.nn.one_hot(yb[:3], C))
  assert_close(new_state.params, expected)


def test_mix_rar_with_a_partly_padded_batch_mixes_valid_rows_only():
  # 3 eligible items for a replay batch of 6: MixUp must pair valid rows with
  # valid rows, and the padded rows must not count.
  hyper = dict(HYPER, mixup_alpha=1.0)
  state, step, _ = setup("er_mix_rar", MLP, [0, 1, 1, 2, 3, 2], 6, hyper=hyper)
  x, y = blobs([2, 3] * 5, 1)
  new_state, m = step(state, x, y)
  assert int(m["replay_count"]) == 3
  _, k_ret, k_mix, _ = step_keys(state)
  xm, ym, mm = buffer.sample(state.buffer, k_ret, 6, y)
  assert int(mm.sum()) == 3
  xmix, tmix = rar_jax.mixup(k_mix, xm, jax.nn.one_hot(ym, C), mm, 1.0)
  valid = np.flatnonzero(np.asarray(mm))
  # Padded rows hold the excluded labels 2, 3 (or are empty): no valid row's
  # soft target may carry them.
  assert float(jnp.abs(tmix[valid][:, 2:]).sum()) == 0.0
  expected, _, _ = reference_update(NET, state.params, x, y, xmix[valid], tmix[valid])
  assert_close(new_state.params, expected)


# ------------------------------------------------------------- batch norm


@pytest.mark.slow
def test_resnet_step_with_padded_replay_rows_equals_a_step_over_the_valid_rows():
  """Batch norm sees only the valid replay rows: a MIR-RAR batch of 5 with 3
  valid rows updates parameters and running statistics as a batch of those 3
  does, whatever the padded rows hold; an all-padding batch is fine-tuning."""
  # One stage keeps 4x4 inputs at the 4x4 the average pool expects (3 batch norms).
  module = rar_jax.ReducedResNet18(C, nf=4, blocks=(1,))
  rng = np.random.default_rng(0)
  img = lambda n: jnp.asarray(rng.uniform(size=(n, 4, 4, 3)), jnp.float32)
  xb, yb = img(3), jnp.array([0, 1, 0], jnp.int32)
  x, y = img(6), jnp.array([2, 3] * 3, jnp.int32)
  # Items of the current labels are never drawn: they can only be padding,
  # and unlike empty slots they are not zeros.
  junk_x, junk_y = img(4), jnp.array([2, 3, 2, 3], jnp.int32)
  tx = rar_jax.make_optimizer(LR)
  hyper = rar_jax.Hyper.create(**HYPER)
  steps, out = {}, {}
  for n_mem, items in ((5, "valid"), (5, "valid+junk"), (3, "valid"), (5, "junk")):
    cfg, chain = rar_jax.build_method(
      "mir_rar", num_classes=C, mem_size=8, batch_size_mem=n_mem, mir_candidates=5
    )
    state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x)
    bx = {"valid": xb, "junk": junk_x, "valid+junk": jnp.concatenate([xb, junk_x])}[items]
    by = {"valid": yb, "junk": junk_y, "valid+junk": jnp.concatenate([yb, junk_y])}[items]
    state = state.replace(buffer=buffer.add(state.buffer, bx, by, jax.random.PRNGKey(1)))
    if n_mem not in steps:
      steps[n_mem] = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))
    new_state, m = steps[n_mem](state, x, y)
    assert int(m["replay_count"]) == (0 if items == "junk" else 3)
    out[n_mem, items] = new_state
  exact = out[3, "valid"]
  assert_differ(exact.batch_stats, state.batch_stats, atol=1e-3)  # the statistics moved
  for padded in (out[5, "valid"], out[5, "valid+junk"]):
    assert_close(padded.params, exact.params, atol=2e-5)
    assert_close(padded.batch_stats, exact.batch_stats, atol=2e-5)

  # No valid replay row: one SGD step on the incoming batch, by hand, with the
  # running statistics of that batch alone.
  def loss(p):
    logits, new = module.apply(
      {"params": p, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

  g, new = jax.grad(loss, has_aux=True)(state.params)
  assert_close(out[5, "junk"].params, jax.tree.map(lambda p, d: p - LR * d, state.params, g))
  assert_close(out[5, "junk"].batch_stats, new["batch_stats"])


def test_rar_preview_shows_what_the_step_does():
  # make_rar_preview (behind rar_samples.png) must draw, match and perturb as
  # the step does: every replay row against the hand-composed perturbation.
  state, _, (xb, yb) = setup("er_rar", MLP, [0, 1, 0, 1, 1], 5)
  cfg, chain = rar_jax.build_method("er_rar", num_classes=C, mem_size=20, batch_size_mem=5)
  preview = jax.jit(rar_jax.core.step.make_rar_preview(MLP, rar_jax.make_optimizer(LR), cfg, chain))
  x, y = blobs([2, 3] * 5, 1)
  out = jax.device_get(preview(state, x, y, jax.random.PRNGKey(3)))
  _, xa, found = reference_update(NET, state.params, x, y, xb, jax.nn.one_hot(yb, C))
  assert out["mask"].all() and out["found"].all() and found.all()
  # The draw is the whole buffer in some order: find each row's buffer slot.
  slot = [int(np.flatnonzero((np.asarray(xb) == r).all(axis=(1, 2, 3)))[0]) for r in out["x_mem"]]
  assert sorted(slot) == list(range(5))
  np.testing.assert_allclose(out["x_adv"], np.asarray(xa)[slot], atol=1e-6)
  np.testing.assert_array_equal(out["targets"].argmax(-1), np.asarray(yb)[slot])
  g = jax.grad(lambda p: NET.ce(p, x, jax.nn.one_hot(y, C)).mean())(state.params)
  look = jax.tree.map(lambda p, gg: p - LR * gg, state.params, g)
  fm, fc = np.asarray(NET.features(look, out["x_mem"])), np.asarray(NET.features(look, x))
  np.testing.assert_array_equal(out["nearest"], ((fm[:, None] - fc[None]) ** 2).sum(-1).argmin(1))


def test_rar_preview_follows_the_chains_attack_not_the_config():
  # A user chain attacking through θ while the config says θ': the preview shows θ.
  state, _, (xb, yb) = setup("er_rar", MLP, [0, 1, 0, 1, 1], 5)
  cfg, chain = rar_jax.build_method("er_rar", num_classes=C, mem_size=20, batch_size_mem=5)
  assert chain.perturb.name == "rar"  # built with attack_params="lookahead"
  chain = rar_jax.core.stages.chain(
    rar_jax.core.stages.random_replay(), rar_jax.core.stages.rar(attack_params="current")
  )
  preview = rar_jax.core.step.make_rar_preview(MLP, rar_jax.make_optimizer(LR), cfg, chain)
  x, y = blobs([2, 3] * 5, 1)
  out = jax.device_get(jax.jit(preview)(state, x, y, jax.random.PRNGKey(3)))
  tm = jax.nn.one_hot(yb, C)
  _, xa, _ = reference_update(NET, state.params, x, y, xb, tm, attack_params="current")
  _, xa_look, _ = reference_update(NET, state.params, x, y, xb, tm)
  slot = [int(np.flatnonzero((np.asarray(xb) == r).all(axis=(1, 2, 3)))[0]) for r in out["x_mem"]]
  np.testing.assert_allclose(out["x_adv"], np.asarray(xa)[slot], atol=1e-6)
  assert np.abs(np.asarray(xa) - np.asarray(xa_look)).max() > 1e-3  # the two differ here


def test_rar_preview_needs_a_perturb_stage():
  cfg, chain = rar_jax.build_method("er", num_classes=C)
  with pytest.raises(ValueError, match="needs a chain with a retrieve and a perturb stage"):
    rar_jax.core.step.make_rar_preview(MLP, rar_jax.make_optimizer(LR), cfg, chain)


@pytest.mark.parametrize("rows", ["group", "joint"])
@pytest.mark.slow
def test_batch_norm_rows_sets_which_rows_share_statistics(rows):
  """ER through a batch-norm net: ``group`` normalises the incoming and the
  replay rows in two passes (the paper's code), ``joint`` in one pass over
  both (Avalanche's concatenated minibatch); each equals one SGD step by hand."""
  module = rar_jax.ReducedResNet18(C, nf=4, blocks=(1,))
  rng = np.random.default_rng(0)
  img = lambda n: jnp.asarray(rng.uniform(size=(n, 4, 4, 3)), jnp.float32)
  xb, yb = img(4), jnp.array([0, 1, 0, 1], jnp.int32)  # the whole buffer is the replay batch
  x, y = img(6), jnp.array([2, 3] * 3, jnp.int32)
  tx = rar_jax.make_optimizer(LR)
  cfg, chain = rar_jax.build_method(
    "er", num_classes=C, mem_size=4, batch_size_mem=4, batch_norm_rows=rows
  )
  state = rar_jax.init_train_state(
    module, tx, cfg, rar_jax.Hyper.create(**HYPER), jax.random.PRNGKey(0), x
  )
  state = state.replace(buffer=buffer.add(state.buffer, xb, yb, jax.random.PRNGKey(1)))
  new_state, _ = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))(state, x, y)

  def ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def apply(p, stats, rows_x):
    return module.apply(
      {"params": p, "batch_stats": stats}, rows_x, train=True, mutable=["batch_stats"]
    )

  def loss(p, rows):
    if rows == "joint":
      logits, new = apply(p, state.batch_stats, jnp.concatenate([x, xb]))
      return ce(logits[:6], y) + ce(logits[6:], yb), new["batch_stats"]
    logits, new = apply(p, state.batch_stats, x)
    logits_m, new = apply(p, new["batch_stats"], xb)
    return ce(logits, y) + ce(logits_m, yb), new["batch_stats"]

  def by_hand(rows):
    g, stats = jax.grad(loss, has_aux=True)(state.params, rows)
    return jax.tree.map(lambda p, d: p - LR * d, state.params, g), stats

  params, stats = by_hand(rows)
  assert_close(new_state.params, params, atol=2e-5)
  assert_close(new_state.batch_stats, stats, atol=2e-5)
  other = by_hand({"group": "joint", "joint": "group"}[rows])
  assert_differ(new_state.params, other[0], atol=1e-3)  # the two modes do differ here


@pytest.mark.slow
def test_joint_batch_norm_rows_with_rar_make_one_pass_over_incoming_and_replay_rows():
  """ER-RAR with ``batch_norm_rows="joint"``: the update is one pass over the
  incoming, clean replay and perturbed replay rows. With epsilon 0 the
  perturbed rows are the clean ones, so the step is a hand-written SGD step."""
  module = rar_jax.ReducedResNet18(C, nf=4, blocks=(1,))
  rng = np.random.default_rng(1)
  img = lambda n: jnp.asarray(rng.uniform(size=(n, 4, 4, 3)), jnp.float32)
  xb, yb = img(4), jnp.array([0, 1, 0, 1], jnp.int32)
  x, y = img(6), jnp.array([2, 3] * 3, jnp.int32)
  tx = rar_jax.make_optimizer(LR)
  cfg, chain = rar_jax.build_method(
    "er_rar", num_classes=C, mem_size=4, batch_size_mem=4, batch_norm_rows="joint"
  )
  beta = 0.3
  hyper = rar_jax.Hyper.create(**dict(HYPER, beta_coef=beta, epsilon_fgsm=0.0, alpha_fgsm=0.0))
  state = rar_jax.init_train_state(module, tx, cfg, hyper, jax.random.PRNGKey(0), x)
  state = state.replace(buffer=buffer.add(state.buffer, xb, yb, jax.random.PRNGKey(1)))
  new_state, _ = jax.jit(rar_jax.make_train_step(module, tx, cfg, chain))(state, x, y)

  def loss(p):
    logits, new = module.apply(
      {"params": p, "batch_stats": state.batch_stats},
      jnp.concatenate([x, xb, xb]),
      train=True,
      mutable=["batch_stats"],
    )
    ce = lambda l, t: optax.softmax_cross_entropy_with_integer_labels(l, t).mean()
    total = ce(logits[:6], y) + (1 - beta) * ce(logits[6:10], yb) + beta * ce(logits[10:], yb)
    return total, new["batch_stats"]

  g, stats = jax.grad(loss, has_aux=True)(state.params)
  assert_close(new_state.params, jax.tree.map(lambda p, d: p - LR * d, state.params, g), atol=2e-5)
  assert_close(new_state.batch_stats, stats, atol=2e-5)
