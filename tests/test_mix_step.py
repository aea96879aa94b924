"""MixUp's effect on the step's loss, end to end: one `make_train_step` update
of ER-mix and Mix-RAR against the update composed by hand from the replay
draw, the mixing coefficient λ and the pairing the step's MixUp key gives.

The helpers (the blob data, the hand-filled buffer, the compiled-step cache,
the RAR perturbation by hand) are tests/test_reference_step.py's.
"""

import jax
import jax.numpy as jnp
import numpy as np
from test_reference_step import (
  HYPER,
  LR,
  MLP,
  NET,
  assert_close,
  assert_differ,
  blobs,
  reference_update,
  setup,
  step_keys,
)

import rar_jax
from rar_jax.core import buffer

C = 4
# The buffer holds one item per label (labels 0 and 1; the incoming batch has 2
# and 3): every item is drawn, so the replay batch is the buffer in some order.
REPLAY_LABELS = [0, 1, 0, 1, 1, 0]
N = len(REPLAY_LABELS)
MIX_HYPER = dict(HYPER, mixup_alpha=1.0)


def lam_and_pairing(k_mix, mask, alpha):
  """λ and the row pairing that MixUp's key gives, read off MixUp applied to
  rows that name themselves (its targets are then λ I + (1 - λ) P)."""
  n = mask.shape[0]
  eye = jnp.eye(n, dtype=jnp.float32)
  _, t = rar_jax.mixup(k_mix, eye, eye, mask, alpha)
  t = np.asarray(t)
  partner = np.where(np.eye(n, dtype=bool), -1.0, t).argmax(1)
  lam = float(t[0, 0])
  np.testing.assert_allclose(t, lam * np.eye(n) + (1 - lam) * np.eye(n)[partner], atol=1e-6)
  return lam, partner


def mixed_replay(state, y, alpha=1.0):
  """The step's replay draw, and its mixed rows and soft targets composed by
  hand: row i is λ x_i + (1 - λ) x_partner(i), target λ e(y_i) + (1 - λ) e(y_partner(i))."""
  _, k_ret, k_mix, _ = step_keys(state)
  xm, ym, mm = buffer.sample(state.buffer, k_ret, N, y)
  assert bool(mm.all())
  lam, partner = lam_and_pairing(k_mix, mm, alpha)
  hard = np.eye(C, dtype=np.float32)[np.asarray(ym)]
  xmix = lam * np.asarray(xm) + (1 - lam) * np.asarray(xm)[partner]
  tmix = lam * hard + (1 - lam) * hard[partner]
  # The test can tell soft targets from hard ones: λ is well inside (0, 1) and
  # some rows are paired with a row of the other label.
  assert 0.1 < lam < 0.9, lam
  assert (np.asarray(ym) != np.asarray(ym)[partner]).sum() >= 2
  return xm, jnp.asarray(hard), jnp.asarray(xmix), jnp.asarray(tmix)


def sgd(params, *grads):
  return jax.tree.map(lambda p, *g: p - LR * sum(g), params, *grads)


def test_er_mix_step_trains_on_the_mixed_rows_with_their_soft_targets():
  state, step, _ = setup("er_mix", MLP, REPLAY_LABELS, N, seed=2, hyper=MIX_HYPER)
  x, y = blobs([2, 3] * 5, 1)
  new_state, m = step(state, x, y)
  xm, hard, xmix, tmix = mixed_replay(state, y)
  onehot = jax.nn.one_hot(y, C)

  def loss(p, targets):
    return NET.ce(p, x, onehot).mean() + NET.ce(p, xmix, targets).mean()

  expected = sgd(state.params, jax.grad(loss)(state.params, tmix))
  assert_close(new_state.params, expected)
  np.testing.assert_allclose(float(m["loss_replay"]), NET.ce(state.params, xmix, tmix).mean(), 1e-5)
  # The mixed rows trained against their own one-hot labels are another update.
  assert_differ(expected, sgd(state.params, jax.grad(loss)(state.params, hard)))


def test_mix_rar_step_is_the_papers_clean_unmixed_and_perturbed_mixed_loss():
  """Mix-RAR as the authors' code computes it: (1 - beta) CE of the replay rows
  as drawn (before MixUp) with their hard labels, plus beta CE of the perturbed
  mixed rows with the mixed soft targets; the perturbation moves the mixed rows."""
  state, step, _ = setup("er_mix_rar", MLP, REPLAY_LABELS, N, seed=2, hyper=MIX_HYPER)
  x, y = blobs([2, 3] * 5, 1)
  new_state, m = step(state, x, y)
  xm, hard, xmix, tmix = mixed_replay(state, y)
  beta = HYPER["beta_coef"]
  # The RAR perturbation of the mixed rows, by hand (through the look-ahead θ').
  _, xa, found = reference_update(NET, state.params, x, y, xmix, tmix)
  assert found.all() and float(jnp.abs(xa - xmix).max()) > 0.2
  g_cur = jax.grad(lambda p: NET.ce(p, x, jax.nn.one_hot(y, C)).mean())(state.params)

  def replay_loss(p, clean_x, clean_t):
    return (1 - beta) * NET.ce(p, clean_x, clean_t).mean() + beta * NET.ce(p, xa, tmix).mean()

  expected = sgd(state.params, g_cur, jax.grad(replay_loss)(state.params, xm, hard))
  assert_close(new_state.params, expected)
  np.testing.assert_allclose(
    float(m["loss_replay"]), replay_loss(state.params, xm, hard), rtol=1e-5
  )
  # Not the clean term over the mixed rows, nor any hard-label variant.
  assert_differ(expected, sgd(state.params, g_cur, jax.grad(replay_loss)(state.params, xmix, tmix)))
  assert_differ(expected, sgd(state.params, g_cur, jax.grad(replay_loss)(state.params, xm, tmix)))
